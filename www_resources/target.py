"""A registered target model, loaded and ready: module, preprocessing, layers, device.

This is the one adapter every model-heavy asset uses: it turns uint8 probe images into model
input, runs batches with layer hooks, and pools layer outputs the way the registry says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from www_resources.registry import WORLD_PREPROCESSING, ModelEntry, check_layers, resolve_data_path


@dataclass(frozen=True)
class Preprocessing:
    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def preprocessing_for(entry: ModelEntry, world_image_size: int | None = None) -> Preprocessing:
    """The input resolution and normalisation of a registered model."""
    pre = entry.preprocessing
    if pre == WORLD_PREPROCESSING:
        from www_resources.world import WORLD_MEAN, WORLD_STD

        if world_image_size is None:
            from www_resources.probes import open_probe_set, world_images_path

            split = open_probe_set(entry.probe_set).options.get("split", "probe")
            world_image_size = int(np.load(world_images_path(split), mmap_mode="r").shape[1])
        return Preprocessing(world_image_size, world_image_size, tuple(WORLD_MEAN), tuple(WORLD_STD))
    size = int(pre["size"])
    if "mean" not in pre or "std" not in pre:
        from www_resources.zoo import default_preprocessing

        defaults = default_preprocessing(entry.model, architecture=entry.architecture, base_dir=resolve_data_path("."))
        pre = {**defaults, **pre}
    return Preprocessing(
        size=size,
        resize=int(pre.get("resize", round(size * 256 / 224))),
        mean=tuple(float(x) for x in pre["mean"]),
        std=tuple(float(x) for x in pre["std"]),
    )


class TargetModel:
    """A loaded target model on a device."""

    def __init__(self, entry: ModelEntry, device, dtype=None, world_image_size: int | None = None):
        import torch

        from www_resources.hooks import num_prefix_tokens
        from www_resources.zoo import load_model

        self.entry = entry
        self.device = device
        self.dtype = dtype or torch.float32
        self.pre = preprocessing_for(entry, world_image_size)
        self.module = load_model(
            entry.model, architecture=entry.architecture, base_dir=resolve_data_path(".")
        ).to(device=device, dtype=self.dtype).eval()
        check_layers(entry, [name for name, _ in self.module.named_modules()])
        self.num_prefix_tokens = num_prefix_tokens(self.module)
        self._mean = torch.tensor(self.pre.mean, device=device, dtype=self.dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(self.pre.std, device=device, dtype=self.dtype).view(1, 3, 1, 1)

    def to_input(self, images) -> "torch.Tensor":  # noqa: F821
        """uint8 (N,H,W,3) numpy or tensor -> normalised float (N,3,H,W) on the device."""
        import torch

        t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        if t.dtype == torch.uint8:
            t = t.permute(0, 3, 1, 2).to(self.device, self.dtype) / 255.0
        else:
            t = t.to(self.device, self.dtype)
        return (t - self._mean) / self._std

    def pool(self, output) -> "torch.Tensor":  # noqa: F821
        from www_resources.hooks import pool_activation

        return pool_activation(
            output, token_pooling=self.entry.token_pooling, num_prefix_tokens=self.num_prefix_tokens
        )

    def run(self, images, layers: list[str], batch_size: int, *, pooled: bool = True,
            progress: Callable[[int, int], None] | None = None) -> Iterator[tuple]:
        """Yield (start, logits, {layer: output}) per batch; outputs pooled to (B, C) unless `pooled=False`."""
        import torch

        from www_resources.hooks import LayerRecorder

        n = len(images)
        with torch.no_grad(), LayerRecorder(self.module, list(layers)) as recorder:
            for start in range(0, n, batch_size):
                batch = self.to_input(images[start:start + batch_size])
                logits = self.module(batch)
                outputs = {
                    name: (self.pool(recorder.outputs[name]) if pooled else recorder.outputs[name]).float().cpu()
                    for name in layers
                }
                yield start, logits.float().cpu(), outputs
                if progress:
                    progress(min(start + batch_size, n), n)
