"""Parquet warehouse and DuckDB catalog.

Every table is a folder of Parquet files in hive layout under the warehouse root:

    <root>/<table>/data.parquet                                  (unpartitioned)
    <root>/<table>/model=<m>/data.parquet                        (partitioned by model)
    <root>/<table>/model=<m>/concept_set=<c>/data.parquet        (model x concept set)
    <root>/<table>/clip=<k>/concept_set=<c>/data.parquet         (CLIP x concept set, shared by models)
    <root>/<table>/clip=<k>/probe=<p>/data.parquet               (CLIP x probe view, shared by models)
    <root>/<table>/model=<m>/layer=<l>/data.parquet              (a table split into files by a column)

Partition columns live in the path only; readers (DuckDB with `hive_partitioning`, or
`Warehouse.read`) add them back. Each file is written to a hidden temporary file in the same
folder, flushed to disk, then renamed over the old one, so a reader sees the old file or the new
one and a crash never leaves a half-written file where the glob looks: the temporary file is named
`.data.parquet.<host>.<pid>.<random>.partial`, which `*.parquet` does not match. A writer killed
before its rename leaves that file behind; the next write of the partition (and the start of
`www materialize`) removes the temporary files of writers on this host whose process is gone.

The DuckDB catalog holds one view per table over `<root>/<table>/**/*.parquet`, so new files show
up in queries without touching the catalog; the catalog file changes only when a table appears.
DuckDB lets one process open a file read-write and then locks out every other process, readers
included, so writers hold their connection for milliseconds and everybody retries briefly on a
lock conflict.

Queries run in a sandbox: the catalog is opened read-only, DuckDB may touch files only under the
warehouse (`allowed_directories`; the catalog file itself is always allowed), external access is
off (no other files, no extensions, no ATTACH) and the configuration is locked, so a query cannot
switch any of that back on. Only SELECT statements (and EXPLAIN of one) run: inside the warehouse
DuckDB could otherwise write, e.g. `COPY ... TO` over a partition file.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
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
# .data.parquet.<host>.<pid>.<uuid hex>.partial: who writes it, so that a sweep can tell a dead
# writer's leftover from a file another process is writing right now
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.partial$")


def _host_label() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files under `folder` whose writer ran on this host and is gone."""
    if not Path(folder).exists():
        return []
    host = _host_label()
    out = []
    for path in Path(folder).rglob(".*.partial"):
        match = _TEMPORARY.match(path.name)
        if match and match["host"] == host and not process_alive(int(match["pid"])):
            out.append(path)
    return sorted(out)


class StorageError(RuntimeError):
    """A table could not be written or read as declared."""


class QueryRefused(StorageError):
    """A query tried to leave the sandbox: write, read files outside the warehouse, load or
    attach something, or change a setting. The message is one line."""


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


def _write_failed(path: Path, err: OSError) -> StorageError:
    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    return StorageError(
        f"could not write {path}: {err.strerror or err} (errno {err.errno}); {kept}. "
        "Check that the warehouse folder is writable and has free space."
    )


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # a read-only folder: the temporary file could not have been created
        pass


def _write_temporary(table: pa.Table, path: Path) -> Path:
    """Write `table` to a hidden temporary file beside `path` and fsync it; returns its path.
    A failure (read-only folder, full disk, quota) removes it and raises a StorageError naming
    `path`."""
    tmp = path.parent / f".{path.name}.{_host_label()}.{os.getpid()}.{uuid.uuid4().hex}.partial"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        return tmp
    except OSError as err:
        _discard(tmp)
        raise _write_failed(path, err) from err


def _put_in_place(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise _write_failed(path, err) from err


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write to a hidden temporary file beside `path`, fsync it, then rename it into place.

    Any failure (read-only folder, full disk, quota) raises a StorageError naming `path` and
    leaves the file that was there untouched; the temporary file is removed.
    """
    _put_in_place(_write_temporary(table, path), path)


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
        self.remove_stale_temporaries(folder)
        df = df.drop(columns=[c for c in spec.partition_by if c in df.columns])
        if not spec.file_by:
            path = folder / _DATA_FILE
            write_parquet_atomic(to_arrow(spec, df), path)
            return [path]
        written = []
        keep_columns = [c for c in df.columns if c not in spec.file_by]
        file_spec = spec.without(spec.file_by)
        groups = df.groupby(list(spec.file_by), sort=True) if len(df) else []
        # every file is written to its temporary first, and renamed into place only when all are
        # written: a full disk fails before any file of the partition changes
        staged: list[tuple[Path, Path]] = []
        try:
            for values, group in groups:
                values = values if isinstance(values, tuple) else (values,)
                sub = folder
                for column, value in zip(spec.file_by, values):
                    sub = sub / f"{column}={check_slug(str(value), column)}"
                path = sub / _DATA_FILE
                table_part = to_arrow(file_spec, group[keep_columns].reset_index(drop=True))
                staged.append((_write_temporary(table_part, path), path))
        except BaseException:
            for tmp, _ in staged:
                _discard(tmp)
            raise
        for number, (tmp, path) in enumerate(staged):
            try:
                _put_in_place(tmp, path)
            except StorageError:
                for later, _ in staged[number + 1:]:
                    _discard(later)
                raise
            written.append(path)
        # files of sub-keys that the new content no longer has (e.g. a layer removed from the config)
        fresh = {p.parent for p in written}
        for old in folder.rglob(_DATA_FILE) if folder.exists() else []:
            if old.parent not in fresh:
                old.unlink()
        return written

    def remove_stale_temporaries(self, folder: Path | None = None) -> list[Path]:
        """Remove the temporary files that killed writers left under `folder` (default: the whole
        warehouse); returns them. Files of live writers are left alone."""
        removed = []
        for path in stale_temporaries(folder if folder is not None else Path(self.root)):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:  # another sweep got it first
                pass
            except OSError:  # a read-only warehouse: the write that follows says so
                pass
        return removed

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


# statement types a query may run; EXPLAIN only of a SELECT (EXPLAIN ANALYZE executes its statement)
_READ_STATEMENTS = {"SELECT"}
_EXPLAIN_PREFIX = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)


def sandbox(con, allowed_dirs: Iterable[Path]) -> None:
    """Confine a DuckDB connection: files only under `allowed_dirs` (plus its own database file),
    no external access (other files, extensions, ATTACH), then lock the configuration so no
    statement can undo this. The order matters: DuckDB refuses to widen `allowed_directories`
    once external access is off."""
    folders = sorted({
        form.as_posix().rstrip("/") + "/"
        for folder in allowed_dirs
        for form in (Path(folder).absolute(), Path(folder).resolve())
    })
    external, locked, allowed = con.execute(
        "select current_setting('enable_external_access'), current_setting('lock_configuration'), "
        "current_setting('allowed_directories')"
    ).fetchone()
    if locked:
        # DuckDB shares one database instance among the open connections to a file in a process:
        # a second reader finds the first one's sandbox in place and cannot (need not) set it again
        if external or not set(folders) <= set(allowed or []):
            raise StorageError(
                f"the catalog is open in this process with other settings (external access {external}, "
                f"allowed directories {allowed}); close that connection first"
            )
        return
    quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in folders)
    con.execute(f"SET allowed_directories = [{quoted}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_read_only_sql(con, sql: str) -> None:
    """Raise QueryRefused unless every statement of `sql` is a SELECT or an EXPLAIN of one."""
    for statement in con.extract_statements(sql):
        kind = statement.type.name
        if kind == "EXPLAIN":
            inner = _EXPLAIN_PREFIX.sub("", statement.query, count=1)
            if inner != statement.query and all(s.type.name in _READ_STATEMENTS for s in con.extract_statements(inner)):
                continue
        elif kind in _READ_STATEMENTS:
            continue
        first = " ".join(statement.query.split())[:60]
        word = first.split(" ", 1)[0].upper() if first else kind  # INSTALL is filed under LOAD
        raise QueryRefused(
            f"refused: {word if word.isalpha() else kind} statement ({first!r}); the catalog answers "
            "SELECT queries only (and EXPLAIN of one)"
        )


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
        con = self.reader()
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

    def reader(self):
        """A read-only connection to the catalog that can read the warehouse and nothing else
        (see the module docstring); the caller closes it."""
        con = _duckdb_connect(self.path, True, self.lock_timeout_s)
        try:
            sandbox(con, [self.warehouse.root])
        except BaseException:
            con.close()
            raise
        return con

    def query(self, sql: str) -> pd.DataFrame:
        """Run a read-only query against the catalog, in the sandbox.

        Raises QueryRefused (one line) for anything but reading the catalog's views and the
        warehouse's files; other DuckDB errors (syntax, missing columns) pass through.
        """
        import duckdb

        if not Path(self.path).exists():
            raise StorageError(
                f"no catalog at {self.path}: materialize some assets first, or run `www catalog rebuild`"
            )
        con = self.reader()
        try:
            check_read_only_sql(con, sql)
            return con.execute(sql).df()
        except (duckdb.PermissionException, duckdb.InvalidInputException) as err:
            message = " ".join(str(err).split())
            if isinstance(err, duckdb.PermissionException) or "configuration has been locked" in message:
                raise QueryRefused(
                    f"refused: {message.split(' LINE ')[0]} (queries read the catalog's views and the files "
                    f"under {Path(self.warehouse.root).resolve()} only)"
                ) from None
            raise
        finally:
            con.close()


def default_warehouse() -> Warehouse:
    from www_resources import paths

    return Warehouse(paths.warehouse_dir())


def default_catalog() -> Catalog:
    from www_resources import paths

    return Catalog(paths.catalog_path(), default_warehouse())
