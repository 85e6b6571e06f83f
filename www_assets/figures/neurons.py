"""Neuron gallery: what each neuron fires on, and the concepts WWW gives it.

One block per neuron: a caption (title, major concepts and minor concepts with their
scores), a row of its top example images (major concepts come from these) and a row of
its top crops (minor concepts), each thumbnail with the neuron's activation on it. Drawn on
a bare `matplotlib.figure.Figure` with the Agg canvas (no pyplot state; safe in any worker
process), in the house style of `figures/style.py`, saved as PNG.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from www_assets.figures import style

__all__ = ["neuron_gallery"]

_THUMB_INCHES = 1.25  # side of one thumbnail
_LINE_INCHES = 0.2  # height of one caption line
_VALUE_INCHES = 0.18  # height of the activation line under a thumbnail
_MIN_COLUMNS = 5  # keeps captions readable when a neuron has few examples


def _as_image(value: object, where: str) -> np.ndarray:
    """A thumbnail as an array matplotlib can show (H, W, 3|4) or (H, W)."""
    array = np.asarray(value)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"{where} must be an HxW or HxWx3 image array, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float64), 0.0, 1.0)
    return array


def _concept_line(label: str, concepts: Sequence[tuple[str, float]], width: int) -> list[str]:
    if concepts:
        body = ", ".join(f"{name} ({score:.3g})" for name, score in concepts)
    else:
        body = "(none selected)"
    return textwrap.wrap(f"{label}: {body}", width=width, subsequent_indent="    ") or [label]


def neuron_gallery(panels: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Render one block per neuron and save the gallery as a PNG.

    panels: one dict per neuron with keys
        "title": str (e.g. "layer4 neuron 12"),
        "images": list of HxWx3 uint8 arrays (top example images, best first),
        "crops": list of HxWx3 uint8 arrays (top crops, best first; may be empty),
        "major": list of (concept, score) pairs, "minor": list of (concept, score) pairs,
        and optionally "activations" / "crop_activations": the neuron's activation on each
        image / crop, written under it.
    Float images are read as values in [0, 1]; greyscale HxW arrays are allowed.
    path: output PNG file (parent folders are created). title: the figure's heading (the model,
    layer and method). Returns the path.
    """
    if not panels:
        raise ValueError("panels is empty: there is no neuron to draw")
    required = ("title", "images", "crops", "major", "minor")
    for number, panel in enumerate(panels):
        missing = [key for key in required if key not in panel]
        if missing:
            raise ValueError(f"panel {number} lacks the keys {missing}")
    n_columns = max(
        _MIN_COLUMNS, max(max(len(p["images"]), len(p["crops"])) for p in panels)
    )
    wrap_width = int(n_columns * _THUMB_INCHES * 11)  # ~11 characters per inch at 9 pt

    captions: list[list[str]] = []
    height_ratios: list[float] = []
    for panel in panels:
        lines = [str(panel["title"])]
        lines += _concept_line("major", panel["major"], wrap_width)
        lines += _concept_line("minor", panel["minor"], wrap_width)
        captions.append(lines)
        height_ratios += [_LINE_INCHES * (len(lines) + 0.4), _THUMB_INCHES + _VALUE_INCHES,
                          _THUMB_INCHES + _VALUE_INCHES]

    # the heading wrapped to the figure's width (about 10 characters per inch of 10-pt bold)
    heading_lines = textwrap.wrap(str(title), width=int((n_columns * _THUMB_INCHES + 0.4) * 10)) if title else []
    heading = _LINE_INCHES * (1.2 * len(heading_lines) + 0.6) if title else 0.0
    height = sum(height_ratios) + 0.2 + heading
    figure = style.new_figure(n_columns * _THUMB_INCHES + 0.4, height, layout=None)
    grid = figure.add_gridspec(
        nrows=len(height_ratios), ncols=n_columns, height_ratios=height_ratios,
        left=0.35 / (n_columns * _THUMB_INCHES + 0.4), right=0.995, top=1 - (0.05 + heading) / height,
        bottom=0.005, hspace=0.08, wspace=0.04,
    )
    if title:
        figure.suptitle("\n".join(heading_lines), fontsize=style.FONT_TITLE, fontweight="bold", y=1 - 0.05 / height,
                        va="top")
    for number, (panel, lines) in enumerate(zip(panels, captions, strict=True)):
        caption_axes = figure.add_subplot(grid[3 * number, :])
        caption_axes.axis("off")
        # the title on the first caption line, the concept lines below it
        caption_axes.text(0.0, 1.0, lines[0], fontsize=style.FONT_TITLE, fontweight="bold", va="top",
                          transform=caption_axes.transAxes)
        caption_axes.text(0.0, 1.0 - 1.15 / (len(lines) + 0.4), "\n".join(lines[1:]), fontsize=style.FONT,
                          va="top", transform=caption_axes.transAxes)
        for row, (key, label) in enumerate((("images", "top images"), ("crops", "top crops"))):
            thumbnails = panel[key]
            values = list(panel.get("activations" if key == "images" else "crop_activations") or [])
            for column in range(n_columns):
                axes = figure.add_subplot(grid[3 * number + 1 + row, column])
                axes.set_anchor("N")  # the image at the cell's top, its activation below it, inside the cell
                axes.set_xticks([])
                axes.set_yticks([])
                if column < len(thumbnails):
                    axes.imshow(_as_image(thumbnails[column], f"panel {number} {key}[{column}]"),
                                cmap="gray" if np.asarray(thumbnails[column]).ndim == 2 else None)
                    if column < len(values):
                        axes.set_xlabel(f"a = {float(values[column]):.3g}", fontsize=style.FONT_MIN, labelpad=1)
                else:
                    axes.axis("off")
                if column == 0:
                    axes.set_ylabel(label if thumbnails else f"{label}\n(none)", fontsize=style.FONT_MIN)
                    if not thumbnails:
                        axes.axis("on")
                        axes.set_xticks([])
                        axes.set_yticks([])
                        for spine in axes.spines.values():
                            spine.set_visible(False)
    return style.save(figure, path)
