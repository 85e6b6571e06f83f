"""Configuration as Dagster sees it: the files the assets read, as observable source assets.

    registry_file      (partition per model)        data/models/<model>.yaml
    concept_set_spec   (partition per concept set)  its line of data/concept_sets.yaml, and the
                                                    concept list file a `file:`/`classes:` spec names
    world_settings     (partitions world, clip)     the sections of data/world.yaml
    warehouse_models   (one, unpartitioned)         the models whose Parquet files are in the
                                                    warehouse (what the cross-model tables read)

The data version of a partition is a hash of what that partition's readers read: the parsed YAML
(so comments and key order do not count), or the folder names. An observation is recorded only
when a data version changed (`changed_observations`), never on a tick that found nothing new:
Dagster counts every observation as an update of the source, and the automation policy re-runs
what depends on an updated source. So editing `data/models/x.yaml` re-runs exactly x's
partitions, and editing `data/world.yaml`'s `clip:` section re-runs the world CLIP and what
depends on it.

Observations are recorded by the `model_registry` sensor, by `www materialize` before it
evaluates the policy, and by the UI's "Observe" button (the observe functions below report only
the partitions that changed, so a click never re-runs anything by itself).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import yaml

from www_assets.partitions import clip_concepts, concept_sets, model_concepts, models

REGISTRY_FILE = dg.AssetKey("registry_file")
CONCEPT_SET_SPEC = dg.AssetKey("concept_set_spec")
WORLD_SETTINGS = dg.AssetKey("world_settings")
WAREHOUSE_MODELS = dg.AssetKey("warehouse_models")
SOURCE_KEYS = (REGISTRY_FILE, CONCEPT_SET_SPEC, WORLD_SETTINGS, WAREHOUSE_MODELS)

WORLD_SECTIONS = ("world", "clip")
world_sections = dg.StaticPartitionsDefinition(list(WORLD_SECTIONS))
# which world.yaml section each world asset reads
WORLD_SECTION_READERS = {
    "world_scenes": "world", "world_parts": "world", "world_classes": "world", "world_vocabulary": "world",
    "world_clip": "clip",
}
GROUP = "config"


def _digest(value) -> str:
    """A short stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _yaml_or_text(path: Path):
    """The parsed YAML of a file (its raw text when it does not parse: a broken file is a change too)."""
    text = path.read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return {"unparsed": text}


# --- what each partition reads ---------------------------------------------------------------------


def registry_versions() -> dict[str, str]:
    """model -> hash of its registry file's content, for every file under the registry folder."""
    from www_resources import paths

    folder = paths.models_dir()
    files = sorted(folder.glob("*.y*ml")) if folder.exists() else []
    return {path.stem: _digest(_yaml_or_text(path)) for path in files}


def concept_set_versions() -> dict[str, str]:
    """concept set -> hash of its spec and of the list file it names (if it names one)."""
    from www_resources import paths

    path = paths.concept_sets_file()
    if not path.exists():
        return {}
    data = _yaml_or_text(path)
    if not isinstance(data, dict):
        return {}
    versions = {}
    for name, spec in data.items():
        read = {"spec": spec}
        if isinstance(spec, str) and spec.split(":", 1)[0] in ("file", "classes"):
            listed = paths.resolve(spec.split(":", 1)[1], base=paths.data_dir())
            read["file"] = hashlib.sha256(listed.read_bytes()).hexdigest() if listed.is_file() else None
        versions[str(name)] = _digest(read)
    return versions


def world_versions() -> dict[str, str]:
    """world.yaml section -> hash of its content (absent file or section: the generator's defaults)."""
    from www_resources import paths

    path = paths.data_dir() / "world.yaml"
    data = _yaml_or_text(path) if path.exists() else {}
    data = data if isinstance(data, dict) else {"unparsed": data}
    return {section: _digest(data.get(section)) for section in WORLD_SECTIONS}


def warehouse_model_names() -> list[str]:
    """The models that have Parquet files in any model-partitioned table of the warehouse."""
    from www_resources import paths

    root = paths.warehouse_dir()
    names = {p.name.split("=", 1)[1] for p in root.glob("*/model=*") if p.is_dir()} if root.exists() else set()
    return sorted(names)


def current_versions() -> dict[dg.AssetKey, dict[str | None, str]]:
    """Every source's data versions now, by partition (None for the unpartitioned one)."""
    return {
        REGISTRY_FILE: registry_versions(),
        CONCEPT_SET_SPEC: concept_set_versions(),
        WORLD_SETTINGS: world_versions(),
        WAREHOUSE_MODELS: {None: _digest(warehouse_model_names())},
    }


# --- what the instance last saw -----------------------------------------------------------------


def recorded_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> str | None:
    """The data version of the latest observation of a source partition (None if never observed)."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    records = instance.fetch_observations(records_filter, limit=1).records
    if not records:
        return None
    observation = records[0].asset_observation
    return observation.tags.get("dagster/data_version") if observation else None


def changed_observations(
    instance: dg.DagsterInstance,
    keys: Iterable[dg.AssetKey] = SOURCE_KEYS,
    adding: dict[dg.AssetKey, Iterable[str]] | None = None,
) -> list[dg.AssetObservation]:
    """An observation for every source partition whose data version differs from the last recorded.

    Only partitions that exist in the instance count, plus those being added with the
    observations (`adding`, e.g. {REGISTRY_FILE: new models}): a registry file whose model
    partition does not exist (a bad file, a retired model) is not observed.
    """
    adding = adding or {}
    existing = {
        REGISTRY_FILE: set(instance.get_dynamic_partitions(models.name)) | set(adding.get(REGISTRY_FILE, ())),
        CONCEPT_SET_SPEC: set(instance.get_dynamic_partitions(concept_sets.name))
        | set(adding.get(CONCEPT_SET_SPEC, ())),
    }
    current = current_versions()
    observations = []
    for key in keys:
        for partition, version in sorted(current[key].items(), key=lambda kv: str(kv[0])):
            if key in existing and partition not in existing[key]:
                continue
            if recorded_version(instance, key, partition) == version:
                continue
            observations.append(
                dg.AssetObservation(
                    asset_key=key, partition=partition, tags={"dagster/data_version": version},
                    metadata={"data_version": version},
                )
            )
    return observations


# --- the source assets ----------------------------------------------------------------------------


def _changed_by_partition(context, key: dg.AssetKey) -> dg.DataVersionsByPartition:
    versions = {o.partition: o.tags["dagster/data_version"] for o in changed_observations(context.instance, [key])}
    return dg.DataVersionsByPartition({p: dg.DataVersion(v) for p, v in versions.items()})


def _observe_registry(context) -> dg.DataVersionsByPartition:
    return _changed_by_partition(context, REGISTRY_FILE)


def _observe_concept_sets(context) -> dg.DataVersionsByPartition:
    return _changed_by_partition(context, CONCEPT_SET_SPEC)


def _observe_world(context) -> dg.DataVersionsByPartition:
    return _changed_by_partition(context, WORLD_SETTINGS)


def _observe_warehouse() -> dg.DataVersion:
    return dg.DataVersion(_digest(warehouse_model_names()))


with warnings.catch_warnings():
    # observable source assets are beta; dagster is pinned in pyproject.toml
    warnings.simplefilter("ignore", dg.BetaWarning)
    registry_file = dg.observable_source_asset(
        key=REGISTRY_FILE, partitions_def=models, group_name=GROUP,
        description="data/models/<model>.yaml: the registry file of each model; its data version is a hash of "
        "the parsed file, so an edit re-runs that model's partitions.",
    )(_observe_registry)
    concept_set_spec = dg.observable_source_asset(
        key=CONCEPT_SET_SPEC, partitions_def=concept_sets, group_name=GROUP,
        description="data/concept_sets.yaml: each concept set's spec (and the list file it names).",
    )(_observe_concept_sets)
    world_settings = dg.observable_source_asset(
        key=WORLD_SETTINGS, partitions_def=world_sections, group_name=GROUP,
        description="data/world.yaml: the `world` section (read by the world's tables) and the `clip` "
        "section (read by world_clip).",
    )(_observe_world)
    warehouse_models = dg.observable_source_asset(
        key=WAREHOUSE_MODELS, group_name=GROUP,
        description="The models that have files in the warehouse (what the cross-model tables read); changes "
        "when a model's first table is written or `www models prune` moves a retired model's files aside.",
    )(_observe_warehouse)

SOURCE_ASSETS = [registry_file, concept_set_spec, world_settings, warehouse_models]


# --- who reads what ---------------------------------------------------------------------------


def source_deps(spec: dg.AssetSpec, upstream_partitioned: bool) -> list[dg.AssetDep]:
    """The configuration sources an asset reads, by its partitioning and name.

    model-partitioned assets read their model's registry file; model x concept-set assets read
    the file and the concept set's spec; the world's assets read their world.yaml section; a
    cross-model table (unpartitioned, over partitioned parents) reads the warehouse's models.
    """
    name = spec.key.path[-1]
    if spec.partitions_def == models:
        return [dg.AssetDep(REGISTRY_FILE)]
    if spec.partitions_def == model_concepts:
        return [dg.AssetDep(REGISTRY_FILE), dg.AssetDep(CONCEPT_SET_SPEC)]
    if spec.partitions_def == clip_concepts:  # shared by models: no registry file, the concept set's spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)  # beta; dagster is pinned in pyproject.toml
            mapping = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="concept_set")
        return [dg.AssetDep(CONCEPT_SET_SPEC, partition_mapping=mapping)]
    if name in WORLD_SECTION_READERS:
        mapping = dg.SpecificPartitionsPartitionMapping([WORLD_SECTION_READERS[name]])
        return [dg.AssetDep(WORLD_SETTINGS, partition_mapping=mapping)]
    if spec.partitions_def is None and upstream_partitioned:
        return [dg.AssetDep(WAREHOUSE_MODELS)]
    return []


def _reads_no_inputs(definition: dg.AssetsDefinition) -> bool:
    """True when every input of the op is a plain dep (no data loaded through the IO manager)."""
    return all(d.dagster_type.is_nothing for d in definition.node_def.input_defs)


def with_sources(assets: list) -> list:
    """Add the configuration sources to the deps of the assets that read them (see `source_deps`).

    Only assets whose parents are all plain deps get them (Dagster cannot add a dep to an op that
    loads inputs); those are the roots of every chain (model_training, probe_images,
    clip_text_embeddings, class_shapley, the world, world_clip, evaluation_summary), and every
    other asset descends from one, so a changed source re-runs the whole chain below it
    (tests/test_sources.py checks that every partitioned asset is downstream of the registry).
    """
    partitioned = {
        spec.key for a in assets if isinstance(a, dg.AssetsDefinition) for spec in a.specs if spec.partitions_def
    }
    result = []
    for definition in assets:
        if isinstance(definition, dg.AssetsDefinition) and definition.is_materializable and _reads_no_inputs(definition):
            definition = definition.map_asset_specs(
                lambda spec: spec.merge_attributes(
                    deps=source_deps(spec, any(d.asset_key in partitioned for d in spec.deps))
                )
            )
        result.append(definition)
    return result
