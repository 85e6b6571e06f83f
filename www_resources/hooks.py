"""Layer outputs by module name, and their pooling to one number per neuron.

Layers are addressed by the names of `model.named_modules()` (`layer4`, `blocks.11`, `norm`,
`fc`, `head`). Three output layouts are understood:

    conv maps        (B, C, H, W)  -> the neuron's value is the mean over H x W
    token sequences  (B, T, C)     -> the CLS token (index 0), or the mean of the patch tokens
                                      (the tokens after the `num_prefix_tokens` CLS/register tokens)
    vectors          (B, C)        -> as is (pooled features, logits)

A 3-D output is always read as tokens (B, T, C), the layout of ViT blocks; a 4-D one as NCHW.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import nn

TOKEN_POOLINGS = ("cls", "mean")


def _first_tensor(output):
    """A module's output as one tensor: modules returning tuples give their first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"layer output of type {type(output).__name__} holds no tensor")


class LayerRecorder:
    """Context manager that records the outputs of named modules during forward passes.

        with LayerRecorder(model, ["layer4", "fc"]) as recorder:
            logits = model(images)
        recorder.outputs["layer4"]   # (B, 512, 7, 7)

    Each forward pass overwrites `outputs[name]` with that pass's output (a module called twice
    in one pass keeps its last call). Outputs are detached unless `keep_grad=True`, in which case
    they stay in the autograd graph and keep their `.grad` after `backward()` (Grad-CAM).
    Hooks are removed on exit, also when the block raises.
    """

    def __init__(self, model: nn.Module, layer_names: list[str], *, keep_grad: bool = False):
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        modules = dict(model.named_modules())
        self.layer_names = list(dict.fromkeys(layer_names))  # drop repeats, keep order
        for name in self.layer_names:
            if name not in modules:
                close = difflib.get_close_matches(name, [n for n in modules if n], n=6, cutoff=0.5)
                hint = f"; close matches: {close}" if close else ""
                raise KeyError(
                    f"model {type(model).__name__} has no module named {name!r}{hint} "
                    f"(names come from model.named_modules(); top level: {[n for n in modules if n and '.' not in n]})"
                )
        self.modules = {name: modules[name] for name in self.layer_names}
        self.keep_grad = keep_grad
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _hook_for(self, name: str):
        def hook(module, inputs, output):
            tensor = _first_tensor(output)
            if self.keep_grad:
                if tensor.requires_grad:
                    tensor.retain_grad()
                self.outputs[name] = tensor
            else:
                self.outputs[name] = tensor.detach()

        return hook

    def __enter__(self) -> "LayerRecorder":
        self.outputs = {}
        self._handles = [m.register_forward_hook(self._hook_for(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget recorded outputs (frees their memory between batches)."""
        self.outputs = {}


@contextmanager
def captured_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """A list holding `module`'s output (its first tensor) of the latest forward pass in the block,
    still in the autograd graph, for gradients taken with respect to it (Grad-CAM, HINT).

    Unlike `LayerRecorder` it takes the module itself and keeps no names; the hook is removed on
    exit, also when the block raises.
    """
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured[:] = [_first_tensor(output)]

    handle = module.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block (dropout off, batch norm on running statistics, so
    images of a batch are independent), its training flag restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def layer_kind(output: torch.Tensor) -> str:
    """'conv' for (B,C,H,W), 'tokens' for (B,T,C), 'vector' for (B,C); ValueError otherwise."""
    kinds = {4: "conv", 3: "tokens", 2: "vector"}
    if output.ndim not in kinds:
        raise ValueError(f"a layer output of shape {tuple(output.shape)} is neither (B,C,H,W), (B,T,C) nor (B,C)")
    return kinds[output.ndim]


def pool_activation(output: torch.Tensor, *, token_pooling: str = "cls", num_prefix_tokens: int = 1) -> torch.Tensor:
    """One value per (image, neuron): (B, C) from a conv map, a token sequence or a vector.

    conv (B,C,H,W): mean over H and W. tokens (B,T,C): token_pooling='cls' takes token 0,
    'mean' averages tokens num_prefix_tokens..T-1 (the patch tokens). vector (B,C): unchanged.
    """
    if token_pooling not in TOKEN_POOLINGS:
        raise ValueError(f"token_pooling must be one of {TOKEN_POOLINGS}, got {token_pooling!r}")
    kind = layer_kind(output)
    if kind == "conv":
        return output.mean(dim=(2, 3))
    if kind == "vector":
        return output
    tokens = output.shape[1]
    if token_pooling == "cls":
        if num_prefix_tokens < 1:
            raise ValueError("token_pooling='cls' needs a class token, but the model has num_prefix_tokens=0; "
                             "use token_pooling='mean'")
        return output[:, 0]
    if not 0 <= num_prefix_tokens < tokens:
        raise ValueError(f"num_prefix_tokens={num_prefix_tokens} leaves no patch tokens in a sequence of {tokens}")
    return output[:, num_prefix_tokens:].mean(dim=1)


def num_prefix_tokens(model: nn.Module) -> int:
    """How many non-patch tokens (CLS, registers) lead a ViT's token sequence; 0 for CNNs.

    Reads timm's `num_prefix_tokens` attribute on the model or a sub-module; otherwise counts
    a `cls_token` parameter (torchvision's ViT has `class_token`) as one.
    """
    for module in model.modules():
        value = getattr(module, "num_prefix_tokens", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    for module in model.modules():
        for attribute in ("cls_token", "class_token"):
            if isinstance(getattr(module, attribute, None), torch.Tensor):
                return 1
    return 0
