"""Figures of the concept-discovery evaluation (seed 000 figure S.1, seed 001 figure 4 left).

All figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas,
so no pyplot state is touched and the functions are safe in any worker process.
Inputs are long tables (one row per point) so that they come straight from the
``evaluation_summary`` asset or a sweep over a hyper-parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from www_assets.methods.tables import METRIC_LABELS, method_label, order_methods, order_metrics

_SWEEP_COLUMNS = ("method", "metric", "mean", "stderr")
_BEST_COLOUR = "tab:red"


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}; it has {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{what} is empty: nothing to draw")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def _sweep_figure(df: pd.DataFrame, x_column: str, x_label: str, path: str | Path, log_x: bool) -> Path:
    """One panel per metric: mean ± stderr against a hyper-parameter, one line per method,
    the maximising value of each method marked by a vertical line (red for a single method)."""
    _require(df, (x_column, *_SWEEP_COLUMNS), "df")
    metrics = order_metrics(df["metric"].unique())
    methods = order_methods(df["method"].unique())
    figure = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    x_values = np.sort(df[x_column].astype(float).unique())
    for ax, metric in zip(axes, metrics):
        for method in methods:
            points = df[(df["metric"] == metric) & (df["method"] == method)].sort_values(x_column)
            if points.empty:
                continue
            x = points[x_column].to_numpy(dtype=float)
            mean = points["mean"].to_numpy(dtype=float)
            stderr = np.nan_to_num(points["stderr"].to_numpy(dtype=float), nan=0.0)
            ax.errorbar(x, mean, yerr=stderr, marker="o", markersize=4, capsize=3, color=colours[method], label=method_label(method))
            if np.all(np.isnan(mean)):
                continue
            best = int(np.nanargmax(mean))
            best_colour = _BEST_COLOUR if len(methods) == 1 else colours[method]
            best_x = x[best]
            best_text = f"{best_x:g}"
            ax.axvline(best_x, color=best_colour, linestyle="--", linewidth=1.2, label=f"best {x_label} = {best_text}" + ("" if len(methods) == 1 else f" ({method_label(method)})"))
            ax.plot([best_x], [mean[best]], marker="*", markersize=11, color=best_colour, zorder=3)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(x_values))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{v:g}" for v in x_values])
        else:
            ax.set_xticks(x_values)
            ax.set_xticklabels([f"{v:g}" for v in x_values], rotation=45 if len(x_values) > 5 else 0, fontsize=8)
        ax.set_xlabel(x_label)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(figure, path)


def k_ablation_figure(df: pd.DataFrame, path: str | Path) -> Path:
    """Scores against the number k of top-activating examples (seed 000 figure S.1).

    Args:
        df: long table with columns ``k, method, metric, mean, stderr`` (one row per
            point; k typically 1, 5, 10, 20, 40, 80). Each metric gets its own panel.
        path: PNG file to write (folders are created).

    Returns:
        ``path`` as a :class:`~pathlib.Path`. The k that maximises each method's mean
        is marked with a dashed vertical line and a star (red when one method is drawn).
    """
    return _sweep_figure(df, "k", "k", path, log_x=True)


def alpha_ablation_figure(df: pd.DataFrame, path: str | Path) -> Path:
    """Scores against the concept sensitivity α of the adaptive threshold (seed 001 fig. 4 left).

    Args:
        df: long table with columns ``alpha, method, metric, mean, stderr``.
        path: PNG file to write.

    Returns:
        ``path``; the α that maximises each method's mean is marked as in
        :func:`k_ablation_figure`.
    """
    return _sweep_figure(df, "alpha", "α", path, log_x=False)


def metric_bars_figure(summary: pd.DataFrame, model: str, path: str | Path, concept_set: str | None = None,
                       label: str | None = None) -> Path:
    """Grouped bar chart of one model's evaluation: metrics on the x axis, one bar per
    method, error bars = standard error; one panel per concept set.

    Args:
        summary: the evaluation summary (``model, concept_set, method, metric, mean, stderr``).
        model: which model to draw.
        path: PNG file to write.
        concept_set: draw only this concept set (default: all of the model's).
        label: what the panel titles call the rows (default: the model name).

    Returns:
        ``path``.

    Raises:
        ValueError: on missing columns or when the model (or concept set) is absent.
    """
    _require(summary, ("model", "concept_set", *_SWEEP_COLUMNS), "summary")
    rows = summary[summary["model"] == model]
    if concept_set is not None:
        rows = rows[rows["concept_set"] == concept_set]
    if rows.empty:
        raise ValueError(
            f"no summary rows for model {model!r}" + (f" and concept set {concept_set!r}" if concept_set else "")
            + f"; models there: {sorted(summary['model'].unique())}"
        )
    concept_sets = sorted(rows["concept_set"].unique())
    metrics = order_metrics(rows["metric"].unique())
    methods = order_methods(rows["method"].unique())
    figure = Figure(figsize=(min(12.0, 3.0 + 0.3 * len(metrics) * len(methods)), 0.6 + 2.8 * len(concept_sets)), layout="constrained")
    axes = figure.subplots(len(concept_sets), 1, squeeze=False)[:, 0]
    width = 0.8 / len(methods)
    positions = np.arange(len(metrics))
    for ax, current_set in zip(axes, concept_sets):
        in_set = rows[rows["concept_set"] == current_set].set_index(["method", "metric"])
        for index, method in enumerate(methods):
            means = np.array([in_set["mean"].get((method, m), np.nan) for m in metrics], dtype=float)
            errors = np.nan_to_num(np.array([in_set["stderr"].get((method, m), np.nan) for m in metrics], dtype=float), nan=0.0)
            offset = (index - (len(methods) - 1) / 2) * width
            ax.bar(positions + offset, np.nan_to_num(means, nan=0.0), width, yerr=errors, capsize=2, color=f"C{index}", label=method_label(method))
        ax.set_xticks(positions)
        ax.set_xticklabels([METRIC_LABELS.get(m, m) for m in metrics])
        lowest = float(np.nanmin(rows["mean"].to_numpy(dtype=float)))
        ax.set_ylim(min(0.0, lowest - 0.05), 1.05)
        ax.set_ylabel("mean over neurons")
        ax.set_title(f"{label or model} · concept set {current_set}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="outside right upper")
    return _save(figure, path)
