"""Figures of the concept-discovery evaluation (seed 000 figure S.1, seed 001 figure 4 left).

All figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas,
so no pyplot state is touched and the functions are safe in any worker process; colours,
markers, fonts and the maximum width come from `figures/style.py`.
Inputs are long tables (one row per point) so that they come straight from the
``evaluation_summary`` asset or a sweep over a hyper-parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from www_assets.figures import style
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
    return style.save(figure, path)


def _method_legend(figure: Figure, methods: Sequence[str], extra: Sequence[tuple] = ()) -> None:
    """One legend for the figure, in rows under the panels: each method's colour and marker."""
    handles = [Line2D([], [], linestyle="-", linewidth=1.5, markersize=6, label=method_label(m), **style.method_style(m, i))
               for i, m in enumerate(methods)]
    handles += [Line2D([], [], **kwargs) for kwargs in extra]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=style.FONT_MIN,
                  frameon=False)


def _sweep_figure(df: pd.DataFrame, x_column: str, x_label: str, path: str | Path, log_x: bool,
                  title: str | None = None) -> Path:
    """One panel per metric (at most three per row): mean ± stderr against a hyper-parameter, one
    line per method (palette colour and marker), each method's best value starred (and marked
    by a dashed red line when one method is drawn)."""
    _require(df, (x_column, *_SWEEP_COLUMNS), "df")
    metrics = order_metrics(df["metric"].unique())
    methods = order_methods(df["method"].unique())
    n_columns = min(3, len(metrics))
    n_rows = -(-len(metrics) // n_columns)
    legend_rows = -(-(len(methods) + 1) // 4)
    figure = style.new_figure(3.3 * n_columns, 2.7 * n_rows + 0.6 + 0.25 * legend_rows)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    x_values = np.sort(df[x_column].astype(float).unique())
    for ax, metric in zip(axes, metrics):
        for index, method in enumerate(methods):
            points = df[(df["metric"] == metric) & (df["method"] == method)].sort_values(x_column)
            if points.empty:
                continue
            look = style.method_style(method, index)
            x = points[x_column].to_numpy(dtype=float)
            mean = points["mean"].to_numpy(dtype=float)
            stderr = np.nan_to_num(points["stderr"].to_numpy(dtype=float), nan=0.0)
            ax.errorbar(x, mean, yerr=stderr, markersize=4, capsize=2, linewidth=1.2, label=method_label(method), **look)
            if np.all(np.isnan(mean)):
                continue
            best = int(np.nanargmax(mean))
            if len(methods) == 1:
                ax.axvline(x[best], color=_BEST_COLOUR, linestyle="--", linewidth=1.2)
            ax.plot([x[best]], [mean[best]], marker="*", markersize=11, color=look["color"],
                    markeredgecolor="black", markeredgewidth=0.5, zorder=3)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(x_values))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{v:g}" for v in x_values])
        else:
            ax.set_xticks(x_values)
            ax.set_xticklabels([f"{v:g}" for v in x_values], rotation=45 if len(x_values) > 5 else 0)
        ax.tick_params(labelsize=style.FONT_MIN)
        ax.set_xlabel(x_label, fontsize=style.FONT)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=style.FONT)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    best = {"marker": "*", "markersize": 10, "color": "white", "markeredgecolor": "black", "linestyle": "none",
            "label": f"best {x_label} of each method"}
    _method_legend(figure, methods, [best])
    figure.suptitle(title or f"scores against {x_label}", fontsize=style.FONT_TITLE)
    return _save(figure, path)


def k_ablation_figure(df: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Scores against the number k of top-activating examples (seed 000 figure S.1).

    Args:
        df: long table with columns ``k, method, metric, mean, stderr`` (one row per
            point; k typically 1, 5, 10, 20, 40, 80). Each metric gets its own panel.
        path: PNG file to write (folders are created).
        title: the figure's title (name the model, layer and concept set).

    Returns:
        ``path`` as a :class:`~pathlib.Path`. The k that maximises each method's mean
        is starred (and marked by a dashed red line when one method is drawn).
    """
    return _sweep_figure(df, "k", "k", path, log_x=True, title=title)


def alpha_ablation_figure(df: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Scores against the concept sensitivity α of the adaptive threshold (seed 001 fig. 4 left).

    Args:
        df: long table with columns ``alpha, method, metric, mean, stderr``.
        path: PNG file to write.
        title: the figure's title.

    Returns:
        ``path``; the α that maximises each method's mean is marked as in
        :func:`k_ablation_figure`.
    """
    return _sweep_figure(df, "alpha", "α", path, log_x=False, title=title)


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
    legend_rows = -(-len(methods) // 4)
    figure = style.new_figure(min(style.MAX_WIDTH_IN, 2.5 + 0.22 * len(metrics) * len(methods)),
                              0.5 + 2.6 * len(concept_sets) + 0.25 * legend_rows)
    axes = figure.subplots(len(concept_sets), 1, squeeze=False)[:, 0]
    width = 0.8 / len(methods)
    positions = np.arange(len(metrics))
    for ax, current_set in zip(axes, concept_sets):
        in_set = rows[rows["concept_set"] == current_set].set_index(["method", "metric"])
        for index, method in enumerate(methods):
            look = style.method_style(method, index)
            means = np.array([in_set["mean"].get((method, m), np.nan) for m in metrics], dtype=float)
            errors = np.nan_to_num(np.array([in_set["stderr"].get((method, m), np.nan) for m in metrics], dtype=float), nan=0.0)
            offset = (index - (len(methods) - 1) / 2) * width
            ax.bar(positions + offset, np.nan_to_num(means, nan=0.0), width, yerr=errors, capsize=1.5,
                   color=look["color"], edgecolor="white", linewidth=0.3, error_kw={"linewidth": 0.8})
            # the method's marker on each bar's top, so bars stay apart without colour
            ax.plot(positions + offset, np.nan_to_num(means, nan=0.0), linestyle="none", marker=look["marker"],
                    markersize=4, color="black", markerfacecolor=look["color"], markeredgewidth=0.5)
        ax.set_xticks(positions)
        ax.set_xticklabels([METRIC_LABELS.get(m, m) for m in metrics], fontsize=style.FONT_MIN)
        ax.tick_params(axis="y", labelsize=style.FONT_MIN)
        lowest = float(np.nanmin(rows["mean"].to_numpy(dtype=float)))
        ax.set_ylim(min(0.0, lowest - 0.05), 1.05)
        ax.set_xlabel("metric", fontsize=style.FONT)
        ax.set_ylabel("mean over neurons", fontsize=style.FONT)
        ax.set_title(f"{label or model} · concept set {current_set}", fontsize=style.FONT_TITLE)
        ax.grid(axis="y", alpha=0.3)
    _method_legend(figure, methods)
    return _save(figure, path)
