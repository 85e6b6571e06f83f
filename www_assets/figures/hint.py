"""Pictures of HINT: the concept tree with each node's top neurons, and the concept classifiers'
maps per hierarchy level on test images with the predicted and the true box.

Agg canvas only (no pyplot state); each function writes a PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from www_assets.figures import style

__all__ = ["hierarchy_tree_figure", "level_maps_figure"]

_LEAF_INCHES = 0.3  # vertical room of one leaf (one line of 8-pt text and its box)
_LEAF_COLUMN_INCHES = 3.6  # the leaves' column, whose one-line labels run to the right
_LABEL_CHARS = 14  # a neuron's WWW concept is cut to this many characters


def _save(fig: Figure, path) -> Path:
    return style.save(fig, path)


def _leaf_order(hierarchy: pd.DataFrame) -> dict[str, float]:
    """Position of every node along the leaves' axis: leaves in depth-first order, parents
    centred over their children."""
    children: dict[str | None, list[str]] = {}
    for concept, parent in zip(hierarchy["concept"], hierarchy["parent"]):
        children.setdefault(parent if isinstance(parent, str) else None, []).append(concept)
    x: dict[str, float] = {}
    counter = [0]

    def place(node: str) -> float:
        kids = children.get(node, [])
        if not kids:
            x[node] = counter[0]
            counter[0] += 1
        else:
            xs = [place(k) for k in kids]
            x[node] = (min(xs) + max(xs)) / 2
        return x[node]

    for root in children.get(None, []):
        place(root)
    return x


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def hierarchy_tree_figure(hierarchy: pd.DataFrame, top_neurons: dict[str, Sequence[int]], title: str, path,
                          neuron_labels: dict[int, str] | None = None) -> Path:
    """The concept tree, root at the left and one leaf per row; each node shows its name and its
    top neurons by Shapley value (with their WWW concept when `neuron_labels` has one): inner
    nodes as a box of lines, leaves on one line. Rows are as tall as one line of text, so no two
    boxes overlap and no band is left blank."""
    position = _leaf_order(hierarchy)
    depth = dict(zip(hierarchy["concept"], hierarchy["depth"]))
    names = dict(zip(hierarchy["concept"], hierarchy["name"]))
    parents = set(hierarchy["parent"].dropna()) & set(depth)
    n_leaves = int(max(position.values())) + 1 if position else 1
    max_depth = max(depth.values()) if depth else 0
    inner_columns = max(1, max_depth)
    column_inches = (style.MAX_WIDTH_IN - _LEAF_COLUMN_INCHES) / inner_columns
    height = _LEAF_INCHES * n_leaves + 0.7
    fig = style.new_figure(style.MAX_WIDTH_IN, height, layout=None)
    ax = fig.add_axes((0.01, 0.2 / height, 0.98, 1 - 0.6 / height))
    # x in inches from the left; y in leaf rows from the top
    # leaves start at their column's left edge (their text runs right), inner nodes sit centred
    x_of = {c: depth[c] * column_inches + (column_inches / 2 if c in parents else 0.05) for c in depth}
    labels = neuron_labels or {}

    def neuron_text(n: int) -> str:
        return f"{n}" + (f" {_short(labels[n])}" if labels.get(n) else "")

    for concept, parent in zip(hierarchy["concept"], hierarchy["parent"]):
        if isinstance(parent, str) and parent in position:
            xp, xc = x_of[parent], x_of[concept]
            middle = (depth[parent] + 1) * column_inches - 0.1
            ax.plot([xp, middle, middle, xc], [position[parent], position[parent], position[concept], position[concept]],
                    color="#999999", lw=0.8, zorder=1)
    for concept in hierarchy["concept"]:
        neurons = [neuron_text(int(n)) for n in top_neurons.get(concept, [])]
        leaf = concept not in parents
        if leaf:
            text = f"{names[concept]}: " + (", ".join(neurons) or "(no neurons)")
            ax.text(x_of[concept], position[concept], text, ha="left", va="center", fontsize=style.FONT_MIN, zorder=2,
                    bbox=dict(boxstyle="round,pad=0.2", fc="#e8f0ff", ec="#555555", lw=0.6))
        else:
            text = f"{names[concept]}\n" + "\n".join(neurons)
            ax.text(x_of[concept], position[concept], text, ha="center", va="center", fontsize=style.FONT_MIN,
                    zorder=2, linespacing=1.1,
                    bbox=dict(boxstyle="round,pad=0.25", fc="#fff7d6", ec="#555555", lw=0.6))
    ax.set_xlim(0, style.MAX_WIDTH_IN * 0.98)
    ax.set_ylim(n_leaves - 0.5, -0.5)
    ax.axis("off")
    fig.suptitle(title, fontsize=style.FONT_TITLE, y=1 - 0.08 / height, va="top")
    return _save(fig, path)


def level_maps_figure(rows: Sequence[dict], path, title: str = "") -> Path:
    """One row per test image: the image with its true box, then per hierarchy level the concept
    classifier's probability map (0..1) with the predicted box (red) and the true box (green);
    one colour bar for the maps.

    rows: dicts with 'image' (H, W, 3 uint8), 'caption', 'true_box' (x0, y0, x1, y1), and
    'levels': list of dicts with 'concept', 'map' (H, W), 'pred_box' (or None), 'iou'.
    """
    n_cols = 1 + max(len(r["levels"]) for r in rows)
    side = min(2.0, (style.MAX_WIDTH_IN - 0.8) / n_cols)
    fig = style.new_figure(side * n_cols + 0.8, (side + 0.45) * len(rows) + (0.4 if title else 0))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    shown = None
    for i, row in enumerate(rows):
        ax = axes[i, 0]
        ax.imshow(row["image"])
        _box(ax, row["true_box"], "#22cc22")
        ax.set_title(row["caption"], fontsize=style.FONT_MIN)
        ax.axis("off")
        for j in range(1, n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if j - 1 >= len(row["levels"]):
                continue
            level = row["levels"][j - 1]
            ax.imshow(row["image"])
            shown = ax.imshow(np.asarray(level["map"]), cmap="magma", vmin=0, vmax=1, alpha=0.6)
            _box(ax, row["true_box"], "#22cc22")
            _box(ax, level["pred_box"], "#ff2020")
            ax.set_title(f"{level['concept']}\nIoU {level['iou']:.2f}", fontsize=style.FONT_MIN)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, fraction=0.03, pad=0.02)
        bar.set_label("concept classifier probability", fontsize=style.FONT)
        bar.ax.tick_params(labelsize=style.FONT_MIN)
    if title:
        fig.suptitle(title, fontsize=style.FONT_TITLE)
    return _save(fig, path)


def _box(ax, box, colour) -> None:
    if box is None:
        return
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.4))
