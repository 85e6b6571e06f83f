"""Orchestration as users live it: drop a registry file, watch its partitions and runs appear.

Three instigators, running by default, and one policy applied to every asset:

* `model_registry` (sensor, every 30 s): turns new files under `data/models/` into `models`
  partitions and the concept sets they name into `concept_sets` partitions
  (`SensorResult.dynamic_partitions_requests`). It launches no run itself: a new partition is
  *missing*, and the automation policy below materializes missing partitions, so one rule
  serves a new model, a fresh install and a code change. A malformed file is logged (once,
  naming the file) and shown in the tick's skip reason; it never hides the other models.
* `www_automation` (automation-condition sensor, every 30 s, evaluated in the code server so it
  can read the registry): evaluates `asset_condition()` on every asset and `check_condition()`
  on every check. The policy is eager, restricted to what the registry configures:
  - a partition runs when it is missing (and its last attempt did not fail), when a parent
    partition updated, or when the asset's `code_version` changed (`eager()` alone ignores code
    changes, and never fills partitions that were missing before it first ran);
  - it waits while a configured parent partition is missing (unless that parent runs in the same
    tick) or in progress, and never runs twice at once;
  - only *configured* partitions run: a `models` key with a valid registry file, and a
    model x concept-set pair that the model's file lists (the product of the two dynamic
    dimensions also holds pairs nobody asked for); the world's own assets only when a registered
    model lives in the world (as `www materialize` does). Cross-model (unpartitioned) tables wait
    for every configured parent partition, so they run once a new model's chain is complete.
  - a failed partition is not retried every tick: the schedule (or a click) retries it.
  Assets modules never set conditions: `with_automation` applies them here, in one place.
* `refresh_stale` (schedule, daily at 03:00 UTC; cron from `$WWW_SCHEDULE_CRON`): launches
  `refresh_stale_job`, which does what `www materialize` does (www_assets/runner.py): every
  configured partition that is missing or stale (code version or upstream data changed), stage
  by stage. It is the safety net for what the event-driven policy leaves behind: partitions whose
  last run failed, or changes made while automation was off.

`WWW_AUTOMATION=off` starts `www_automation` and the schedule stopped (browse and materialize by
hand; the registry sensor still adds partitions); the UI's Automation page turns them on.
"""

import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from www_assets.partitions import concept_sets, model_concepts, models

REGISTRY_POLL_SECONDS = 30
AUTOMATION_INTERVAL_SECONDS = 30
DEFAULT_SCHEDULE_CRON = "0 3 * * *"
SCHEDULE_CRON_ENV = "WWW_SCHEDULE_CRON"
AUTOMATION_ENV = "WWW_AUTOMATION"


def automation_enabled() -> bool:
    """`$WWW_AUTOMATION` (default on): off, 0, false or no start `www_automation` and the
    refresh schedule stopped (the UI can still turn them on); the registry sensor always runs.

    Raises:
        ValueError: for any other value.
    """
    value = os.environ.get(AUTOMATION_ENV, "on").strip().lower()
    if value in ("", "on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{AUTOMATION_ENV}={value!r}: use on or off")


# --- what the registry configures --------------------------------------------------------------


@dataclass(frozen=True)
class ConfiguredPartitions:
    """The partitions that the registry asks for right now.

    models: model keys with a valid registry file.
    pairs: (model, concept set) for every concept set a valid model file lists and
        `concept_sets.yaml` defines.
    world: whether a registered model lives in the embedded world; if none does, the world's own
        assets (`runner.WORLD_ONLY_ASSETS`) are not configured, as `www materialize` skips them.
    """

    models: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    world: bool = True

    def includes_asset(self, asset_name: str) -> bool:
        """False for the world's own assets when no registered model needs the world."""
        from www_assets.runner import WORLD_ONLY_ASSETS

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
        return None


def read_configured() -> ConfiguredPartitions:
    """Scan the registry folder and `concept_sets.yaml` (bad files are left out, never raised)."""
    from www_assets.runner import world_needed
    from www_resources.registry import RegistryError, load_concept_sets, scan_models

    entries = scan_models().entries
    try:
        defined_sets = set(load_concept_sets())
    except RegistryError:
        defined_sets = set()
    pairs = {(name, c) for name, entry in entries.items() for c in entry.concept_sets if c in defined_sets}
    return ConfiguredPartitions(frozenset(entries), frozenset(pairs), world_needed())


_configured_cache: dict[tuple, tuple[float, ConfiguredPartitions]] = {}


def _configured_for_tick(evaluation_id: int) -> ConfiguredPartitions:
    """One registry scan per automation tick (every asset of the tick asks), fresh every tick."""
    from www_resources import paths

    key = (evaluation_id, str(paths.models_dir()), str(paths.concept_sets_file()))
    hit = _configured_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < 60:
        return hit[1]
    _configured_cache.clear()
    configured = read_configured()
    _configured_cache[key] = (time.monotonic(), configured)
    return configured


# --- the automation policy ----------------------------------------------------------------------


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
        asset_key = context.key if isinstance(context.key, dg.AssetKey) else context.key.asset_key
        if not configured.includes_asset(asset_key.path[-1]):
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        # the subset's partitioning: context.partitions_def is None for checks
        keys = configured.keys_for(context.candidate_subset.partitions_def)
        if keys is None:
            return dg.AutomationResult(context, true_subset=context.candidate_subset)
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(keys)
        )


AC = dg.AutomationCondition


def _waiting_on_parents() -> dg.AutomationCondition:
    """A configured parent partition is missing (and not requested this tick) or in progress."""
    missing_parent = AC.any_deps_match(AC.missing() & ~AC.will_be_requested() & InRegistry()).with_label(
        "any_configured_deps_missing"
    )
    return missing_parent | AC.any_deps_in_progress()


def _missing_not_failed() -> dg.AutomationCondition:
    """Never materialized, and no failed attempt (a failed partition waits for a fix: the
    schedule or a manual run retries it, not every tick)."""
    return (AC.missing() & ~AC.execution_failed()).with_label("missing_not_failed")


def asset_condition() -> dg.AutomationCondition:
    """Eager on configured partitions, missing ones and code changes included (every asset's policy).

    Unlike `eager()`, partitions that were already missing when the policy first ran count too,
    so a fresh install fills itself; and a new `code_version` re-runs the asset.
    """
    updated = (AC.any_deps_updated() | AC.code_version_changed()).since_last_handled()
    return (
        InRegistry() & (_missing_not_failed() | updated) & ~_waiting_on_parents() & ~AC.in_progress()
    ).with_label("www_eager")


def check_condition() -> dg.AutomationCondition:
    """A check runs with (or right after) every update of its asset's partition, and once if it
    never ran there."""
    updated = AC.any_deps_updated().since_last_handled()
    return (
        InRegistry() & (_missing_not_failed() | updated) & ~_waiting_on_parents() & ~AC.in_progress()
    ).with_label("www_check")


def with_automation(definitions: Iterable) -> list:
    """Give every materializable asset the project's condition; other definitions pass through.

    Raises:
        ValueError: if an asset already sets its own automation condition (assets modules must
            leave that to this module, so that one policy holds everywhere).
    """
    condition = asset_condition()
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
                lambda spec: spec.replace_attributes(automation_condition=condition)
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
        description="Materializes configured partitions that are new, whose parents updated, or whose "
        "code version changed (www_assets/orchestration.py).",
    )


# --- the registry sensor ------------------------------------------------------------------------


@dg.sensor(
    name="model_registry",
    minimum_interval_seconds=REGISTRY_POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `models` partition per new file under data/models/ and a `concept_sets` "
    "partition per concept set they name; www_automation then materializes them.",
)
def model_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """New registry files -> dynamic partitions. The cursor remembers the bad files already
    reported, so each problem is logged once; the skip reason always lists the current ones."""
    from www_assets.registry_sync import registry_changes

    changes = registry_changes(context.instance)
    errors = dict(sorted(changes.errors.items()))
    reported = json.loads(context.cursor) if context.cursor else {}
    for source, message in errors.items():
        if reported.get(source) != message:
            context.log.warning(f"registry file skipped: {message}")
    requests = []
    if changes.new_models:
        context.log.info(f"new model partitions: {changes.new_models}")
        requests.append(models.build_add_request(changes.new_models))
    if changes.new_concept_sets:
        context.log.info(f"new concept-set partitions: {changes.new_concept_sets}")
        requests.append(concept_sets.build_add_request(changes.new_concept_sets))
    cursor = json.dumps(errors)
    if requests:
        return dg.SensorResult(dynamic_partitions_requests=requests, cursor=cursor)
    known = len(context.instance.get_dynamic_partitions(models.name))
    reason = f"no new model or concept set ({known} model partition(s))"
    if errors:
        reason += "; skipped registry file(s): " + "; ".join(errors.values())
    return dg.SensorResult(skip_reason=reason, cursor=cursor)


# --- the schedule -------------------------------------------------------------------------------


@dg.op(description="Materialize every configured partition that is missing or stale, like `www materialize`.")
def materialize_missing_or_stale(context: dg.OpExecutionContext) -> None:
    """Passes of `materialize_stale` until one launches nothing: a pass judges staleness before it
    runs a stage, so an asset made stale by its parent's re-run in the same stage waits for the
    next pass."""
    from www_assets.runner import materialize_stale

    max_passes = 10
    for number in range(1, max_passes + 1):
        report = materialize_stale(log=context.log.info)
        if report.failed:
            raise dg.Failure(
                description=f"{len(report.failed)} partition run(s) failed in pass {number}",
                metadata={"failed": dg.MetadataValue.md("\n".join(f"- [{p}] {a}: {e}" for p, a, e in report.failed))},
            )
        if not report.launched:
            context.log.info(f"everything fresh after {number} pass(es)")
            return
    raise dg.Failure(description=f"still launching runs after {max_passes} passes")


@dg.job(
    name="refresh_stale_job",
    description="One pass of `www materialize`: the missing or stale partitions, stage by stage.",
    tags={"www/launched_by": "refresh_stale"},
)
def refresh_stale_job():
    materialize_missing_or_stale()


def schedule_cron() -> str:
    """The refresh schedule's cron expression: `$WWW_SCHEDULE_CRON`, default daily at 03:00 UTC.

    Raises:
        ValueError: if the variable is set to something that is not a cron expression.
    """
    from dagster._utils.schedules import is_valid_cron_schedule

    cron = os.environ.get(SCHEDULE_CRON_ENV, "").strip() or DEFAULT_SCHEDULE_CRON
    if not is_valid_cron_schedule(cron):
        raise ValueError(
            f"{SCHEDULE_CRON_ENV}={cron!r} is not a cron expression; write five fields, "
            f"e.g. {DEFAULT_SCHEDULE_CRON!r} (daily at 03:00 UTC)"
        )
    return cron


def _refresh(context: dg.ScheduleEvaluationContext):
    """Launch one refresh run unless one is still going."""
    busy = context.instance.get_runs_count(
        dg.RunsFilter(
            job_name=refresh_stale_job.name,
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
        )
    )
    if busy:
        return dg.SkipReason("a refresh_stale_job run is still in progress")
    return dg.RunRequest()


def build_refresh_schedule() -> dg.ScheduleDefinition:
    """The schedule, with the cron read from the environment when the code location loads."""
    return dg.ScheduleDefinition(
        name="refresh_stale",
        cron_schedule=schedule_cron(),
        job=refresh_stale_job,
        execution_fn=_refresh,
        default_status=dg.DefaultScheduleStatus.RUNNING if automation_enabled() else dg.DefaultScheduleStatus.STOPPED,
        description=f"Re-materializes what is missing or stale (cron from ${SCHEDULE_CRON_ENV}, default "
        f"{DEFAULT_SCHEDULE_CRON!r}, UTC).",
    )
