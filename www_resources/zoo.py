"""The model zoo: every target model is named by one string, and `load_model` builds it.

Accepted specs (the part after `?` is a URL-style query of options):

    torchvision:<name>[?weights=<TAG>|DEFAULT|none][&<argument>=<value>...]
        torchvision.models.get_model(name, weights=...). `weights` defaults to DEFAULT (the
        best ImageNet weights torchvision has); `none` gives random initialisation. Other
        options are passed to the constructor, e.g. `torchvision:resnet18?weights=none&num_classes=24`.
    timm:<name>[.<pretrained tag>][?pretrained=true|false][&<argument>=<value>...]
        timm.create_model(name, pretrained=...). `pretrained` defaults to true. Other options
        are passed to timm, e.g. `timm:vit_tiny_patch16_224?pretrained=false&img_size=32`.
    checkpoint:<path to .pt file>[?strict=true|false]
        A file read with torch.load(weights_only=True); relative paths resolve against
        `base_dir` (default: the data folder). Two layouts are understood:
        - the world's classifiers: {"format": "www-classifier-v1", "arch": {...}, "state_dict": ...},
          rebuilt by `www_resources.world.models.build_classifier(**arch)`;
        - a plain state_dict, or {"state_dict": ..., "architecture": "<torchvision:... | timm:...>"}
          (written by `save_checkpoint`); the architecture is a torchvision or timm spec, given
          with `load_model(..., architecture=...)` (which wins) or stored in the file.

Option values are read as Python values: `none`/`null` -> None, `true`/`false` -> bool, then
int, then float, else the string itself.

Nothing downloads at import time. Pretrained weights are first looked up in the local caches
(torchvision: `<torch.hub.get_dir()>/checkpoints/`; timm and open_clip: the Hugging Face cache).
When they are absent, a download is attempted only if downloads are allowed (the default,
unless `WWW_OFFLINE=1` or `HF_HUB_OFFLINE=1`) and the server answers a 3-second connection
probe; otherwise `ModelUnavailableError` says what is missing, where it was looked for, and
the command that fetches it on a machine with internet. This keeps a machine without network
from waiting on the libraries' own retry loops (the Hugging Face client retries for ~45 s).

The spec grammar lives in `model_specs`, the download policy in `offline`; this module holds the
loaders by source and re-exports the names callers use.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from www_resources.model_specs import (  # noqa: F401 - re-exported: callers import the zoo's names from here
    _TRUE,
    ACCEPTED_FORMS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SOURCES,
    WORLD_CLASSIFIER_FORMAT,
    ModelSpec,
    ModelUnavailableError,
    UnknownArchitectureError,
    _bad_spec,
    coerce_option,
    parse_bool_option,
    parse_model_spec,
    split_spec,
)
from www_resources.offline import (  # noqa: F401 - re-exported
    _close_matches_message,
    download_refusal,
    download_timeout_s,
    downloads_allowed,
    hf_cache_dir,
    hf_endpoint,
    host_reachable,
    hub_offline,
    is_cache_miss,
    quiet_library_errors,
    socket_timeout,
    weights_unavailable,
)


def _torchvision_weights(ms: ModelSpec, spec: str):
    """The torchvision weights enum member a spec asks for (None for random init)."""
    import torchvision

    known = torchvision.models.list_models()
    if ms.name not in known:
        raise UnknownArchitectureError(
            f"model spec {spec!r}: "
            + _close_matches_message(
                "torchvision", ms.name, torchvision.models.list_models(module=torchvision.models),
                show_all=True, how_to_list="torchvision.models.list_models()",
            )
        )
    raw = ms.options.get("weights", "DEFAULT")
    if raw.strip().lower() in ("none", "null", "false"):
        return None
    enum = torchvision.models.get_model_weights(ms.name)
    tags = [member for member in enum.__members__]
    if "." in raw:
        try:
            weights = torchvision.models.get_weight(raw)
        except (ValueError, KeyError, AttributeError):
            raise _bad_spec(spec, f"weights {raw!r} are unknown; {ms.name} has {tags} or none") from None
        if type(weights) is not enum:
            raise _bad_spec(spec, f"weights {raw!r} belong to another model; {ms.name} has {tags} or none")
        return weights
    if raw not in enum.__members__:
        raise _bad_spec(spec, f"weights {raw!r} are unknown; {ms.name} has {tags} or none")
    return enum[raw]


def _torchvision_cache_file(weights) -> Path:
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_torchvision(ms: ModelSpec, spec: str, allow_download: bool | None) -> nn.Module:
    import torchvision

    weights = _torchvision_weights(ms, spec)
    kwargs = ms.constructor_kwargs(exclude=("weights",))
    if weights is None:
        return torchvision.models.get_model(ms.name, weights=None, **kwargs)
    cached = _torchvision_cache_file(weights)
    fetch = f"python -c \"import torchvision; torchvision.models.get_model('{ms.name}', weights='{weights.name}')\""
    copy_hint = f"{cached.name} into {cached.parent} here (or point TORCH_HOME at a folder holding hub/checkpoints/{cached.name})."
    if not cached.is_file():
        refusal = download_refusal(allow_download, weights.url)
        if refusal:
            raise weights_unavailable(spec, looked_in=str(cached), reason=refusal, fetch=fetch, copy_hint=copy_hint)
    try:
        with socket_timeout(download_timeout_s()):
            return torchvision.models.get_model(ms.name, weights=weights, **kwargs)
    except Exception as err:
        if is_cache_miss(err) and not cached.is_file():
            raise weights_unavailable(
                spec, looked_in=str(cached), reason=f"download failed: {err}", fetch=fetch, copy_hint=copy_hint
            ) from err
        raise


# -- timm -----------------------------------------------------------------------------------

def _timm_check_name(ms: ModelSpec, spec: str) -> tuple[str, str]:
    """(architecture, tag) of a timm name; UnknownArchitectureError when timm does not know it."""
    import timm
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(ms.name)
    if not timm.is_model(arch):
        raise UnknownArchitectureError(
            f"model spec {spec!r}: "
            + _close_matches_message("timm", arch, timm.list_models(), show_all=False,
                                     how_to_list="python -c \"import timm; print(timm.list_models())\"")
        )
    return arch, tag


def _timm_pretrained_cfg(ms: ModelSpec, spec: str):
    """timm's pretrained config for the name (its default tag when none is given)."""
    import timm
    from timm.models import get_pretrained_cfg

    arch, _ = _timm_check_name(ms, spec)
    try:
        return get_pretrained_cfg(ms.name)
    except RuntimeError:
        tags = timm.list_pretrained(f"{arch}.*")
        raise _bad_spec(spec, f"timm has no pretrained tag {ms.name!r}; known: {tags}") from None


def _load_timm(ms: ModelSpec, spec: str, allow_download: bool | None) -> nn.Module:
    import timm

    arch, _ = _timm_check_name(ms, spec)
    pretrained = parse_bool_option(spec, "pretrained", ms.options.get("pretrained", "true"))
    kwargs = ms.constructor_kwargs(exclude=("pretrained",))
    if not pretrained:
        return timm.create_model(ms.name, pretrained=False, **kwargs)
    cfg = _timm_pretrained_cfg(ms, spec)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ModelUnavailableError(
            f"model spec {spec!r}: timm registers no pretrained weights for {arch!r}; "
            f"use timm:{ms.name}?pretrained=false for random initialisation"
        )
    fetch = f"python -c \"import timm; timm.create_model('{ms.name}', pretrained=True)\""
    if cfg.hf_hub_id:
        looked_in = f"{hf_cache_dir()} (Hugging Face repo {cfg.hf_hub_id})"
        copy_hint = (f"the folder models--{cfg.hf_hub_id.replace('/', '--')} of the Hugging Face cache into "
                     f"{hf_cache_dir()} here (or point HF_HOME at a cache that has it).")
        probe_url = hf_endpoint()
        try:
            with hub_offline(), quiet_library_errors():
                return timm.create_model(ms.name, pretrained=True, **kwargs)
        except Exception as err:
            if not is_cache_miss(err):
                raise
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        looked_in = str(cached)
        copy_hint = f"{cached.name} into {cached.parent} here."
        probe_url = cfg.url
        if cached.is_file():
            return timm.create_model(ms.name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kwargs)
    refusal = download_refusal(allow_download, probe_url)
    if refusal:
        raise weights_unavailable(spec, looked_in=looked_in, reason=refusal, fetch=fetch, copy_hint=copy_hint)
    try:
        with socket_timeout(download_timeout_s()):
            return timm.create_model(ms.name, pretrained=True, **kwargs)
    except Exception as err:
        if is_cache_miss(err):
            raise weights_unavailable(
                spec, looked_in=looked_in, reason=f"download failed: {err}", fetch=fetch, copy_hint=copy_hint
            ) from err
        raise


# -- checkpoints ----------------------------------------------------------------------------

def _checkpoint_base(base_dir: Path | None) -> Path:
    if base_dir is not None:
        return Path(base_dir)
    from www_resources import paths

    return paths.data_dir()


def resolve_checkpoint_path(name: str, base_dir: Path | None) -> Path:
    """A checkpoint path of a spec: absolute as is, else relative to `base_dir` (default: data folder)."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    return (_checkpoint_base(base_dir) / path).resolve()


def read_checkpoint(spec: str | ModelSpec, base_dir: Path | None = None) -> tuple[Path, Any]:
    """(path, content) of a `checkpoint:` spec, read with torch.load(weights_only=True)."""
    ms = parse_model_spec(spec)
    if ms.source != "checkpoint":
        raise ValueError(f"{str(spec)!r} is not a checkpoint: spec")
    path = resolve_checkpoint_path(ms.name, base_dir)
    if not path.is_file():
        relative = not Path(ms.name).expanduser().is_absolute()
        where = f" ({ms.name!r} resolved against {_checkpoint_base(base_dir)})" if relative else ""
        raise ModelUnavailableError(
            f"model spec {str(spec)!r}: checkpoint file {path} does not exist{where}. "
            "Train or copy the model there, or fix the path."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        from www_resources.checkpoint_safety import checkpoint_load_error

        raise ModelUnavailableError(checkpoint_load_error(path, err)) from err
    return path, content


def _plain_state_dict(content: Any, path: Path) -> dict[str, torch.Tensor]:
    state = content.get("state_dict", content) if isinstance(content, dict) else content
    if not isinstance(state, dict) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelUnavailableError(
            f"checkpoint {path} holds neither a state_dict (parameter name -> tensor) nor "
            f"{{'state_dict': ..., 'architecture': ...}} nor the world format {WORLD_CLASSIFIER_FORMAT!r}"
        )
    # Checkpoints saved from nn.DataParallel / DistributedDataParallel prefix every key.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _build_architecture(architecture: str, path: Path) -> nn.Module:
    """A randomly initialised model of a torchvision/timm spec, ready for a state_dict."""
    arch = parse_model_spec(architecture)
    if arch.source == "torchvision":
        import torchvision

        _torchvision_weights(ModelSpec(arch.source, arch.name, {"weights": "none"}), architecture)
        return torchvision.models.get_model(arch.name, weights=None, **arch.constructor_kwargs(exclude=("weights",)))
    if arch.source == "timm":
        import timm

        _timm_check_name(arch, architecture)
        return timm.create_model(arch.name, pretrained=False, **arch.constructor_kwargs(exclude=("pretrained",)))
    raise ValueError(
        f"architecture {architecture!r} for checkpoint {path} must be a torchvision: or timm: spec, "
        "e.g. torchvision:resnet18?num_classes=10"
    )


def _load_checkpoint(ms: ModelSpec, spec: str, architecture: str | None, base_dir: Path | None) -> nn.Module:
    path, content = read_checkpoint(ms, base_dir)
    strict = parse_bool_option(spec, "strict", ms.options.get("strict", "true"))
    if isinstance(content, dict) and "format" in content:
        if content["format"] != WORLD_CLASSIFIER_FORMAT:
            raise ModelUnavailableError(
                f"checkpoint {path} has format {content['format']!r}; this loader knows {WORLD_CLASSIFIER_FORMAT!r} "
                "and plain state_dicts (a CLIP checkpoint loads with www_resources.clip.load_clip)"
            )
        from www_resources.world.models import build_classifier

        model = build_classifier(**content["arch"])
        model.load_state_dict(content["state_dict"], strict=strict)
        return model
    state = _plain_state_dict(content, path)
    stored = content.get("architecture") if isinstance(content, dict) else None
    arch_spec = architecture or stored
    if not arch_spec:
        raise ModelUnavailableError(
            f"checkpoint {path} is a plain state_dict and names no architecture: pass one, "
            "e.g. load_model(spec, architecture='torchvision:resnet18?num_classes=10') or "
            "'architecture:' in the model's registry file"
        )
    model = _build_architecture(arch_spec, path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit architecture {arch_spec!r}: {err}") from None
    return model


def save_checkpoint(model: nn.Module, path: str | Path, *, architecture: str) -> Path:
    """Write `{"architecture": spec, "state_dict": ...}` atomically; `load_model('checkpoint:<path>')` reads it.

    `architecture` is the torchvision/timm spec that rebuilds the module (weights are ignored).
    """
    if parse_model_spec(architecture).source not in ("torchvision", "timm"):
        raise ValueError(f"architecture {architecture!r} must be a torchvision: or timm: spec")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"architecture": architecture, "state_dict": state}, partial)
    partial.replace(path)
    return path


# -- entry points ---------------------------------------------------------------------------

def load_model(spec: str, *, architecture: str | None = None, base_dir: Path | None = None,
               allow_download: bool | None = None) -> nn.Module:
    """Build the model a spec names, on the CPU, in eval mode.

    spec: see the module docstring. architecture: for `checkpoint:` specs holding a plain
    state_dict, a torchvision/timm spec of the network (wins over one stored in the file).
    base_dir: folder that relative checkpoint paths resolve against (default: data folder).
    allow_download: fetch missing pretrained weights (None: yes unless WWW_OFFLINE/HF_HUB_OFFLINE).
    Raises ValueError for a malformed spec, ModelUnavailableError when it cannot be built here.
    """
    ms = parse_model_spec(spec)
    text = str(spec)
    if ms.source == "torchvision":
        model = _load_torchvision(ms, text, allow_download)
    elif ms.source == "timm":
        model = _load_timm(ms, text, allow_download)
    else:
        model = _load_checkpoint(ms, text, architecture, base_dir)
    return model.eval()


def _preprocessing(size: int, resize: int, mean, std, interpolation: str) -> dict[str, Any]:
    return {
        "size": int(size),
        "resize": int(resize),
        "mean": tuple(float(x) for x in mean),
        "std": tuple(float(x) for x in std),
        "interpolation": str(interpolation),
    }


def _imagenet_default() -> dict[str, Any]:
    return _preprocessing(224, 256, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def default_preprocessing(spec: str, *, architecture: str | None = None,
                          base_dir: Path | None = None) -> dict[str, Any]:
    """The input pipeline a model expects: dict(size, resize, mean, std, interpolation).

    size: side of the square input (pixels); resize: shorter side before the centre crop;
    mean/std: per-channel normalisation of [0, 1] RGB; interpolation: 'bilinear' | 'bicubic' | ...
    torchvision: from the weights' transforms; timm: from its pretrained config (resize =
    floor(size / crop_pct)); world checkpoints: their image size, no crop, their mean/std.
    Randomly initialised models get ImageNet's 224/256 and mean/std. Loads no weights.
    """
    ms = parse_model_spec(spec)
    text = str(spec)
    if ms.source == "torchvision":
        weights = _torchvision_weights(ms, text)
        if weights is None:
            return _imagenet_default()
        transform = weights.transforms()
        interpolation = getattr(transform.interpolation, "value", transform.interpolation)
        return _preprocessing(transform.crop_size[0], transform.resize_size[0], transform.mean, transform.std,
                              interpolation)
    if ms.source == "timm":
        import timm.data

        cfg = _timm_pretrained_cfg(ms, text)
        if cfg is None:
            size, crop_pct = 224, timm.data.DEFAULT_CROP_PCT
            mean, std, interpolation = timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD, "bicubic"
        else:
            size, crop_pct = cfg.input_size[-1], cfg.crop_pct or 1.0
            mean, std, interpolation = cfg.mean, cfg.std, cfg.interpolation or "bicubic"
        img_size = ms.option_value("img_size")
        if isinstance(img_size, int):
            size = img_size
        return _preprocessing(size, math.floor(size / crop_pct), mean, std, interpolation)
    path, content = read_checkpoint(ms, base_dir)
    if isinstance(content, dict) and content.get("format") == WORLD_CLASSIFIER_FORMAT:
        arch = content["arch"]
        size = int(arch["image_size"])
        mean = content.get("image_mean") or arch.get("mean")
        std = content.get("image_std") or arch.get("std")
        if mean is None or std is None:
            try:
                from www_resources.world import WORLD_MEAN, WORLD_STD

                mean, std = WORLD_MEAN, WORLD_STD
            except ImportError:
                mean, std = IMAGENET_MEAN, IMAGENET_STD
        return _preprocessing(size, size, mean, std, "bilinear")
    stored = content.get("architecture") if isinstance(content, dict) else None
    arch_spec = architecture or stored
    if not arch_spec:
        return _imagenet_default()
    arch = parse_model_spec(arch_spec)
    if arch.source == "torchvision" and "weights" not in arch.options:
        # A trained-here state_dict: torchvision's default weights say nothing about its input.
        return _imagenet_default()
    return default_preprocessing(arch_spec)
