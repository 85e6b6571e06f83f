"""The cluster path for real, on loopback: a Postgres instance, a Redis broker, a CPU and a GPU
Celery worker as separate processes, and the small pipeline of tests/test_pipeline_tiny.py run
through the pool-routing Celery executor of www_assets/cluster.py.

Checks: the tables equal those of an in-process run; every model-heavy step ran on the GPU
worker and every other step on the CPU worker; no two model-heavy steps overlapped; killing the
GPU worker while it holds a step fails that step only (the run ends, failed, with the CPU step
that ran beside it done), and re-executing the run from failure completes it, with the same
tables again.

Needs Debian's `postgresql` and `redis-server` (`.ci/run` installs them) and the `cluster`
extra; skipped, saying which is missing, without them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tiny_data import write_tiny_data

REPO = Path(__file__).resolve().parents[1]
SELECTION = ["model_training", "probe_images", "predictions", "activations", "neuron_examples", "gradcam_crops"]
TABLES = ["model_training", "probe_images", "predictions", "activations", "neuron_examples", "gradcam_crops"]
GPU_STEPS = {"model_training", "probe_forward", "gradcam_crops"}  # the selection's steps with pool="gpu"
RUN_CONFIG = {"ops": {"neuron_examples": {"config": {"k": 5}}}}
START_S = 300  # a worker imports dagster and torch before it is ready: slow on a loaded machine


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _missing() -> str | None:
    lacking = [name for name in ("initdb", "pg_ctl") if not _postgres_bin(name)]
    if not shutil.which("redis-server"):
        lacking.append("redis-server")
    if lacking:
        return f"needs Debian's postgresql and redis-server (missing: {', '.join(lacking)}; .ci/run installs them)"
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
        import redis  # noqa: F401
    except ImportError as err:
        return f"needs the cluster extra (pip install -e '.[cluster]'): {err}"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout_s: float, what: str, every_s: float = 0.3):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Services:
    """Postgres and Redis on loopback ports, in a temporary folder, stopped at the end."""

    def __init__(self, root: Path):
        self.root, self.processes = root, []
        self.pg_port, self.redis_port = free_port(), free_port()

    def start_postgres(self) -> None:
        pg = self.root / "pg"
        pg.mkdir()
        as_user = {}
        if os.geteuid() == 0:  # initdb refuses to run as root: an unprivileged user owns the cluster
            nobody = pwd.getpwnam("nobody")
            os.chown(pg, nobody.pw_uid, nobody.pw_gid)
            as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid}
        subprocess.run([_postgres_bin("initdb"), "-D", str(pg / "data"), "-U", "dagster", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, **as_user)
        options = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {pg} -c fsync=off -c max_connections=200"
        subprocess.run([_postgres_bin("pg_ctl"), "-D", str(pg / "data"), "-l", str(pg / "log"), "-o", options,
                        "-w", "-t", "60", "start"], check=True, capture_output=True, **as_user)
        self.stop_postgres = lambda: subprocess.run(
            [_postgres_bin("pg_ctl"), "-D", str(pg / "data"), "-m", "immediate", "stop"], capture_output=True, **as_user)

    def start_redis(self) -> None:
        process = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", str(self.root)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        wait_for(lambda: port_open(self.redis_port), 20, "redis-server")

    def env(self) -> dict[str, str]:
        return {
            "WWW_PG_HOST": "127.0.0.1", "WWW_PG_PORT": str(self.pg_port), "WWW_PG_DB": "postgres",
            "WWW_PG_USER": "dagster", "WWW_PG_PASSWORD": "",
            "WWW_CELERY_BROKER": f"redis://127.0.0.1:{self.redis_port}/0",
            "WWW_CELERY_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
        }

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)
        if hasattr(self, "stop_postgres"):
            self.stop_postgres()


class Worker:
    """`dagster-celery worker start` as its own process group, serving one queue, one step at a time."""

    def __init__(self, name: str, queue: str, env: dict[str, str], log: Path):
        bin_dir = str(Path(sys.executable).parent)
        command = [sys.executable, "-c", "from dagster_celery.cli import main; main()", "worker", "start",
                   "-A", "dagster_celery.app", "-y", str(REPO / "dagster_home/cluster/celery.yaml"),
                   "-q", queue, "-n", name, "-i", "tests.celery_hooks", "-l", "INFO",
                   "--", "--concurrency=1", "--pool=prefork", "--without-gossip", "--without-mingle"]
        env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", "")}
        self.name, self.log = name, log
        self.process = subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def ready(self) -> bool:
        text = self.log.read_text(errors="replace")
        if self.process.poll() is not None:
            raise AssertionError(f"Celery worker {self.name} exited ({self.process.returncode}):\n{text[-3000:]}")
        return "ready." in text

    def received(self) -> int:
        return self.log.read_text(errors="replace").count("received")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def table_frames(data: Path, partition: str) -> dict[str, pd.DataFrame]:
    from www_resources.storage import Warehouse
    from www_resources.tables import TABLES as SPECS

    warehouse = Warehouse(data / "warehouse")
    frames = {}
    for table in TABLES:
        df = warehouse.read(table, {"model": partition}).drop(columns=["model"], errors="ignore")
        grain = [c for c in SPECS[table].grain if c in df.columns]
        frames[table] = df.sort_values(grain).reset_index(drop=True) if grain else df
    return frames


def assert_same_tables(got: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame], folders: tuple[Path, Path]) -> None:
    """Equal tables, but for the data folder in file paths (`folders`: expected's, got's)."""
    for table, want in expected.items():
        want = want.copy()
        for column in want.columns:
            if want[column].map(lambda v: isinstance(v, str)).any():
                want[column] = want[column].str.replace(str(folders[0]), str(folders[1]), regex=False)
        have = got[table]
        assert list(have.columns) == list(want.columns), table
        assert len(have) == len(want) and len(want) > 0, (table, len(have), len(want))
        for column in want.columns:
            a, b = have[column].to_numpy(), want[column].to_numpy()
            if len(b) and isinstance(b[0], (np.ndarray, list)):
                for row, (x, y) in enumerate(zip(a, b)):  # vectors of each layer's width
                    np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-5, atol=1e-5,
                                               err_msg=f"{table}.{column}, row {row}")
            elif want[column].dtype.kind == "f":
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{table}.{column}")
            else:
                assert have[column].tolist() == want[column].tolist(), f"{table}.{column}"


def step_records(instance, run_id: str):
    """{step: (start, end, outcome)} from the run's event log, and {step: Celery worker name}."""
    import dagster as dg

    spans, workers = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            spans[entry.step_key] = (entry.timestamp, None, "started")
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            start = spans.get(entry.step_key, (entry.timestamp,))[0]
            spans[entry.step_key] = (start, entry.timestamp, "success" if kind == dg.DagsterEventType.STEP_SUCCESS else "failure")
        elif kind == dg.DagsterEventType.ENGINE_EVENT and "in celery worker" in (event.message or ""):
            metadata = event.event_specific_data.metadata
            workers[entry.step_key] = str(metadata["Celery worker"].value).split("@")[0]
    return spans, workers


def run_in_process(data: Path, monkeypatch) -> dict[str, pd.DataFrame]:
    import dagster as dg

    from www_assets.definitions import defs
    from www_assets.registry_sync import sync_partitions

    monkeypatch.setenv("WWW_DATA_DIR", str(data))
    with dg.DagsterInstance.ephemeral() as instance:
        sync_partitions(instance)
        result = dg.materialize(list(defs.assets), selection=SELECTION, partition_key="tiny", instance=instance,
                                resources=defs.resources, run_config=RUN_CONFIG)
        assert result.success
    return table_frames(data, "tiny")


def test_cluster_run_equals_in_process_routes_by_pool_and_survives_a_killed_worker(monkeypatch):
    import dagster as dg

    from www_assets import cluster
    from www_assets.registry_sync import sync_partitions

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="www-cluster-"))
    os.chmod(root, 0o755)
    services, workers = Services(root), []
    try:
        reference_data, data = root / "reference", root / "shared-data"
        write_tiny_data(reference_data)
        write_tiny_data(data, models=("tiny", "tiny2"))
        expected = run_in_process(reference_data, monkeypatch)

        services.start_postgres()
        services.start_redis()
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster_home/cluster/dagster.yaml", home / "dagster.yaml")
        env = {**os.environ, **services.env(), "DAGSTER_HOME": str(home), "WWW_DATA_DIR": str(data),
               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WWW_OFFLINE": "1"}
        env.pop("WWW_MODELS_DIR", None)
        for key in ("DAGSTER_HOME", "WWW_DATA_DIR", *services.env()):
            monkeypatch.setenv(key, env[key])

        hold = root / "hold"  # while it exists, workers hold the tasks they receive (tests/celery_hooks.py)
        env["WWW_TEST_HOLD_FILE"] = str(hold)
        workers += [Worker(name, queue, env, root / f"{name}.log")
                    for name, queue in (("cpu", "dagster"), ("gpu1", "gpu"), ("gpu2", "gpu"))]
        wait_for(lambda: all(w.ready() for w in workers), START_S, "the Celery workers to be ready")

        instance = dg.DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        sync_partitions(instance)
        job = dg.reconstructable(cluster.model_job)
        keys = [dg.AssetKey(name) for name in SELECTION]

        # 1. the whole selection through the cluster
        result = dg.execute_job(job, instance=instance, asset_selection=keys, run_config=RUN_CONFIG,
                                tags={"dagster/partition": "tiny"})
        assert result.success
        assert_same_tables(table_frames(data, "tiny"), expected, (reference_data, data))
        spans, ran_on = step_records(instance, result.run_id)
        assert GPU_STEPS <= set(spans) and all(outcome == "success" for *_, outcome in spans.values())
        for step in spans:  # two GPU workers: the pool, not the worker count, keeps their steps apart
            assert ran_on[step].rstrip("12") == ("gpu" if step in GPU_STEPS else "cpu"), (step, ran_on)
        routed = [e.user_message for e in instance.all_logs(result.run_id) if "-> Celery queue" in (e.user_message or "")]
        for step in spans:  # the run's log says where each step went
            assert f"step {step} (pool {'gpu' if step in GPU_STEPS else 'None'}) -> Celery queue " \
                   f"{'gpu' if step in GPU_STEPS else 'dagster'}" in routed, (step, routed)
        gpu_spans = sorted(spans[step][:2] for step in GPU_STEPS)
        for (_, end), (next_start, _) in zip(gpu_spans, gpu_spans[1:]):
            assert next_start >= end, f"model-heavy steps overlapped: {gpu_spans}"

        # 2. the GPU worker that holds a step is killed; only that step fails
        hold.touch()
        received = {w.name: w.received() for w in workers}
        outcome = {}

        def run_tiny2():
            outcome["result"] = dg.execute_job(
                job, instance=instance, asset_selection=keys, tags={"dagster/partition": "tiny2"}, raise_on_error=False,
                run_config={**RUN_CONFIG, "execution": {"config": {"worker_check_interval_s": 1.0, "worker_silence_s": 4.0}}})

        runner = threading.Thread(target=run_tiny2, daemon=True)
        runner.start()
        holder = wait_for(lambda: next((w for w in workers[1:] if w.received() > received[w.name]), None), 120,
                          "a GPU worker to receive a step")
        time.sleep(8)  # the executor's watch (every 1 s) sees the step in that worker
        holder.kill()
        hold.unlink()
        runner.join(timeout=180)
        assert not runner.is_alive(), "the run did not notice the lost worker"
        failed = outcome["result"]
        assert not failed.success
        spans, ran_on = step_records(instance, failed.run_id)
        # the steps that do not need it ran (the CPU step beside it and its check); the model-heavy
        # steps after it did not start; nothing else failed
        assert {step: state for step, (_, _, state) in spans.items() if step != "model_training"} == \
            {"probe_images": "success", "check_probe_images": "success"}, spans
        assert spans.get("model_training", (0, 0, "not started"))[2] != "success"
        assert instance.get_run_by_id(failed.run_id).status == dg.DagsterRunStatus.FAILURE
        lost = [e.user_message for e in instance.all_logs(failed.run_id) if "stopped answering" in (e.user_message or "")]
        assert lost and "model_training" in lost[0], "the failure names the lost worker's step"

        # 3. re-executing from failure completes the run, on the GPU worker left
        rerun = {}
        rerunner = threading.Thread(daemon=True, target=lambda: rerun.update(result=dg.execute_job(
            job, instance=instance, run_config=RUN_CONFIG, tags={"dagster/partition": "tiny2"},
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance))))
        rerunner.start()
        rerunner.join(timeout=300)
        assert not rerunner.is_alive(), "the re-execution did not finish (a gpu slot left held?)"
        again = rerun["result"]
        assert again.success
        spans, ran_on = step_records(instance, again.run_id)
        assert "probe_images" not in spans and GPU_STEPS <= set(spans)  # what had succeeded is not redone
        assert_same_tables(table_frames(data, "tiny2"), expected, (reference_data, data))
        print(f"cluster test: {time.monotonic() - started:.0f} s")
    except BaseException:
        try:  # what the last run logged, for the failure report
            run = dg.DagsterInstance.get().get_runs(limit=1)[0]
            lines = [f"{e.step_key}: {e.dagster_event.event_type_value if e.dagster_event else ''} {e.message[:300]}"
                     for e in dg.DagsterInstance.get().all_logs(run.run_id)]
            print(f"--- run {run.run_id} ({run.status}) ---\n" + "\n".join(lines[-40:]))
        except Exception as err:
            print(f"(no run log: {err})")
        for worker in workers:  # what the workers said, for the failure report
            print(f"--- {worker.name} worker log (last lines) ---\n" + "\n".join(worker.log.read_text(errors="replace").splitlines()[-25:]))
        raise
    finally:
        for worker in workers:
            worker.kill()
        services.stop()
        shutil.rmtree(root, ignore_errors=True)
