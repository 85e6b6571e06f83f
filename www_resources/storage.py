"""Parquet warehouse and DuckDB catalog.

Every table is a folder of Parquet files in hive layout under the warehouse root:

    <root>/<table>/data.parquet                                  (unpartitioned)
    <root>/<table>/model=<m>/data.parquet                        (partitioned by model)
    <root>/<table>/model=<m>/concept_set=<c>/data.parquet        (model x concept set)
    <root>/<table>/model=<m>/layer=<l>/data.parquet              (a table split into files by a column)

Partition columns live in the path only; readers (DuckDB with `hive_partitioning`, or
`Warehouse.read`) add them back. Each file is written to a hidden temporary file in the same
folder, flushed to disk, then renamed over the old one, so a reader sees the old file or the new
one and a crash never leaves a half-written file where the glob looks.

The DuckDB catalog holds one view per table over `<root>/<table>/**/*.parquet`, so new files show
up in queries without touching the catalog; the catalog file changes only when a table appears.
DuckDB lets one process open a file read-write and then locks out every other process, readers
included, so writers hold their connection for milliseconds and everybody retries briefly on a
lock conflict.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from www_resources.tables import TABLES, VECTOR, TableSpec

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DATA_FILE = "data.parquet"


class StorageError(RuntimeError):
    """A table could not be written or read as declared."""


def check_slug(value: str, what: str) -> str:
    """Partition values become folder names: letters, digits, '.', '_' and '-' only."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise StorageError(
            f"{what} {value!r} is not a valid key: use letters, digits, '.', '_' and '-' "
            "(it becomes a folder name and a Dagster partition key)"
        )
    return value


def arrow_schema(spec: TableSpec, df: pd.DataFrame) -> pa.Schema:
    """The declared schema with each vector column's width read off the data."""
    fields = []
    for name, dtype in spec.columns.items():
        if dtype == VECTOR:
            widths = {len(v) for v in df[name]} if len(df) else set()
            if len(widths) > 1:
                raise StorageError(
                    f"table {spec.name!r}: column {name!r} mixes vector widths {sorted(widths)}; "
                    f"split the table into files by a column (file_by) or fix the producer"
                )
            width = widths.pop() if widths else 0
            fields.append(pa.field(name, pa.list_(pa.float32(), width)))
        else:
            fields.append(pa.field(name, dtype))
    return pa.schema(fields)


def to_arrow(spec: TableSpec, df: pd.DataFrame) -> pa.Table:
    """Convert a frame to the table's explicit schema, with a clear error on any mismatch."""
    expected = set(spec.columns)
    got = set(df.columns)
    if missing := expected - got:
        raise StorageError(f"table {spec.name!r}: missing columns {sorted(missing)}")
    if extra := got - expected:
        raise StorageError(
            f"table {spec.name!r}: undeclared columns {sorted(extra)}; declare them in "
            "www_resources/tables.py"
        )
    schema = arrow_schema(spec, df)
    arrays = []
    for field in schema:
        column = df[field.name]
        if pa.types.is_fixed_size_list(field.type):
            width = field.type.list_size
            flat = (
                np.stack([np.asarray(v, dtype=np.float32) for v in column]).reshape(-1)
                if len(column)
                else np.zeros(0, np.float32)
            )
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width))
        else:
            try:
                arrays.append(pa.array(column.tolist(), type=field.type, from_pandas=True))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
                raise StorageError(
                    f"table {spec.name!r}: column {field.name!r} does not fit {field.type}: {err}"
                ) from err
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write to a hidden temporary file beside `path`, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"
    try:
        with open(tmp, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass(frozen=True)
class Warehouse:
    """A folder of tables; see the module docstring for the layout."""

    root: Path

    def table_dir(self, table: str) -> Path:
        return Path(self.root) / table

    def partition_dir(self, table: str, partition: Mapping[str, str]) -> Path:
        spec = TABLES[table]
        if set(partition) != set(spec.partition_by):
            raise StorageError(
                f"table {table!r} is partitioned by {list(spec.partition_by)}, got {dict(partition)}"
            )
        folder = self.table_dir(table)
        for column in spec.partition_by:
            folder = folder / f"{column}={check_slug(partition[column], column)}"
        return folder

    def write(self, table: str, df: pd.DataFrame, partition: Mapping[str, str] | None = None) -> list[Path]:
        """Replace one partition of `table` with `df`; returns the files written."""
        spec = TABLES[table]
        partition = dict(partition or {})
        folder = self.partition_dir(table, partition)
        df = df.drop(columns=[c for c in spec.partition_by if c in df.columns])
        if not spec.file_by:
            path = folder / _DATA_FILE
            write_parquet_atomic(to_arrow(spec, df), path)
            return [path]
        written = []
        keep_columns = [c for c in df.columns if c not in spec.file_by]
        file_spec = spec.without(spec.file_by)
        groups = df.groupby(list(spec.file_by), sort=True) if len(df) else []
        for values, group in groups:
            values = values if isinstance(values, tuple) else (values,)
            sub = folder
            for column, value in zip(spec.file_by, values):
                sub = sub / f"{column}={check_slug(str(value), column)}"
            path = sub / _DATA_FILE
            write_parquet_atomic(to_arrow(file_spec, group[keep_columns].reset_index(drop=True)), path)
            written.append(path)
        # files of sub-keys that the new content no longer has (e.g. a layer removed from the config)
        fresh = {p.parent for p in written}
        for old in folder.rglob(_DATA_FILE) if folder.exists() else []:
            if old.parent not in fresh:
                old.unlink()
        return written

    def files(self, table: str, partition: Mapping[str, str] | None = None) -> list[Path]:
        folder = self.partition_dir(table, partition) if partition else self.table_dir(table)
        return sorted(folder.rglob(_DATA_FILE)) if folder.exists() else []

    def has_partition(self, table: str, partition: Mapping[str, str] | None = None) -> bool:
        return bool(self.files(table, partition or {}))

    def read(
        self,
        table: str,
        partition: Mapping[str, str] | None = None,
        columns: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Read a table (or one partition of it) with its partition columns added back."""
        spec = TABLES[table]
        frames = []
        base = self.table_dir(table)
        for path in self.files(table, partition):
            df = pq.read_table(path).to_pandas()
            for part in path.parent.relative_to(base).parts:
                key, _, value = part.partition("=")
                df[key] = value
            frames.append(df)
        if not frames:
            return pd.DataFrame(columns=list(spec.partition_by) + list(spec.columns))
        df = pd.concat(frames, ignore_index=True)
        order = list(spec.partition_by) + list(spec.file_by) + [
            c for c in spec.columns if c not in spec.file_by
        ]
        df = df[[c for c in order if c in df.columns]]
        if columns is not None:
            df = df[list(columns)]
        return df

    def delete_partition(self, table: str, partition: Mapping[str, str]) -> None:
        folder = self.partition_dir(table, partition)
        if folder.exists():
            shutil.rmtree(folder)

    def tables(self) -> list[str]:
        """Tables that have at least one file."""
        root = Path(self.root)
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob(_DATA_FILE)))


def _duckdb_connect(path: Path, read_only: bool, timeout_s: float):
    import duckdb

    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:  # the file is locked by another process
            if "lock" not in str(err).lower() or time.monotonic() > deadline:
                raise StorageError(
                    f"could not open the catalog {path} ({'read-only' if read_only else 'read-write'}): "
                    f"{err}. Another process holds it; try again when it is done."
                ) from err
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)


def _view_sql(table: str, root: Path) -> str:
    glob = (Path(root).resolve() / table / "**" / "*.parquet").as_posix().replace("'", "''")
    return (
        f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM read_parquet(\'{glob}\', '
        "hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"
    )


@dataclass(frozen=True)
class Catalog:
    """The DuckDB file with one view per warehouse table."""

    path: Path
    warehouse: Warehouse
    lock_timeout_s: float = 60.0

    def views(self) -> set[str]:
        if not Path(self.path).exists():
            return set()
        con = _duckdb_connect(self.path, True, self.lock_timeout_s)
        try:
            rows = con.execute(
                "select view_name from duckdb_views() where not internal"
            ).fetchall()
            return {r[0] for r in rows}
        finally:
            con.close()

    def ensure_views(self, tables: Iterable[str]) -> list[str]:
        """Create the views that are missing; returns those created. Cheap when nothing is missing."""
        wanted = [t for t in tables if self.warehouse.files(t)]
        missing = [t for t in wanted if t not in self.views()]
        if missing:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            con = _duckdb_connect(self.path, False, self.lock_timeout_s)
            try:
                for table in missing:
                    con.execute(_view_sql(table, self.warehouse.root))
            finally:
                con.close()
        return missing

    def rebuild(self) -> list[str]:
        """Recreate the catalog from the Parquet files alone."""
        tables = self.warehouse.tables()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(self.path).with_suffix(f".{uuid.uuid4().hex}.rebuild")
        import duckdb

        con = duckdb.connect(str(tmp))
        try:
            for table in tables:
                con.execute(_view_sql(table, self.warehouse.root))
        finally:
            con.close()
        os.replace(tmp, self.path)
        return tables

    def query(self, sql: str) -> pd.DataFrame:
        """Run a read-only query against the catalog."""
        if not Path(self.path).exists():
            raise StorageError(
                f"no catalog at {self.path}: materialize some assets first, or run `www catalog rebuild`"
            )
        con = _duckdb_connect(self.path, True, self.lock_timeout_s)
        try:
            return con.execute(sql).df()
        finally:
            con.close()


def default_warehouse() -> Warehouse:
    from www_resources import paths

    return Warehouse(paths.warehouse_dir())


def default_catalog() -> Catalog:
    from www_resources import paths

    return Catalog(paths.catalog_path(), default_warehouse())
