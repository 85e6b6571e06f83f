"""Neuron activation maps, concept heatmaps and region masks ("where", seed 001 §3.3).

* NAM ``A_u(x)``: neuron ``u``'s spatial map, upsampled (bilinear) to the input size;
  ``methods/explanation.py`` computes it with a causal path to the prediction.
* Concept heatmap, eq. 4: ``M(x) = sum_u w_u A_u(x)`` over the top-k neurons, with
  the weights normalised (see ``concept_heatmap``).
* Concept region map: each top neuron's NAM thresholded at its own 70th percentile,
  one colour per neuron when drawn.
* Class vs sample explanation: cosine between the flattened class heatmap and the
  sample heatmap (``heatmap_similarity``); a low value flags a likely misprediction.

Conv layers give maps (B, C, h, w); transformer blocks give token sequences
(B, T, C) which ``spatial_maps`` folds back into a square grid of patches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "spatial_maps",
    "normalise_heatmap_weights",
    "concept_heatmap",
    "region_masks",
    "heatmap_similarity",
]


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def spatial_maps(layer_output: Tensor, num_prefix_tokens: int = 0) -> Tensor:
    """A layer's output as channel maps (B, C, h, w).

    Args:
        layer_output: conv output (B, C, h, w), returned unchanged, or a token
            sequence (B, T, C) (timm ViT block output).
        num_prefix_tokens: tokens before the patch tokens to drop (1 for the CLS
            token of a ViT, more with register/distillation tokens). Only for tokens.

    Returns:
        (B, C, h, w); for tokens h = w = sqrt(T - num_prefix_tokens), patch ``p`` at
        row ``p // w`` and column ``p % w`` (row-major, as patch embedding flattens).
    """
    if not isinstance(layer_output, Tensor) or layer_output.ndim not in (3, 4):
        raise ValueError(
            "layer_output must be conv maps (B, C, h, w) or tokens (B, T, C), "
            f"got {_shape(layer_output)}"
        )
    if layer_output.ndim == 4:
        if num_prefix_tokens:
            raise ValueError("num_prefix_tokens only applies to token sequences (B, T, C)")
        return layer_output
    batch, num_tokens, channels = layer_output.shape
    if not 0 <= num_prefix_tokens < num_tokens:
        raise ValueError(
            f"num_prefix_tokens must lie in [0, {num_tokens}) for {num_tokens} tokens, "
            f"got {num_prefix_tokens}"
        )
    patches = layer_output[:, num_prefix_tokens:, :]
    num_patches = num_tokens - num_prefix_tokens
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"{num_patches} patch tokens (T={num_tokens} minus {num_prefix_tokens} prefix "
            "tokens) do not form a square grid; check num_prefix_tokens"
        )
    return patches.reshape(batch, side, side, channels).permute(0, 3, 1, 2)


def normalise_heatmap_weights(weights: Tensor) -> Tensor:
    """Weights (B, k) scaled so that their absolute values sum to 1 per sample.

    For non-negative weights (always the case with absolute contributions, and in
    practice for the top-k of signed ones) this is the paper's normalisation to sum 1.
    With mixed signs and a positive sum it is a positive multiple of ``w / sum(w)``,
    so the heatmap's shape and any cosine similarity are the same; it never divides
    by a sum near 0 and never flips the map's sign when ``sum(w) <= 0``. All-zero
    weights become uniform ``1 / k``.
    """
    total = weights.abs().sum(dim=-1, keepdim=True)
    uniform = torch.full_like(weights, 1.0 / weights.shape[-1])
    return torch.where(total > 0, weights / total.clamp(min=torch.finfo(weights.dtype).tiny), uniform)


def concept_heatmap(nams: Tensor, weights: Tensor) -> Tensor:
    """Concept heatmap, eq. 4: ``M = sum_u w_u A_u`` with normalised weights.

    Args:
        nams: (B, k, H, W) neuron activation maps of the top-k neurons.
        weights: (B, k) their contributions (or (k,) shared by all samples).
            Normalised by ``normalise_heatmap_weights``: divided by the sum of their
            absolute values (= sum to 1 when non-negative); all zero -> uniform.

    Returns:
        (B, H, W) heatmap in activation units.
    """
    if not isinstance(nams, Tensor) or nams.ndim != 4:
        raise ValueError(f"nams must be (B, k, H, W), got {_shape(nams)}")
    weights = torch.as_tensor(weights, device=nams.device)
    if weights.ndim == 1:
        weights = weights.expand(nams.shape[0], -1)
    if weights.shape != nams.shape[:2]:
        raise ValueError(f"weights must be (B, k) = {tuple(nams.shape[:2])}, got {tuple(weights.shape)}")
    if not nams.is_floating_point():
        nams = nams.float()
    weights = weights.to(nams.dtype)
    if not torch.isfinite(weights).all():
        raise ValueError("weights contain NaN or infinite values")
    normalised = normalise_heatmap_weights(weights)
    return torch.einsum("bk,bkhw->bhw", normalised, nams)


def region_masks(nams: Tensor, percentile: float = 70.0) -> Tensor:
    """Concept regions: each map above its own percentile.

    Args:
        nams: (B, k, H, W) neuron activation maps.
        percentile: in [0, 100]; a pixel is kept when its value is strictly above
            the map's percentile (linear interpolation between pixels). At 70 a map
            with distinct values keeps its top 30% of pixels; a constant map keeps
            none, and ties at the threshold are dropped.

    Returns:
        (B, k, H, W) bool masks.
    """
    if not isinstance(nams, Tensor) or nams.ndim != 4:
        raise ValueError(f"nams must be (B, k, H, W), got {_shape(nams)}")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    flat = nams.flatten(2)
    if not flat.is_floating_point():
        flat = flat.float()
    # Linear-interpolation percentile from a sort (torch.quantile caps its input at 2**24 values).
    ordered = flat.sort(dim=-1).values
    position = (percentile / 100.0) * (flat.shape[-1] - 1)
    lower = int(math.floor(position))
    upper = min(lower + 1, flat.shape[-1] - 1)
    fraction = position - lower
    below, above = ordered[..., lower : lower + 1], ordered[..., upper : upper + 1]
    thresholds = below + (above - below) * fraction  # exact when below == above
    return (flat > thresholds).reshape(nams.shape)


def heatmap_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of two batches of heatmaps, flattened.

    Args:
        a, b: (B, H, W) heatmaps (e.g. class and sample heatmaps of the same image).

    Returns:
        (B,) cosines in [-1, 1] in the inputs' float dtype (float32 for integer
        inputs), computed in float64 (float32 on mps). Identical non-zero maps give 1. If either map is all zero the
        cosine is undefined and is returned as 0 (no agreement evidence).
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"a and b must be (B, H, W) of equal shape, got {_shape(a)} and {_shape(b)}")
    out_dtype = a.dtype if a.is_floating_point() else torch.float32
    work_dtype = torch.float32 if a.device.type == "mps" else torch.float64  # mps has no float64
    flat_a = a.flatten(1).to(work_dtype)
    flat_b = b.flatten(1).to(work_dtype)
    denominator = flat_a.norm(dim=1) * flat_b.norm(dim=1)
    dot = (flat_a * flat_b).sum(dim=1)
    tiny = torch.finfo(work_dtype).tiny
    cosine = torch.where(denominator > 0, dot / denominator.clamp(min=tiny), torch.zeros_like(dot))
    return cosine.clamp(-1.0, 1.0).to(out_dtype)
