"""Class-concept pictures: per class (or class pair) the concept grid, one row of top crops per
concept with the concept's words, and the stitched prediction-test image with what the model
made of it, for the variant allowing crops of the class and the one excluding them (the
paper's figures 1 and 5). Bare `Figure` with the Agg canvas, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from www_assets.figures import style

__all__ = ["concept_grid_figure"]

_THUMB = 0.8  # inches per crop
_CAPTION = 0.3  # inches for the caption line above each row of crops


def concept_grid_figure(title: str, variants: list[dict], path: str | Path) -> Path:
    """variants: one dict per variant with "label" (str), "rows" (list of (words, [crops HxWx3
    uint8])), "stitched" (HxWx3 uint8 or None) and "verdict" (str). The variants are stacked, one
    block of rows each, so the figure stays within the house width. Returns the PNG path."""
    if not variants:
        raise ValueError("nothing to draw: no variant")
    n_cols = max([len(crops) for v in variants for _, crops in v["rows"]] + [1])
    blocks = [max(1, len(v["rows"])) for v in variants]
    n_rows = sum(blocks)
    width = (n_cols + 2) * _THUMB + 0.4
    height = n_rows * (_THUMB + _CAPTION) + 0.35 * len(variants) + 0.6
    figure = style.new_figure(width, height, layout=None)
    figure.suptitle(title, fontsize=style.FONT_TITLE, y=1 - 0.12 / height, va="top")
    grid = figure.add_gridspec(n_rows, n_cols + 2, hspace=_CAPTION / _THUMB + 0.05, wspace=0.05,
                               left=0.2 / width, right=1 - 0.2 / width, top=1 - 0.65 / height, bottom=0.15 / height)
    first = 0
    for variant, block in zip(variants, blocks):
        for r, (words, crops) in enumerate(variant["rows"]):
            for c in range(n_cols):
                ax = figure.add_subplot(grid[first + r, c])
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(crops):
                    ax.imshow(np.asarray(crops[c]))
                if c == 0:
                    ax.set_title(f"{variant['label']} #{r}: {words}", fontsize=style.FONT_MIN, loc="left")
        ax = figure.add_subplot(grid[first:first + block, n_cols:n_cols + 2])
        ax.set_xticks([]), ax.set_yticks([])
        if variant.get("stitched") is not None:
            ax.imshow(np.asarray(variant["stitched"]))
        ax.set_title(variant.get("verdict", ""), fontsize=style.FONT_MIN, wrap=True)
        first += block
    return style.save(figure, path)
