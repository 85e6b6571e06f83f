"""Pictures of "where" and "why": explanations, class Shapley matrices, rejection curves.

All functions draw on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas
(no display, no pyplot global state, safe in threads), write a PNG to ``path``
(parent folders created) and return that path; fonts, widths and the palette come from
`figures/style.py`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch

from www_assets.figures import style

__all__ = ["NEURON_COLOURS", "explanation_figure", "shapley_matrix_figure", "rejection_curve_figure", "localization_figure"]

# One colour per ranked neuron: blue, red, yellow first (the order of the paper's figures).
NEURON_COLOURS = ("#1f5fd6", "#e0262b", "#ffd21f", "#2ca02c", "#9b4dca", "#ff7f0e", "#17becf", "#8c564b")
_TRACK_KEYS = ("neurons", "concepts", "weights", "masks", "heatmap")


def _numpy(value: object) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_track(track: Mapping, name: str, height: int, width: int) -> dict:
    missing = [key for key in _TRACK_KEYS if key not in track]
    if missing:
        raise ValueError(f"{name} lacks keys {missing}; expected {list(_TRACK_KEYS)}")
    neurons = [int(n) for n in track["neurons"]]
    # Long concept names would run into the neighbouring legend: cut them at 26 characters.
    concepts = [_shorten(str(c)) if c else "(no concept)" for c in track["concepts"]]
    weights = [float(w) for w in track["weights"]]
    masks = _numpy(track["masks"]).astype(bool)
    heatmap = _numpy(track["heatmap"]).astype(np.float64)
    count = len(neurons)
    if len(concepts) != count or len(weights) != count:
        raise ValueError(
            f"{name}: neurons, concepts and weights must have equal lengths, "
            f"got {count}, {len(concepts)}, {len(weights)}"
        )
    if masks.shape != (count, height, width):
        raise ValueError(f"{name}: masks must be (k, H, W) = {(count, height, width)}, got {masks.shape}")
    if heatmap.shape != (height, width):
        raise ValueError(f"{name}: heatmap must be (H, W) = {(height, width)}, got {heatmap.shape}")
    return {"neurons": neurons, "concepts": concepts, "weights": weights, "masks": masks, "heatmap": heatmap}


def _shorten(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / denominator) if denominator > 0 else 0.0


def _draw_regions(axis: Axes, image: np.ndarray, track: dict, heading: str) -> None:
    axis.imshow(image)
    height, width = image.shape[:2]
    handles = []
    # Least important first, so the most important neuron's region is drawn on top.
    for rank in reversed(range(len(track["neurons"]))):
        colour = NEURON_COLOURS[rank % len(NEURON_COLOURS)]
        mask = track["masks"][rank]
        overlay = np.zeros((height, width, 4))
        overlay[mask] = to_rgba(colour, alpha=0.30)
        axis.imshow(overlay)
        if mask.any() and not mask.all():
            axis.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=2.0)
    entries = zip(track["neurons"], track["concepts"], track["weights"])
    for rank, (neuron, concept, weight) in enumerate(entries):
        colour = NEURON_COLOURS[rank % len(NEURON_COLOURS)]
        label = f"{rank + 1}. neuron {neuron}: {concept}  (w={weight:.3g})"
        handles.append(Patch(facecolor=colour, edgecolor="black", label=label))
    axis.set_title(heading, fontsize=style.FONT_TITLE, fontweight="bold")
    axis.set_axis_off()
    axis.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        fontsize=style.FONT_MIN,
        frameon=False,
        handlelength=1.2,
    )


def _draw_heatmap(axis: Axes, image: np.ndarray, heatmap: np.ndarray, heading: str) -> None:
    low, high = float(heatmap.min()), float(heatmap.max())
    scaled = (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)
    axis.imshow(image)
    shown = axis.imshow(scaled, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    axis.set_title(heading, fontsize=style.FONT)
    axis.set_axis_off()
    bar = axis.figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03)
    bar.set_label("heatmap, min-max scaled", fontsize=style.FONT_MIN)
    bar.ax.tick_params(labelsize=style.FONT_MIN)


def explanation_figure(
    image: np.ndarray,
    class_track: Mapping,
    sample_track: Mapping,
    title: str,
    path: str | Path,
) -> Path:
    """Class explanation beside sample explanation for one image (seed 001 figs. 5 and 6).

    Top row: the image with each top neuron's concept region (translucent fill and
    outline, one colour per rank: blue, red, yellow, ...), legend = rank, neuron id,
    major concept and contribution. Bottom row: the concept heatmap over the image
    (min-max scaled for display). The title carries the cosine similarity of the raw
    class and sample heatmaps.

    Args:
        image: (H, W, 3) uint8 RGB.
        class_track, sample_track: dicts with "neurons" [int] (k), "concepts" [str]
            (k, the major concept of each neuron, "" if none), "weights" [float] (k),
            "masks" bool (k, H, W) (``region_masks``), "heatmap" float (H, W)
            (``concept_heatmap``). k may differ between the tracks.
        title: first title line, e.g. "image 17: predicted fox (true: dog)".
        path: PNG file to write.

    Returns:
        ``path`` as a Path.
    """
    image = _numpy(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape} dtype {image.dtype}")
    height, width = image.shape[:2]
    tracks = {
        "Class explanation": _check_track(class_track, "class_track", height, width),
        "Sample explanation": _check_track(sample_track, "sample_track", height, width),
    }
    similarity = _cosine(tracks["Class explanation"]["heatmap"], tracks["Sample explanation"]["heatmap"])
    longest_legend = max(len(track["neurons"]) for track in tracks.values())

    figure = style.new_figure(8.4, 8.6 + 0.3 * longest_legend)
    axes = figure.subplots(2, 2)
    for column, (heading, track) in enumerate(tracks.items()):
        _draw_regions(axes[0, column], image, track, heading)
        heatmap_heading = f"concept heatmap (top-{len(track['neurons'])})"
        _draw_heatmap(axes[1, column], image, track["heatmap"], heatmap_heading)
    heading = f"{title}\nheatmap similarity (cosine, class vs sample) = {similarity:.2f}"
    figure.suptitle(heading, fontsize=style.FONT_TITLE)
    return style.save(figure, path)


def _order_neurons(matrix: np.ndarray, max_neurons: int) -> np.ndarray:
    """Neuron columns to show: the strongest (max |value| over classes), grouped by class.

    Keeps the ``max_neurons`` neurons with the largest absolute contribution to any
    class, then orders them by the class they contribute most to (so each class's
    neurons sit together, a near block-diagonal picture), strongest first in a class.
    """
    strength = np.abs(matrix).max(axis=0)
    keep = np.argsort(-strength, kind="stable")[:max_neurons]
    favourite_class = matrix[:, keep].argmax(axis=0)
    best_value = matrix[:, keep].max(axis=0)
    return keep[np.lexsort((keep, -best_value, favourite_class))]


def shapley_matrix_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    max_neurons: int = 48,
    title: str | None = None,
) -> Path:
    """Classes x neurons heatmap of the class Shapley matrix.

    Diverging colours centred at 0 (red = supports the class, blue = against), limits
    symmetric at the largest |value|. With more than ``max_neurons`` neurons only the
    strongest are shown (largest |mean contribution| to any class), grouped by the
    class they support most; the neuron ids label the columns.

    Args:
        matrix: (K, D) mean contribution per class (``class_contribution_matrix``).
        class_names: K row labels.
        path: PNG file to write.
        max_neurons: most columns to draw.
        title: what the matrix is of (model and layer), put before the figure's title.

    Returns:
        ``path`` as a Path.
    """
    matrix = _numpy(matrix).astype(np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be (K, D), got shape {matrix.shape}")
    num_classes, num_neurons = matrix.shape
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries, matrix has {num_classes} rows")
    if max_neurons < 1:
        raise ValueError(f"max_neurons must be positive, got {max_neurons}")
    if not np.isfinite(matrix).all():
        raise ValueError("matrix contains NaN or infinite values")
    columns = _order_neurons(matrix, max_neurons)
    shown = matrix[:, columns]
    limit = float(np.abs(shown).max()) or 1.0

    # 8-pt labels need about 0.14 in per column and 0.17 in per row
    width = min(style.MAX_WIDTH_IN, max(6.0, 0.14 * len(columns) + 3.2))
    height = max(3.5, 0.17 * min(num_classes, 60) + 2.2)
    figure = style.new_figure(width, height)
    axis = figure.subplots()
    image = axis.imshow(shown, cmap=style.DIVERGING, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    column_step = max(1, math.ceil(0.14 * len(columns) / (width - 3.2)))
    axis.set_xticks(np.arange(0, len(columns), column_step))
    axis.set_xticklabels([str(n) for n in columns[::column_step]], rotation=90, fontsize=style.FONT_MIN)
    row_step = max(1, math.ceil(num_classes / 60))
    axis.set_yticks(np.arange(0, num_classes, row_step))
    axis.set_yticklabels([str(name) for name in list(class_names)[::row_step]], fontsize=style.FONT_MIN)
    subset = len(columns) < num_neurons
    axis.set_xlabel("neuron (strongest, grouped by the class they support most)" if subset else "neuron",
                    fontsize=style.FONT)
    axis.set_ylabel("class", fontsize=style.FONT)
    shown_text = f"{len(columns)} of {num_neurons} neurons" if subset else f"{num_neurons} neurons"
    axis.set_title(
        (f"{title}: " if title else "")
        + f"class Shapley matrix, mean neuron contribution per class\n({num_classes} classes, {shown_text})",
        fontsize=style.FONT_TITLE,
    )
    colour_bar = figure.colorbar(image, ax=axis, fraction=0.035, pad=0.02)
    colour_bar.set_label("mean contribution (logit units)", fontsize=style.FONT)
    colour_bar.ax.tick_params(labelsize=style.FONT_MIN)
    return style.save(figure, path)


def rejection_curve_figure(
    curves: Mapping[str, pd.DataFrame],
    aurocs: Mapping[str, float],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Rejection test (seed 001 fig. 4 right): mispredictions caught vs share rejected.

    Left: fraction of all mispredictions among the rejected, one line per confidence
    score (legend with its misprediction AUROC), a random-rejection baseline (the
    diagonal) and the oracle that rejects every misprediction first. Right: accuracy
    of the samples kept.

    Args:
        curves: name -> ``rejection_curve`` DataFrame (all over the same samples).
        aurocs: name -> ``misprediction_auroc`` (names missing here get no number).
        path: PNG file to write.
        title: the figure's title (model and layer).

    Returns:
        ``path`` as a Path.
    """
    if not curves:
        raise ValueError("curves is empty")
    needed = {"share_rejected", "mispredictions_caught", "accuracy_of_kept"}
    for name, frame in curves.items():
        if not needed.issubset(frame.columns):
            raise ValueError(f"curve {name!r} lacks columns {sorted(needed - set(frame.columns))}")

    figure = style.new_figure(style.MAX_WIDTH_IN, 4.6)
    caught_axis, accuracy_axis = figure.subplots(1, 2)
    grid = np.linspace(0.0, 1.0, 201)
    caught_axis.plot(grid, grid, color="grey", linestyle="--", linewidth=1.2, label="random (0.500)")
    first = next(iter(curves.values()))
    if {"n_rejected", "hits"}.issubset(first.columns) and first["hits"].iloc[-1] > 0:
        error_rate = float(first["hits"].iloc[-1]) / float(first["n_rejected"].iloc[-1])
        oracle = np.minimum(1.0, grid / error_rate)  # every misprediction rejected first
        label = f"oracle (error rate {error_rate:.1%})"
        caught_axis.plot(grid, oracle, color="black", linestyle=":", linewidth=1.2, label=label)
    for index, (name, frame) in enumerate(curves.items()):
        colour = style.colour(index)
        label = f"{name} ({aurocs[name]:.3f})" if name in aurocs else name
        share = frame["share_rejected"]
        caught_axis.plot(share, frame["mispredictions_caught"], color=colour, linewidth=2.0, label=label)
        accuracy_axis.plot(share, frame["accuracy_of_kept"], color=colour, linewidth=2.0, label=name)
    for axis, ylabel, heading in ((caught_axis, "share of all mispredictions caught", "Misprediction detection (legend: AUROC)"),
                                  (accuracy_axis, "accuracy of the kept samples", "Accuracy after rejection")):
        axis.set_xlabel("share of samples rejected (least confident first)", fontsize=style.FONT)
        axis.set_ylabel(ylabel, fontsize=style.FONT)
        axis.set_title(heading, fontsize=style.FONT_TITLE)
        axis.set_xlim(0, 1)
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=style.FONT_MIN)
        axis.legend(fontsize=style.FONT_MIN, loc="lower right")
    caught_axis.set_ylim(0, 1.02)
    if title:
        figure.suptitle(title, fontsize=style.FONT_TITLE)
    return style.save(figure, path)


def localization_figure(summary: pd.DataFrame, title: str, path: str | Path) -> Path:
    """Where the heatmaps look, against the truth: for each map (class track, sample track,
    Grad-CAM, part neurons) the mean share of positive mass inside the box and the pointing-game
    accuracy, as bars, with the chance level (the box's mean share of the image) as a tick.

    Args:
        summary: ``localization_summary`` rows of one model (map, mass_in_box, pointing, chance).
        title: the figure's title (e.g. the model's name).
        path: PNG file to write.
    """
    needed = {"map", "mass_in_box", "pointing", "chance"}
    if summary.empty or not needed <= set(summary.columns):
        raise ValueError(f"summary must be non-empty with columns {sorted(needed)}")
    order = {"class": 0, "sample": 1, "gradcam": 2, "part_neuron": 3}
    rows = summary.assign(_o=summary["map"].map(lambda m: order.get(m, 9))).sort_values("_o")
    labels = {"class": "class track", "sample": "sample track", "gradcam": "Grad-CAM", "part_neuron": "part neurons\n(part boxes)"}
    figure = style.new_figure(7.5, 3.8)
    axis = figure.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    axis.bar(x - 0.2, rows["mass_in_box"], width=0.38, color=style.colour(0), label="positive mass inside box")
    axis.bar(x + 0.2, rows["pointing"], width=0.38, color=style.colour(1), label="pointing game hits")
    axis.scatter(x, rows["chance"], marker="_", s=900, color="black", zorder=3, label="chance (box share)")
    axis.set_xticks(x, [labels.get(m, m) for m in rows["map"]], fontsize=style.FONT_MIN)
    axis.tick_params(axis="y", labelsize=style.FONT_MIN)
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("map", fontsize=style.FONT)
    axis.set_ylabel("share of test images / of mass", fontsize=style.FONT)
    axis.set_title(title, fontsize=style.FONT_TITLE)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=style.FONT_MIN, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return style.save(figure, path)
