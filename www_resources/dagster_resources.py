"""Dagster resources: the device, the Parquet IO manager and direct warehouse access.

Resources are frozen pydantic objects; nothing heavy is imported at module import time, so each
step process of the multiprocess executor starts quickly.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from www_resources import paths
from www_resources.storage import Catalog, Warehouse
from www_resources.tables import TABLES


class TorchDevice(dg.ConfigurableResource):
    """Where model-heavy steps run. Steps that use it declare `pool="gpu"` (one at a time)."""

    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 128
    num_workers: int = 0
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    # images per batch of forward-only steps and of steps with a backward pass (Grad-CAM, Taylor
    # contributions); 0 = auto: batch_size and batch_size / 4, fitted to the free CUDA memory.
    # Any size halves on out-of-memory, logged (www_resources/device.py)
    forward_batch_size: int = 0
    gradient_batch_size: int = 0

    def torch_device(self):
        from www_resources.device import resolve_device

        return resolve_device(self.device)

    def torch_dtype(self):
        from www_resources.device import resolve_dtype

        return resolve_dtype(self.dtype)

    def batches(self, kind: str, what: str = "", log=None):
        """A `BatchRunner` for `kind` ("forward" or "gradient") steps: `runner(total, work)` yields
        `(start, stop, work(start, stop))` over all items, halving the batch on out-of-memory."""
        from www_resources.device import batch_runner

        configured = {"forward": self.forward_batch_size, "gradient": self.gradient_batch_size}.get(kind, -1)
        return batch_runner(self.torch_device(), kind, configured, self.batch_size, what=what, log=log)

    def setup_for_execution(self, context) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


class WarehouseResource(dg.ConfigurableResource):
    """Read access to any table (e.g. all partitions of an upstream table) and the catalog, under
    the one data root (`www_resources.paths`: `$WWW_DATA_DIR` or `<repository>/data`)."""

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(paths.warehouse_dir())

    @property
    def catalog(self) -> Catalog:
        return Catalog(paths.catalog_path(), self.warehouse)

    @property
    def artifacts(self) -> Path:
        folder = paths.artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def read(self, table: str, partition: dict | None = None, columns=None) -> pd.DataFrame:
        return self.warehouse.read(table, partition, columns)


def partition_values(context) -> dict[str, str]:
    """The hive folder values of the partition an IO context is about."""
    if not context.has_asset_partitions:
        return {}
    key = context.asset_partition_key
    spec = TABLES[context.asset_key.path[-1]]
    by_dimension = getattr(key, "keys_by_dimension", None)
    if by_dimension:
        return {column: by_dimension[column] for column in spec.partition_by}
    if len(spec.partition_by) != 1:
        raise ValueError(f"table {spec.name!r} expects partitions {spec.partition_by}, got key {key!r}")
    return {spec.partition_by[0]: key}


class ParquetIOManager(dg.ConfigurableIOManager):
    """Writes each asset partition as Parquet (atomically) and keeps the DuckDB catalog current.

    An asset returns a pandas DataFrame with the columns declared for its table in
    `www_resources/tables.py`; `None` writes nothing. Inputs load the partition asked for, or
    every existing partition (with the partition columns) for a fan-in.
    """

    def _warehouse(self) -> Warehouse:
        return Warehouse(paths.warehouse_dir())

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"asset {context.asset_key.to_user_string()} must return a pandas DataFrame")
        table = context.asset_key.path[-1]
        warehouse = self._warehouse()
        files = warehouse.write(table, obj, partition_values(context))
        Catalog(paths.catalog_path(), warehouse).ensure_views([table])
        context.add_output_metadata(
            {
                "dagster/row_count": len(obj),
                "parquet": dg.MetadataValue.path(str(files[0].parent if len(files) == 1 else files[0].parents[1])),
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        table = context.asset_key.path[-1]
        warehouse = self._warehouse()
        if not context.has_asset_partitions:
            return warehouse.read(table)
        spec = TABLES[table]
        frames = []
        for key in context.asset_partition_keys:
            by_dimension = getattr(key, "keys_by_dimension", None)
            partition = (
                {c: by_dimension[c] for c in spec.partition_by}
                if by_dimension
                else {spec.partition_by[0]: key}
            )
            if warehouse.has_partition(table, partition):
                frames.append(warehouse.read(table, partition))
            else:
                context.log.warning(f"{table}: partition {partition} has no data yet; skipped")
        if not frames:
            return warehouse.read(table, None).iloc[0:0]
        return pd.concat(frames, ignore_index=True)

