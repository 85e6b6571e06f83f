"""Storage faults: a read-only or full warehouse fails the run with a message naming the path and
leaves the previous partition file intact.

Tests run as root, and permissions do not stop root, so the real faults come from a tiny tmpfs
mounted over the warehouse folder (remounted read-only, or filled up); where mounting is not
allowed those tests skip, and the patched-writer tests below cover the same paths."""

import errno
import os
import subprocess
import uuid

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from www_resources import storage
from www_resources.dagster_resources import ParquetIOManager
from www_resources.storage import StorageError, Warehouse


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"img{i:06d}" for i in range(n)],
            "label": rng.integers(0, 1000, n).astype(np.int32),
            "pred": rng.integers(0, 1000, n).astype(np.int32),
            "msp": rng.random(n).astype(np.float32),
            "top5": [list(map(int, row)) for row in rng.integers(0, 1000, (n, 5))],
            "correct": rng.random(n) < 0.5,
        }
    )


def materialize(data, rows: int, seed: int):
    @dg.asset(name="predictions", partitions_def=dg.StaticPartitionsDefinition(["m"]))
    def predictions() -> pd.DataFrame:
        return frame(rows, seed)

    return dg.materialize([predictions], partition_key="m", raise_on_error=False,
                          resources={"io_manager": ParquetIOManager()})  # writes under $WWW_DATA_DIR = data


def failure_message(result) -> str:
    """The step failure's message with its causes (Dagster wraps an IO manager's error)."""
    parts = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            while error is not None:
                parts.append(str(error.message).strip())
                error = error.cause
    return " | ".join(parts)


@pytest.fixture
def small_warehouse(tmp_path, monkeypatch):
    """data/warehouse on its own 512 KiB tmpfs, the data folder of the run; yields (data folder,
    mount point)."""
    data = tmp_path / "data"
    monkeypatch.setenv("WWW_DATA_DIR", str(data))
    mount_point = data / "warehouse"
    mount_point.mkdir(parents=True)
    tag = f"www-test-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", tag, str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the patched-writer tests cover this")
    try:
        yield data, mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_read_only_warehouse_fails_the_run_and_keeps_the_old_file(small_warehouse):
    data, mount_point = small_warehouse
    assert materialize(data, 50, seed=1).success
    path = mount_point / "predictions" / "model=m" / "data.parquet"
    before = path.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)

    result = materialize(data, 60, seed=2)
    assert not result.success
    message = failure_message(result)
    assert f"could not write {path}: Read-only file system (errno {errno.EROFS}); the previous file is unchanged" in message
    assert path.read_bytes() == before
    assert Warehouse(mount_point).read("predictions")["label"].tolist() == frame(50, seed=1)["label"].tolist()


def test_full_warehouse_fails_the_run_and_keeps_the_old_file(small_warehouse):
    data, mount_point = small_warehouse
    assert materialize(data, 50, seed=1).success
    path = mount_point / "predictions" / "model=m" / "data.parquet"
    before = path.read_bytes()
    filler = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT)  # take every free block
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(filler, b"\0" * 4096)
    finally:
        os.close(filler)
    assert full.value.errno == errno.ENOSPC

    result = materialize(data, 20000, seed=2)  # about 300 KB of Parquet
    assert not result.success
    message = failure_message(result)
    assert f"could not write {path}: No space left on device (errno {errno.ENOSPC})" in message
    assert "the previous file is unchanged" in message
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["data.parquet"]  # the partial file was removed


def test_a_failing_disk_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    """The same faults without a mount: the writer's disk calls fail as a full or read-only disk
    makes them fail."""
    warehouse = Warehouse(tmp_path / "warehouse")
    [path] = warehouse.write("predictions", frame(30, seed=1), {"model": "m"})
    before = path.read_bytes()

    real_write = storage.pq.write_table

    def write_half_then_fill(table, sink, **kwargs):
        real_write(table.slice(0, 5), sink, **kwargs)  # some bytes reach the temporary file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.pq, "write_table", write_half_then_fill)
    with pytest.raises(StorageError, match=rf"could not write {path}: No space left on device \(errno 28\); "
                                           "the previous file is unchanged"):
        warehouse.write("predictions", frame(40, seed=2), {"model": "m"})
    monkeypatch.setattr(storage.pq, "write_table", real_write)

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(storage.os, "replace", read_only)
    with pytest.raises(StorageError, match=rf"could not write {path}: Read-only file system \(errno 30\)"):
        warehouse.write("predictions", frame(40, seed=2), {"model": "m"})

    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.parquet"]


def test_a_new_partition_on_a_failing_disk_says_nothing_was_written(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(storage.os, "replace", refuse)
    warehouse = Warehouse(tmp_path / "warehouse")
    with pytest.raises(StorageError, match="Read-only file system .*; nothing was written"):
        warehouse.write("predictions", frame(3), {"model": "new"})
    assert warehouse.files("predictions") == []


def test_a_partition_of_several_files_changes_all_or_none(tmp_path, monkeypatch):
    """activations keeps one file per layer: a disk that fills up at the second file leaves every
    file of the partition as it was."""

    def activations(value: float) -> pd.DataFrame:
        return pd.DataFrame({"layer": ["a", "a", "b", "b"], "image_id": ["x", "y", "x", "y"],
                             "vector": [np.full(3, value, np.float32)] * 4})

    warehouse = Warehouse(tmp_path / "warehouse")
    files = warehouse.write("activations", activations(1.0), {"model": "m"})
    before = {p: p.read_bytes() for p in files}
    real_write, calls = storage.pq.write_table, []

    def second_fails(table, sink, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(table, sink, **kwargs)

    monkeypatch.setattr(storage.pq, "write_table", second_fails)
    with pytest.raises(StorageError, match=r"layer=b/data.parquet: No space left on device"):
        warehouse.write("activations", activations(2.0), {"model": "m"})
    assert {p: p.read_bytes() for p in files} == before
    assert sorted(p.name for p in (tmp_path / "warehouse").rglob("*") if p.is_file()) == ["data.parquet"] * 2
