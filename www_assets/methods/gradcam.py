"""Grad-CAM and the Grad-CAM crop of seed 002.

Seed 002 replaces WWW's centre crop by a square crop centred on the Grad-CAM maximum, so
the views that rank images for a neuron (and that CLIP sees) keep the region the model
used for its decision and drop unrelated surroundings.

Grad-CAM (Selvaraju et al., ICCV 2017) at a layer with output A (channels k, positions
(y, x)) for class c:
    weight_k = mean_{y,x} d logit_c / d A_k(y, x)
    cam(y, x) = ReLU(sum_k weight_k A_k(y, x))
then bilinear upsampling to the input size (or a given size, e.g. the frame) and min-max normalisation per image to [0, 1]
(a map without any positive evidence stays all zero). Conv layers give A as (B, C, h, w);
transformer blocks give tokens (B, T, C): the first `num_prefix_tokens` (CLS, registers)
are dropped and the rest reshaped to a square h x h grid.

Geometry (seed 002, one default). WWW resizes the shorter side to 256 and shows the model and
CLIP the central 224 x 224; seed 002 keeps the resize and moves a window of the same size (the
model's input size) onto the Grad-CAM peak. Here:

* the *frame* is the square image at the preprocessing's `resize` side (the shorter side resized
  to `resize`, the central square kept): `gradcam_frame_side(size, resize)`. When a preset has no
  resize margin (`resize == size`, the embedded world's 64-px images) the frame side is
  round(size * 256 / 224), WWW's ratio, so the Grad-CAM view can move exactly as far as it
  would on ImageNet; the plain view of such a preset stays the whole image;
* Grad-CAM runs on the whole frame shown at the model's input size (the one resolution every
  model accepts, fixed-size ViTs included), and the map is upsampled to the frame;
* the window is `size` x `size` pixels of the frame, centred on the map's maximum and shifted
  inside the frame (`gradcam_boxes`), then fed to the model and to CLIP as it is: the window
  is already at the input size, so it is not resampled.

A map without any positive evidence is flat: it has no peak (`cam_peaks` says so) and its
window is the centred one, i.e. WWW's centre crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from www_resources.hooks import captured_output, eval_mode

__all__ = ["WWW_RESIZE_RATIO", "gradcam", "gradcam_boxes", "cam_peaks", "gradcam_frame_side"]

# WWW's preprocessing: shorter side 256, centre crop 224.
WWW_RESIZE_RATIO = 256 / 224

# A map whose max - min is at most this fraction of its max (or exactly zero) is flat.
_FLAT_TOLERANCE = 1e-6


def _as_spatial_map(output: Tensor, num_prefix_tokens: int) -> Tensor:
    """Layer output as (B, C, h, w): conv maps as they are, token sequences reshaped."""
    if output.ndim == 4:
        return output
    if output.ndim == 3:
        tokens = output[:, num_prefix_tokens:, :]
        n_tokens = tokens.shape[1]
        side = math.isqrt(n_tokens)
        if side * side != n_tokens or n_tokens == 0:
            raise ValueError(
                f"layer output has {output.shape[1]} tokens; after dropping {num_prefix_tokens} "
                f"prefix tokens {n_tokens} remain, which is not a square grid"
            )
        return tokens.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)
    raise ValueError(
        f"layer output must be a conv map (B, C, h, w) or tokens (B, T, C), got shape {tuple(output.shape)}"
    )


def _is_flat(maps: Tensor) -> Tensor:
    """(B,) bool: maps (B, H, W) without variation (relative tolerance)."""
    high = maps.amax(dim=(1, 2))
    spread = high - maps.amin(dim=(1, 2))
    return spread <= _FLAT_TOLERANCE * high.abs()


def gradcam(
    model: nn.Module,
    layer: nn.Module,
    inputs: Tensor,
    class_index: Tensor | None = None,
    num_prefix_tokens: int = 0,
    out_size: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM maps of a batch at `layer`, for the predicted class or a given one.

    model: classifier returning logits (B, K); layer: a submodule of `model` whose output
    is (B, C, h, w) or (B, T, C) (a tuple output uses its first element; if the layer runs
    several times, the last call counts); inputs: (B, C_in, H, W) model inputs;
    class_index: optional (B,) integer classes to explain (default: the predicted ones);
    num_prefix_tokens: tokens to drop before reshaping a token output to a square grid;
    out_size: (H', W') to upsample the map to (default: the input's (H, W)), e.g. the frame.
    Returns (cam (B, H', W') float in [0, 1], predicted LongTensor (B,)): `predicted` is the
    model's argmax class whether or not `class_index` was given.

    One forward and one backward pass for the whole batch. The model runs in eval mode
    (batch statistics would couple the images) and its mode is restored afterwards; the
    forward hook is removed even on error; parameter .grad fields are not touched.
    """
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a (B, C, H, W) tensor, got {shape}")
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    batch, _, height, width = inputs.shape
    if out_size is not None:
        height, width = (int(v) for v in out_size)
        if height < 1 or width < 1:
            raise ValueError(f"out_size must be positive, got {out_size}")
    with eval_mode(model), captured_output(layer) as captured, torch.enable_grad():
        # Requiring grad on the input keeps the graph even when all parameters are frozen.
        logits = model(inputs.detach().requires_grad_(True))
        if not captured:
            raise ValueError("the given layer did not run during the model's forward pass")
        if logits.ndim != 2 or logits.shape[0] != batch:
            raise ValueError(f"model must return logits (B, K) with B = {batch}, got {tuple(logits.shape)}")
        predicted = logits.argmax(dim=1)
        if class_index is None:
            target = predicted
        else:
            target = torch.as_tensor(class_index, device=logits.device)
            if target.shape != (batch,) or target.is_floating_point():
                raise ValueError(f"class_index must be an integer tensor of shape ({batch},)")
            if bool(((target < 0) | (target >= logits.shape[1])).any()):
                raise ValueError(f"class_index must lie in [0, {logits.shape[1]})")
            target = target.long()
        # Images are independent in eval mode, so one backward of the summed logits
        # gives every image its own gradient.
        objective = logits.gather(1, target.unsqueeze(1)).sum()
        activation = captured[0]
        (gradient,) = torch.autograd.grad(objective, activation)

    activation = _as_spatial_map(activation.detach(), num_prefix_tokens).float()
    gradient = _as_spatial_map(gradient.detach(), num_prefix_tokens).float()
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    spread = cam.amax(dim=(1, 2), keepdim=True) - low
    normalised = (cam - low) / spread.clamp(min=torch.finfo(cam.dtype).tiny)
    cam = torch.where(_is_flat(cam).view(-1, 1, 1), torch.zeros_like(cam), normalised)
    return cam, predicted.detach()


def gradcam_frame_side(size: int, resize: int) -> int:
    """Side of the square frame the Grad-CAM window is cut from (module doc, Geometry).

    size: the model's input side; resize: the preprocessing's shorter-side resize.
    `resize` when it exceeds `size`; otherwise (no margin) round(size * 256 / 224).
    """
    if size < 1 or resize < size:
        raise ValueError(f"need 1 <= size <= resize, got size {size} and resize {resize}")
    return int(resize) if resize > size else int(math.floor(size * WWW_RESIZE_RATIO + 0.5))


def cam_peaks(cam: Tensor) -> tuple[Tensor, Tensor]:
    """Each map's maximum as (x, y) and whether the map is flat (then it has no peak).

    cam: (B, H, W). Returns (LongTensor (B, 2) of (x, y), the first maximum in row-major
    order; BoolTensor (B,) flat). Callers store no peak for a flat map.
    """
    if not isinstance(cam, Tensor) or cam.ndim != 3:
        shape = tuple(cam.shape) if isinstance(cam, Tensor) else type(cam).__name__
        raise ValueError(f"cam must be a (B, H, W) tensor, got {shape}")
    width = cam.shape[2]
    flat_index = cam.flatten(1).argmax(dim=1)
    peaks = torch.stack([flat_index % width, torch.div(flat_index, width, rounding_mode="floor")], dim=1)
    return peaks.long(), _is_flat(cam)


def gradcam_boxes(cam: Tensor, side: int) -> Tensor:
    """Square boxes of side `side` centred on each map's maximum, shifted inside the image.

    cam: (B, H, W) maps; side: box side in pixels, 1 <= side <= min(H, W).
    Returns LongTensor (B, 4) of (x0, y0, x1, y1), exclusive ends, x1 - x0 = y1 - y0 = side.
    The maximum is the first one in row-major order; the box starts side // 2 pixels
    before it and is then clamped to [0, W - side] x [0, H - side]. A flat map (no
    Grad-CAM evidence, e.g. all zero) gets the centred box, i.e. WWW's centre crop.
    """
    if not isinstance(cam, Tensor) or cam.ndim != 3:
        shape = tuple(cam.shape) if isinstance(cam, Tensor) else type(cam).__name__
        raise ValueError(f"cam must be a (B, H, W) tensor, got {shape}")
    _, height, width = cam.shape
    if not 1 <= side <= min(height, width):
        raise ValueError(f"side must be in [1, {min(height, width)}] for {height}x{width} maps, got {side}")
    flat_index = cam.flatten(1).argmax(dim=1)
    centre_y = torch.div(flat_index, width, rounding_mode="floor")
    centre_x = flat_index % width
    flat = _is_flat(cam)
    centre_y = torch.where(flat, torch.full_like(centre_y, height // 2), centre_y)
    centre_x = torch.where(flat, torch.full_like(centre_x, width // 2), centre_x)
    x0 = (centre_x - side // 2).clamp(0, width - side)
    y0 = (centre_y - side // 2).clamp(0, height - side)
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1).long()
