"""Where the project keeps its files.

Everything is relative to one data folder, the only data root (default: `data/` in the repository),
which tests and users can move with the environment variable `WWW_DATA_DIR`; the Dagster resources
and the `www` command read it here, so the two can never disagree:

    data/models/*.yaml        the model registry (one file per target model, tracked)
    data/concept_sets.yaml    the concept-set registry (tracked)
    data/warehouse/<table>/   Parquet files in hive layout (generated)
    data/www.duckdb           the DuckDB catalog: one view per table (generated)
    data/artifacts/           checkpoints, image arrays and pictures (generated)
    data/retired/             warehouse files of deleted models (`www models prune`)
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The data folder: `$WWW_DATA_DIR` if set, else `<repository>/data`."""
    return Path(os.environ.get("WWW_DATA_DIR", PROJECT_ROOT / "data")).resolve()


def models_dir() -> Path:
    """Folder of registry files, one per target model."""
    return data_dir() / "models"


def concept_sets_file() -> Path:
    return data_dir() / "concept_sets.yaml"


def warehouse_dir() -> Path:
    return data_dir() / "warehouse"


def catalog_path() -> Path:
    return data_dir() / "www.duckdb"


def artifacts_dir() -> Path:
    return data_dir() / "artifacts"


def resolve(path: str | Path, base: Path | None = None) -> Path:
    """A user-given path: absolute as is, relative to `base` (default: the repository root)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ((base or PROJECT_ROOT) / p).resolve()
