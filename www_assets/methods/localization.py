"""Where, scored against boxes whose truth is known (the embedded world's object and part boxes).

For a heatmap M (H x W) and a region R (the pixels of one or more boxes):

* positive mass inside: sum_{p in R} max(M(p), 0) / sum_p max(M(p), 0); undefined (NaN) when M
  has no positive value;
* pointing game (Zhang et al., ECCV 2016): 1 when the map's maximum (the first in row-major
  order) lies in R, else 0; undefined for a flat map (no maximum to point with);
* region share: the share of a region mask's pixels (e.g. a neuron's concept region, its map
  above its 70th percentile) inside R; undefined for an empty mask;
* chance level: |R| / (H W), what a map spread uniformly, or a random point, would score.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

__all__ = ["boxes_mask", "positive_mass_inside", "pointing_hits", "region_share_inside", "area_share"]


def boxes_mask(boxes, height: int, width: int) -> Tensor:
    """(H, W) bool mask of the union of boxes (x0, y0, x1, y1) with exclusive ends, clipped to the image."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(width, int(x1)), min(height, int(y1))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def _check(maps: Tensor, inside: Tensor) -> None:
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got {tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}")
    if inside.shape != maps.shape or inside.dtype != torch.bool:
        raise ValueError(f"inside must be a bool mask of shape {tuple(maps.shape)}, got {inside.dtype} {tuple(inside.shape)}")


def positive_mass_inside(maps: Tensor, inside: Tensor) -> Tensor:
    """(B,) float64: share of each map's positive mass inside its region; NaN without positive mass."""
    _check(maps, inside)
    positive = maps.double().clamp(min=0).flatten(1)
    total = positive.sum(dim=1)
    within = (positive * inside.flatten(1)).sum(dim=1)
    return torch.where(total > 0, within / total.clamp(min=torch.finfo(torch.float64).tiny),
                       torch.full_like(total, float("nan")))


def pointing_hits(maps: Tensor, inside: Tensor) -> Tensor:
    """(B,) float64: 1.0 when the map's first maximum lies inside its region, 0.0 if not, NaN if flat."""
    _check(maps, inside)
    flat_maps = maps.flatten(1)
    peak = flat_maps.argmax(dim=1)
    hit = inside.flatten(1).gather(1, peak[:, None])[:, 0].double()
    flat = flat_maps.amax(dim=1) == flat_maps.amin(dim=1)
    return torch.where(flat, torch.full_like(hit, float("nan")), hit)


def region_share_inside(masks: Tensor, inside: Tensor) -> Tensor:
    """(B,) float64: share of each region mask's pixels inside its region; NaN for an empty mask."""
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool, got {masks.dtype}")
    _check(masks.float(), inside)
    count = masks.flatten(1).sum(dim=1).double()
    within = (masks & inside).flatten(1).sum(dim=1).double()
    return torch.where(count > 0, within / count.clamp(min=1), torch.full_like(count, float("nan")))


def area_share(inside: Tensor) -> Tensor:
    """(B,) float64: the region's share of the image, the chance level of the scores above."""
    return inside.flatten(1).double().mean(dim=1)


PART_NEURON = "part_neuron"  # rows of a top neuron whose major concept is a part drawn in the image


def localization_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per model (when the column is there) and map: mean positive mass inside the box, pointing-game
    accuracy, mean region share and the chance level (mean box share), over the rows that define them."""
    keys = (["model"] if "model" in df else []) + ["map"]
    return (df.groupby(keys, sort=True)
              .agg(images=("image_id", "nunique"), rows=("image_id", "size"), mass_in_box=("mass_in_box", "mean"),
                   pointing=("pointing_hit", "mean"), region_in_box=("region_in_box", "mean"),
                   chance=("box_share", "mean"))
              .reset_index())
