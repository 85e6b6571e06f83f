"""A small warehouse with every declared table, for tests of the command line and of the README's
command blocks: made from the declarations of `www_resources/tables.py` in about a second, so
a table added later gets rows too.

Rows are made from a vocabulary per column name (the world's words, models, layers, methods);
the grain columns run over their vocabulary (every combination, so the grain is unique), the
other columns are drawn from theirs with a fixed seed. The two concept-set partitions of a model
hold the same rows, as the two concept sets of the world models share most of their words:
a query that forgets to pin `concept_set` shows every row twice here as it does there.
The world's probe images are written as `artifacts/world/probe.npy` (16 x 16 px) so that
`www image probe/000884` has pixels to write.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

MODELS = ("world-cnn", "world-vit")
CONCEPT_SETS = ("world", "world-distractors")
CLASSES = ("car", "truck", "bus", "bicycle", "house", "castle", "lighthouse", "lamp", "clock", "chair", "cup", "vase",
           "dog", "cat", "rabbit", "horse", "tree", "pine", "flower", "cactus", "fish", "shark", "crab", "lobster")
WORDS = ("wheel", "window", "cargo box", "petal", "dorsal fin", "snow", "sand", "vehicle", "building", "red", "striped",
         *CLASSES[:8])
PROBE_IDS = tuple(f"probe/{i:06d}" for i in (*range(12), 884))
NEURONS = tuple(range(64))
VECTOR_WIDTH = 8
IMAGE_SIDE = 16

#: column name -> values (grain columns run over all of them, other columns draw from them).
VOCABULARY: dict[str, tuple] = {
    "layer": ("layer4", "fc"),
    "neuron": NEURONS,
    "kind": ("major", "minor"),
    "rank": (1, 2, 3),
    "concept": WORDS,
    "image_id": PROBE_IDS,
    "class_id": tuple(range(len(CLASSES))),
    "other_id": (0, 1),
    "class_name": CLASSES,
    "label_name": CLASSES,
    "name": CLASSES,
    "score": ("msp", "heatmap_similarity"),
    "view": ("full",),
    "form": ("prompt", "raw"),
    "probe_set": ("world:probe",),
    "split": ("probe",),
    "variant": ("allowing", "excluding"),
    "parameter": ("k",),
    "value": (1.0, 40.0),
    "metric": ("hit", "f1"),
    "map": ("class", "sample"),
    "source": ("www",),
    "offset": (0.0, 1.0),
    "share_rejected": (0.0, 0.5),
    "neuron_share": (0.1, 1.0),
    "n_concepts": (1, 2),
    "instance": (0,),
    "part": ("wheel", "window"),
}
#: per table: column -> values, where the general vocabulary does not fit.
TABLE_VOCABULARY: dict[str, dict[str, tuple]] = {
    "neuron_examples": {"kind": ("image",), "rank": (1, 2, 3, 4, 5)},
    "crop_examples": {"kind": ("crop", "gradcam_crop")},
    "neuron_concept_shapley": {"concept": ("vehicle", "bus", "car", "thing", "organism"), "rank": tuple(range(1, 9))},
    "class_concept_crops": {"kind": ("class",)},
    "prediction_test": {"kind": ("class",)},
    "class_concept_truth": {"kind": ("class",)},
    "class_shapley": {"value": None},  # a float, not a grain value
    "world_vocabulary": {"kind": ("part", "class")},
}


def _methods() -> tuple[str, ...]:
    from www_assets.methods.concept_scoring import METHODS

    return tuple(METHODS)


def _values(table: str, column: str, dtype=None) -> tuple | None:
    """The vocabulary of a column, if it has one of the column's type."""
    vocabulary = {**VOCABULARY, "method": _methods(), **TABLE_VOCABULARY.get(table, {})}
    values = vocabulary.get(column)
    if values is None or dtype is None or dtype == "vector":
        return values
    if pa.types.is_list(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype):
        fits = all(isinstance(v, str) for v in values)
    elif pa.types.is_integer(dtype):
        fits = all(isinstance(v, int) for v in values)
    elif pa.types.is_floating(dtype):
        fits = all(isinstance(v, (int, float)) for v in values)
    else:
        fits = False
    return values if fits else None


def _draw(rng: np.random.Generator, table: str, column: str, dtype, n: int) -> list:
    """`n` values of a non-grain column."""
    values = _values(table, column, dtype)
    if dtype == "vector":
        return list(rng.normal(size=(n, VECTOR_WIDTH)).astype(np.float32))
    if pa.types.is_list(dtype):
        inner = dtype.value_type
        return [_draw(rng, table, column, inner, int(rng.integers(1, 4))) for _ in range(n)]
    if values is not None and not pa.types.is_floating(dtype):
        picked = rng.integers(0, len(values), n)
        return [values[i] for i in picked]
    if pa.types.is_floating(dtype):
        return list(np.round(rng.normal(size=n), 4))
    if pa.types.is_integer(dtype):
        return list(rng.integers(0, 100, n))
    if pa.types.is_boolean(dtype):
        return list(rng.random(n) < 0.7)
    if column == "path":
        return [f"world:probe#{i}" for i in rng.integers(0, 12, n)]
    if column in ("error",):
        return [None] * n
    return [f"{column}-{i}" for i in rng.integers(0, 5, n)]


def table_frame(table: str, model: str | None = None) -> pd.DataFrame:
    """The fixture rows of one partition of `table` (the same for every concept set)."""
    from www_resources.tables import TABLES

    spec = TABLES[table]
    rng = np.random.default_rng(zlib.crc32(f"{table}/{model}".encode()))
    grain = [c for c in spec.grain if c in spec.columns]
    axes = []
    for column in grain:
        dtype = spec.columns[column]
        values = _values(table, column, dtype)
        if values is None:
            values = tuple(range(3)) if pa.types.is_integer(dtype) else (
                (0.0, 1.0) if pa.types.is_floating(dtype) else tuple(f"{column}-{i}" for i in range(3)))
        axes.append(values)
    combos = list(itertools.product(*axes)) if axes else [()] * 5
    frame = pd.DataFrame(combos, columns=grain) if grain else pd.DataFrame(index=range(len(combos)))
    for column, dtype in spec.columns.items():
        if column not in grain:
            frame[column] = _draw(rng, table, column, dtype, len(frame))
    if "class_id" in frame and "class_name" in frame:
        frame["class_name"] = [CLASSES[i % len(CLASSES)] for i in frame["class_id"]]
    if table == "probe_images":
        frame["path"] = [f"world:probe#{int(i.split('/')[1])}" for i in frame["image_id"]]
        frame["readable"] = True
        frame["label"] = [int(i.split("/")[1]) % len(CLASSES) for i in frame["image_id"]]
        frame["label_name"] = [CLASSES[v] for v in frame["label"]]
    return frame


def write_fixture_warehouse(data: Path) -> Path:
    """Every declared table in `data/warehouse`, its catalog `data/www.duckdb` and the world's
    probe pixels; returns `data`. Point WWW_DATA_DIR at it."""
    from www_resources.storage import Catalog, Warehouse
    from www_resources.tables import TABLES

    warehouse = Warehouse(data / "warehouse")
    for name, spec in TABLES.items():
        keys = spec.partition_by
        if not keys:
            warehouse.write(name, table_frame(name))
            continue
        values = {"model": MODELS, "concept_set": CONCEPT_SETS, "clip": ("world-clip",), "probe": ("world",)}
        for combo in itertools.product(*(values.get(k, (f"{k}-0",)) for k in keys)):
            partition = dict(zip(keys, combo))
            warehouse.write(name, table_frame(name, partition.get("model")), partition)
    Catalog(data / "www.duckdb", warehouse).rebuild()
    world = data / "artifacts" / "world"
    world.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((885, IMAGE_SIDE, IMAGE_SIDE, 3), np.uint8)
    pixels[:, :, :, 0] = (np.arange(885) % 256)[:, None, None]  # image i: red = i mod 256
    pixels[:, : IMAGE_SIDE // 2, :, 2] = 200  # top half blue
    np.save(world / "probe.npy", pixels)
    return data


@functools.cache
def shared_fixture_data() -> Path:
    """One fixture warehouse per test process, for the tests that only read it (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="www-fixture-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_fixture_warehouse(folder / "data")
