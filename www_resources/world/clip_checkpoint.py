"""Checkpoint files of the world's models (loadable with ``torch.load(weights_only=True)``).

CLIP (format ``www-openclip-v1``)::

    {"format": "www-openclip-v1",
     "model_config": {...},        # open_clip model config: embed_dim, vision_cfg, text_cfg
     "state_dict": {...},          # model.state_dict()
     "image_mean": [r, g, b], "image_std": [r, g, b],   # preprocessing on the [0, 1] scale
     "image_size": int, "context_length": int}

The model is rebuilt with ``open_clip.model.CLIP(**model_config)`` (a list in
``vision_cfg.layers`` means open_clip's ModifiedResNet tower) and the tokenizer is
``open_clip.tokenizer.SimpleTokenizer(context_length=context_length)``.

Classifier (format ``www-classifier-v1``)::

    {"format": "www-classifier-v1", "arch": {"kind", "num_classes", "image_size", ...},
     "state_dict": {...}, "mean": [r, g, b], "std": [r, g, b]}

rebuilt with ``build_classifier(**arch)``.

Files are written to a temporary name in the same folder and renamed, so a reader never
sees a half-written checkpoint.
"""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import WORLD_MEAN, WORLD_STD, build_classifier, clip_from_config

CLIP_FORMAT = "www-openclip-v1"
CLASSIFIER_FORMAT = "www-classifier-v1"


def _atomic_save(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _plain(value: Any) -> Any:
    """Config values as primitives only (tuples -> lists), as weights_only loading requires."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"config value {value!r} of type {type(value).__name__} is not a primitive")


def _load(path: str | Path, expected_format: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        from www_resources.checkpoint_safety import checkpoint_load_error

        raise ValueError(checkpoint_load_error(path, err)) from err
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if found != expected_format:
        raise ValueError(f"{path} is not a {expected_format} checkpoint (format: {found!r})")
    return checkpoint


def save_clip_checkpoint(model: nn.Module, model_config: dict[str, Any], path: str | Path) -> Path:
    """Write a world CLIP to `path` in the www-openclip-v1 format; returns the path.

    model_config: the open_clip config dict the model was built from (`model.world_config`)."""
    config = _plain(copy.deepcopy(model_config))
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise ValueError(f"model_config lacks {key!r}")
    checkpoint = {
        "format": CLIP_FORMAT,
        "model_config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "image_mean": list(WORLD_MEAN),
        "image_std": list(WORLD_STD),
        "image_size": int(config["vision_cfg"]["image_size"]),
        "context_length": int(config["text_cfg"].get("context_length", 77)),
    }
    return _atomic_save(checkpoint, path)


def load_clip_checkpoint(path: str | Path):
    """(model in eval mode, tokenizer) from a www-openclip-v1 file."""
    checkpoint = _load(path, CLIP_FORMAT)
    config = copy.deepcopy(checkpoint["model_config"])
    config.setdefault("text_cfg", {})["context_length"] = int(checkpoint["context_length"])
    model, tokenizer = clip_from_config(config)
    model.load_state_dict(checkpoint["state_dict"])
    model.world_config = checkpoint["model_config"]
    return model.eval(), tokenizer


def save_classifier(model: nn.Module, arch: dict[str, Any], path: str | Path) -> Path:
    """Write a world classifier to `path` in the www-classifier-v1 format; returns the path.

    arch: the full architecture dict (`model.arch`); must contain kind, num_classes, image_size."""
    arch = _plain(dict(arch))
    for key in ("kind", "num_classes", "image_size"):
        if key not in arch:
            raise ValueError(f"arch lacks {key!r}")
    checkpoint = {
        "format": CLASSIFIER_FORMAT,
        "arch": arch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "mean": list(WORLD_MEAN),
        "std": list(WORLD_STD),
    }
    return _atomic_save(checkpoint, path)


def load_classifier(path: str | Path) -> nn.Module:
    """A world classifier in eval mode from a www-classifier-v1 file (`model.arch` set)."""
    checkpoint = _load(path, CLASSIFIER_FORMAT)
    model = build_classifier(**checkpoint["arch"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
