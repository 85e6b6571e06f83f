"""Model specs: the strings that name a target model (`torchvision:`, `timm:`, `checkpoint:`),
parsed into `ModelSpec`, with the zoo's errors and constants (see `www_resources.zoo`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

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
