"""Architectures of the world's models: a small ResNet, a small ViT and a small CLIP.

* ``cnn``: a `torchvision.models.resnet.ResNet` (BasicBlock) whose stem suits small images:
  `conv1` is a 3x3 convolution (stride 2 for images of 64 px and more, else 1) and `maxpool`
  is an identity, so a 64 px input gives 32x32 maps in `layer1` and 4x4 in `layer4`.
  Channels are `width`, 2*width, 4*width, 8*width. Module names are torchvision's: conv1,
  bn1, relu, maxpool, layer1..layer4, avgpool, fc.
* ``vit``: a `timm.models.vision_transformer.VisionTransformer` with a class token and
  ``global_pool="token"`` by default (the head reads the class token, which is what the
  pipeline reads from token outputs by default); ``global_pool="avg"`` is an option.
  Module names are timm's: patch_embed, blocks.N, norm, fc_norm, head.
* CLIP: an `open_clip.model.CLIP` built from a small config dict (`DEFAULT_CLIP_CONFIG`)
  with open_clip's own tokenizer (`SimpleTokenizer`) at a short context length.

All models take images through `to_model_input`: uint8 (N, H, W, 3) -> float (N, 3, H, W),
scaled to [0, 1] and normalised with `WORLD_MEAN` / `WORLD_STD` (the per-channel mean and
standard deviation of the default world's training images), for classifiers and CLIP alike.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

# per-channel statistics of the default world's train split (RGB, on the [0, 1] scale)
WORLD_MEAN = (0.5061, 0.5215, 0.5032)
WORLD_STD = (0.3032, 0.2706, 0.3087)

CLASSIFIER_KINDS = ("cnn", "vit")

DEFAULT_CNN_ARCH: dict[str, Any] = {"width": 32, "blocks": [1, 1, 1, 1], "stem_stride": None}
DEFAULT_VIT_ARCH: dict[str, Any] = {
    "patch_size": 8,
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "global_pool": "token",
    "stem": "conv",
    "stem_width": 64,
}


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, 3) (numpy or torch) -> normalised float32 tensor (N, 3, H, W).

    One preprocessing for the world's classifiers and its CLIP: x / 255, minus WORLD_MEAN,
    divided by WORLD_STD, per channel."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 of shape (N, H, W, 3), got {tuple(tensor.shape)} {tensor.dtype}"
        )
    x = tensor.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(WORLD_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(WORLD_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


# --------------------------------------------------------------------------------------
# classifiers


def resolve_arch(kind: str, num_classes: int, image_size: int, **arch: Any) -> dict[str, Any]:
    """The full architecture dict (defaults filled in) that `build_classifier(**arch)` rebuilds.

    Unknown keys raise ValueError so a typo never silently changes a model."""
    if kind not in CLASSIFIER_KINDS:
        raise ValueError(f"kind must be one of {CLASSIFIER_KINDS}, got {kind!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    defaults = DEFAULT_CNN_ARCH if kind == "cnn" else DEFAULT_VIT_ARCH
    unknown = sorted(set(arch) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {kind} arch keys {unknown}; known: {sorted(defaults)}")
    full = {"kind": kind, "num_classes": num_classes, "image_size": image_size, **copy.deepcopy(defaults), **arch}
    if kind == "cnn":
        full["blocks"] = [int(b) for b in full["blocks"]]
        if len(full["blocks"]) != 4 or min(full["blocks"]) < 1:
            raise ValueError(f"blocks must be 4 ints >= 1, got {full['blocks']!r}")
        if full["stem_stride"] is None:
            full["stem_stride"] = 2 if image_size >= 64 else 1
        if full["stem_stride"] not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {full['stem_stride']!r}")
        full["width"] = int(full["width"])
    else:
        if image_size % full["patch_size"]:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {full['patch_size']}")
        if full["embed_dim"] % full["num_heads"]:
            raise ValueError(f"embed_dim {full['embed_dim']} is not a multiple of num_heads {full['num_heads']}")
        if full["stem"] not in ("conv", "patch"):
            raise ValueError(f"stem must be 'conv' or 'patch', got {full['stem']!r}")
        ps = full["patch_size"]
        if full["stem"] == "conv" and (ps < 2 or ps & (ps - 1)):
            raise ValueError(f"a conv stem needs a power-of-two patch_size, got {ps}")
        if full["global_pool"] not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {full['global_pool']!r}")
        full["mlp_ratio"] = float(full["mlp_ratio"])
    return full


def _small_resnet(num_classes: int, width: int, blocks: list[int], stem_stride: int) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    class SmallImageResNet(ResNet):
        """torchvision's ResNet with a 3x3 stem and no max-pool, channels scaled by `width`."""

        def __init__(self) -> None:
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = width
            self.dilation = 1
            self.groups = 1
            self.base_width = 64
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.Identity()
            self.layer1 = self._make_layer(BasicBlock, width, blocks[0])
            self.layer2 = self._make_layer(BasicBlock, 2 * width, blocks[1], stride=2)
            self.layer3 = self._make_layer(BasicBlock, 4 * width, blocks[2], stride=2)
            self.layer4 = self._make_layer(BasicBlock, 8 * width, blocks[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width, num_classes)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    return SmallImageResNet()


def _conv_stem(width: int, patch_size: int) -> nn.Module:
    """log2(patch_size) stride-2 3x3 conv + BN + ReLU layers, channels doubling up to `width`
    (Xiao et al. 2021, "Early convolutions help transformers see better"): one feature vector per
    patch_size x patch_size patch, which a 1x1 projection turns into the tokens."""
    n = int(np.log2(patch_size))
    widths = [max(8, width >> (n - 1 - i)) for i in range(n)]
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in widths:
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    stem = nn.Sequential(*layers)
    stem.num_features = c_in  # what timm's HybridEmbed reads
    return stem


def build_classifier(kind: str, num_classes: int, image_size: int, **arch: Any) -> nn.Module:
    """A fresh, randomly initialised world classifier (deterministic under torch.manual_seed).

    kind "cnn": arch keys width (int, default 32), blocks (4 ints, default [1, 1, 1, 1]),
    stem_stride (1, 2 or None = 2 for images >= 64 px). kind "vit": patch_size (8),
    embed_dim (128), depth (4), num_heads (4), mlp_ratio (2.0), global_pool ("token").
    The full arch dict is attached as `model.arch`; `build_classifier(**model.arch)` rebuilds
    the same architecture. Input: `to_model_input` output (N, 3, S, S); output: logits (N, C)."""
    full = resolve_arch(kind, num_classes, image_size, **arch)
    if kind == "cnn":
        model = _small_resnet(num_classes, full["width"], full["blocks"], full["stem_stride"])
    else:
        from functools import partial

        from timm.layers import HybridEmbed
        from timm.models.vision_transformer import VisionTransformer

        embed_layer = None
        patch_size = full["patch_size"]
        if full["stem"] == "conv":
            # the same token grid as plain patches, but ViTs with a conv stem train far faster
            grid = image_size // full["patch_size"]
            stem = _conv_stem(full["stem_width"], full["patch_size"])
            embed_layer = partial(HybridEmbed, backbone=stem, feature_size=grid)
            patch_size = 1
        model = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            **({"embed_layer": embed_layer} if embed_layer is not None else {}),
            num_classes=num_classes,
            embed_dim=full["embed_dim"],
            depth=full["depth"],
            num_heads=full["num_heads"],
            mlp_ratio=full["mlp_ratio"],
            global_pool=full["global_pool"],
            class_token=True,
        )
    model.arch = full
    return model


# --------------------------------------------------------------------------------------
# CLIP

DEFAULT_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}


def clip_model_config(image_size: int, **cfg: Any) -> dict[str, Any]:
    """The open_clip model config dict for a world CLIP: `DEFAULT_CLIP_CONFIG` updated by
    `cfg` (vision_cfg / text_cfg are merged key by key), with vision image_size set."""
    full = copy.deepcopy(DEFAULT_CLIP_CONFIG)
    unknown = sorted(set(cfg) - {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale"})
    if unknown:
        raise ValueError(f"unknown CLIP config keys {unknown}")
    for key, value in cfg.items():
        if key in ("vision_cfg", "text_cfg"):
            if value.get("layers") is not None and isinstance(value.get("layers"), (list, tuple)) != isinstance(
                full[key].get("layers"), (list, tuple)
            ):
                full[key] = {}
            full[key].update(copy.deepcopy(value))
        else:
            full[key] = value
    full["vision_cfg"]["image_size"] = int(image_size)
    if isinstance(full["vision_cfg"].get("layers"), tuple):
        full["vision_cfg"]["layers"] = list(full["vision_cfg"]["layers"])
    return full


def clip_from_config(model_config: dict[str, Any]):
    """(model, tokenizer) for an open_clip model config dict (as stored in checkpoints).

    model: `open_clip.model.CLIP(**model_config)`; tokenizer: open_clip's
    `SimpleTokenizer` with the config's text context length."""
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer

    config = copy.deepcopy(model_config)
    vision = config["vision_cfg"]
    if isinstance(vision.get("layers"), list):  # open_clip picks its ResNet tower for a tuple or list
        vision["layers"] = tuple(vision["layers"])
    model = CLIP(**config)
    tokenizer = SimpleTokenizer(context_length=int(config["text_cfg"].get("context_length", 77)))
    return model, tokenizer


def build_world_clip(image_size: int, **cfg: Any):
    """A fresh small open_clip CLIP for world images of `image_size` px and its tokenizer.

    cfg overrides `DEFAULT_CLIP_CONFIG` (embed_dim, vision_cfg, text_cfg). The resolved
    config dict is attached as `model.world_config` (what `save_clip_checkpoint` stores).
    Vision tower: open_clip's ModifiedResNet when vision_cfg.layers is a list of 4 ints, else
    its VisionTransformer. Images go in through `to_model_input`."""
    config = clip_model_config(image_size, **cfg)
    model, tokenizer = clip_from_config(config)
    model.world_config = config
    return model, tokenizer
