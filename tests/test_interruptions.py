"""Interrupted and concurrent `www materialize`: a killed run loses nothing and blocks nothing; two
invocations at once compute nothing twice while `www sql` keeps answering.

The fast tests drive the pieces in-process (stale temporary files, the instance lock, a run left
"started" by a dead process, the message of a step waiting for a pool slot). The two slow ones run
the real command line in subprocesses (`tests/materialize_cut.py`: `www materialize` on the real
first stage of the graph) on the tiny image-folder data set of `tests/tiny_data.py`.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from tests.tiny_data import write_tiny_data
from www_assets import runner
from www_resources.storage import Catalog, Warehouse

REPO = Path(__file__).resolve().parents[1]
# a guard against a hang, not a speed target: about 15 s of work per process on an idle 2-core
# machine, but minutes when other jobs share the cores
HANG_S = 480
pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning", "ignore::dagster.BetaWarning")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def predictions_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"img{i:04d}" for i in range(n)],
        "label": rng.integers(0, 3, n).astype(np.int32),
        "pred": rng.integers(0, 3, n).astype(np.int32),
        "msp": rng.random(n).astype(np.float32),
        "top5": [[int(x) for x in row] for row in rng.integers(0, 3, (n, 5))],
        "correct": rng.random(n) < 0.5,
    })


# --- stale temporary files ----------------------------------------------------------------------


def test_temporary_files_are_invisible_to_duckdb_and_a_dead_writers_are_removed(tmp_path):
    import pyarrow.parquet as pq

    from www_resources import storage

    warehouse = Warehouse(tmp_path / "warehouse")
    catalog = Catalog(tmp_path / "www.duckdb", warehouse)
    [path] = warehouse.write("predictions", predictions_frame(5, 0), {"model": "m"})
    catalog.ensure_views(["predictions"])
    host = storage._host_label()
    # complete Parquet files (50 rows each) under the names a writer gives its temporary files
    names = {
        "dead": f".data.parquet.{host}.{dead_pid()}.{uuid.uuid4().hex}.partial",
        "live": f".data.parquet.{host}.{os.getpid()}.{uuid.uuid4().hex}.partial",
        "other host": f".data.parquet.elsewhere-1.{dead_pid()}.{uuid.uuid4().hex}.partial",
    }
    frame = storage.to_arrow(storage.TABLES["predictions"], predictions_frame(50, 1))
    for name in names.values():
        pq.write_table(frame, path.parent / name)
    # DuckDB's view (glob **/*.parquet) reads the partition file only
    assert catalog.query("select count(*) n from predictions")["n"].tolist() == [5]
    assert catalog.query(f"select count(*) n from read_parquet('{warehouse.root}/**/*.parquet')")["n"].tolist() == [5]
    # the sweep removes the dead writer's file, not a live writer's nor another host's
    assert warehouse.remove_stale_temporaries() == [path.parent / names["dead"]]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(["data.parquet", names["live"], names["other host"]])
    # the next write of the partition sweeps too
    stale = path.parent / f".data.parquet.{host}.{dead_pid()}.{uuid.uuid4().hex}.partial"
    pq.write_table(frame, stale)
    warehouse.write("predictions", predictions_frame(7, 2), {"model": "m"})
    assert not stale.exists() and (path.parent / names["live"]).exists()
    assert catalog.query("select count(*) n from predictions")["n"].tolist() == [7]


# --- the instance lock --------------------------------------------------------------------------


def test_a_second_invocation_waits_for_the_lock_and_says_who_holds_it(dagster_instance):
    first, second = [], []
    acquired = threading.Event()

    def contender():
        with runner.instance_lock(dagster_instance, second.append):
            acquired.set()

    with runner.instance_lock(dagster_instance, first.append):
        thread = threading.Thread(target=contender, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not second and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not acquired.wait(0.5)  # still waiting while the first holds the lock
        assert second == [f"another www materialize (pid {os.getpid()} on {socket.gethostname()}) is running "
                          "on this instance; waiting for it to finish"]
    thread.join(timeout=30)
    assert acquired.is_set() and second[1].startswith("it finished after ")
    assert first == []


# --- a run of a dead process, a step waiting for a slot -----------------------------------------


def started_run(instance, pid: int, claim_gpu: bool = True) -> str:
    """A STARTED run of `www materialize` pid `pid` on this host, holding the `gpu` slot."""
    run_id = str(uuid.uuid4())
    tags = {runner.LAUNCHED_BY: runner.LAUNCHED_BY_CLI, runner.PID_TAG: str(pid),
            runner.HOST_TAG: socket.gethostname(), "dagster/partition": "m1"}
    instance.add_run(dg.DagsterRun(job_name="www_materialize", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags=tags))
    if claim_gpu:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("gpu")
        assert storage.claim_concurrency_slot("gpu", run_id, "probe_forward").is_claimed
    return run_id


def gpu_holders(instance) -> list[str]:
    return [s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots]


def test_a_dead_processs_run_is_marked_failed_and_its_slots_freed(dagster_instance):
    dead = started_run(dagster_instance, dead_pid())
    alive = started_run(dagster_instance, os.getpid(), claim_gpu=False)
    assert gpu_holders(dagster_instance) == [dead]
    logs = []
    assert runner.release_orphans(dagster_instance, logs.append) == 2  # one failed, one freed
    assert dagster_instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert dagster_instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert gpu_holders(dagster_instance) == []
    assert logs == [f"run {dead} of a www materialize that was stopped is marked failed",
                    f"the pool slots of run {dead} (failure) are free again"]
    assert runner.release_orphans(dagster_instance, logs.append) == 0


def gpu_definitions() -> dg.Definitions:
    from www_assets.orchestration import with_automation

    @dg.asset(pool="gpu")
    def heavy() -> None: ...

    return dg.Definitions(assets=with_automation([heavy]))


def test_a_step_waiting_for_a_pool_slot_says_which_run_holds_it(dagster_instance, www_data_dir):
    holder = started_run(dagster_instance, os.getpid())  # a live process: its slot is not taken away
    logs: list[str] = []
    done: list[runner.RunReport] = []
    thread = threading.Thread(target=lambda: done.append(runner.materialize(
        defs=gpu_definitions(), instance=dagster_instance, log=logs.append)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 300  # a hang guard, not a speed check: a loaded 2-core CI machine is slow
    while not any("waiting for a slot" in line for line in logs) and time.monotonic() < deadline:
        time.sleep(0.1)
    [waiting] = [line for line in logs if "waiting for a slot" in line]
    assert waiting == (f"  waiting for a slot of pool 'gpu' (1 slot(s)), held by run {holder} "
                       f"([m1] www materialize pid {os.getpid()}, started)")
    assert not done  # blocked, and said so
    dagster_instance.event_log_storage.free_concurrency_slots_for_run(holder)
    thread.join(timeout=300)
    assert done and done[0].failed == [] and done[0].launched == [("-", ["heavy"])]
    assert any(re.fullmatch(r"  waited \d+s for a slot of pool 'gpu'", line) for line in logs), logs
    assert gpu_holders(dagster_instance) == []


# --- the real command line, killed and concurrent ----------------------------------------------


def tiny_instance(tmp_path, monkeypatch, models=("tiny", "tiny2")) -> Path:
    data = tmp_path / "data"
    write_tiny_data(data, models=models)
    monkeypatch.setenv("WWW_DATA_DIR", str(data))
    monkeypatch.setenv("WWW_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return data


def www(*args, env=None, **kwargs) -> subprocess.Popen:
    """`www materialize` on the graph's first stage (`tests/materialize_cut.py`), in a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "tests.materialize_cut", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def www_sql(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "www_assets.cli", "sql", sql, "--format", "json"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def materializations(instance) -> dict[tuple[str, str], list[str]]:
    """(asset, partition) -> the run ids that materialized it, in order."""
    out: dict[tuple[str, str], list[str]] = {}
    for key in instance.get_asset_keys():
        result = instance.fetch_materializations(key, limit=1000, ascending=True)
        for record in result.records:
            out.setdefault((key.to_user_string(), record.partition_key or "-"), []).append(record.run_id)
    return out


def first_stage(instance):
    from tests.materialize_cut import cut_definitions

    logs: list[str] = []
    report = runner.materialize(defs=cut_definitions(), instance=instance, log=logs.append)
    assert report.failed == [], logs
    return report


ACTIVATIONS = "select model, layer, image_id, vector from activations order by model, layer, image_id"
# one number per row for the answers of `www sql` (JSON)
ACTIVATION_SUMS = "select model, layer, image_id, list_sum(vector::float[]) as total from activations order by all"


def assert_same_activations(got: pd.DataFrame, want: pd.DataFrame) -> None:
    keys = ["model", "layer", "image_id"]
    assert got[keys].values.tolist() == want[keys].values.tolist()
    assert all(np.array_equal(a, b) for a, b in zip(got["vector"], want["vector"]))
PREDICTIONS = "select model, image_id, pred, msp from predictions order by model, image_id"


@pytest.mark.slow
def test_a_killed_materialize_loses_nothing_and_blocks_nothing(tmp_path, monkeypatch, dagster_instance):
    data = tiny_instance(tmp_path, monkeypatch)
    instance = dagster_instance
    first_stage(instance)
    catalog = Catalog(data / "www.duckdb", Warehouse(data / "warehouse"))
    old_activations, old_predictions = catalog.query(ACTIVATIONS), catalog.query(PREDICTIONS)
    before = materializations(instance)

    # --force, held (then killed) just before tiny2's activation files are renamed into place
    marker = tmp_path / "holding"
    killed = www("--force", env={"WWW_TEST_HOLD_AT": "activations/model=tiny2/", "WWW_TEST_HOLD_FILE": str(marker)})
    deadline = time.monotonic() + HANG_S
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), killed.communicate(timeout=30)[0] if killed.poll() is not None else "no hold"
    partition = data / "warehouse" / "activations" / "model=tiny2"
    temporaries = sorted(partition.rglob(".*.partial"))
    assert len(temporaries) == 3  # one per layer, written in full, none renamed yet
    [dead_run] = [s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots]
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)

    # what a new user finds: the old data in DuckDB, whole; the run "started", holding the gpu slot
    assert_same_activations(catalog.query(ACTIVATIONS), old_activations)
    pd.testing.assert_frame_equal(catalog.query(PREDICTIONS), old_predictions)
    run = instance.get_run_by_id(dead_run)
    assert run.status == dg.DagsterRunStatus.STARTED and run.tags[runner.PID_TAG] == str(killed.pid)
    after_kill = materializations(instance)
    completed = {k for k, runs in after_kill.items() if len(runs) > len(before.get(k, []))}
    # the killed invocation completed tick 1 of both models, tiny's forward pass and tiny2's predictions
    assert completed == {("model_training", "tiny"), ("model_training", "tiny2"), ("probe_images", "tiny"),
                         ("probe_images", "tiny2"), ("activations", "tiny"), ("predictions", "tiny"),
                         ("predictions", "tiny2")}

    # the next `www materialize`
    rerun = www()
    out, _ = rerun.communicate(timeout=HANG_S)
    assert rerun.returncode == 0, out
    assert f"run {dead_run} of a www materialize that was stopped is marked failed" in out
    assert f"the pool slots of run {dead_run} (failure) are free again" in out
    assert "removed 3 temporary file(s) that a stopped writer left in the warehouse" in out
    assert "waiting for a slot" not in out
    assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    assert not any(p.exists() for p in temporaries) and not list((data / "warehouse").rglob(".*.partial"))
    final = materializations(instance)
    recomputed = {k for k, runs in final.items() if len(runs) > len(after_kill.get(k, []))}
    # exactly the interrupted step's partition (probe_forward writes predictions, then activations:
    # predictions had been stored when the kill came, and come again with the step), nothing else
    assert recomputed == {("activations", "tiny2"), ("predictions", "tiny2")}
    assert "materializing [tiny2] activations, activations:grain_unique, activations:vector_widths, predictions," in out
    assert all(len(final[k]) == len(after_kill[k]) + 1 for k in recomputed)
    # the same inputs give the same numbers (whole files, nothing lost)
    assert_same_activations(catalog.query(ACTIVATIONS), old_activations)


@pytest.mark.slow
def test_two_materializes_at_once_compute_nothing_twice_and_queries_keep_answering(
        tmp_path, monkeypatch, dagster_instance):
    data = tiny_instance(tmp_path, monkeypatch)
    instance = dagster_instance
    first_stage(instance)
    catalog = Catalog(data / "www.duckdb", Warehouse(data / "warehouse"))
    old = {"activations": catalog.query(ACTIVATION_SUMS), "predictions": catalog.query(PREDICTIONS)}
    before = materializations(instance)
    # tiny's preprocessing changes: its partitions are recomputed with other numbers
    registry = data / "models" / "tiny.yaml"
    registry.write_text(registry.read_text().replace("mean: [0.5, 0.5, 0.5]", "mean: [0.3, 0.4, 0.6]"))

    answers: list[tuple[str, pd.DataFrame]] = []
    errors: list[str] = []
    stop = threading.Event()

    def query_loop():
        sqls = {"activations": ACTIVATION_SUMS, "predictions": PREDICTIONS}
        while not stop.is_set():
            for table, sql in sqls.items():
                done = www_sql(sql)
                if done.returncode != 0:
                    errors.append(done.stderr.strip() or done.stdout.strip())
                else:
                    answers.append((table, pd.DataFrame(json.loads(done.stdout))))
            stop.wait(0.5)  # leave the materializing processes some of the machine

    queries = threading.Thread(target=query_loop, daemon=True)
    queries.start()
    started = time.time()
    both = [www(), www()]
    outs = [p.communicate(timeout=HANG_S)[0] for p in both]
    finished = time.time()
    stop.set()
    queries.join(timeout=60)
    assert [p.returncode for p in both] == [0, 0], outs
    assert errors == []

    # one waited for the other, which did the work; the waiting one found nothing left
    waiting = [i for i, out in enumerate(outs) if "is running on this instance; waiting for it to finish" in out]
    assert len(waiting) == 1, outs
    [worker] = {0, 1} - set(waiting)
    assert f"another www materialize (pid {both[worker].pid} on {socket.gethostname()})" in outs[waiting[0]]
    assert re.search(r"^0 run\(s\), 0 failed", outs[waiting[0]], re.MULTILINE), outs[waiting[0]]
    final = materializations(instance)
    new = {k: runs[len(before.get(k, [])):] for k, runs in final.items() if len(runs) > len(before.get(k, []))}
    assert set(new) == {("model_training", "tiny"), ("probe_images", "tiny"), ("activations", "tiny"),
                        ("predictions", "tiny")}
    assert all(len(runs) == 1 for runs in new.values()), new  # each computed once
    runs = [instance.get_run_by_id(r) for r in {r for rs in new.values() for r in rs}]
    assert {r.tags[runner.PID_TAG] for r in runs} == {str(both[worker].pid)}
    records = instance.get_run_records(dg.RunsFilter(tags={runner.LAUNCHED_BY: runner.LAUNCHED_BY_CLI}))
    spans = sorted((r.start_time, r.end_time) for r in records if r.start_time >= started - 1)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))  # never two at once
    assert spans[-1][1] <= finished

    # every answer holds, per partition file, the old numbers or the new ones, never a mix
    new_data = {"activations": catalog.query(ACTIVATION_SUMS), "predictions": catalog.query(PREDICTIONS)}
    assert not np.allclose(new_data["predictions"]["msp"], old["predictions"]["msp"])  # the change shows
    grain = {"activations": (["model", "layer"], "total"), "predictions": (["model"], "msp")}
    versions = {name: {table: dict(list(frames[table].groupby(grain[table][0]))) for table in frames}
                for name, frames in (("old", old), ("new", new_data))}
    seen = {"old": 0, "new": 0}
    for table, answer in answers:
        keys, value = grain[table]
        assert set(answer["model"]) == {"tiny", "tiny2"}, answer  # no partition ever missing
        for part, got in answer.groupby(keys):
            matches = [name for name in ("old", "new")
                       if got["image_id"].tolist() == versions[name][table][part]["image_id"].tolist()
                       and np.allclose(got[value].to_numpy(float), versions[name][table][part][value].to_numpy(float),
                                       rtol=1e-5)]
            assert matches, (table, part, got)
            if part[0] == "tiny":
                seen[matches[0]] += 1
    assert len(answers) >= 4, answers
    print(f"{len(answers)} answers; tiny's partition files: {seen['old']} old, {seen['new']} new")
