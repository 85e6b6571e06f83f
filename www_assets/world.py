"""The embedded world: generated scenes with known truth, and the models trained on them
(the target CNN/ViT of every registry file with a `train:` section, and the world CLIP)."""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import image_markdown, model_entry, table_metadata
from www_assets.partitions import models
from www_resources.dagster_resources import TorchDevice, WarehouseResource

# what the trained models must reach on the test split (checked by the `accuracy_targets` checks)
CLASSIFIER_TARGETS = {"cnn": 0.90, "vit": 0.80}  # top-1 accuracy by the registry file's train.kind
CLIP_TARGETS = {"zero_shot_accuracy": 0.85, "retrieval_part": 0.80, "retrieval_colour": 0.80,
                "retrieval_background": 0.80}


def classifier_target(entry) -> float | None:
    """The test accuracy a registry entry's model must reach: by its `train.kind`; None for
    models the pipeline does not train."""
    return CLASSIFIER_TARGETS.get((entry.train or {}).get("kind"))


class WorldSettings(dg.Config):
    """Size of the world; the defaults are the ones the README's numbers come from."""

    seed: int = -1  # -1: data/world.yaml, else the generator's default
    image_size: int = -1
    n_train: int = -1
    n_probe: int = -1
    n_test: int = -1
    num_classes: int = -1  # 0: every class


def world_file(section: str) -> dict:
    """Defaults from `data/world.yaml` (sections `world` and `clip`), which tests shrink."""
    import yaml

    from www_resources.paths import data_dir

    path = data_dir() / "world.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    value = data.get(section) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: section {section!r} must be a mapping")
    return value


def _given(config: dg.Config) -> dict:
    """Fields set in the run config (negative numbers mean 'not set')."""
    return {k: v for k, v in config.model_dump().items() if not (isinstance(v, (int, float)) and v < 0)}


def world_config(settings: WorldSettings):
    from www_resources.world import WorldConfig

    given = {**world_file("world"), **_given(settings)}
    if not given.get("num_classes"):
        given["num_classes"] = None
    return WorldConfig.from_dict(given)


def _save_array_atomic(array: np.ndarray, path) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


@dg.multi_asset(
    outs={
        "world_scenes": dg.AssetOut(code_version="1", kinds={"numpy", "parquet"}, group_name="world"),
        "world_parts": dg.AssetOut(code_version="1", kinds={"numpy", "parquet"}, group_name="world"),
        "world_classes": dg.AssetOut(code_version="1", kinds={"parquet"}, group_name="world"),
        "world_vocabulary": dg.AssetOut(code_version="1", kinds={"parquet"}, group_name="world"),
    },
)
def world(context: dg.AssetExecutionContext, config: WorldSettings, warehouse: WarehouseResource):
    """Generate the train, probe and test splits of the synthetic world (deterministic from the
    seed): images go to data/artifacts/world/<split>.npy, their truth to the tables: one row per
    scene (class, hierarchy path, object box, background, colour, texture, caption), one row per
    drawn part, the class table (hierarchy, parts, confusable twin, spurious background) and the
    vocabulary."""
    import time

    from www_assets.figures.world import scene_gallery
    from www_resources.probes import world_images_path
    from www_resources.world import class_table, generate_split, vocabulary

    cfg = world_config(config)
    scenes, parts = [], []
    for split in ("train", "probe", "test"):
        t0 = time.monotonic()
        data = generate_split(cfg, split)
        _save_array_atomic(np.ascontiguousarray(data.images), world_images_path(split))
        scenes.append(data.scenes)
        parts.append(data.parts)
        context.log.info(f"world {split}: {len(data.scenes)} images in {time.monotonic() - t0:.1f}s")
        if split == "probe":
            gallery = scene_gallery(data.images[:24], data.scenes.head(24), data.parts,
                                    warehouse.artifacts / "world" / "gallery.png")
    scenes = pd.concat(scenes, ignore_index=True)
    parts = pd.concat(parts, ignore_index=True)
    classes = class_table(cfg)
    vocab = vocabulary(cfg)
    counts = scenes.groupby("split").size().to_dict()
    yield dg.Output(scenes[list(_columns("world_scenes"))], "world_scenes", metadata={
        **table_metadata(scenes.drop(columns=["path"])), "splits": str(counts),
        "gallery": dg.MetadataValue.md(image_markdown(gallery, "sample scenes with object and part boxes"))})
    yield dg.Output(parts[list(_columns("world_parts"))], "world_parts", metadata=table_metadata(parts))
    yield dg.Output(classes[list(_columns("world_classes"))], "world_classes", metadata=table_metadata(classes))
    yield dg.Output(vocab[list(_columns("world_vocabulary"))], "world_vocabulary", metadata=table_metadata(vocab))


def _columns(table: str):
    from www_resources.tables import TABLES

    return TABLES[table].columns.keys()


def _split(name: str):
    from www_resources.probes import open_probe_set

    probe = open_probe_set(f"world:{name}")
    manifest = probe.manifest()
    images, _, _ = probe.load(manifest, int(np.load(_images_path(name), mmap_mode="r").shape[1]))
    return images, manifest["label"].to_numpy()


def _images_path(name):
    from www_resources.probes import world_images_path

    return world_images_path(name)


class ClipTrainingConfig(dg.Config):
    pretrain_epochs: int = -1  # supervised warm start of the image tower; -1: data/world.yaml's value
    epochs: int = -1  # -1: data/world.yaml's value
    batch_size: int = -1
    lr: float = -1.0
    seed: int = -1


@dg.asset(
    deps=["world_scenes", "world_parts", "world_classes"],
    code_version="3",
    kinds={"pytorch", "parquet"},
    group_name="world",
    pool="gpu",
)
def world_clip(context: dg.AssetExecutionContext, config: ClipTrainingConfig, warehouse: WarehouseResource) -> pd.DataFrame:
    """A small open_clip model (custom config) trained contrastively on the world's captions with
    open_clip's tokenizer and loss, after a supervised warm start of its image tower on what the
    captions name (class, colour, background, texture, parts; `pretrain_epochs`, 0 to skip);
    saved to data/artifacts/models/world-clip.pt, the `clip:` of the world models. Reports
    zero-shot class accuracy and per-attribute retrieval on the test split."""
    import time

    from www_resources.world import (
        ATTRIBUTES,
        attribute_retrieval_accuracy,
        fit_world_clip,
        save_clip_checkpoint,
        zero_shot_accuracy,
    )

    train_images, _ = _split("train")
    test_images, test_labels = _split("test")
    scenes = warehouse.read("world_scenes")
    parts = warehouse.read("world_parts")
    classes = warehouse.read("world_classes").sort_values("class_id")
    kwargs = {**world_file("clip"), **_given(config)}

    def split_tables(name):
        rows = scenes[scenes["split"] == name].sort_values("index").reset_index(drop=True)
        return rows, parts[parts["image_id"].isin(set(rows["image_id"]))].reset_index(drop=True)

    train_scenes, train_parts = split_tables("train")
    t0 = time.monotonic()
    model, tokenizer, history = fit_world_clip(train_images, train_scenes, train_parts, log=context.log.info,
                                               **{"seed": 0, **kwargs})
    seconds = time.monotonic() - t0
    test_scenes, test_parts = split_tables("test")
    metrics = {
        "zero_shot_accuracy": zero_shot_accuracy(model, tokenizer, test_images, test_labels, classes["name"].tolist()),
        **{f"retrieval_{a}": attribute_retrieval_accuracy(model, tokenizer, test_images, test_scenes, test_parts, a)
           for a in ATTRIBUTES},
        "train_seconds": seconds,
        "final_loss": float(history["loss"][-1]),
        "torch_threads": history["threads"],  # the weights are reproducible for the same seed and thread count
    }
    path = warehouse.artifacts / "models" / "world-clip.pt"
    save_clip_checkpoint(model, model.world_config, path)
    df = pd.DataFrame({"metric": list(metrics), "value": [float(v) for v in metrics.values()]})
    context.add_output_metadata({**{k: float(v) for k, v in metrics.items()}, "checkpoint": dg.MetadataValue.path(str(path))})
    return df


class TrainingOverrides(dg.Config):
    epochs: int = -1  # -1: the registry file's value, else the trainer's default


@dg.asset(
    partitions_def=models,
    deps=["world_scenes", "world_classes"],
    code_version="1",
    kinds={"pytorch", "parquet"},
    group_name="world",
    pool="gpu",
)
def model_training(context: dg.AssetExecutionContext, config: TrainingOverrides, device: TorchDevice) -> pd.DataFrame:
    """For a registry file with a `train:` section: train that CNN or ViT on the world's train
    split, save it where its `model:` spec points, and report test accuracy. For any other model:
    load it once (so missing weights fail here, with the fix in the message) and report its size."""
    import time

    import torch

    from www_resources.registry import resolve_data_path

    entry = model_entry(context)
    if not entry.train:
        from www_resources.zoo import load_model

        module = load_model(entry.model, architecture=entry.architecture, base_dir=resolve_data_path("."))
        params = sum(p.numel() for p in module.parameters())
        context.add_output_metadata({"parameters": params, "trained_here": False})
        return pd.DataFrame({"metric": ["parameters"], "value": [float(params)]})

    from www_resources.world import build_classifier, classifier_accuracy, save_classifier, train_classifier

    train_images, train_labels = _split("train")
    test_images, test_labels = _split("test")
    arch = {k: v for k, v in entry.train.items() if k not in ("epochs", "batch_size", "lr", "seed")}
    arch.update(num_classes=int(train_labels.max()) + 1, image_size=int(train_images.shape[1]))
    hyper = {k: entry.train[k] for k in ("epochs", "batch_size", "lr", "seed") if k in entry.train}
    if config.epochs > 0:
        hyper["epochs"] = config.epochs
    torch.manual_seed(int(hyper.get("seed", 0)))
    model = build_classifier(**arch)
    t0 = time.monotonic()
    history = train_classifier(model, train_images, train_labels, log=context.log.info, **hyper)
    seconds = time.monotonic() - t0
    accuracy = classifier_accuracy(model, test_images, test_labels)
    path = resolve_data_path(entry.model.split(":", 1)[1])
    save_classifier(model, arch, path)
    metrics = {"test_accuracy": accuracy, "train_seconds": seconds, "final_loss": float(history["loss"][-1]),
               "parameters": float(sum(p.numel() for p in model.parameters()))}
    context.add_output_metadata({**metrics, "checkpoint": dg.MetadataValue.path(str(path)), "arch": str(arch)})
    return pd.DataFrame({"metric": list(metrics), "value": [float(v) for v in metrics.values()]})
