"""Class-concept pictures: per class (or class pair) the concept grid, one row of top crops per
concept with the concept's words, and the stitched prediction-test image with what the model
made of it, for the variant allowing crops of the class and the one excluding them (the
paper's figures 1 and 5). Bare `Figure` with the Agg canvas, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["concept_grid_figure"]

_THUMB = 0.8  # inches per crop


def concept_grid_figure(title: str, variants: list[dict], path: str | Path) -> Path:
    """variants: one dict per variant with "label" (str), "rows" (list of (words, [crops HxWx3
    uint8])), "stitched" (HxWx3 uint8 or None) and "verdict" (str). Returns the PNG path."""
    if not variants:
        raise ValueError("nothing to draw: no variant")
    n_rows = max(len(v["rows"]) for v in variants)
    n_cols = max([len(crops) for v in variants for _, crops in v["rows"]] + [1])
    width = len(variants) * (n_cols + 2) * _THUMB + 0.5
    height = n_rows * (_THUMB + 0.3) + 1.0
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=10)
    grid = figure.add_gridspec(n_rows, len(variants) * (n_cols + 2), hspace=0.6, wspace=0.05)
    for v_index, variant in enumerate(variants):
        base = v_index * (n_cols + 2)
        for r, (words, crops) in enumerate(variant["rows"]):
            for c in range(n_cols):
                ax = figure.add_subplot(grid[r, base + c])
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(crops):
                    ax.imshow(np.asarray(crops[c]))
                if c == 0:
                    ax.set_title(f"{variant['label']} #{r}: {words}", fontsize=6, loc="left")
        ax = figure.add_subplot(grid[:, base + n_cols:base + n_cols + 2])
        ax.set_xticks([]), ax.set_yticks([])
        if variant.get("stitched") is not None:
            ax.imshow(np.asarray(variant["stitched"]))
        ax.set_title(variant.get("verdict", ""), fontsize=6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
