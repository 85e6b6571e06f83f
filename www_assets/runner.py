"""`www materialize`: the automation policy, evaluated from the command line until nothing is left.

It does what the daemon does while `make ui` runs, in one process and without the daemon:

1. sync the registry (`registry_sync.sync_partitions`: new files become partitions, deleted
   files retire theirs, changed configuration files are observed);
2. evaluate the project's automation conditions (`dg.evaluate_automation_conditions`, the same
   conditions the `www_automation` sensor evaluates), with the cursor of the previous evaluation;
3. run what the tick requested, one in-process run per partition key (like the sensor with
   backfills off), parents' runs first, recorded in the instance (`DAGSTER_HOME`) so the UI shows
   them; a failed run does not stop the others, and its children wait (the policy says so);
4. repeat from 2 until a tick requests nothing.

The cursor is kept in `$DAGSTER_HOME/www_materialize.cursor`, so the next invocation knows what
it already handled: parent updates and code-version changes since then are what it runs (with no
cursor, only missing partitions count). A second invocation with nothing changed launches nothing.

One invocation at a time per instance: each holds an exclusive lock on
`$DAGSTER_HOME/www_materialize.lock` from the registry sync to its last run, and a second one
started meanwhile says so and waits, then evaluates what is left (usually nothing). The kernel
drops the lock of a killed process. A killed invocation leaves its run "started" and its pool
slots claimed; the next one (or one waiting for such a slot) marks that run failed and frees the
slots (`release_orphans`), so nothing waits for a dead process.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from www_assets import orchestration
from www_assets.definitions import defs as project_defs
from www_assets.registry_sync import sync_partitions
from www_assets.sources import WAREHOUSE_MODELS, changed_observations
from www_resources.storage import default_warehouse, process_alive

# the console shows progress lines (INFO and up); every event, DEBUG included, stays in the run's
# event log, where the UI shows it
CONSOLE_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
CURSOR_FILE = "www_materialize.cursor"
LOCK_FILE = "www_materialize.lock"
LAUNCHED_BY, LAUNCHED_BY_CLI = "www/launched_by", "www materialize"
PID_TAG, HOST_TAG = "www/pid", "www/host"
MAX_TICKS = 50
POOL_POLL_S = 2.0  # how often a running run looks whether one of its steps waits for a pool slot


@dataclass
class RunReport:
    launched: list[tuple[str, list[str]]] = field(default_factory=list)  # (partition label, entities)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (partition label, entities, error)
    ticks: int = 0
    seconds: float = 0.0

    @property
    def requested(self) -> set[tuple[str, str]]:
        """(entity, partition label) of everything launched or failed."""
        out = {(e, label) for label, entities in self.launched for e in entities}
        return out | {(e, label) for label, entities, _ in self.failed for e in entities.split(", ")}


@dataclass
class TickRun:
    """What one run of a tick materializes: one partition key, some assets, some checks."""

    partition_key: str | None
    assets: set[dg.AssetKey] = field(default_factory=set)
    checks: set[dg.AssetCheckKey] = field(default_factory=set)

    @property
    def label(self) -> str:
        return str(self.partition_key) if self.partition_key is not None else "-"

    def names(self) -> list[str]:
        return sorted([k.to_user_string() for k in self.assets] + [f"{k.asset_key.to_user_string()}:{k.name}"
                                                                  for k in self.checks])


def _cursor_path(instance: dg.DagsterInstance) -> Path:
    return Path(instance.root_directory) / CURSOR_FILE


def load_cursor(instance: dg.DagsterInstance):
    """The cursor of the previous `www materialize` (None when there is none or it cannot be read)."""
    path = _cursor_path(instance)
    try:
        return dg.deserialize_value(path.read_text())
    except Exception:  # noqa: BLE001 - a missing or stale cursor means: start afresh
        return None


def save_cursor(instance: dg.DagsterInstance, cursor) -> None:
    path = _cursor_path(instance)
    tmp = path.with_suffix(".partial")
    tmp.write_text(dg.serialize_value(cursor))
    tmp.replace(path)


def asset_specs(defs: dg.Definitions) -> dict[dg.AssetKey, dg.AssetSpec]:
    """Every asset's spec (sources included), by key."""
    return {spec.key: spec for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) for spec in a.specs}


def check_specs(defs: dg.Definitions) -> dict[dg.AssetCheckKey, dg.AssetCheckSpec]:
    return {spec.key: spec for c in defs.asset_checks or [] for spec in c.check_specs}


def dependency_order(defs: dg.Definitions) -> list[dg.AssetKey]:
    """Asset keys with every parent before its children."""
    specs = asset_specs(defs)
    parents = {key: {d.asset_key for d in spec.deps if d.asset_key in specs} for key, spec in specs.items()}
    order: list[dg.AssetKey] = []
    done: set[dg.AssetKey] = set()
    while len(order) < len(parents):
        ready = sorted((k for k, ps in parents.items() if k not in done and ps <= done), key=str)
        if not ready:
            raise RuntimeError(f"dependency cycle among {sorted(str(k) for k in set(parents) - done)}")
        order.extend(ready)
        done.update(ready)
    return order


@contextmanager
def dynamic_partitions_cached(instance: dg.DagsterInstance):
    """Answer `instance.get_dynamic_partitions` from memory while the policy is evaluated.

    `evaluate_automation_conditions` builds its cursor by asking the instance for the partition
    keys once per condition node and partitioned subset: thousands of identical queries per tick
    (each a new SQLite connection: minutes per tick on a loaded 2-core machine). Nothing adds
    partitions during an evaluation, so one answer per partitioning serves the whole tick.
    """
    original = instance.get_dynamic_partitions
    cache: dict[str, list[str]] = {}

    def cached(partitions_def_name: str):
        if partitions_def_name not in cache:
            cache[partitions_def_name] = list(original(partitions_def_name))
        return cache[partitions_def_name]

    instance.get_dynamic_partitions = cached
    try:
        yield instance
    finally:
        del instance.get_dynamic_partitions


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, cursor=None, **kwargs):
    """One tick of the policy: `dg.evaluate_automation_conditions`, with the partitions cached
    (and the instance known to the conditions that read materializations themselves)."""
    from www_assets import orchestration

    orchestration.set_instance(instance)
    try:
        with dynamic_partitions_cached(instance):
            return dg.evaluate_automation_conditions(defs, instance, cursor=cursor, **kwargs)
    finally:
        orchestration.set_instance(None)


def parents_of(defs: dg.Definitions) -> dict[dg.AssetKey, set[dg.AssetKey]]:
    specs = asset_specs(defs)
    return {key: {d.asset_key for d in spec.deps} for key, spec in specs.items()}


def requested_runs(
    result: dg.EvaluateAutomationConditionsResult,
    order: list[dg.AssetKey],
    parents: dict[dg.AssetKey, set[dg.AssetKey]] | None = None,
    deferred: set | None = None,
) -> list[TickRun]:
    """A tick's requests as runs: one per partition key, ordered so that parents run first.

    With `parents`, an asset whose parent is requested in another run of the same tick (e.g.
    `sample_explanations` of a model, below its concept-set runs) is left for the next tick, with
    what depends on it in its run: it would otherwise run before its parent's new data exists, and
    run again next tick. The (entity, partition) pairs left out are added to `deferred`; the
    engine asks for them in the next tick (`Session.forced`).
    """
    by_partition: dict[str | None, TickRun] = {}
    for entity in result.results:
        subset = entity.true_subset
        if subset.is_empty:
            continue
        keys = sorted(subset.expensively_compute_partition_keys()) if subset.is_partitioned else [None]
        for key in keys:
            run = by_partition.setdefault(key, TickRun(key))
            (run.assets if isinstance(entity.key, dg.AssetKey) else run.checks).add(entity.key)
    if parents is not None:
        runs_of: dict[dg.AssetKey, set] = {}
        for key, run in by_partition.items():
            for asset in run.assets:
                runs_of.setdefault(asset, set()).add(key)
        for key, run in by_partition.items():
            deferred_here: set[dg.AssetKey] = set()
            for asset in (a for a in order if a in run.assets):
                ps = parents.get(asset, set())
                if ps & deferred_here or any(runs_of.get(p, set()) - {key} for p in ps):
                    deferred_here.add(asset)
            run.assets -= deferred_here
            left_checks = {c for c in run.checks if c.asset_key in deferred_here}
            run.checks -= left_checks
            if deferred is not None:
                deferred |= {(a, key) for a in deferred_here} | {(c, key) for c in left_checks}
        by_partition = {k: r for k, r in by_partition.items() if r.assets or r.checks}
    rank = {key: i for i, key in enumerate(order)}

    def first(run: TickRun) -> int:
        keys = run.assets or {k.asset_key for k in run.checks}
        return min(rank.get(k, len(rank)) for k in keys)

    return sorted(by_partition.values(), key=lambda r: (first(r), r.label))


def whole_steps(defs: dg.Definitions, runs: list[TickRun]) -> list[TickRun]:
    """Add to each run the other outputs of the multi-assets it selects that cannot be subset.

    One step writes them all (e.g. `probe_forward`: activations and predictions), so a run of
    just one of them cannot even be built. The policy asks for one alone after a run died between
    the step's outputs (predictions stored, activations not): the step runs again, whole.
    """
    for run in runs:
        for key in list(run.assets):
            assets_def = defs.get_assets_def(key)
            if not assets_def.can_subset:
                run.assets |= set(assets_def.keys)
    return runs


def execute_run(defs: dg.Definitions, run: TickRun, instance: dg.DagsterInstance, tags: dict,
                run_id: str | None = None):
    """One in-process run of exactly the run's assets and checks for its partition."""
    selection = dg.AssetSelection.assets(*run.assets).without_checks() | dg.AssetSelection.checks(*run.checks)
    job = dg.define_asset_job("www_materialize", selection=selection)
    run_defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    run_tags = dict(tags)
    partition_key = run.partition_key
    if not run.assets and partition_key is not None:
        # a check-only run carries its partition as a tag, like the runs the daemon launches
        run_tags["dagster/partition"] = str(partition_key)
        partition_key = None
    return run_defs.resolve_job_def("www_materialize").execute_in_process(
        run_config=CONSOLE_LOGS, instance=instance, partition_key=partition_key, tags=run_tags, raise_on_error=False,
        run_id=run_id,
    )


@contextmanager
def instance_lock(instance: dg.DagsterInstance, log: Callable[[str], None]):
    """Hold `$DAGSTER_HOME/www_materialize.lock` (exclusive `flock`); wait, saying so, while
    another `www materialize` holds it.

    Two invocations evaluating the policy at once would both see the same partitions missing and
    compute them twice (Dagster counts a partition "in progress" only once its run has started,
    after the other invocation may have evaluated), and would overwrite each other's cursor. The
    lock lives as long as the open file: the kernel releases it when its process dies, even by
    SIGKILL, so a killed invocation never blocks the next one.
    """
    path = Path(instance.root_directory) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process"
            log(f"another www materialize ({holder}) is running on this instance; waiting for it to finish")
            waited = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log(f"it finished after {time.monotonic() - waited:.0f}s; evaluating what is left")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()


def fail_orphaned_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> int:
    """Mark as failed the runs of an earlier `www materialize` whose process is gone (killed while
    a run was in progress): left "started", they would hold their partitions "in progress" for ever.
    Their pool slots are freed with them (`report_run_failed` leaves them claimed; only the
    daemon's run monitoring would free them, and `www materialize` runs without the daemon)."""
    host = socket.gethostname()
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            tags={LAUNCHED_BY: LAUNCHED_BY_CLI},
        )
    )
    failed = 0
    for run in runs:
        pid, run_host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if pid is None or run_host != host or process_alive(int(pid)):
            continue
        instance.report_run_failed(run, message=f"the www materialize process ({pid}) that ran it is gone")
        log(f"run {run.run_id} of a www materialize that was stopped is marked failed")
        failed += 1
    return failed


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def free_pool_slots(instance: dg.DagsterInstance, log: Callable[[str], None]) -> int:
    """Give back the pool slots that finished runs still hold; returns how many runs had some.

    A run of `www materialize` runs its steps in its own process, so once it is finished (or was
    marked failed because its process is gone) nothing can use its slots: they are freed now.
    Other runs' slots are freed as the daemon's run monitoring does, `free_slots_after_run_end_seconds`
    after their end (their steps may run in other processes for a while).
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return 0
    run_ids = storage.get_concurrency_run_ids()
    if not run_ids:
        return 0
    grace = (instance.run_monitoring_settings or {}).get("free_slots_after_run_end_seconds")
    freed = 0
    for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=list(run_ids), statuses=FINISHED)):
        run = record.dagster_run
        if run.tags.get(LAUNCHED_BY) != LAUNCHED_BY_CLI and (
            not grace or record.end_time is None or time.time() - record.end_time < grace
        ):
            continue
        storage.free_concurrency_slots_for_run(run.run_id)
        log(f"the pool slots of run {run.run_id} ({run.status.value.lower()}) are free again")
        freed += 1
    return freed


def release_orphans(instance: dg.DagsterInstance, log: Callable[[str], None]) -> int:
    """`fail_orphaned_runs`, then `free_pool_slots`: what a dead process held comes back."""
    return fail_orphaned_runs(instance, log) + free_pool_slots(instance, log)


def _describe_run(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (not in this instance)"
    where = f"[{run.tags['dagster/partition']}] " if "dagster/partition" in run.tags else ""
    launcher = (f"www materialize pid {run.tags.get(PID_TAG)}" if run.tags.get(LAUNCHED_BY) == LAUNCHED_BY_CLI
                else "launched from the UI or the daemon")
    return f"run {run_id} ({where}{launcher}, {run.status.value.lower()})"


class PoolWatch:
    """While a run executes, say (once per wait) when one of its steps waits for a pool slot, and
    which runs hold the pool; release what dead processes hold meanwhile.

    Dagster's in-process executor waits for a slot silently at INFO (its "blocked by limit" event
    is an engine event at DEBUG), so a user would otherwise see a command that does nothing.
    """

    def __init__(self, instance: dg.DagsterInstance, run_id: str, log: Callable[[str], None],
                 interval_s: float = POOL_POLL_S):
        self.instance, self.run_id, self.log, self.interval_s = instance, run_id, log, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="www-pool-watch", daemon=True)
        self.waited: dict[str, float] = {}  # pool -> seconds this run waited for it
        self._failed_once = False

    def __enter__(self) -> "PoolWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _waiting_for(self) -> dict[str, object]:
        storage = self.instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            return {}
        out = {}
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            if any(s.run_id == self.run_id and s.assigned_timestamp is None for s in info.pending_steps):
                out[pool] = info
        return out

    def _watch(self) -> None:
        since: dict[str, float] = {}
        while not self._stop.wait(self.interval_s):
            try:
                waiting = self._waiting_for()
                if waiting and release_orphans(self.instance, self.log):
                    continue  # slots came back: look again before saying anything
                for pool, info in waiting.items():
                    if pool not in since:
                        since[pool] = time.monotonic()
                        holders = sorted(info.active_run_ids - {self.run_id})
                        held = "; ".join(_describe_run(self.instance, r) for r in holders) or "no run (yet)"
                        self.log(f"  waiting for a slot of pool '{pool}' ({info.slot_count} slot(s)), held by {held}")
                for pool in [p for p in since if p not in waiting]:
                    self._done_waiting(pool, since)
            except Exception as err:  # noqa: BLE001 - a progress message must never fail the run
                if not self._failed_once:
                    self.log(f"  (could not read the pool slots: {type(err).__name__}: {err})")
                self._failed_once = True
        for pool in list(since):  # the run ended before the next look
            self._done_waiting(pool, since)

    def _done_waiting(self, pool: str, since: dict[str, float]) -> None:
        self.waited[pool] = time.monotonic() - since.pop(pool)
        self.log(f"  waited {self.waited[pool]:.0f}s for a slot of pool '{pool}'")


def _failure_message(result) -> str:
    """The innermost error of each failed step (the exception the asset raised)."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            while error.cause is not None:
                error = error.cause
            messages.append(f"{event.step_key}: {str(error.message).strip()}")
    return "; ".join(messages) or "run failed"


def materialize(
    *,
    models: list[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    defs: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None,
    dry_run: bool = False,
) -> RunReport:
    """Evaluate the policy tick after tick, running what it requests, until it requests nothing.

    Args:
        models: only these models' partitions (and the unpartitioned assets).
        force: run every configured partition once (of `models`, if given), whatever its state.
        defs: the definitions (default: the project's).
        instance: the Dagster instance (default: `DAGSTER_HOME`'s).
        dry_run: print the first tick's runs and stop (nothing runs, the cursor is not saved;
            the registry sync still records what changed).
    """
    defs = defs or project_defs
    instance = instance or dg.DagsterInstance.get()
    started = time.monotonic()
    with instance_lock(instance, log):
        report = _materialize_locked(defs, instance, models=models, force=force, log=log, dry_run=dry_run)
    report.seconds = time.monotonic() - started
    if not dry_run:
        log(f"{len(report.launched)} run(s), {len(report.failed)} failed, {report.ticks} tick(s), "
            f"{report.seconds:.0f}s")
    return report


def _materialize_locked(defs, instance, *, models, force, log, dry_run) -> RunReport:
    report = RunReport()
    sync = sync_partitions(instance)
    log(f"registry: {sync.summary()}")
    configured = orchestration.read_configured().only(models)
    if models and (unknown := sorted(set(models) - configured.models)):
        log(f"not registered (or their file is bad): {unknown}")
    if not configured.world:
        log("registry: no world model registered; the embedded world is not generated")
    order, parents = dependency_order(defs), parents_of(defs)
    session = orchestration.Session(only_models=frozenset(models) if models else None, retry_failed=True)
    if force:
        session.forced = configured_entities(defs, configured)
    release_orphans(instance, log)
    removed = default_warehouse().remove_stale_temporaries()
    if removed:
        log(f"removed {len(removed)} temporary file(s) that a stopped writer left in the warehouse")
    cursor = load_cursor(instance)
    tags = {LAUNCHED_BY: LAUNCHED_BY_CLI, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    orchestration.set_session(session)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            warnings.simplefilter("ignore", dg.PreviewWarning)
            for tick in range(1, MAX_TICKS + 1):
                result = evaluate(defs, instance, cursor)
                cursor = result.cursor
                session.retry_failed = False
                deferred: set = set()
                runs = whole_steps(defs, requested_runs(result, order, parents, deferred))
                session.forced |= deferred  # asked for again next tick, after their parents ran
                if not runs:
                    break
                report.ticks = tick
                log(f"tick {tick}: {len(runs)} run(s)")
                if dry_run:
                    for run in runs:
                        log(f"would materialize [{run.label}] {', '.join(run.names())}")
                    return report
                for run in runs:
                    names = run.names()
                    log(f"materializing [{run.label}] {', '.join(names)}")
                    t0 = time.monotonic()
                    try:
                        run_id = str(uuid.uuid4())
                        with PoolWatch(instance, run_id, log):
                            outcome = execute_run(defs, run, instance, tags, run_id=run_id)
                        ok, error = outcome.success, "" if outcome.success else _failure_message(outcome)
                    except Exception as err:  # noqa: BLE001 - report and go on with the other partitions
                        ok, error = False, f"{type(err).__name__}: {err}"
                    session.forced -= {(k, run.partition_key) for k in run.assets | run.checks}
                    if ok:
                        report.launched.append((run.label, names))
                        log(f"  done in {time.monotonic() - t0:.1f}s")
                    else:
                        report.failed.append((run.label, ", ".join(names), error))
                        log(f"  FAILED [{run.label}] {', '.join(names)}: {error}")
                # a new model's first files change what the cross-model tables read: observe it now,
                # before they run, not at the next invocation
                for observation in changed_observations(instance, keys=[WAREHOUSE_MODELS]):
                    instance.report_runless_asset_event(observation)
                save_cursor(instance, cursor)
            else:
                log(f"stopped after {MAX_TICKS} ticks that all requested runs")
            save_cursor(instance, cursor)
    finally:
        orchestration.set_session(None)
    return report


def configured_entities(defs: dg.Definitions, configured: orchestration.ConfiguredPartitions) -> set:
    """Every configured (asset or check, partition) of the definitions: what `--force` runs."""
    partitioning = {k: spec.partitions_def for k, spec in asset_specs(defs).items() if not _is_source(defs, k)}
    partitioning.update({k: spec.partitions_def for k, spec in check_specs(defs).items()})
    out = set()
    for key, partitions_def in partitioning.items():
        asset_key = key if isinstance(key, dg.AssetKey) else key.asset_key
        if not configured.includes_asset(asset_key.path[-1]):
            continue
        keys = configured.keys_for(partitions_def)
        out |= {(key, None)} if keys is None else {(key, k) for k in keys}
    return out


def _is_source(defs: dg.Definitions, key: dg.AssetKey) -> bool:
    return not defs.get_assets_def(key).is_materializable
