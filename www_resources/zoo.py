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
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import torch
from torch import nn

SOURCES = ("torchvision", "timm", "checkpoint")

ACCEPTED_FORMS = (
    "  torchvision:<name>[?weights=<TAG>|DEFAULT|none][&<argument>=<value>...]  "
    "e.g. torchvision:resnet50?weights=IMAGENET1K_V2, torchvision:resnet18?weights=none&num_classes=24\n"
    "  timm:<name>[.<tag>][?pretrained=true|false][&<argument>=<value>...]      "
    "e.g. timm:vit_base_patch16_224.augreg_in21k_ft_in1k\n"
    "  checkpoint:<path.pt>[?strict=true|false]                                 "
    "e.g. checkpoint:artifacts/models/world-cnn.pt (a plain state_dict needs architecture=...)"
)

WORLD_CLASSIFIER_FORMAT = "www-classifier-v1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Seconds a connection probe waits before a server counts as unreachable.
PROBE_TIMEOUT_S = 3.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class ModelUnavailableError(RuntimeError):
    """A model cannot be built here: weights not cached, file missing, architecture unknown.

    The message names what is missing, where it was looked for, and what to run to get it.
    """


class UnknownArchitectureError(ModelUnavailableError, ValueError):
    """The architecture name is not known to the library; the message lists known names."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: `source:name?key=value&...`.

    `options` keeps the raw strings; `option_value` converts one to a Python value.
    """

    source: str
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        query = f"?{urlencode(self.options, safe=':/,')}" if self.options else ""
        return f"{self.source}:{self.name}{query}"

    def option_value(self, key: str, default: Any = None) -> Any:
        """The option converted by `coerce_option`, or `default` when absent."""
        return coerce_option(self.options[key]) if key in self.options else default

    def constructor_kwargs(self, exclude: tuple[str, ...]) -> dict[str, Any]:
        """Options other than `exclude`, converted to Python values, for the model constructor."""
        return {k: coerce_option(v) for k, v in self.options.items() if k not in exclude}


def coerce_option(value: str) -> Any:
    """`none`/`null` -> None, `true`/`false` -> bool, then int, float, else the string."""
    lowered = value.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _bad_spec(spec: Any, problem: str) -> ValueError:
    return ValueError(f"model spec {spec!r}: {problem}. Accepted forms:\n{ACCEPTED_FORMS}")


def parse_bool_option(spec: Any, key: str, value: str) -> bool:
    """A boolean option (`true|false|1|0|yes|no`); ValueError naming the spec otherwise."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _bad_spec(spec, f"option {key}={value!r} must be true or false")


def split_spec(spec: Any, *, sources: tuple[str, ...], error) -> ModelSpec:
    """`source:name?key=value&...` -> ModelSpec, with `error(spec, problem)` building the exception.

    The source must be one of `sources`; the name is everything between the first ':' and the
    first '?'. Repeated or empty options are errors. Shared by model and CLIP specs.
    """
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise error(spec, "a spec must be a non-empty string")
    source, colon, rest = spec.strip().partition(":")
    source = source.strip().lower()
    if not colon or source not in sources:
        raise error(spec, f"it must start with one of {', '.join(s + ':' for s in sources)}")
    name, _, query = rest.partition("?")
    name = name.strip()
    if not name:
        raise error(spec, f"nothing follows '{source}:'")
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise error(spec, f"options {query!r} are not key=value pairs joined by '&'") from None
        for key, value in pairs:
            if key in options:
                raise error(spec, f"option {key!r} is given twice")
            if not key or not value:
                raise error(spec, f"option {key!r} has no value")
            options[key] = value
    return ModelSpec(source, name, options)


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """Split `source:name?key=value&...` into a ModelSpec; ValueError listing the accepted forms.

    The source is one of `torchvision`, `timm`, `checkpoint`; the name is everything between
    the first ':' and the first '?'. Repeated or empty options are errors.
    """
    parsed = split_spec(spec, sources=SOURCES, error=_bad_spec)
    if parsed.source != "checkpoint" and not set(parsed.name) <= _NAME_CHARS:
        raise _bad_spec(spec, f"{parsed.name!r} is not a model name (letters, digits, '_', '.', '-')")
    options = parsed.options
    if parsed.source == "timm" and "pretrained" in options:
        parse_bool_option(spec, "pretrained", options["pretrained"])
    if parsed.source == "checkpoint":
        if unknown := sorted(set(options) - {"strict"}):
            raise _bad_spec(spec, f"checkpoint specs take only the option 'strict', not {unknown}")
        if "strict" in options:
            parse_bool_option(spec, "strict", options["strict"])
    return parsed


# -- downloads and caches -----------------------------------------------------------------

def downloads_allowed(allow_download: bool | None = None) -> bool:
    """Whether a missing weight file may be fetched: the argument, else not when
    `WWW_OFFLINE` or `HF_HUB_OFFLINE` is set to a true value, else yes."""
    if allow_download is not None:
        return bool(allow_download)
    for variable in ("WWW_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return False
    return True


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the URL's host opens within `timeout` seconds.

    With an HTTP(S) proxy configured the probe cannot tell, so it answers True.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    parts = urlparse(url)
    if not parts.hostname:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets opened without a timeout (urllib downloads) this one, for the block."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_timeout_s() -> float:
    """Socket timeout (seconds) for weight downloads: `$WWW_DOWNLOAD_TIMEOUT`, default 60."""
    return float(os.environ.get("WWW_DOWNLOAD_TIMEOUT", "60"))


@contextlib.contextmanager
def quiet_library_errors() -> Iterator[None]:
    """Silence library log records up to ERROR for the block (open_clip logs a cache miss as an
    error before raising; the exception we raise instead says it better)."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face Hub in offline mode for the block: files come from the local cache only.

    The hub client reads `HF_HUB_OFFLINE` once at import, so the module constant is switched
    as well as the environment variable; both are restored afterwards.
    """
    import huggingface_hub.constants as hub_constants

    previous_env = os.environ.get("HF_HUB_OFFLINE")
    previous_constant = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous_constant
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder the hub client uses now."""
    import huggingface_hub.constants as hub_constants

    return Path(hub_constants.HF_HUB_CACHE)


def hf_endpoint() -> str:
    """The Hugging Face hub address the client talks to (`HF_ENDPOINT` or huggingface.co)."""
    import huggingface_hub.constants as hub_constants

    return getattr(hub_constants, "ENDPOINT", None) or "https://huggingface.co"


_CACHE_MISS_NAMES = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "URLError", "EntryNotFoundError"}


def is_cache_miss(error: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means "file not cached / no network"."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _CACHE_MISS_NAMES or isinstance(
            current, (ConnectionError, TimeoutError, socket.timeout, FileNotFoundError)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def weights_unavailable(spec: str, *, looked_in: str, reason: str, fetch: str, copy_hint: str,
                        what: str = "pretrained weights for") -> ModelUnavailableError:
    """The error for weights that are neither cached nor downloadable here: names the spec,
    where it looked, why, the command that fetches them with internet, and where to put them."""
    return ModelUnavailableError(
        f"{what} {spec!r}: not available on this machine.\n"
        f"  looked in: {looked_in}\n"
        f"  reason: {reason}\n"
        f"  to fetch them, run on a machine with internet:\n"
        f"    {fetch}\n"
        f"  then copy {copy_hint}"
    )


def download_refusal(allow_download: bool | None, url: str) -> str | None:
    """Why a download must not be tried (None when it may be)."""
    if not downloads_allowed(allow_download):
        return "not in the local cache, and downloads are off (WWW_OFFLINE / HF_HUB_OFFLINE or allow_download=False)"
    if not host_reachable(url):
        return f"not in the local cache, and {urlparse(url).hostname} cannot be reached (no internet?)"
    return None


def _close_matches_message(kind: str, name: str, known: list[str], *, show_all: bool, how_to_list: str) -> str:
    close = difflib.get_close_matches(name, known, n=8, cutoff=0.6)
    message = f"unknown {kind} architecture {name!r}."
    if close:
        message += f" Close matches: {close}."
    if show_all:
        message += f" Known architectures: {sorted(known)}."
    else:
        message += f" {len(known)} architectures are known; list them with {how_to_list}."
    return message


# -- torchvision ----------------------------------------------------------------------------

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
