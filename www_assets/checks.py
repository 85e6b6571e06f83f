"""Asset checks on the tables, built from the assets that exist (`table_checks(assets)`).

Every table declared in www_resources/tables.py whose asset is in the Definitions gets one check
op (a `multi_asset_check`) partitioned like the asset, so a check runs on one partition and reads
only that partition's Parquet files through the warehouse (never the IO manager's fan-in over
every partition). The checks it may hold:

* `grain_unique`: no two rows share the table's declared grain (e.g. one row per
  layer x neuron x method x kind x rank in `neuron_concepts`), for every table with a grain.
* `no_nan_scores`: the score columns of `NAN_FREE_COLUMNS` hold no NaN or infinity (in
  `neuron_concepts`, the placeholder row of a neuron with nothing selected has concept NULL and
  no score by design, so only rows with a concept count).
* `vector_widths`: activations have every configured layer, one width per layer, the same
  images in every layer and finite values; CLIP image and text embeddings of a model have the
  same width (compared through the other table's Parquet schema, no data read) and finite values.
* `all_models_present`: every configured model appears in `evaluation_summary`.
* `accuracy_targets` (severity WARN): a model trained on the world reaches its test accuracy
  target (`model_training`: CNN 0.90, ViT 0.80), and the world CLIP its zero-shot and
  retrieval targets (`world_clip`); the targets live in www_assets/world.py.
* `flat_gradcam_share` (severity WARN): at most `FLAT_GRADCAM_LIMIT` of a model's Grad-CAM maps
  are flat (no peak: the window falls back to the centre), else the Grad-CAM layer probably gets
  no gradient (e.g. patch tokens the head never reads).

A table whose asset is not defined gets no check; a table whose declared partitioning disagrees
with its asset's partitioning gets none either (its writes would fail first, with the reason).
Each check runs under `orchestration.check_condition()`: with (or right after) each update of its
partition, and once on partitions it never checked.
"""

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.orchestration import check_condition, read_configured
from www_assets.partitions import clip_concepts, clip_probes, model_concepts, models, shared_keys
from www_resources.dagster_resources import WarehouseResource
from www_resources.storage import Warehouse
from www_resources.tables import TABLES

NAN_FREE_COLUMNS: dict[str, tuple[str, ...]] = {
    "concept_scores": ("score",),
    "neuron_concepts": ("score",),
    "class_shapley": ("value",),
    "concept_eval": ("clip_cos", "text_cos", "f1", "hit"),
    "neuron_concept_shapley": ("value",),
    "concept_localization": ("accuracy", "mean_iou"),
}
# rows that must have a score; the others are placeholders by design
SCORED_ROWS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "neuron_concepts": lambda df: df["concept"].notna(),
}
# table -> the table whose vectors must have the same width, for the same CLIP
CLIP_WIDTH_PARTNER = {"clip_image_embeddings": "clip_text_embeddings", "clip_text_embeddings": "clip_image_embeddings",
                      "clip_gradcam_embeddings": "clip_text_embeddings"}
VECTOR_TABLES = {"activations", *CLIP_WIDTH_PARTNER}
SUMMARY_TABLE = "evaluation_summary"
TARGET_TABLES = {"model_training", "world_clip"}
GRADCAM_TABLE = "gradcam_crops"
FLAT_GRADCAM_LIMIT = 0.05  # a few flat maps happen (no positive evidence); many mean a dead layer


# --- the invariants, on plain frames -------------------------------------------------------------


def grain_duplicates(df: pd.DataFrame, grain: tuple[str, ...]) -> pd.DataFrame:
    """The grain values that occur more than once, with their counts (columns grain + ["rows"])."""
    if missing := [c for c in grain if c not in df.columns]:
        raise ValueError(f"grain column(s) {missing} are not in the table (columns: {list(df.columns)})")
    if df.empty:
        return pd.DataFrame(columns=[*grain, "rows"])
    counts = df.groupby(list(grain), dropna=False, sort=True).size().rename("rows").reset_index()
    return counts[counts["rows"] > 1].reset_index(drop=True)


def non_finite_counts(df: pd.DataFrame, columns: Iterable[str]) -> dict[str, int]:
    """Per column, the number of NaN or infinite values (None counts as NaN)."""
    counts = {}
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"column {column!r} is not in the table (columns: {list(df.columns)})")
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        counts[column] = int((~np.isfinite(values)).sum())
    return counts


def _vector_matrix(vectors: pd.Series) -> np.ndarray:
    """(rows, width) float array of a vector column whose rows have one width."""
    return np.stack([np.asarray(v, dtype=np.float32) for v in vectors]) if len(vectors) else np.zeros((0, 0))


def activation_problems(df: pd.DataFrame, layers: Iterable[str] | None) -> tuple[list[str], dict[str, int]]:
    """What is wrong with one model's activations, and the width of each layer.

    Args:
        df: rows (layer, image_id, vector).
        layers: the layers the registry configures, or None when unknown.

    Returns:
        (problems, {layer: width}); no problems means every configured layer is there with one
        non-zero width, finite values and the same set of images as every other layer.
    """
    problems, widths, images = [], {}, {}
    for layer, rows in df.groupby("layer", sort=True):
        lengths = {len(v) for v in rows["vector"]}
        if len(lengths) != 1 or 0 in lengths:
            problems.append(f"layer {layer!r}: vector widths {sorted(lengths)} (want one non-zero width)")
            continue
        widths[layer] = lengths.pop()
        if not np.isfinite(_vector_matrix(rows["vector"])).all():
            problems.append(f"layer {layer!r}: NaN or infinite activations")
        images[layer] = frozenset(rows["image_id"])
    if layers is not None and (absent := sorted(set(layers) - set(df["layer"]))):
        problems.append(f"configured layer(s) {absent} have no activations")
    if len(set(images.values())) > 1:
        sizes = {layer: len(ids) for layer, ids in images.items()}
        problems.append(f"layers cover different images: {sizes}")
    return problems, widths


def parquet_vector_widths(files: Iterable[Path], column: str = "vector") -> set[int]:
    """The fixed-size-list widths of a vector column, read from Parquet schemas (no data)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    widths = set()
    for path in files:
        field = pq.read_schema(path).field(column)
        if pa.types.is_fixed_size_list(field.type):
            widths.add(field.type.list_size)
    return widths


# --- check ops ----------------------------------------------------------------------------------


def _table_partitioning(partitions_def) -> tuple[str, ...] | None:
    """The hive columns a partitioning writes, or None for one this module does not know."""
    if partitions_def is None:
        return ()
    if partitions_def == models:
        return ("model",)
    known = {model_concepts: ("model", "concept_set"), clip_concepts: ("clip", "concept_set"),
             clip_probes: ("clip", "probe")}
    return next((columns for definition, columns in known.items() if definition == partitions_def), None)


def _partition_of(context: dg.AssetCheckExecutionContext, partitions_def) -> dict[str, str]:
    if partitions_def is None:
        return {}
    key = context.partition_key
    if partitions_def == models:
        return {"model": key}
    by_dimension = getattr(key, "keys_by_dimension", None) or partitions_def.get_partition_key_from_str(
        key
    ).keys_by_dimension
    return dict(by_dimension)


def _grain_result(table: str, df: pd.DataFrame) -> dg.AssetCheckResult:
    grain = TABLES[table].grain
    duplicates = grain_duplicates(df, grain)
    metadata = {"rows": len(df), "grain": ", ".join(grain), "duplicated_keys": len(duplicates)}
    if len(duplicates):
        metadata["examples"] = dg.MetadataValue.md(duplicates.head(5).to_markdown(index=False))
    return dg.AssetCheckResult(check_name="grain_unique", passed=not len(duplicates), metadata=metadata)


def _nan_result(table: str, df: pd.DataFrame) -> dg.AssetCheckResult:
    if table in SCORED_ROWS and len(df):
        df = df[SCORED_ROWS[table](df)]
    counts = non_finite_counts(df, NAN_FREE_COLUMNS[table])
    return dg.AssetCheckResult(
        check_name="no_nan_scores",
        passed=not any(counts.values()),
        metadata={"rows": len(df), **{f"non_finite_{c}": n for c, n in counts.items()}},
    )


def _clip_of(partition: dict) -> str | None:
    """The `clips` key of a CLIP table's partition (a model's: the CLIP its registry file names)."""
    if "clip" in partition:
        return partition["clip"]
    from www_resources.registry import RegistryError, get_model

    try:
        return shared_keys(get_model(partition["model"]))[0]
    except (RegistryError, ValueError):
        return None


def _vector_result(table: str, df: pd.DataFrame, partition: dict, warehouse: Warehouse) -> dg.AssetCheckResult:
    if table == "activations":
        from www_resources.registry import RegistryError, get_model

        try:
            layers = get_model(partition["model"]).layers
        except RegistryError:
            layers = None  # the registry file went bad: check what is there
        problems, widths = activation_problems(df, layers)
        return dg.AssetCheckResult(
            check_name="vector_widths", passed=not problems,
            metadata={"widths": str(widths), "problems": "; ".join(problems) or "none"},
        )
    widths = {len(v) for v in df["vector"]}
    problems = [] if len(widths) <= 1 and 0 not in widths else [f"vector widths {sorted(widths)}"]
    if len(df) and not np.isfinite(_vector_matrix(df["vector"])).all():
        problems.append("NaN or infinite values")
    partner = CLIP_WIDTH_PARTNER[table]
    partner_files = sorted((warehouse.table_dir(partner) / f"clip={_clip_of(partition)}").rglob("data.parquet"))
    partner_widths = parquet_vector_widths(partner_files)
    if widths and partner_widths and partner_widths != widths:
        problems.append(f"width {sorted(widths)} differs from {partner} width {sorted(partner_widths)}")
    return dg.AssetCheckResult(
        check_name="vector_widths", passed=not problems,
        metadata={
            "width": str(sorted(widths)), f"{partner}_width": str(sorted(partner_widths)) or "not written yet",
            "problems": "; ".join(problems) or "none",
        },
    )


def _models_present_result(df: pd.DataFrame) -> dg.AssetCheckResult:
    configured = read_configured()
    expected = {m for m, _ in configured.pairs}
    absent = sorted(expected - set(df["model"]))
    return dg.AssetCheckResult(
        check_name="all_models_present", passed=not absent, severity=dg.AssetCheckSeverity.WARN,
        metadata={"expected": str(sorted(expected)), "missing": str(absent)},
    )


def accuracy_target_misses(metrics: dict[str, float], targets: dict[str, float]) -> dict[str, str]:
    """The targets a record of metrics misses: {metric: "measured < target"} (absent counts as a miss)."""
    misses = {}
    for metric, target in targets.items():
        value = metrics.get(metric)
        if value is None or not np.isfinite(value) or value < target:
            misses[metric] = f"{value if value is None else round(float(value), 4)} < {target}"
    return misses


def _targets_result(table: str, df: pd.DataFrame, partition: dict) -> dg.AssetCheckResult:
    from www_assets.world import CLIP_TARGETS, classifier_target

    metrics = dict(zip(df["metric"], df["value"].astype(float)))
    if table == "world_clip":
        targets = CLIP_TARGETS
    else:
        from www_resources.registry import RegistryError, get_model

        try:
            target = classifier_target(get_model(partition["model"]))
        except RegistryError as err:
            return dg.AssetCheckResult(check_name="accuracy_targets", passed=False, severity=dg.AssetCheckSeverity.WARN,
                                       metadata={"problems": str(err)})
        if target is None:
            return dg.AssetCheckResult(check_name="accuracy_targets", passed=True,
                                       metadata={"targets": "none: the model is not trained by the pipeline"})
        targets = {"test_accuracy": target}
    misses = accuracy_target_misses(metrics, targets)
    return dg.AssetCheckResult(
        check_name="accuracy_targets", passed=not misses, severity=dg.AssetCheckSeverity.WARN,
        metadata={**{f"{m} (target {t})": float(metrics.get(m, np.nan)) for m, t in targets.items()},
                  "missed": "; ".join(f"{m}: {v}" for m, v in misses.items()) or "none"},
    )


def flat_gradcam_share(df: pd.DataFrame) -> float:
    """Share of Grad-CAM rows without a peak (NULL cam_peak_x): their map was flat."""
    return float(df["cam_peak_x"].isna().mean()) if len(df) else 0.0


def _flat_gradcam_result(df: pd.DataFrame) -> dg.AssetCheckResult:
    share = flat_gradcam_share(df)
    return dg.AssetCheckResult(
        check_name="flat_gradcam_share", passed=share <= FLAT_GRADCAM_LIMIT, severity=dg.AssetCheckSeverity.WARN,
        metadata={"flat_share": share, "limit": FLAT_GRADCAM_LIMIT, "images": len(df)},
    )


def _check_specs(table: str, key: dg.AssetKey, partitions_def) -> list[dg.AssetCheckSpec]:
    spec = TABLES[table]
    wanted = []
    if spec.grain:
        wanted.append(("grain_unique", f"One row per ({', '.join(spec.grain)}) in each partition."))
    if table in NAN_FREE_COLUMNS:
        wanted.append(("no_nan_scores", f"No NaN or infinite {', '.join(NAN_FREE_COLUMNS[table])}."))
    if table in VECTOR_TABLES:
        wanted.append(("vector_widths", "Vectors have one width per layer (CLIP: image = text width), finite."))
    if table == SUMMARY_TABLE:
        wanted.append(("all_models_present", "Every configured model appears in the summary."))
    if table in TARGET_TABLES:
        wanted.append(("accuracy_targets", "The trained model reaches its accuracy targets on the test split."))
    if table == GRADCAM_TABLE:
        wanted.append(("flat_gradcam_share", f"At most {FLAT_GRADCAM_LIMIT:.0%} of the Grad-CAM maps are flat."))
    with warnings.catch_warnings():
        # partitioned check specs are a preview feature; dagster is pinned in pyproject.toml
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                name, asset=key, description=description, partitions_def=partitions_def,
                automation_condition=check_condition(),
            )
            for name, description in wanted
        ]


def _build_table_checks(table: str, key: dg.AssetKey, partitions_def) -> dg.AssetChecksDefinition | None:
    specs = _check_specs(table, key, partitions_def)
    if not specs:
        return None

    @dg.multi_asset_check(name=f"check_{table}", specs=specs, can_subset=True)
    def run_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        partition = _partition_of(context, partitions_def)
        df = warehouse.read(table, partition)  # this partition's files only
        context.log.info(f"{table} {partition or ''}: {len(df)} rows")
        results: dict[str, Callable[[], dg.AssetCheckResult]] = {
            "grain_unique": lambda: _grain_result(table, df),
            "no_nan_scores": lambda: _nan_result(table, df),
            "vector_widths": lambda: _vector_result(table, df, partition, warehouse.warehouse),
            "all_models_present": lambda: _models_present_result(df),
            "accuracy_targets": lambda: _targets_result(table, df, partition),
            "flat_gradcam_share": lambda: _flat_gradcam_result(df),
        }
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
            result = results[check_key.name]()
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key, check_name=check_key.name, passed=result.passed,
                severity=result.severity, metadata=result.metadata,
            )

    return run_checks


def table_checks(assets: Iterable) -> list[dg.AssetChecksDefinition]:
    """Checks for every asset (of those given) whose table is declared in `TABLES`."""
    checks = []
    for definition in assets:
        if not isinstance(definition, dg.AssetsDefinition) or not definition.is_materializable:
            continue
        for spec in definition.specs:
            table = spec.key.path[-1]
            if table not in TABLES:
                continue
            if _table_partitioning(spec.partitions_def) != TABLES[table].partition_by:
                continue
            built = _build_table_checks(table, spec.key, spec.partitions_def)
            if built is not None:
                checks.append(built)
    return checks
