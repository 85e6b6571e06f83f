"""`www materialize`: bring every registered model's assets up to date from the command line.

It does what a user would do in the UI, in order: add the partitions of new registry files, then
walk the asset graph in dependency order, stage by stage (one stage = consecutive assets with the
same partitioning), and for each partition launch one in-process run of exactly the assets that
are missing or stale (Dagster's own stale status: code version or upstream data changed). A
second invocation with nothing changed launches nothing. Runs are recorded in the instance
(`DAGSTER_HOME`), so the UI shows them. A failed partition does not stop the others; its
downstream assets wait for the next invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RunReport:
    launched: list[tuple[str, str | None, list[str]]] = field(default_factory=list)
    failed: list[tuple[str, str | None, str]] = field(default_factory=list)
    skipped_fresh: int = 0
    seconds: float = 0.0


# the console shows progress lines (INFO and up); every event, DEBUG included, stays in the run's
# event log, where the UI shows it
CONSOLE_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

WORLD_ONLY_ASSETS = ("world_scenes", "world_parts", "world_classes", "world_vocabulary", "world_clip")


def world_needed() -> bool:
    """Whether any registered model uses the embedded world (its images, training or CLIP)."""
    from www_resources.registry import scan_models

    return any(e.is_world_model or e.train or "world-clip" in e.clip for e in scan_models().entries.values())


def _stages(asset_graph, keys) -> list[tuple[object, list]]:
    """Group assets into stages of one partitioning, respecting dependencies."""
    remaining = set(keys)
    done: set = set()
    stages = []

    def scope(key):
        pd = asset_graph.get(key).partitions_def
        return None if pd is None else repr(pd)

    while remaining:
        ready = [k for k in remaining if all(p in done or p not in keys for p in asset_graph.get(k).parent_keys)]
        if not ready:
            raise RuntimeError(f"dependency cycle among {sorted(map(str, remaining))}")
        # the scope that unblocks the most work first
        counts: dict = {}
        for k in ready:
            counts[scope(k)] = counts.get(scope(k), 0) + 1
        chosen = max(counts, key=lambda s: counts[s])
        stage = []
        while True:
            batch = [
                k for k in remaining
                if scope(k) == chosen and all(p in done or p not in keys for p in asset_graph.get(k).parent_keys)
            ]
            if not batch:
                break
            batch.sort(key=lambda k: k.to_user_string())
            for k in batch:
                remaining.discard(k)
                done.add(k)
            stage.extend(batch)
        stages.append((asset_graph.get(stage[0]).partitions_def, stage))  # dependency order
    return stages


def _partition_keys(partitions_def, instance, wanted_models: set[str] | None) -> list[str | None]:
    """The partitions to consider: configured model x concept-set pairs only."""
    from www_assets.partitions import model_concepts, models
    from www_resources.registry import scan_models

    if partitions_def is None:
        return [None]
    entries = scan_models().entries
    names = [m for m in instance.get_dynamic_partitions(models.name) if m in entries]
    if wanted_models is not None:
        names = [m for m in names if m in wanted_models]
    if partitions_def == models:
        return sorted(names)
    if partitions_def == model_concepts:
        import dagster as dg

        return [
            dg.MultiPartitionKey({"model": m, "concept_set": c})
            for m in sorted(names)
            for c in entries[m].concept_sets
        ]
    raise ValueError(f"unexpected partitioning {partitions_def!r}")


def materialize_stale(
    *,
    models: list[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> RunReport:
    """Materialize everything missing or stale for the registered (or the given) models."""
    import dagster as dg
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
    from dagster._core.definitions.temporal_context import TemporalContext
    from dagster._time import get_current_datetime

    from www_assets.definitions import defs
    from www_assets.registry_sync import sync_partitions

    started = time.monotonic()
    report = RunReport()
    instance = dg.DagsterInstance.get()
    sync = sync_partitions(instance)
    log(f"registry: {sync.summary()}")
    asset_graph = defs.resolve_asset_graph()
    all_assets = list(defs.assets or [])
    keys = {k for k in asset_graph.materializable_asset_keys}
    if not world_needed():
        # no registered model lives in the embedded world: do not generate it or train its CLIP
        keys -= {dg.AssetKey(name) for name in WORLD_ONLY_ASSETS}
        log("registry: no world model registered; the embedded world is not generated")
    blocked: set = set()  # failed, or downstream of a failure in this invocation
    wanted = set(models) if models else None

    for partitions_def, stage_keys in _stages(asset_graph, keys):
        for partition_key in _partition_keys(partitions_def, instance, wanted):
            view = AssetGraphView(
                temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                instance=instance,
                asset_graph=asset_graph,
            )
            resolver = CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)
            todo = []
            for key in stage_keys:
                if any(p in blocked for p in asset_graph.get(key).parent_keys):
                    blocked.add(key)
                    continue
                status = StaleStatus.STALE if force else resolver.get_status(key, partition_key)
                if status != StaleStatus.FRESH:
                    todo.append(key)
                else:
                    report.skipped_fresh += 1
            # a child of something re-run in this stage is stale too, though not yet marked so
            grown = True
            while grown:
                grown = False
                for key in stage_keys:
                    if key not in todo and key not in blocked and any(p in todo for p in asset_graph.get(key).parent_keys):
                        todo.append(key)
                        report.skipped_fresh -= 1
                        grown = True
            if not todo:
                continue
            # a multi-asset runs as a whole
            selection = set()
            for key in todo:
                selection |= set(asset_graph.get(key).assets_def.keys)
            names = sorted(k.to_user_string() for k in selection)
            label = str(partition_key) if partition_key is not None else "-"
            log(f"materializing [{label}] {', '.join(names)}")
            t0 = time.monotonic()
            try:
                result = dg.materialize(
                    [*all_assets, *(defs.asset_checks or [])],
                    selection=list(selection),
                    partition_key=partition_key,
                    run_config=CONSOLE_LOGS,
                    instance=instance,
                    resources=defs.resources,
                    tags={"www/launched_by": "www materialize"},
                    raise_on_error=False,
                )
                ok = result.success
                error = "" if ok else "; ".join(
                    str(e.event_specific_data.error.message).strip()
                    for e in result.all_events
                    if e.is_step_failure
                )
            except Exception as err:  # noqa: BLE001 - report and go on with the other partitions
                ok, error = False, f"{type(err).__name__}: {err}"
            if ok:
                report.launched.append((label, partition_key, names))
                log(f"  done in {time.monotonic() - t0:.1f}s")
            else:
                report.failed.append((label, ", ".join(names), error))
                blocked |= selection
                log(f"  FAILED [{label}] {', '.join(names)}: {error}")
    report.seconds = time.monotonic() - started
    log(
        f"{len(report.launched)} run(s), {len(report.failed)} failed, "
        f"{report.skipped_fresh} asset partition(s) already fresh, {report.seconds:.0f}s"
    )
    return report
