"""One batch of class-vs-sample explanations (seed 001 §3.3-3.5), as a pure function.

For a batch of images the model predicts classes; the *sample track* ranks the head-input
neurons by the sample's own Taylor contributions w = a * d f_pred / d a, the *class track*
takes the top neurons of the class Shapley matrix row of the predicted class. Each track's
concept heatmap is the weighted sum of its neurons' maps (eq. 4), and the cosine of the two
heatmaps is the uncertainty score.

Neuron maps with a causal path to the prediction. A head-input neuron u is a pooled value
a_u. Its map at a layer with positions p and channels c (output z) is its first-order Taylor
decomposition over the positions, scaled by their number P:

    A_u(p) = P * sum_c z[p, c] * d a_u / d z[p, c]

For a conv layer that the head reads through a spatial mean (a_u = mean_p z[p, u]) this is the
channel's activation map exactly, WWW's NAM. For a ViT whose head reads only the CLS token,
the patch tokens of the final norm have no path to a_u (their map would be a picture of tokens
the model never reads); at the input of the last block's attention (the Grad-CAM layer,
`gradcam_layer` in the registry) A_u(p) is each patch token's share of a_u through that
attention, so the map says where the neuron's value comes from. One rule for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from www_assets.methods.contributions import top_neurons
from www_assets.methods.heatmaps import concept_heatmap, heatmap_similarity, spatial_maps

__all__ = ["BatchExplanation", "explain_batch", "contribution_sign"]


@dataclass(frozen=True)
class BatchExplanation:
    """Everything one batch's explanations need; tensors on the CPU, float32."""

    logits: Tensor  # (B, K)
    contributions: Tensor  # (B, D) sample contributions (absolute when asked)
    class_top: Tensor  # (B, k) neuron ids, class track
    class_weights: Tensor  # (B, k)
    sample_top: Tensor  # (B, k) neuron ids, sample track
    sample_weights: Tensor  # (B, k)
    class_maps: Tensor  # (B, k, H, W) neuron maps of the class track
    sample_maps: Tensor  # (B, k, H, W)
    class_heatmap: Tensor  # (B, H, W)
    sample_heatmap: Tensor  # (B, H, W)
    similarity: Tensor  # (B,) cosine of the two heatmaps

    @property
    def predicted(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def msp(self) -> Tensor:
        """(B,) maximum softmax probability."""
        return torch.softmax(self.logits, dim=1).max(dim=1).values


def contribution_sign(absolute: bool) -> str:
    """The name under which a contribution sign is stored ('absolute' or 'signed')."""
    return "absolute" if absolute else "signed"


def explain_batch(
    model: nn.Module,
    head_name: str,
    map_layer: nn.Module,
    inputs: Tensor,
    class_matrix: Tensor,
    top_k: int = 3,
    absolute: bool = False,
    num_prefix_tokens: int = 0,
) -> BatchExplanation:
    """Class and sample explanations of one batch (module doc).

    model: classifier returning logits (B, K), in eval mode; head_name: its classifier head
    (input = the pooled neurons a, (B, D)); map_layer: a module upstream of the head whose
    output (B, C, h, w) or (B, T, C) gives the neuron maps; inputs: (B, 3, H, W) normalised
    images; class_matrix: (K, D) class Shapley matrix (its sign convention must match
    `absolute`); top_k: neurons per track; absolute: |a * grad| for the sample track, as the
    class matrix was built; num_prefix_tokens: CLS/register tokens before the patch tokens.

    One forward pass, one backward pass for the contributions and 2 * top_k backward passes
    from the head input to the map layer for the maps (each serves the whole batch: sample i's
    neurons depend only on sample i in eval mode). Maps are upsampled (bilinear) to (H, W).
    """
    if torch.is_inference_mode_enabled():
        raise ValueError("explanations need autograd: call outside torch.inference_mode()")
    head = model.get_submodule(head_name)
    captured: dict[str, Tensor] = {}

    def keep_map_layer(_module: nn.Module, _args: object, output: object):
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        # from here on the graph is needed; the surrounding no_grad restores the mode on exit
        torch.set_grad_enabled(True)
        leaf = tensor.detach().requires_grad_(True)
        captured["z"] = leaf
        return (leaf, *output[1:]) if isinstance(output, (tuple, list)) else leaf

    def keep_head_input(_module: nn.Module, args: tuple) -> None:
        if "a" in captured:
            raise ValueError(f"head {head_name!r} ran twice in one forward pass")
        captured["a"] = args[0]

    handles = [map_layer.register_forward_hook(keep_map_layer), head.register_forward_pre_hook(keep_head_input)]
    try:
        with torch.no_grad():
            logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if "z" not in captured or "a" not in captured:
        raise ValueError("the map layer or the head did not run during the forward pass")
    z, a = captured["z"], captured["a"]
    if not a.requires_grad:
        raise ValueError("the head's input does not depend on the map layer: pick a layer upstream of the head")
    if a.ndim != 2:
        raise ValueError(f"the head's input must be pooled features (B, D), got {tuple(a.shape)}")
    if class_matrix.shape[1] != a.shape[1]:
        raise ValueError(f"class_matrix has {class_matrix.shape[1]} neurons, the head reads {a.shape[1]}")

    predicted = logits.detach().argmax(dim=1)
    with torch.enable_grad():
        objective = logits.gather(1, predicted[:, None]).sum()
    (gradient,) = torch.autograd.grad(objective, a, retain_graph=True)
    contributions = (a.detach() * gradient).float()
    if absolute:
        contributions = contributions.abs()
    sample_top, sample_weights = top_neurons(contributions, top_k)
    class_top_all, class_weights_all = top_neurons(class_matrix.to(contributions.device).float(), top_k)
    class_top, class_weights = class_top_all[predicted], class_weights_all[predicted]

    height, width = inputs.shape[-2:]

    def track_maps(neurons: Tensor) -> Tensor:
        maps = []
        for j in range(neurons.shape[1]):
            with torch.enable_grad():
                chosen = a.gather(1, neurons[:, j:j + 1].to(a.device)).sum()
            (dz,) = torch.autograd.grad(chosen, z, retain_graph=True)
            per_position = spatial_maps((dz * z.detach()).float(), num_prefix_tokens if z.ndim == 3 else 0).sum(dim=1)
            maps.append(per_position * per_position[0].numel())  # times P, the number of positions
        stacked = torch.stack(maps, dim=1)  # (B, k, h, w)
        return F.interpolate(stacked, size=(int(height), int(width)), mode="bilinear", align_corners=False)

    class_maps, sample_maps = track_maps(class_top), track_maps(sample_top)
    class_heat = concept_heatmap(class_maps, class_weights)
    sample_heat = concept_heatmap(sample_maps, sample_weights)
    cpu = lambda t: t.detach().float().cpu()
    return BatchExplanation(
        logits=cpu(logits), contributions=cpu(contributions),
        class_top=class_top.cpu(), class_weights=cpu(class_weights),
        sample_top=sample_top.cpu(), sample_weights=cpu(sample_weights),
        class_maps=cpu(class_maps), sample_maps=cpu(sample_maps),
        class_heatmap=cpu(class_heat), sample_heatmap=cpu(sample_heat),
        similarity=cpu(heatmap_similarity(class_heat, sample_heat)),
    )
