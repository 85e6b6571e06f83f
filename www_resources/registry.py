"""The model registry: one YAML file per target model under `data/models/`, and the concept-set
registry `data/concept_sets.yaml`.

A registry file names everything the pipeline needs to explain one model:

    name: world-cnn                  # the partition key (letters, digits, '.', '_', '-')
    model: checkpoint:artifacts/models/world-cnn.pt   # model spec (see www_resources.zoo)
    architecture: null               # for plain state-dict checkpoints, e.g. torchvision:resnet50
    train: {kind: cnn, width: 32}    # optional: trained on the embedded world by the pipeline
    layers: [layer3, layer4, fc]     # layers whose neurons are explained
    head: fc                         # the linear classifier; its input = penultimate features
    spatial_layer: layer4            # conv map / token sequence feeding the head (Grad-CAM, heatmaps)
    final_layer: fc                  # its neurons are the class logits (judged against class names)
    token_pooling: cls               # ViT layers: cls token or mean of patch tokens
    preprocessing: {size: 224, resize: 256, mean: [...], std: [...]}   # or "world"
    probe_set: world:probe           # where concepts are discovered
    explain_set: world:test          # sample explanations, misprediction detection
    class_set: world:train           # class Shapley matrix
    concept_sets: [world, world-distractors]
    clip: checkpoint:artifacts/models/world-clip.pt    # or openclip:ViT-B-32?pretrained=openai
    class_concepts: {layer: blocks.2, compare_layers: [blocks.1, blocks.2], pairs: all}   # optional

Relative paths inside specs resolve against the data folder. Every error names the file and the
field, and says what to write instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from www_resources import paths
from www_resources.storage import StorageError, check_slug


class RegistryError(ValueError):
    """A registry file is malformed; the message names the file and the field."""


WORLD_PREPROCESSING = "world"

_REQUIRED = ("name", "model", "layers", "head", "spatial_layer", "probe_set", "concept_sets", "clip")
_KNOWN = set(_REQUIRED) | {
    "architecture", "train", "final_layer", "token_pooling", "preprocessing", "explain_set",
    "class_set", "description", "class_concepts",
}


@dataclass(frozen=True)
class ModelEntry:
    """One registered target model."""

    name: str
    model: str
    layers: tuple[str, ...]
    head: str
    spatial_layer: str
    probe_set: str
    concept_sets: tuple[str, ...]
    clip: str
    source_file: Path
    architecture: str | None = None
    train: dict[str, Any] | None = None
    final_layer: str | None = None
    token_pooling: str = "cls"
    preprocessing: Any = WORLD_PREPROCESSING
    explain_set: str | None = None
    class_set: str | None = None
    description: str = ""
    class_concepts: dict[str, Any] = field(default_factory=dict)  # layer, compare_layers, pairs
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_world_model(self) -> bool:
        return self.probe_set.startswith("world:")


def _fail(path: Path, message: str) -> RegistryError:
    return RegistryError(f"{path}: {message}")


def _str_list(path: Path, data: dict, key: str) -> tuple[str, ...]:
    value = data[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, f"'{key}' must be a non-empty list of strings, got {value!r}")
    return tuple(value)


def parse_model_file(path: Path) -> ModelEntry:
    """Read and validate one registry file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "no such registry file") from None
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a YAML mapping of fields (name, model, layers, ...)")
    if missing := [k for k in _REQUIRED if k not in data]:
        raise _fail(path, f"missing required field(s) {missing}; see README 'Adding a model'")
    if unknown := sorted(set(data) - _KNOWN):
        raise _fail(path, f"unknown field(s) {unknown}; known fields: {sorted(_KNOWN)}")
    for key in ("name", "model", "head", "spatial_layer", "probe_set", "clip"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise _fail(path, f"'{key}' must be a non-empty string, got {data[key]!r}")
    try:
        check_slug(data["name"], "model name")
    except StorageError as err:
        raise _fail(path, str(err)) from None
    if path.stem != data["name"]:
        raise _fail(path, f"the file name must be the model name: rename it to {data['name']}.yaml")
    layers = _str_list(path, data, "layers")
    concept_sets = _str_list(path, data, "concept_sets")
    for name in concept_sets:
        try:
            check_slug(name, "concept set")
        except StorageError as err:
            raise _fail(path, str(err)) from None
    pooling = data.get("token_pooling", "cls")
    if pooling not in ("cls", "mean"):
        raise _fail(path, f"'token_pooling' must be 'cls' or 'mean', got {pooling!r}")
    train = data.get("train")
    if train is not None:
        if not isinstance(train, dict) or train.get("kind") not in ("cnn", "vit"):
            raise _fail(path, "'train' must be a mapping with kind: cnn or kind: vit")
        if not data["model"].startswith("checkpoint:"):
            raise _fail(path, "a model with 'train' must have model: checkpoint:<where to save it>")
    class_concepts = data.get("class_concepts") or {}
    if not isinstance(class_concepts, dict) or set(class_concepts) - {"layer", "compare_layers", "pairs"}:
        raise _fail(path, "'class_concepts' must be a mapping with keys among layer, compare_layers, pairs")
    pre = data.get("preprocessing", WORLD_PREPROCESSING)
    if pre != WORLD_PREPROCESSING:
        if not isinstance(pre, dict) or "size" not in pre:
            raise _fail(path, "'preprocessing' must be 'world' or a mapping with at least 'size'")
    return ModelEntry(
        name=data["name"],
        model=data["model"],
        layers=layers,
        head=data["head"],
        spatial_layer=data["spatial_layer"],
        probe_set=data["probe_set"],
        concept_sets=concept_sets,
        clip=data["clip"],
        source_file=path,
        architecture=data.get("architecture"),
        train=train,
        final_layer=data.get("final_layer"),
        token_pooling=pooling,
        preprocessing=pre,
        explain_set=data.get("explain_set"),
        class_set=data.get("class_set"),
        description=data.get("description", ""),
        class_concepts=class_concepts,
        raw=data,
    )


@dataclass(frozen=True)
class RegistryScan:
    """All registry files of a folder: the good entries and the errors of the bad ones."""

    entries: dict[str, ModelEntry]
    errors: dict[Path, str]


def scan_models(folder: Path | None = None) -> RegistryScan:
    """Parse every `*.yaml` under the registry folder; a bad file never hides the good ones."""
    folder = Path(folder or paths.models_dir())
    entries, errors = {}, {}
    for path in sorted(folder.glob("*.y*ml")) if folder.exists() else []:
        try:
            entry = parse_model_file(path)
        except RegistryError as err:
            errors[path] = str(err)
            continue
        entries[entry.name] = entry
    return RegistryScan(entries, errors)


def get_model(name: str, folder: Path | None = None) -> ModelEntry:
    """The entry of one registered model, with a clear error when it is absent or malformed."""
    folder = Path(folder or paths.models_dir())
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise RegistryError(f"model {name!r} is not registered: no {path} (registered: {known})")
    return parse_model_file(path)


def load_concept_sets(path: Path | None = None) -> dict[str, str]:
    """Concept-set name -> spec, from `data/concept_sets.yaml`."""
    path = Path(path or paths.concept_sets_file())
    if not path.exists():
        raise RegistryError(f"{path}: no concept-set registry (a mapping name: spec)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RegistryError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise RegistryError(f"{path}: must map concept-set names to specs, e.g. 'world: world:vocabulary'")
    for name in data:
        try:
            check_slug(str(name), "concept set")
        except StorageError as err:
            raise RegistryError(f"{path}: {err}") from None
    return {str(k): v for k, v in data.items()}


def resolve_data_path(spec_path: str) -> Path:
    """A path written in a registry spec: absolute as is, else relative to the data folder."""
    return paths.resolve(spec_path, base=paths.data_dir())
