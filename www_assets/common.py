"""Small helpers shared by the asset modules: the registry entry of a run, progress logs, previews."""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd

from www_assets.partitions import model_key


def model_entry(context):
    """The registry entry of the model this run is for (clear error when the file went bad)."""
    from www_resources.registry import get_model

    return get_model(model_key(context))


class Progress:
    """Logs `done/total` with a rate about every `every_s` seconds."""

    def __init__(self, context, what: str, every_s: float = 10.0):
        self.context, self.what, self.every_s = context, what, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s or done >= total:
            rate = done / max(now - self.start, 1e-9)
            self.context.log.info(f"{self.what}: {done}/{total} ({rate:.1f}/s)")
            self.last = now


def preview(df: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    """A markdown preview of a table for the UI; vectors are shortened."""
    head = df.head(rows).copy()
    for column in head.columns:
        head[column] = [
            (f"[{len(v)} floats]" if hasattr(v, "__len__") and not isinstance(v, str) and len(v) > 6 else v)
            for v in head[column]
        ]
    return dg.MetadataValue.md(head.to_markdown(index=False))


def column_type(dtype) -> str:
    """A column's type as the README and the UI write it (`float32 vector`, `list<string>`)."""
    from www_resources.tables import VECTOR

    return "float32 vector" if dtype == VECTOR else str(dtype).replace("list<item: ", "list<")


def table_schema(table: str) -> dg.TableSchema:
    """The columns of a declared table (www_resources/tables.py) as Dagster's table schema; the
    partition columns come first, as in the DuckDB view."""
    from www_resources.tables import TABLES

    spec = TABLES[table]
    columns = [
        dg.TableColumn(name, "string", description="partition (a folder of the warehouse, a column of the view)")
        for name in spec.partition_by
    ]
    columns += [
        dg.TableColumn(name, column_type(dtype), description="part of the grain" if name in spec.grain else None)
        for name, dtype in spec.columns.items()
    ]
    return dg.TableSchema(columns=columns)


def with_table_schemas(definitions) -> list:
    """Attach each declared table's columns to its asset (`dagster/column_schema`, shown on the
    asset's page in the UI); assets without a declared table pass through."""
    from www_resources.tables import TABLES

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        table = spec.key.path[-1]
        if table not in TABLES:
            return spec
        return spec.merge_attributes(metadata={"dagster/column_schema": table_schema(table)})

    return [
        d.map_asset_specs(attach) if isinstance(d, dg.AssetsDefinition) and d.is_materializable else d
        for d in definitions
    ]


def table_metadata(df: pd.DataFrame, **extra) -> dict:
    return {"rows": len(df), "preview": preview(df), **extra}


def image_markdown(path, alt: str) -> str:
    """Markdown with the PNG inlined, so the UI shows the picture itself (and the file path)."""
    import base64
    from pathlib import Path

    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})\n\n`{path}`"
