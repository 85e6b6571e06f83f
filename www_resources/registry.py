"""The model registry: one YAML file per target model under `data/models/`, and the concept-set
registry `data/concept_sets.yaml`.

A registry file names everything the pipeline needs to explain one model:

    name: world-cnn                  # the partition key (letters, digits, '.', '_', '-')
    model: checkpoint:artifacts/models/world-cnn.pt   # model spec (see www_resources.zoo)
    architecture: null               # for plain state-dict checkpoints, e.g. torchvision:resnet50
    train: {kind: cnn, width: 32}    # optional: trained on the embedded world by the pipeline
    layers: [layer3, layer4, fc]     # layers whose neurons are explained
    head: fc                         # the linear classifier; its input = penultimate features
    spatial_layer: layer4            # conv map / token sequence feeding the head
    gradcam_layer: layer4            # optional: where Grad-CAM and neuron maps are read (default:
                                     # spatial_layer); a CLS-pooled ViT needs a layer whose patch
                                     # tokens reach the head, e.g. blocks.11.norm1
    final_layer: fc                  # its neurons are the class logits (judged against class names)
    token_pooling: cls               # ViT layers: cls token or mean of patch tokens
    preprocessing: {size: 224, resize: 256, mean: [...], std: [...]}   # or "world"
    probe_set: world:probe           # where concepts are discovered
    explain_set: world:test          # sample explanations, misprediction detection
    class_set: world:train           # class Shapley matrix
    concept_sets: [world, world-distractors]
    clip: checkpoint:artifacts/models/world-clip.pt    # or openclip:ViT-B-32?pretrained=openai
    class_concepts: {layer: blocks.2, compare_layers: [blocks.1, blocks.2], pairs: all}   # optional

Relative paths inside specs resolve against the data folder. A pydantic schema (`ModelFile`)
checks every file strictly: unknown fields (a typo such as `layer:`), wrong types, names that are
not slugs, concept sets missing from `concept_sets.yaml`, probe sets whose folder or manifest does
not exist, two files claiming one name. Every error names the file and the field, and says what
to write instead; a bad file never hides the good ones. Layer names are checked against the
loaded model (`check_layers`), the first time a run loads it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from www_resources import paths
from www_resources.storage import StorageError, check_slug


class RegistryError(ValueError):
    """A registry file is malformed; the message names the file and the field."""


WORLD_PREPROCESSING = "world"

# -- the schema of a registry file (pydantic: unknown fields and wrong types are errors) ----------

NonEmpty = Annotated[str, Field(min_length=1)]


def _slug(value: str, what: str) -> str:
    try:
        return check_slug(value, what)
    except StorageError as err:
        raise ValueError(str(err)) from None


class PreprocessingFields(BaseModel):
    """`preprocessing:` as a mapping; missing mean/std come from the model's weights."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(gt=0)
    resize: int | None = Field(default=None, gt=0)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None


class ClassConceptFields(BaseModel):
    """`class_concepts:` (all optional): the explained layer, the layers of the baseline comparison,
    and the class pairs to contrast ('default', 'all' or a list of [A, B] class names)."""

    model_config = ConfigDict(extra="forbid")
    layer: str | None = None
    compare_layers: list[NonEmpty] | None = None
    pairs: Literal["default", "all"] | list[tuple[NonEmpty, NonEmpty]] | None = None


class ModelFile(BaseModel):
    """The fields of `data/models/<name>.yaml` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: NonEmpty
    model: NonEmpty
    layers: list[NonEmpty] = Field(min_length=1)
    head: NonEmpty
    spatial_layer: NonEmpty
    probe_set: NonEmpty
    concept_sets: list[NonEmpty] = Field(min_length=1)
    clip: NonEmpty
    architecture: str | None = None
    train: dict[str, Any] | None = None
    final_layer: str | None = None
    gradcam_layer: str | None = None
    token_pooling: Literal["cls", "mean"] = "cls"
    preprocessing: Literal["world"] | PreprocessingFields = WORLD_PREPROCESSING
    explain_set: str | None = None
    class_set: str | None = None
    description: str = ""
    class_concepts: ClassConceptFields | None = None

    @field_validator("layers", "concept_sets", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, value: str) -> str:
        return _slug(value, "model name")

    @field_validator("concept_sets")
    @classmethod
    def _known_concept_sets(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for name in value:
            _slug(name, "concept set")
        known = (info.context or {}).get("concept_sets")
        if known is not None and (unknown := [n for n in value if n not in known]):
            raise ValueError(
                f"concept set(s) {unknown} not defined in concept_sets.yaml (defined: {sorted(known)})"
            )
        return value

    @field_validator("probe_set", "explain_set", "class_set")
    @classmethod
    def _probe_set_exists(cls, value: str | None) -> str | None:
        if value is not None:
            from www_resources.probes import ProbeSetError, open_probe_set

            try:
                open_probe_set(value)
            except ProbeSetError as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("train")
    @classmethod
    def _train_kind(cls, value: dict | None, info: ValidationInfo) -> dict | None:
        if value is None:
            return value
        if value.get("kind") not in ("cnn", "vit"):
            raise ValueError(f"must be a mapping with kind: cnn or kind: vit, got kind {value.get('kind')!r}")
        if not str(info.data.get("model", "checkpoint:")).startswith("checkpoint:"):
            raise ValueError("a model with 'train' must have model: checkpoint:<where to save it>")
        return value


MODEL_FIELDS = tuple(ModelFile.model_fields)
_REQUIRED = tuple(name for name, f in ModelFile.model_fields.items() if f.is_required())


def _field_message(error: dict) -> str:
    """One pydantic error as "field 'x': what is wrong"."""
    where = ".".join(str(p) for p in error["loc"] if str(p) != "PreprocessingFields" and not str(p).startswith("literal["))
    kind = error["type"]
    if kind == "extra_forbidden":
        known = MODEL_FIELDS if len(error["loc"]) == 1 else tuple(PreprocessingFields.model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(known)}"
        return f"field '{where}': unknown field ({hint})"
    if kind == "missing":
        return f"field '{where}': missing required field; see README 'Adding a model'"
    message = error["msg"].removeprefix("Value error, ")
    shown = error.get("input")
    return f"field '{where}': {message}" + (
        "" if kind in ("value_error", "assertion_error") else f" (got {shown!r})"
    )


def _validation_message(path: Path, err: ValidationError) -> str:
    parts = []
    # unknown fields first: a typo explains the "missing" error of the field it meant
    for error in sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        if error["loc"][:1] == ("preprocessing",) and error["type"] in ("literal_error", "model_type"):
            # the union 'world' | mapping reports both branches: a mapping's own errors say enough
            if not isinstance(error.get("input"), dict) and error["type"] == "literal_error":
                parts.append(f"field 'preprocessing': must be 'world' or a mapping with at least 'size' "
                             f"(got {error.get('input')!r})")
            continue
        parts.append(_field_message(error))
    return f"{path}: " + "; ".join(parts)


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
    gradcam_layer: str | None = None
    token_pooling: str = "cls"
    preprocessing: Any = WORLD_PREPROCESSING
    explain_set: str | None = None
    class_set: str | None = None
    description: str = ""
    class_concepts: dict[str, Any] = field(default_factory=dict)  # layer, compare_layers, pairs
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cam_layer(self) -> str:
        """The layer of Grad-CAM and of the neuron maps: `gradcam_layer`, else `spatial_layer`."""
        return self.gradcam_layer or self.spatial_layer

    @property
    def is_world_model(self) -> bool:
        return self.probe_set.startswith("world:")

    def layer_fields(self) -> dict[str, str]:
        """Every field that names a module of the model: field -> module name."""
        named = {f"layers[{i}]": layer for i, layer in enumerate(self.layers)}
        for key in ("head", "spatial_layer", "final_layer", "gradcam_layer"):
            if getattr(self, key):
                named[key] = getattr(self, key)
        return named


def _fail(path: Path, message: str) -> RegistryError:
    return RegistryError(f"{path}: {message}")


def _known_concept_sets(concept_sets: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """The concept sets to check names against: the given ones, else concept_sets.yaml when it
    exists and parses (its own errors are reported where it is read)."""
    if concept_sets is not None:
        return concept_sets
    file = paths.concept_sets_file()
    if not file.exists():
        return None
    try:
        return load_concept_sets(file)
    except RegistryError:
        return None


def parse_model_file(path: Path, concept_sets: Mapping[str, str] | None = None) -> ModelEntry:
    """Read and validate one registry file against the schema (`ModelFile`).

    concept_sets: the defined concept sets (default: concept_sets.yaml, when it exists). The
    layer names are checked later, against the loaded model (`check_layers`).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "no such registry file") from None
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a YAML mapping of fields (name, model, layers, ...)")
    known = _known_concept_sets(concept_sets)
    try:
        parsed = ModelFile.model_validate(data, context={"concept_sets": known})
    except ValidationError as err:
        raise RegistryError(_validation_message(path, err)) from None
    if path.stem != parsed.name:
        raise _fail(path, f"field 'name': the file name must be the model name: rename it to {parsed.name}.yaml")
    pre = parsed.preprocessing
    return ModelEntry(
        name=parsed.name,
        model=parsed.model,
        layers=tuple(parsed.layers),
        head=parsed.head,
        spatial_layer=parsed.spatial_layer,
        probe_set=parsed.probe_set,
        concept_sets=tuple(parsed.concept_sets),
        clip=parsed.clip,
        source_file=path,
        architecture=parsed.architecture,
        train=parsed.train,
        final_layer=parsed.final_layer,
        gradcam_layer=parsed.gradcam_layer,
        token_pooling=parsed.token_pooling,
        preprocessing=pre if isinstance(pre, str) else pre.model_dump(exclude_none=True),
        explain_set=parsed.explain_set,
        class_set=parsed.class_set,
        description=parsed.description,
        class_concepts=parsed.class_concepts.model_dump(exclude_none=True) if parsed.class_concepts else {},
        raw=data,
    )


def check_layers(entry: ModelEntry, module_names: list[str]) -> None:
    """Every layer the file names exists in the loaded model, else one RegistryError naming the
    file, the field(s) and the layers the model has.

    This runs where the model is loaded (TargetModel), not when the registry is scanned: the
    scan runs every 30 s in the sensor and must stay cheap, and a world model has no weights to
    look at before it is trained."""
    names = [n for n in module_names if n]
    available = set(names)
    bad = {key: layer for key, layer in entry.layer_fields().items() if layer not in available}
    if not bad:
        return
    problems = []
    for key, layer in bad.items():
        close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
        problems.append(f"field '{key}': the model has no layer {layer!r}"
                        + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    top = [n for n in names if "." not in n]
    nested = [n for n in names if "." in n]
    listing = ", ".join(names) if len(names) <= 60 else (
        f"{', '.join(top)} and {len(nested)} nested ones such as {nested[len(nested) // 2]!r}"
    )
    raise _fail(entry.source_file, "; ".join(problems) + f". The model {entry.model!r} has: {listing}")


@dataclass(frozen=True)
class RegistryScan:
    """All registry files of a folder: the good entries and the errors of the bad ones."""

    entries: dict[str, ModelEntry]
    errors: dict[Path, str]


def _registry_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in (".yaml", ".yml")) if folder.exists() else []


def scan_models(folder: Path | None = None, concept_sets: Mapping[str, str] | None = None) -> RegistryScan:
    """Parse every `*.yaml` / `*.yml` under the registry folder; a bad file never hides the good
    ones. Two files claiming one name are both refused (neither is the obvious one to keep)."""
    folder = Path(folder or paths.models_dir())
    known = _known_concept_sets(concept_sets)
    entries: dict[str, ModelEntry] = {}
    errors: dict[Path, str] = {}
    claims: dict[str, list[Path]] = {}
    for path in _registry_files(folder):
        try:
            entry = parse_model_file(path, known)
        except RegistryError as err:
            errors[path] = str(err)
            continue
        claims.setdefault(entry.name, []).append(path)
        entries[entry.name] = entry
    for name, files in claims.items():
        if len(files) > 1:
            entries.pop(name)
            for path in files:
                others = ", ".join(str(p) for p in files if p != path)
                errors[path] = f"{path}: field 'name': {name!r} is also claimed by {others}; keep one file per model"
    return RegistryScan(entries, dict(sorted(errors.items())))


def get_model(name: str, folder: Path | None = None) -> ModelEntry:
    """The entry of one registered model, with a clear error when it is absent or malformed."""
    folder = Path(folder or paths.models_dir())
    files = [p for p in _registry_files(folder) if p.stem == name]
    if not files:
        known = sorted({p.stem for p in _registry_files(folder)})
        raise RegistryError(f"model {name!r} is not registered: no {folder / (name + '.yaml')} (registered: {known})")
    if len(files) > 1:
        raise RegistryError(
            f"{files[0]}: field 'name': {name!r} is also claimed by {', '.join(map(str, files[1:]))}; "
            "keep one file per model"
        )
    return parse_model_file(files[0])


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
