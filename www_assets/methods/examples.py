"""Representative examples: the views (images or crops) on which a neuron fires most.

A neuron's activation on a view is one number (spatial mean of its map, the CLS token, or
the logit; see METHODS.md section 1). `top_k_examples` ranks the views per neuron and keeps
the k best, best first. Ties are broken by the lower view index, so the result does not
depend on the sorting algorithm, the device or the number of threads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from www_assets.methods.similarity import chunk_slices, rows_per_chunk

__all__ = [
    "FULL_VIEW", "GRADCAM_VIEW", "ExamplePool", "crop_view", "examples_frame", "top_k_examples",
    "topk_lowest_index_first",
]

# Names of the views of a probe image: the whole image, the Grad-CAM crop, grid crop (r, c).
FULL_VIEW, GRADCAM_VIEW = "full", "gradcam"


def crop_view(r: int, c: int) -> str:
    """The view name of grid crop (row r, column c)."""
    return f"crop:{r},{c}"


def topk_lowest_index_first(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest entries of each row, best first, equal values ordered by lower column.

    scores: (R, L) real tensor without NaN; k >= 1 (k > L keeps all L columns).
    Returns (values (R, k'), columns LongTensor (R, k')) with k' = min(k, L).

    Among entries equal to a row's k-th largest value, the ones with the lowest column
    indices are kept; the kept entries are sorted by value descending, then column ascending.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (rows, columns), got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN; rank only finite or infinite values")
    rows, cols = scores.shape
    k = min(k, cols)
    if rows == 0 or k == 0:
        empty = scores.new_empty((rows, k))
        return empty, torch.empty((rows, k), dtype=torch.long, device=scores.device)

    # One extra place tells whether equal values straddle the cut: if the (k+1)-th value
    # is below the k-th, the kept set is unique and only its order needs fixing.
    extra = min(k + 1, cols)
    values, columns = torch.topk(scores, extra, dim=1, sorted=True)
    if extra > k:
        straddling = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1)
    else:
        straddling = columns.new_empty(0)
    values, columns = values[:, :k], columns[:, :k]
    if straddling.numel():
        values[straddling], columns[straddling] = _lowest_index_set(scores[straddling], k)
    by_column = columns.argsort(dim=1)
    values, columns = values.gather(1, by_column), columns.gather(1, by_column)
    by_value = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, by_value), columns.gather(1, by_value)


def _lowest_index_set(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest per row, equal values at the cut going to the lowest columns.

    scores: (R, L); returns (values (R, k), columns (R, k)) in ascending column order.
    """
    rows = scores.shape[0]
    kth_value = torch.topk(scores, k, dim=1, sorted=True).values[:, -1:]  # (R, 1)
    greater = scores > kth_value
    equal = scores == kth_value
    # Fewer than k entries are strictly greater than the k-th value; the remaining slots
    # go to the lowest-indexed entries equal to it.
    slots_for_equal = k - torch.count_nonzero(greater, dim=1).unsqueeze(1)  # (R, 1), >= 1
    rank_among_equal = equal.to(torch.int32).cumsum(dim=1, dtype=torch.int32)
    chosen = greater | (equal & (rank_among_equal <= slots_for_equal))
    # nonzero() lists positions in row-major order: per row, columns come out ascending.
    columns = chosen.nonzero()[:, 1].view(rows, k)
    return scores.gather(1, columns), columns


def top_k_examples(
    activations: Tensor, k: int, *, memory_budget_bytes: int = 1 << 28
) -> tuple[Tensor, Tensor]:
    """Per neuron, the k views with the highest activation, best first.

    activations: (V, N) float, activation of neuron n on view v (V views, N neurons).
    k: number of examples (>= 1); when V < k all V views are returned (k' = min(k, V)).
    memory_budget_bytes: working memory per chunk of neurons (about 12 bytes per view per
    neuron are needed).
    Returns (indices LongTensor (N, k'), values (N, k')): view indices into the V axis and
    their activations, best first; ties go to the lower view index.
    """
    if not isinstance(activations, Tensor) or activations.ndim != 2:
        shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations)
        raise ValueError(f"activations must be a 2-D (views, neurons) tensor, got {shape}")
    if not activations.is_floating_point():
        raise ValueError(f"activations must be floating point, got {activations.dtype}")
    n_views, n_neurons = activations.shape
    if n_views == 0:
        raise ValueError("activations has no views (V = 0): there is nothing to rank")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if bool(torch.isnan(activations).any()):
        raise ValueError("activations contain NaN")
    k_kept = min(k, n_views)
    indices = torch.empty((n_neurons, k_kept), dtype=torch.long, device=activations.device)
    values = activations.new_empty((n_neurons, k_kept))
    chunk = rows_per_chunk(12 * n_views, memory_budget_bytes, max(n_neurons, 1))
    for neurons in chunk_slices(n_neurons, chunk):
        per_neuron = activations[:, neurons].T.contiguous()  # (n_c, V)
        values[neurons], indices[neurons] = topk_lowest_index_first(per_neuron, k_kept)
    return indices, values


class ExamplePool:
    """Running top-k views per neuron over a stream of batches (ties go to the earlier view).

    `add(activations (b, N), first_view)` merges a batch whose views are numbered
    first_view .. first_view + b - 1; `values` and `views` then hold the (N, k') best so far,
    best first, with the tie rule of `topk_lowest_index_first` (earlier views come first in
    the merged row, so equal values keep the earlier view).
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.values: Tensor | None = None
        self.views: Tensor | None = None

    def add(self, activations: Tensor, first_view: int) -> None:
        batch = activations.T.contiguous()  # (N, b)
        ids = torch.arange(first_view, first_view + batch.shape[1]).expand(batch.shape[0], -1)
        if self.values is not None:
            batch = torch.cat([self.values, batch], dim=1)
            ids = torch.cat([self.views, ids], dim=1)
        values, cols = topk_lowest_index_first(batch, self.k)
        self.values, self.views = values, ids.gather(1, cols)


def examples_frame(layer: str, kind: str, values: np.ndarray, views: np.ndarray, view_table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the example tables (`neuron_examples`, `crop_examples`) from a pool's (N, k)
    values and view indices into `view_table` (columns image_id, view, box_x0..box_y1)."""
    n, k = views.shape
    picked = view_table.iloc[views.reshape(-1)]
    return pd.DataFrame({
        "layer": layer, "neuron": np.repeat(np.arange(n), k).astype(np.int32), "kind": kind,
        "rank": np.tile(np.arange(1, k + 1), n).astype(np.int32),
        "image_id": picked["image_id"].to_numpy(), "view": picked["view"].to_numpy(),
        "box_x0": picked["box_x0"].to_numpy(), "box_y0": picked["box_y0"].to_numpy(),
        "box_x1": picked["box_x1"].to_numpy(), "box_y1": picked["box_y1"].to_numpy(),
        "activation": values.reshape(-1).astype(np.float32),
    })
