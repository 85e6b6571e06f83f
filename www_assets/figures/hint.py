"""Pictures of HINT: the concept tree with each node's top neurons, and the concept classifiers'
maps per hierarchy level on test images with the predicted and the true box.

Agg canvas only (no pyplot state); each function writes a PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["hierarchy_tree_figure", "level_maps_figure"]


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _leaf_order(hierarchy: pd.DataFrame) -> dict[str, float]:
    """x position of every node: leaves in depth-first order, parents centred over children."""
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


def hierarchy_tree_figure(hierarchy: pd.DataFrame, top_neurons: dict[str, Sequence[int]], title: str, path,
                          neuron_labels: dict[int, str] | None = None) -> Path:
    """The concept tree, root at the top; each node shows its name and its top neurons by
    Shapley value (with their WWW concept when `neuron_labels` has one)."""
    x = _leaf_order(hierarchy)
    depth = dict(zip(hierarchy["concept"], hierarchy["depth"]))
    names = dict(zip(hierarchy["concept"], hierarchy["name"]))
    n_leaves = max(x.values()) + 1 if x else 1
    max_depth = max(depth.values()) if depth else 0
    fig = Figure(figsize=(max(10.0, 0.95 * n_leaves), 2.3 * (max_depth + 1) + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    for concept, parent in zip(hierarchy["concept"], hierarchy["parent"]):
        if isinstance(parent, str) and parent in x:
            ax.plot([x[parent], x[concept]], [-depth[parent], -depth[concept]], color="#999999", lw=0.8, zorder=1)
    labels = neuron_labels or {}
    for concept in hierarchy["concept"]:
        neurons = list(top_neurons.get(concept, []))
        lines = [f"{n}" + (f" {labels[n]}" if labels.get(n) else "") for n in neurons]
        leaf = depth[concept] == max_depth or concept not in set(hierarchy["parent"].dropna())
        text = f"{names[concept]}\n" + "\n".join(lines)
        ax.text(x[concept], -depth[concept], text, ha="center", va="center", fontsize=6.5 if leaf else 7.5,
                rotation=0, zorder=2, bbox=dict(boxstyle="round,pad=0.3", fc="#fff7d6" if not leaf else "#e8f0ff",
                                                 ec="#555555", lw=0.6))
    ax.set_xlim(-0.7, n_leaves - 0.3)
    ax.set_ylim(-max_depth - 0.6, 0.6)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def level_maps_figure(rows: Sequence[dict], path, title: str = "") -> Path:
    """One row per test image: the image with its true box, then per hierarchy level the concept
    classifier's probability map (0..1) with the predicted box (red) and the true box (green).

    rows: dicts with 'image' (H, W, 3 uint8), 'caption', 'true_box' (x0, y0, x1, y1), and
    'levels': list of dicts with 'concept', 'map' (H, W), 'pred_box' (or None), 'iou'.
    """
    n_cols = 1 + max(len(r["levels"]) for r in rows)
    fig = Figure(figsize=(2.0 * n_cols, 2.15 * len(rows) + (0.4 if title else 0)))
    for i, row in enumerate(rows):
        ax = fig.add_subplot(len(rows), n_cols, i * n_cols + 1)
        ax.imshow(row["image"])
        _box(ax, row["true_box"], "#22cc22")
        ax.set_title(row["caption"], fontsize=7)
        ax.axis("off")
        for j, level in enumerate(row["levels"]):
            ax = fig.add_subplot(len(rows), n_cols, i * n_cols + 2 + j)
            ax.imshow(row["image"])
            ax.imshow(np.asarray(level["map"]), cmap="magma", vmin=0, vmax=1, alpha=0.6)
            _box(ax, row["true_box"], "#22cc22")
            _box(ax, level["pred_box"], "#ff2020")
            ax.set_title(f"{level['concept']}\nIoU {level['iou']:.2f}", fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _box(ax, box, colour) -> None:
    if box is None:
        return
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.4))
