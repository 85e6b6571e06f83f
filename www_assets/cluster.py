"""The same assets on a cluster: every step a Celery task, model-heavy steps on GPU workers.

Opt-in, as a second code location (`dagster_home/cluster/workspace.yaml`); the normal one
(`www_assets.definitions`) keeps the in-process executor. Steps of the `gpu` pool go to the Celery
queue `gpu`, every other step to the queue `dagster`; a worker serves the queues it is started
with (`dagster-celery worker start -q gpu ...`). The Dagster instance must be shared by every
machine (Postgres: `dagster_home/cluster/dagster.yaml`) and so must the data folder
(`WWW_DATA_DIR`, a path on a shared filesystem): workers write the Parquet partitions there and
the next step, maybe on another machine, reads them. The broker and result backend come from
`dagster_home/cluster/celery.yaml` (the file the workers are started with), so the run and its
workers cannot disagree on them.

A worker that dies fails its step: Celery reports a pool process that died, and a whole worker
that stops answering (a machine lost, a killed worker) is noticed by polling the workers every
`worker_check_interval_s`; after `worker_silence_s` without an answer its step ends unfinished
and its `gpu` slot is freed for the other runs. The steps that do not depend on it still run,
the run fails, and re-executing it from failure completes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import yaml
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

from www_assets import definitions
from www_assets.partitions import models

CELERY_FILE = Path(__file__).resolve().parents[1] / "dagster_home" / "cluster" / "celery.yaml"
GPU_POOLS = ("gpu",)


def celery_settings(path: Path = CELERY_FILE) -> dict:
    """The executor settings (broker, backend, config_source) the workers are started with."""
    content = yaml.safe_load(path.read_text()) or {}
    return dict(content.get("execution", {}).get("config", {}))


def queue_for(step, default_queue: str, gpu_queue: str, gpu_pools=GPU_POOLS) -> str:
    """The queue of a step: an explicit `dagster-celery/queue` op tag, else `gpu_queue` for steps
    in a GPU pool, else the default queue."""
    explicit = step.tags.get("dagster-celery/queue")
    if explicit:
        return explicit
    return gpu_queue if getattr(step, "pool", None) in gpu_pools else default_queue


class WorkerWatch:
    """Which worker holds which task, and when each worker last answered (Celery's `inspect`).

    Polls at most every `every_s`; a worker that held a task and has not answered for
    `silence_s` is lost. Workers must use a pool with a supervising process (Celery's default
    prefork pool), which answers while its child runs the step."""

    def __init__(self, app, every_s: float, silence_s: float):
        self.app, self.every_s, self.silence_s = app, every_s, silence_s
        self.owner: dict[str, str] = {}
        self.last_answer: dict[str, float] = {}
        self.checked = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.checked < self.every_s:
            return
        self.checked = now
        try:
            active = self.app.control.inspect(timeout=1.0).active() or {}
        except Exception:  # the broker itself is unreachable: judge no worker on that
            return
        for worker, tasks in active.items():
            self.last_answer[worker] = now
            for task in tasks or []:
                self.owner[task["id"]] = worker

    def lost_worker(self, task_id: str) -> str | None:
        self.refresh()
        worker = self.owner.get(task_id)
        if worker is None:
            return None  # still queued, or never seen: nothing to judge
        if time.monotonic() - self.last_answer.get(worker, 0.0) > self.silence_s:
            return worker
        return None


class WatchedTask:
    """A Celery result as the Celery execution loop uses it (`ready`, `get`, `revoke`), that also
    ends when its worker is lost, and frees the step's pool slot when the step ended without a
    word from the worker (its process died), as run monitoring would after the run."""

    def __init__(self, result, watch: WorkerWatch, instance, run_id: str, step_key: str, log=None):
        self.result, self.watch, self.log = result, watch, log or (lambda message: None)
        self.instance, self.run_id, self.step_key = instance, run_id, step_key
        self.lost: str | None = None

    def ready(self) -> bool:
        if self.lost or self.result.ready():
            return True
        self.lost = self.watch.lost_worker(self.result.id)
        if self.lost:
            self.log(f"step {self.step_key}: Celery worker {self.lost} stopped answering for "
                     f"{self.watch.silence_s:.0f} s while running it; the step fails")
        return self.lost is not None

    def _free_slot(self) -> None:
        storage = self.instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slot_for_step(self.run_id, self.step_key)

    def get(self):
        """The step's events; none when its worker was lost or its task died with its process.

        No events (rather than an exception) is what lets the run go on: Dagster then records the
        step as ended in an unknown state, does not start what depends on it, runs every other
        step, and fails the run at the end (dagster-celery's loop would stop starting steps on
        an exception but wait for them forever)."""
        if self.lost:
            self._free_slot()
            self.result.revoke()
            return []
        try:
            return self.result.get()
        except Exception as err:
            self._free_slot()
            self.log(f"step {self.step_key}: its Celery task failed: {type(err).__name__}: {err}")
            return []

    def revoke(self):
        return self.result.revoke()


class PoolRoutingCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor, routing each step by its pool and watching the workers."""

    def __init__(self, *, gpu_queue: str, worker_check_interval_s: float, worker_silence_s: float, **kwargs):
        super().__init__(**kwargs)
        self.gpu_queue = gpu_queue
        self.worker_check_interval_s = worker_check_interval_s
        self.worker_silence_s = worker_silence_s

    def execute(self, plan_context, execution_plan):
        watch: dict[str, WorkerWatch] = {}

        def submit(app, context, step, queue, priority, known_state):
            routed = queue_for(step, queue, self.gpu_queue)
            if "app" not in watch:
                watch["app"] = WorkerWatch(app, self.worker_check_interval_s, self.worker_silence_s)
            # dagster-celery's own "Submitting ... to queue" line names the default queue: say where it went
            context.log.info(f"step {step.key} (pool {getattr(step, 'pool', None)}) -> Celery queue {routed}")
            result = _submit_task(app, context, step, routed, priority, known_state)
            return WatchedTask(result, watch["app"], context.instance, context.run_id, step.key, context.log.error)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


WORKER_SETTINGS = {
    "gpu_queue": dg.Field(str, default_value="gpu", description="Celery queue of the gpu pool's steps"),
    "worker_check_interval_s": dg.Field(float, default_value=10.0, description="how often workers are polled"),
    "worker_silence_s": dg.Field(float, default_value=60.0, description="a worker silent this long has lost its step"),
}


@dg.executor(
    name="celery_gpu_routing",
    config_schema={**CELERY_CONFIG, **WORKER_SETTINGS},
    requirements=dg.multiple_process_executor_requirements(),
)
def celery_gpu_routing_executor(init_context):
    """dagster-celery's executor (same settings) that routes steps by pool and watches workers."""
    from dagster_celery import celery_executor

    base = celery_executor.executor_creation_fn(init_context)  # broker, backend, retries as dagster-celery reads them
    config = init_context.executor_config
    return PoolRoutingCeleryExecutor(
        broker=base.broker,
        backend=base.backend,
        config_source=vars(base.config_source),
        include=base.include,
        retries=base.retries,
        gpu_queue=config["gpu_queue"],
        worker_check_interval_s=config["worker_check_interval_s"],
        worker_silence_s=config["worker_silence_s"],
    )


def cluster_executor(settings_file: Path = CELERY_FILE) -> dg.ExecutorDefinition:
    """The executor with the broker, backend and Celery settings of `settings_file` (what the
    workers are started with); run config may still set the WORKER_SETTINGS."""
    settings = celery_settings(settings_file)
    return celery_gpu_routing_executor.configured(
        lambda config: {**settings, **config}, name="celery_gpu_routing", config_schema=WORKER_SETTINGS,
    )


_base = definitions.defs
# materializable assets only: the registry files are observable sources partitioned by model too
_per_model = [key for a in _base.assets
              if isinstance(a, dg.AssetsDefinition) and a.partitions_def == models for key in a.keys]

# every asset partitioned by model alone, as one job: a model's probe, Grad-CAM and embedding steps
# from the launchpad (pick a partition), or a script's dg.execute_job(dg.reconstructable(model_job))
per_model_job = dg.define_asset_job(
    "per_model_assets", selection=dg.AssetSelection.assets(*_per_model),
    description="The assets partitioned by model alone, for one model, on the cluster.",
)

defs = dg.Definitions(
    assets=_base.assets,
    asset_checks=_base.asset_checks,
    sensors=_base.sensors,
    schedules=_base.schedules,
    jobs=[*(_base.jobs or []), per_model_job],
    resources=_base.resources,
    executor=cluster_executor(),
)


def model_job():
    """`per_model_assets` resolved, for `dg.reconstructable` (tests, scripts)."""
    return defs.resolve_job_def("per_model_assets")
