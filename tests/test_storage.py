"""Warehouse and catalog: round trip, schemas, crash atomicity, concurrent writers and a reader."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from www_resources.storage import Catalog, StorageError, Warehouse

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    return warehouse, Catalog(tmp_path / "www.duckdb", warehouse)


def predictions_frame(n, offset=0):
    return pd.DataFrame(
        {
            "image_id": [f"img{offset + i:04d}" for i in range(n)],
            "label": np.arange(n, dtype=np.int32) % 3,
            "pred": (np.arange(n, dtype=np.int32) + 1) % 3,
            "msp": np.linspace(0.2, 0.9, n).astype(np.float32),
            "top5": [[i % 3, (i + 1) % 3] for i in range(n)],
            "correct": np.zeros(n, bool),
        }
    )


def test_round_trip_keeps_values_types_and_partition_column(store):
    warehouse, catalog = store
    df = predictions_frame(5)
    [path] = warehouse.write("predictions", df, {"model": "m-1"})
    assert path == warehouse.root / "predictions" / "model=m-1" / "data.parquet"
    schema = pq.read_schema(path)
    assert schema.field("label").type == pa.int32()
    assert schema.field("msp").type == pa.float32()
    assert "model" not in schema.names  # partition columns live in the path only
    back = warehouse.read("predictions", {"model": "m-1"})
    assert back["model"].tolist() == ["m-1"] * 5
    pd.testing.assert_frame_equal(back.drop(columns="model"), df, check_dtype=False)
    assert [list(t) for t in back["top5"]] == df["top5"].tolist()
    catalog.ensure_views(["predictions"])
    got = catalog.query("select model, count(*) n, sum(label) s from predictions group by model")
    assert got.to_dict("records") == [{"model": "m-1", "n": 5, "s": int(df["label"].sum())}]


def test_vectors_are_fixed_size_float32_per_file(store):
    warehouse, catalog = store
    df = pd.DataFrame(
        {
            "layer": ["a", "a", "b"],
            "image_id": ["x", "y", "x"],
            "vector": [np.array([1, 2, 3]), np.array([4, 5, 6]), np.arange(5)],
        }
    )
    files = warehouse.write("activations", df, {"model": "m"})
    assert [f.parent.name for f in files] == ["layer=a", "layer=b"]
    types = [pq.read_schema(f).field("vector").type for f in files]
    assert types == [pa.list_(pa.float32(), 3), pa.list_(pa.float32(), 5)]
    catalog.ensure_views(["activations"])
    rows = catalog.query("select layer, image_id, vector from activations order by layer, image_id")
    assert rows["layer"].tolist() == ["a", "a", "b"]
    assert list(rows["vector"][1]) == [4.0, 5.0, 6.0]
    # rewriting without layer b removes its stale file
    warehouse.write("activations", df[df["layer"] == "a"], {"model": "m"})
    assert sorted(warehouse.read("activations")["layer"].unique()) == ["a"]


def test_schema_errors_are_clear(store):
    warehouse, _ = store
    with pytest.raises(StorageError, match="missing columns \\['correct'\\]"):
        warehouse.write("predictions", predictions_frame(2).drop(columns="correct"), {"model": "m"})
    with pytest.raises(StorageError, match="undeclared columns \\['extra'\\]"):
        warehouse.write("predictions", predictions_frame(2).assign(extra=1), {"model": "m"})
    with pytest.raises(StorageError, match="not a valid key"):
        warehouse.write("predictions", predictions_frame(2), {"model": "a/b"})
    bad = pd.DataFrame({"layer": ["a", "a"], "image_id": ["x", "y"], "vector": [[1.0], [1.0, 2.0]]})
    with pytest.raises(StorageError, match="mixes vector widths"):
        warehouse.write("activations", bad.assign(layer="a"), {"model": "m"})


def test_rebuild_recreates_catalog_from_parquet_alone(store):
    warehouse, catalog = store
    warehouse.write("predictions", predictions_frame(3), {"model": "a"})
    warehouse.write("predictions", predictions_frame(4), {"model": "b"})
    catalog.path.unlink(missing_ok=True)
    assert catalog.rebuild() == ["predictions"]
    counts = catalog.query("select model, count(*) n from predictions group by model order by model")
    assert counts.to_dict("records") == [{"model": "a", "n": 3}, {"model": "b", "n": 4}]


WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np, pandas as pd
    import pyarrow.parquet as pq
    from pathlib import Path
    from www_resources.storage import Warehouse, Catalog
    root, model, rounds, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    w = Warehouse(root / "warehouse"); c = Catalog(root / "www.duckdb", w)
    n = 200_000 if mode == "slow" else 2000
    if mode == "slow":
        # a writer that is killed while it is writing: make the write slow and observable
        real = pq.write_table
        def slow(table, sink, **kw):
            Path(str(root / "started")).write_text("1")
            time.sleep(30)
            real(table, sink, **kw)
        pq.write_table = slow
    for r in range(rounds):
        df = pd.DataFrame({"image_id": [f"{model}-{i}" for i in range(n)],
                           "label": np.full(n, r, np.int32), "pred": np.zeros(n, np.int32),
                           "msp": np.ones(n, np.float32), "top5": [[1, 2]] * n,
                           "correct": np.ones(n, bool)})
        w.write("predictions", df, {"model": model})
        c.ensure_views(["predictions"])
    """
)


def _spawn(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), *map(str, args)], env=env,
                            stderr=subprocess.PIPE, start_new_session=True)


def test_killed_writer_leaves_the_old_partition_intact(store, tmp_path):
    warehouse, _ = store
    warehouse.write("predictions", predictions_frame(7), {"model": "victim"})
    proc = _spawn(tmp_path, "victim", 1, "slow")
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    back = warehouse.read("predictions", {"model": "victim"})
    assert len(back) == 7 and back["image_id"].tolist() == predictions_frame(7)["image_id"].tolist()
    folder = warehouse.root / "predictions" / "model=victim"
    leftovers = [p.name for p in folder.iterdir() if p.name != "data.parquet"]
    # a killed writer may leave its hidden temporary file, which no reader's glob matches
    assert all(name.startswith(".") and name.endswith(".partial") for name in leftovers)
    glob = duckdb.connect().execute(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchone()[0]
    assert glob == 7


def test_concurrent_writers_and_a_reader_lose_and_corrupt_nothing(store, tmp_path):
    warehouse, catalog = store
    rounds = 15
    writers = [_spawn(tmp_path, name, rounds, "fast") for name in ("alpha", "beta")]
    reads, errors = 0, []
    while any(p.poll() is None for p in writers):
        try:
            if catalog.path.exists() and "predictions" in catalog.views():
                df = catalog.query("select model, count(*) n, min(label) lo, max(label) hi from predictions group by model")
                for row in df.to_dict("records"):
                    # every partition a reader sees is one complete write: 2000 rows of one round
                    if row["n"] != 2000 or row["lo"] != row["hi"]:
                        errors.append(row)
                reads += 1
        except Exception as err:  # a locked catalog is retried inside query(); anything else is a bug
            errors.append(repr(err))
        time.sleep(0.01)
    for p in writers:
        assert p.wait() == 0, p.stderr.read().decode()
    assert errors == []
    assert reads > 0
    final = catalog.query("select model, count(*) n, max(label) r from predictions group by model order by model")
    assert final.to_dict("records") == [
        {"model": "alpha", "n": 2000, "r": rounds - 1},
        {"model": "beta", "n": 2000, "r": rounds - 1},
    ]
