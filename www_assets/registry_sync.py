"""Keep the dynamic partitions and the configuration sources in step with the registry files.

Used by the `model_registry` sensor (which returns the changes as a SensorResult) and by
`www materialize` (which applies them itself, `sync_partitions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from www_assets.partitions import clips, concept_sets, models, probe_sets, shared_partitions


@dataclass
class SyncResult:
    new_models: list[str] = field(default_factory=list)
    retired_models: list[str] = field(default_factory=list)  # partitions whose registry file is gone
    new_concept_sets: list[str] = field(default_factory=list)
    new_clips: list[str] = field(default_factory=list)  # CLIP keys a model asks for (www_assets/partitions.py)
    new_probe_sets: list[str] = field(default_factory=list)  # probe-view keys a model asks for
    errors: dict[str, str] = field(default_factory=dict)  # file -> message
    observed: list[str] = field(default_factory=list)  # configuration sources that changed
    moved_aside: list[str] = field(default_factory=list)  # warehouse folders of an older partitioning

    def summary(self) -> str:
        parts = []
        if self.new_models:
            parts.append(f"new models {self.new_models}")
        if self.retired_models:
            parts.append(f"retired models {self.retired_models} (registry file deleted; `www models prune` "
                         "moves their warehouse files aside)")
        if self.new_concept_sets:
            parts.append(f"new concept sets {self.new_concept_sets}")
        if self.new_clips:
            parts.append(f"new CLIP partitions {self.new_clips}")
        if self.new_probe_sets:
            parts.append(f"new probe-view partitions {self.new_probe_sets}")
        if self.observed:
            parts.append(f"configuration changed: {', '.join(self.observed)}")
        if self.moved_aside:
            parts.append(f"moved {len(self.moved_aside)} folder(s) of an older partitioning under data/retired/: "
                         + ", ".join(self.moved_aside))
        if self.errors:
            parts.append("skipped: " + "; ".join(self.errors.values()))
        return ", ".join(parts) or "registry unchanged"


def registry_changes(instance) -> SyncResult:
    """What the registry holds that the instance's partitions do not, and the other way round
    (nothing is written).

    A model partition is retired only when its registry file is gone: a file that went bad keeps
    its partition (and its data), and is reported under `errors`.
    """
    from www_resources import paths
    from www_resources.registry import RegistryError, load_concept_sets, scan_models

    scan = scan_models()
    result = SyncResult(errors={str(p): msg for p, msg in scan.errors.items()})
    known_models = set(instance.get_dynamic_partitions(models.name))
    result.new_models = sorted(set(scan.entries) - known_models)
    folder = paths.models_dir()
    present = {p.stem for p in folder.glob("*.y*ml")} if folder.exists() else set()
    result.retired_models = sorted(known_models - present)
    try:
        sets = load_concept_sets()
    except RegistryError as err:
        result.errors["concept_sets.yaml"] = str(err)
        sets = {}
    used = {name for entry in scan.entries.values() for name in entry.concept_sets}
    for entry in scan.entries.values():
        for name in entry.concept_sets:
            if name not in sets:
                result.errors[str(entry.source_file)] = (
                    f"{entry.source_file}: concept set {name!r} is not defined in concept_sets.yaml"
                )
    known_sets = set(instance.get_dynamic_partitions(concept_sets.name))
    result.new_concept_sets = sorted((used & set(sets)) - known_sets)
    # the shared CLIP partitions: added when a model first asks for them, never retired (their
    # data serves any model that asks again; a key no model asks for is simply not configured)
    shared = shared_partitions(scan.entries)
    result.new_clips = sorted({c for _, c, _ in shared} - set(instance.get_dynamic_partitions(clips.name)))
    result.new_probe_sets = sorted({p for _, _, p in shared} - set(instance.get_dynamic_partitions(probe_sets.name)))
    return result


def stale_layout_folders() -> list:
    """Warehouse folders written under another partitioning than their table's now: a top-level
    `<key>=<value>` folder whose key is not the table's first partition column (e.g.
    `clip_text_embeddings/model=<m>` from before the CLIP tables were keyed by CLIP)."""
    from www_resources import paths
    from www_resources.tables import TABLES

    root = paths.warehouse_dir()
    stale = []
    for table, spec in sorted(TABLES.items()):
        folder = root / table
        if not spec.partition_by or not folder.is_dir():
            continue
        stale += [p for p in sorted(folder.glob("*=*")) if p.is_dir() and p.name.split("=", 1)[0] != spec.partition_by[0]]
    return stale


def retire_stale_layouts(stamp: str) -> list[str]:
    """Move the `stale_layout_folders` to `<data>/retired/<stamp>/<table>/<folder>` (moving them
    back restores them); the new partitions are computed by the next materialization. Returns
    the folders moved, as `<table>/<folder>`."""
    import shutil

    from www_resources import paths

    moved = []
    for path in stale_layout_folders():
        destination = paths.data_dir() / "retired" / stamp / path.parent.name / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(destination))
        moved.append(f"{path.parent.name}/{path.name}")
    return moved


def sync_partitions(instance) -> SyncResult:
    """Add the partitions of new registry entries, remove those of deleted files, move warehouse
    folders of an older partitioning aside, and record an observation of every configuration
    source that changed; returns what changed."""
    import time

    from www_assets.sources import changed_observations

    result = registry_changes(instance)
    result.moved_aside = retire_stale_layouts(time.strftime("%Y%m%dT%H%M%S"))
    if result.new_models:
        instance.add_dynamic_partitions(models.name, result.new_models)
    for name in result.retired_models:
        instance.delete_dynamic_partition(models.name, name)
    if result.new_concept_sets:
        instance.add_dynamic_partitions(concept_sets.name, result.new_concept_sets)
    if result.new_clips:
        instance.add_dynamic_partitions(clips.name, result.new_clips)
    if result.new_probe_sets:
        instance.add_dynamic_partitions(probe_sets.name, result.new_probe_sets)
    for observation in changed_observations(instance):
        instance.report_runless_asset_event(observation)
        key = observation.asset_key.to_user_string()
        result.observed.append(f"{key}[{observation.partition}]" if observation.partition else key)
    return result


@dataclass
class PrunePlan:
    """Warehouse folders of models without a registry file, and where they go."""

    moves: list[tuple[str, object, object]] = field(default_factory=list)  # (model, folder, destination)

    @property
    def models(self) -> list[str]:
        return sorted({m for m, _, _ in self.moves})


def retired_model_files(stamp: str) -> PrunePlan:
    """Every `<warehouse>/<table>/model=<m>` folder whose model has no registry file, with its
    destination `<data>/retired/<stamp>/<table>/model=<m>` (nothing is moved; moving it back restores
    it)."""
    from www_resources import paths

    folder = paths.models_dir()
    registered = {p.stem for p in folder.glob("*.y*ml")} if folder.exists() else set()
    plan = PrunePlan()
    root = paths.warehouse_dir()
    for path in sorted(root.glob("*/model=*")) if root.exists() else []:
        model = path.name.split("=", 1)[1]
        if path.is_dir() and model not in registered:
            plan.moves.append((model, path, paths.data_dir() / "retired" / stamp / path.parent.name / path.name))
    return plan


def prune_retired(stamp: str, dry_run: bool = False, log=print) -> PrunePlan:
    """Move the warehouse files of models whose registry file is gone aside (under `data/retired/`),
    saying what moves; the catalog's views read only `warehouse/`, so the rows leave every query."""
    import shutil

    plan = retired_model_files(stamp)
    for model, source, destination in plan.moves:
        log(f"{'would move' if dry_run else 'moving'} {source} -> {destination}")
        if not dry_run:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(destination))
    return plan
