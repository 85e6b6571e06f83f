"""Orchestration: one policy decides what must run, and two engines evaluate it.

The policy (`asset_condition()` on every asset, `check_condition()` on every check) is eager,
restricted to what the registry configures:

* a configured partition runs when it is missing (and its last attempt did not fail), when a
  parent partition updated (configuration sources included: see www_assets/sources.py), or when
  the asset's `code_version` changed;
* it waits while a configured parent partition is missing (unless that parent runs in the same
  run) or in progress, and never runs twice at once;
* only *configured* partitions run: a `models` key with a valid registry file, and a
  model x concept-set pair that the model's file lists; the shared CLIP partitions (CLIP x
  concept set, CLIP x probe view) that some configured model reads; the world's own assets only
  when a registered model lives in the world. Cross-model (unpartitioned) tables wait for every
  configured parent partition;
* a shared CLIP table's update counts only for the model partitions that read it
  (`SharedInputsUpdated`): their consumers depend on every partition of it, since a partition
  mapping cannot follow the registry's model -> CLIP map;
* a failed partition is retried once per cron tick (`$WWW_SCHEDULE_CRON`, daily at 03:00 UTC by
  default: the `daily_retry` clause), and once per `www materialize`, not on every tick.

The engines:

* `www_automation` (automation-condition sensor of the daemon, every 30 s while `make ui` runs),
  fed by `model_registry` (sensor, every 30 s): new registry files -> `models` partitions,
  deleted ones -> partitions removed, changed configuration -> source observations.
* `www materialize` (www_assets/runner.py): the same sync, then `dg.evaluate_automation_conditions`
  tick after tick, running each tick's requests in-process, until a tick requests nothing. Its
  session options (`--model`, `--force`, retry failed partitions once) are the `Session` below,
  read by three clauses of the same policy that are inert outside a session.

`WWW_AUTOMATION=off` starts `www_automation` stopped (browse and materialize by hand; the registry
sensor still keeps the partitions in step); the UI's Automation page turns it on.
"""

import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from www_assets.partitions import (
    clip_concepts,
    clip_probes,
    clips,
    concept_sets,
    model_concepts,
    models,
    probe_sets,
    shared_partitions,
)

REGISTRY_POLL_SECONDS = 30
AUTOMATION_INTERVAL_SECONDS = 30
DEFAULT_SCHEDULE_CRON = "0 3 * * *"
SCHEDULE_CRON_ENV = "WWW_SCHEDULE_CRON"
AUTOMATION_ENV = "WWW_AUTOMATION"
# the embedded world's own assets: configured only when a registered model lives in the world
WORLD_ONLY_ASSETS = ("world_scenes", "world_parts", "world_classes", "world_vocabulary", "world_clip")


def automation_enabled() -> bool:
    """`$WWW_AUTOMATION` (default on): off, 0, false or no start `www_automation` stopped (the UI
    can still turn it on); the registry sensor always runs.

    Raises:
        ValueError: for any other value.
    """
    value = os.environ.get(AUTOMATION_ENV, "on").strip().lower()
    if value in ("", "on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{AUTOMATION_ENV}={value!r}: use on or off")


def schedule_cron() -> str:
    """The cron of the daily retry of failed partitions: `$WWW_SCHEDULE_CRON`, default 03:00 UTC.

    Raises:
        ValueError: if the variable is set to something that is not a cron expression.
    """
    cron = os.environ.get(SCHEDULE_CRON_ENV, "").strip() or DEFAULT_SCHEDULE_CRON
    try:
        dg.AutomationCondition.cron_tick_passed(cron)  # validates the expression
    except Exception:  # noqa: BLE001 - Dagster raises its own check error type
        raise ValueError(
            f"{SCHEDULE_CRON_ENV}={cron!r} is not a cron expression; write five fields, "
            f"e.g. {DEFAULT_SCHEDULE_CRON!r} (daily at 03:00 UTC)"
        ) from None
    return cron


def world_needed() -> bool:
    """Whether any registered model uses the embedded world (its images, training or CLIP)."""
    from www_resources.registry import scan_models

    return any(e.is_world_model or e.train or "world-clip" in e.clip for e in scan_models().entries.values())


# --- what the registry configures --------------------------------------------------------------


@dataclass(frozen=True)
class ConfiguredPartitions:
    """The partitions that the registry asks for right now.

    models: model keys with a valid registry file.
    pairs: (model, concept set) for every concept set a valid model file lists and
        `concept_sets.yaml` defines.
    shared: (model, CLIP key, probe-view key) of every valid model (www_assets/partitions.py):
        the CLIP x concept-set and CLIP x probe-view partitions its models ask for.
    world: whether a registered model lives in the embedded world; if none does, the world's own
        assets (`WORLD_ONLY_ASSETS`) are not configured.
    """

    models: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    world: bool = True
    shared: frozenset[tuple[str, str, str]] = frozenset()  # (model, clips key, probe_sets key)

    def clip_of(self) -> dict[str, tuple[str, str]]:
        """model -> (its clips key, its probe_sets key)."""
        return {m: (c, p) for m, c, p in self.shared}

    def includes_asset(self, asset_name: str) -> bool:
        """False for the world's own assets when no registered model needs the world."""
        return self.world or asset_name not in WORLD_ONLY_ASSETS

    def keys_for(self, partitions_def: dg.PartitionsDefinition | None) -> set[str] | None:
        """The configured partition keys of a partitioning; None means every key (no restriction).

        `models` -> the model keys; `concept_sets` -> the concept sets in use; the
        model x concept-set product -> the configured pairs; anything else -> None.
        """
        if partitions_def is None:
            return None
        if partitions_def == models:
            return set(self.models)
        if partitions_def == concept_sets:
            return {c for _, c in self.pairs}
        if partitions_def == model_concepts:
            return {dg.MultiPartitionKey({"model": m, "concept_set": c}) for m, c in self.pairs}
        keys = self.clip_of()
        if partitions_def == clips:
            return {c for c, _ in keys.values()}
        if partitions_def == probe_sets:
            return {p for _, p in keys.values()}
        if partitions_def == clip_concepts:
            return {dg.MultiPartitionKey({"clip": keys[m][0], "concept_set": c}) for m, c in self.pairs if m in keys}
        if partitions_def == clip_probes:
            return {dg.MultiPartitionKey({"clip": c, "probe": p}) for c, p in keys.values()}
        return None

    def only(self, names: Iterable[str] | None) -> "ConfiguredPartitions":
        """The same, restricted to the given models (None: unchanged)."""
        if names is None:
            return self
        keep = set(names)
        return ConfiguredPartitions(
            frozenset(self.models & keep), frozenset(p for p in self.pairs if p[0] in keep), self.world,
            frozenset(s for s in self.shared if s[0] in keep),
        )


def read_configured() -> ConfiguredPartitions:
    """Scan the registry folder and `concept_sets.yaml` (bad files are left out, never raised)."""
    from www_resources.registry import RegistryError, load_concept_sets, scan_models

    entries = scan_models().entries
    try:
        defined_sets = set(load_concept_sets())
    except RegistryError:
        defined_sets = set()
    pairs = {(name, c) for name, entry in entries.items() for c in entry.concept_sets if c in defined_sets}
    return ConfiguredPartitions(frozenset(entries), frozenset(pairs), world_needed(), frozenset(shared_partitions(entries)))



@dataclass
class Session:
    """What one `www materialize` asks of the policy beyond the defaults.

    only_models: restrict the configured partitions to these models (None: all).
    forced: (asset or check key, partition key) entities to run once whatever their state
        (`--force`); the engine removes each entity once it ran.
    retry_failed: retry partitions whose last run failed (true on the first tick only).
    """

    only_models: frozenset[str] | None = None
    forced: set[tuple[dg.AssetKey | dg.AssetCheckKey, str | None]] = field(default_factory=set)
    retry_failed: bool = False


# the session of the `www materialize` running in this process; None in the daemon
_session: Session | None = None


def set_session(session: Session | None) -> None:
    global _session
    _session = session


def current_session() -> Session | None:
    return _session


_configured_cache: dict[tuple, tuple[float, ConfiguredPartitions]] = {}


def _configured_for_tick(evaluation_id: int) -> ConfiguredPartitions:
    """One registry scan per automation tick (every asset of the tick asks), fresh every tick."""
    from www_resources import paths

    key = (evaluation_id, str(paths.models_dir()), str(paths.concept_sets_file()))
    hit = _configured_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < 60:
        configured = hit[1]
    else:
        _configured_cache.clear()
        configured = read_configured()
        _configured_cache[key] = (time.monotonic(), configured)
    return configured.only(_session.only_models if _session else None)


# --- the automation policy ----------------------------------------------------------------------


def _entity_name(key) -> str:
    asset_key = key if isinstance(key, dg.AssetKey) else key.asset_key
    return asset_key.path[-1]


class InRegistry(dg.AutomationCondition):
    """True for the partitions the registry configures (see `ConfiguredPartitions.keys_for`);
    true for unpartitioned assets and checks, except the world's when no model needs it."""

    @property
    def name(self) -> str:
        return "in_registry"

    @property
    def description(self) -> str:
        return "Partition configured by the model registry (model file, its concept sets)"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        configured = _configured_for_tick(context.evaluation_id)
        if not configured.includes_asset(_entity_name(context.key)):
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        # the subset's partitioning: context.partitions_def is None for checks
        keys = configured.keys_for(context.candidate_subset.partitions_def)
        if keys is None:
            return dg.AutomationResult(context, true_subset=context.candidate_subset)
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(keys)
        )


class Forced(dg.AutomationCondition):
    """True for the entities `www materialize --force` still has to run (never in the daemon)."""

    @property
    def name(self) -> str:
        return "forced"

    @property
    def description(self) -> str:
        return "Asked for by `www materialize --force` and not run yet"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        forced = {p for k, p in _session.forced if k == context.key} if _session else set()
        if not forced:
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        if context.candidate_subset.partitions_def is None:
            return dg.AutomationResult(context, true_subset=context.candidate_subset)
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(forced)
        )


class RetryRequested(dg.AutomationCondition):
    """True on the first tick of a `www materialize` (it retries failed partitions once)."""

    @property
    def name(self) -> str:
        return "retry_requested"

    @property
    def description(self) -> str:
        return "First tick of `www materialize`: failed partitions are retried"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        on = _session is not None and _session.retry_failed
        return dg.AutomationResult(context, true_subset=context.candidate_subset if on else context.get_empty_subset())


# the CLIP tables shared by the models with one CLIP and concept set / probe view
# (www_assets/partitions.py): a consumer depends on every partition of them (Dagster's partition
# mappings cannot follow the registry's model -> CLIP map), and `SharedInputsUpdated` narrows the
# "parent updated" clause to each model's own partitions
SHARED_TABLES = ("clip_text_embeddings", "clip_image_embeddings")

# the instance the policy is evaluated against: `www materialize` (runner.evaluate) sets it; the
# daemon's code server evaluates against DAGSTER_HOME's
_instance: dg.DagsterInstance | None = None


def set_instance(instance: dg.DagsterInstance | None) -> None:
    global _instance
    _instance = instance


def _own_shared_partitions(configured: ConfiguredPartitions) -> dict[str, dict[str, set[str]]]:
    """table -> partition key of a shared table -> the consumer partition keys (model, and model
    x concept set) that read it."""
    keys = configured.clip_of()
    texts: dict[str, set[str]] = {}
    images: dict[str, set[str]] = {}
    for model, concept_set in configured.pairs:
        if model not in keys:
            continue
        clip, probe = keys[model]
        readers = {model, str(dg.MultiPartitionKey({"model": model, "concept_set": concept_set}))}
        texts.setdefault(str(dg.MultiPartitionKey({"clip": clip, "concept_set": concept_set})), set()).update(readers)
        images.setdefault(str(dg.MultiPartitionKey({"clip": clip, "probe": probe})), set()).update(readers)
    return {"clip_text_embeddings": texts, "clip_image_embeddings": images}


_materialized_cache: dict[tuple, set[str]] = {}


def _materialized_between(table: str, after: int, until: int | None) -> set[str]:
    """The partitions of a table materialized with a storage id in (after, until]; one query per
    table and tick (every consumer of the tick asks)."""
    key = (id(_instance), table, after, until)
    if key not in _materialized_cache:
        if len(_materialized_cache) > 64:
            _materialized_cache.clear()
        instance = _instance or dg.DagsterInstance.get()
        records_filter = dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(table), after_storage_id=after,
            before_storage_id=None if until is None else until + 1,
        )
        partitions, cursor = set(), None
        while True:
            result = instance.fetch_materializations(records_filter, limit=1000, cursor=cursor)
            partitions |= {str(r.partition_key) for r in result.records}
            if not result.has_more:
                break
            cursor = result.cursor
        _materialized_cache[key] = partitions
    return _materialized_cache[key]


class SharedInputsUpdated(dg.AutomationCondition):
    """True for the partitions of a consumer whose *own* partition of a shared CLIP table (its
    model's CLIP x concept set, CLIP x probe view) was materialized since the previous tick.

    The consumers depend on every partition of the shared tables (see `SHARED_TABLES`), so
    Dagster's `any_deps_updated` would re-run every model when one CLIP's embeddings change;
    the policy ignores the shared tables there and asks this condition instead."""

    def __init__(self, tables: Iterable[str]):
        self.tables = tuple(sorted(tables))

    @property
    def name(self) -> str:
        return "own_shared_inputs_updated"

    @property
    def requires_cursor(self) -> bool:
        return True  # keeps the previous tick's storage id (`previous_max_storage_id`)

    @property
    def description(self) -> str:
        return f"The model's own partition of {', '.join(self.tables)} was updated"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        after = context.previous_max_storage_id
        if after is None or context.candidate_subset.partitions_def is None:
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        readers = _own_shared_partitions(_configured_for_tick(context.evaluation_id))
        hit: set[str] = set()
        for table in self.tables:
            for partition in _materialized_between(table, after, context.max_storage_id):
                hit |= readers[table].get(partition, set())
        if not hit:
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(hit)
        )


AC = dg.AutomationCondition


def _waiting_on_parents() -> dg.AutomationCondition:
    """A configured parent partition is missing or still forced (and not requested into the same
    run), or in progress."""
    from www_assets.sources import SOURCE_KEYS

    # a source is observed, never materialized: it never counts as missing
    missing_parent = (
        AC.any_deps_match((AC.missing() | Forced()) & ~AC.will_be_requested() & InRegistry())
        .ignore(dg.AssetSelection.assets(*SOURCE_KEYS))
        .with_label("any_configured_deps_missing")
    )
    return missing_parent | AC.any_deps_in_progress()


def _missing_not_failed() -> dg.AutomationCondition:
    """Never materialized, and no failed attempt (a failed partition waits for a fix: the daily
    retry or the next `www materialize` runs it again, not every tick)."""
    return (AC.missing() & ~AC.execution_failed()).with_label("missing_not_failed")


def _retry_failed() -> dg.AutomationCondition:
    """The last run failed, and a cron tick passed (or `www materialize` started)."""
    return (AC.execution_failed() & (AC.cron_tick_passed(schedule_cron()) | RetryRequested())).with_label(
        "daily_retry"
    )


def _newly_updated(shared: tuple[str, ...]) -> dg.AutomationCondition:
    """A parent updated this tick (for the shared CLIP tables: the partition's own,
    `SharedInputsUpdated`) or the code version changed."""
    parents_updated = AC.any_deps_updated()
    if shared:
        parents_updated = parents_updated.ignore(dg.AssetSelection.assets(*shared)) | SharedInputsUpdated(shared)
    return parents_updated | AC.code_version_changed()


def _updated(shared: tuple[str, ...]) -> dg.AutomationCondition:
    """`_newly_updated`, since the partition was last requested or updated."""
    return _newly_updated(shared).since_last_handled()


def _consumer_parent_pending(consumers: Iterable[str]) -> dg.AutomationCondition:
    """A parent that reads the shared CLIP tables had a parent updated this tick (the trigger of its
    own `_updated`) but is not requested into this run: it waits for its model's runs, so its
    children wait for it instead of running on its old data and again after it. (The trigger,
    not its `since_last_handled`: a condition evaluated on a parent keeps no state of its own.)"""
    pending = _newly_updated(SHARED_TABLES) & ~AC.will_be_requested() & InRegistry()
    return (
        AC.any_deps_match(pending).allow(dg.AssetSelection.assets(*consumers)).with_label("shared_consumer_parent_pending")
    )


def asset_condition(shared: Iterable[str] = (), consumer_parents: Iterable[str] = ()) -> dg.AutomationCondition:
    """Eager on configured partitions, missing ones and code changes included (every asset's policy).

    Unlike `eager()`, partitions that were already missing when the policy first ran count too,
    so a fresh install fills itself; a new `code_version` re-runs the asset; failed partitions
    are retried daily. `shared`: the asset's parents among `SHARED_TABLES`, whose updates count
    only for the partitions that read them (`SharedInputsUpdated`); `consumer_parents`: its
    parents that read them (`_consumer_parent_pending`).
    """
    waiting = _waiting_on_parents()
    if consumer_parents := tuple(consumer_parents):
        waiting = waiting | _consumer_parent_pending(consumer_parents)
    return (
        InRegistry()
        & (_missing_not_failed() | _updated(tuple(shared)) | _retry_failed() | Forced())
        & ~waiting
        & ~AC.in_progress()
    ).with_label("www_eager")


def check_condition() -> dg.AutomationCondition:
    """A check runs in the run that updates its asset's partition (or right after it, when the
    update came from elsewhere), and once if it never ran there."""
    updated = AC.any_deps_updated().since_last_handled()
    with_its_asset = AC.any_deps_match(AC.will_be_requested()).with_label("asset_requested")
    return (
        InRegistry()
        & (_missing_not_failed() | updated | with_its_asset | Forced())
        & ~_waiting_on_parents()
        & ~AC.in_progress()
    ).with_label("www_check")


def with_automation(definitions: Iterable) -> list:
    """Give every materializable asset the project's condition; other definitions pass through.

    Raises:
        ValueError: if an asset already sets its own automation condition (assets modules must
            leave that to this module, so that one policy holds everywhere).
    """
    definitions = list(definitions)
    consumers = set()  # the assets that read the shared CLIP tables
    for definition in definitions:
        if isinstance(definition, dg.AssetsDefinition) and definition.is_materializable:
            for spec in definition.specs:
                if shared := {d.asset_key.path[-1] for d in spec.deps} & set(SHARED_TABLES):
                    if shared != set(SHARED_TABLES):  # `_consumer_parent_pending` mirrors `_updated(SHARED_TABLES)`
                        raise ValueError(f"{spec.key.to_user_string()} reads {sorted(shared)}: read every one of "
                                         f"{SHARED_TABLES} or none")
                    consumers.add(spec.key.path[-1])

    def condition_of(spec: dg.AssetSpec) -> dg.AutomationCondition:
        names = {d.asset_key.path[-1] for d in spec.deps}
        return asset_condition(sorted(names & set(SHARED_TABLES)), sorted(names & consumers))

    result = []
    for definition in definitions:
        if isinstance(definition, dg.AssetsDefinition) and definition.is_materializable:
            for spec in definition.specs:
                if spec.automation_condition is not None:
                    raise ValueError(
                        f"asset {spec.key.to_user_string()} sets its own automation_condition; remove it: "
                        "www_assets/orchestration.py applies one policy to every asset"
                    )
            definition = definition.map_asset_specs(
                lambda spec: spec.replace_attributes(automation_condition=condition_of(spec))
            )
        result.append(definition)
    return result


with warnings.catch_warnings():
    # use_user_code_server is beta; dagster is pinned in pyproject.toml
    warnings.simplefilter("ignore", dg.BetaWarning)
    automation_sensor = dg.AutomationConditionSensorDefinition(
        "www_automation",
        target=dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks(),
        default_status=dg.DefaultSensorStatus.RUNNING if automation_enabled() else dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
        # evaluated in the code server: InRegistry reads this code location's registry files
        use_user_code_server=True,
        # one run per partition: with backfills, an asset requested for several partitions in one
        # tick (a new model's concept sets) becomes a backfill while its checks get runs of their
        # own, which can start first and check a partition that does not exist yet
        emit_backfills=False,
        description="Materializes configured partitions that are new, whose parents or configuration changed, "
        "or whose code version changed; retries failed ones daily (www_assets/orchestration.py).",
    )


# --- the registry sensor ------------------------------------------------------------------------


@dg.sensor(
    name="model_registry",
    minimum_interval_seconds=REGISTRY_POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the `models`, `concept_sets`, `clips` and `probe_sets` partitions in step with data/models/ "
    "(new files added, "
    "deleted files retired) and observes the configuration files; www_automation then materializes.",
)
def model_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Registry files -> dynamic partitions and source observations. The cursor remembers the bad
    files already reported, so each problem is logged once; the skip reason lists the current ones."""
    from www_assets.registry_sync import registry_changes, retire_stale_layouts
    from www_assets.sources import CONCEPT_SET_SPEC, REGISTRY_FILE, changed_observations

    changes = registry_changes(context.instance)
    # a warehouse from before the shared CLIP partitions: its per-model CLIP folders would break
    # the tables' views as soon as the new partitions are written (as `www materialize` does)
    for folder in retire_stale_layouts(time.strftime("%Y%m%dT%H%M%S")):
        context.log.warning(f"moved {folder} (a partitioning this table no longer has) under data/retired/")
    errors = dict(sorted(changes.errors.items()))
    reported = json.loads(context.cursor) if context.cursor else {}
    for source, message in errors.items():
        if reported.get(source) != message:
            context.log.warning(f"registry file skipped: {message}")
    requests = []
    if changes.new_models:
        context.log.info(f"new model partitions: {changes.new_models}")
        requests.append(models.build_add_request(changes.new_models))
    if changes.retired_models:
        context.log.info(f"retired model partitions (registry file deleted): {changes.retired_models}")
        requests.append(models.build_delete_request(changes.retired_models))
    if changes.new_concept_sets:
        context.log.info(f"new concept-set partitions: {changes.new_concept_sets}")
        requests.append(concept_sets.build_add_request(changes.new_concept_sets))
    for partitions_def, keys in ((clips, changes.new_clips), (probe_sets, changes.new_probe_sets)):
        if keys:
            context.log.info(f"new {partitions_def.name} partitions: {keys}")
            requests.append(partitions_def.build_add_request(keys))
    # the new partitions are added with this result: observe their sources with it
    observations = changed_observations(
        context.instance, adding={REGISTRY_FILE: changes.new_models, CONCEPT_SET_SPEC: changes.new_concept_sets}
    )
    for observation in observations:
        context.log.info(f"configuration changed: {observation.asset_key.to_user_string()} [{observation.partition}]")
    cursor = json.dumps(errors)
    if requests or observations:
        return dg.SensorResult(dynamic_partitions_requests=requests, asset_events=observations, cursor=cursor)
    known = len(context.instance.get_dynamic_partitions(models.name))
    reason = f"registry unchanged ({known} model partition(s))"
    if errors:
        reason += "; skipped registry file(s): " + "; ".join(errors.values())
    return dg.SensorResult(skip_reason=reason, cursor=cursor)
