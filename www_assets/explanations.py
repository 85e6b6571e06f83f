"""Where and why: the class x neuron Shapley matrix, class-vs-sample explanations with heatmaps,
and heatmap similarity as an uncertainty score (METHODS.md section 4)."""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import Progress, image_markdown, model_entry, table_metadata
from www_assets.partitions import models
from www_resources.dagster_resources import TorchDevice, WarehouseResource


class ShapleyConfig(dg.Config):
    absolute: bool = False  # the paper writes |a * grad|; the reference code keeps the sign (default)
    max_images: int = 0  # 0: every image of the class set


@dg.asset(
    partitions_def=models,
    deps=["model_training", "world_scenes"],
    code_version="1",
    kinds={"pytorch", "parquet"},
    group_name="why",
    pool="gpu",
)
def class_shapley(context: dg.AssetExecutionContext, config: ShapleyConfig, device: TorchDevice,
                  warehouse: WarehouseResource) -> pd.DataFrame:
    """The classes x neurons matrix of mean Taylor contributions a * df_c/da at the head's input
    (the pooled penultimate features), averaged over each class's images of the registry's
    `class_set` (default: the probe set) with their true label. One forward and one backward pass
    per batch."""
    import torch

    from www_assets.figures.explanations import shapley_matrix_figure
    from www_assets.methods.contributions import ClassContributionAccumulator, taylor_contributions_from_model
    from www_resources.probes import open_probe_set
    from www_resources.target import TargetModel

    entry = model_entry(context)
    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    probe = open_probe_set(entry.class_set or entry.probe_set)
    manifest = probe.manifest()
    if config.max_images:
        manifest = manifest.sample(n=min(config.max_images, len(manifest)), random_state=0).sort_index()
    names = probe.class_names()
    acc = None
    progress = Progress(context, "class contributions")
    batches = device.batches("gradient", "class contributions", context.log.info)
    chunk = max(device.batch_size * 8, 256)
    for start in range(0, len(manifest), chunk):
        part = manifest.iloc[start:start + chunk]
        images, ids, _ = probe.load(part, model.pre.size, model.pre.resize)
        labels = torch.tensor(part.set_index("image_id").loc[ids, "label"].to_numpy(), dtype=torch.long)

        def contributions(b, e):
            x = model.to_input(images[b:e])
            y = labels[b:e].to(x.device)
            contrib, logits = taylor_contributions_from_model(model.module, entry.head, x, y, absolute=config.absolute)
            return contrib.float().cpu(), logits.shape[1], y.cpu()

        for _, _, (contrib, classes, y) in batches(len(ids), contributions):
            if acc is None:
                acc = ClassContributionAccumulator(classes, contrib.shape[1])
            acc.add(contrib, y)
        progress(min(start + chunk, len(manifest)), len(manifest))
    matrix, counts = acc.mean()
    k, d = matrix.shape
    names = (names + [str(i) for i in range(len(names), k)])[:k]
    df = pd.DataFrame({
        "class_id": np.repeat(np.arange(k), d).astype(np.int32),
        "class_name": np.repeat(names, d),
        "neuron": np.tile(np.arange(d), k).astype(np.int32),
        "value": matrix.numpy().reshape(-1).astype(np.float32),
        "n_samples": np.repeat(counts.numpy(), d).astype(np.int32),
    })
    folder = warehouse.artifacts / "explanations" / entry.name
    picture = shapley_matrix_figure(matrix.numpy(), names, folder / "class_shapley.png")
    top = df.sort_values("value", ascending=False).groupby("class_name").head(3)
    context.add_output_metadata({
        **table_metadata(top.sort_values(["class_id", "value"], ascending=[True, False]), images=int(counts.sum())),
        "matrix": dg.MetadataValue.md(image_markdown(picture, "class x neuron Shapley matrix")),
    })
    return df


class ExplanationConfig(dg.Config):
    top_k: int = 3  # neurons per track (the reference figures use 3)
    percentile: float = 70.0  # concept region map threshold
    gallery_correct: int = 4
    gallery_mispredicted: int = 4
    concept_method: str = "www"


def _neuron_concepts_lookup(neuron_concepts: pd.DataFrame, entry, method: str) -> dict[int, str]:
    """Major concept of each head-input neuron (the spatial layer's channels), first concept set."""
    if neuron_concepts.empty:
        return {}
    rows = neuron_concepts[
        (neuron_concepts["layer"] == entry.spatial_layer)
        & (neuron_concepts["method"] == method)
        & (neuron_concepts["kind"] == "major")
        & (neuron_concepts["rank"] <= 1)
    ]
    if "concept_set" in rows:
        rows = rows[rows["concept_set"] == entry.concept_sets[0]]
    return {int(n): (c if isinstance(c, str) else "(none)") for n, c in zip(rows["neuron"], rows["concept"])}


@dg.asset(
    partitions_def=models,
    ins={"class_shapley": dg.AssetIn(), "neuron_concepts": dg.AssetIn()},
    deps=["model_training", "world_scenes"],
    code_version="1",
    kinds={"pytorch", "parquet"},
    group_name="why",
    pool="gpu",
)
def sample_explanations(context: dg.AssetExecutionContext, config: ExplanationConfig, device: TorchDevice,
                        warehouse: WarehouseResource, class_shapley: pd.DataFrame,
                        neuron_concepts: pd.DataFrame) -> pd.DataFrame:
    """For every image of the registry's `explain_set` (default: the probe set): the predicted
    class, max softmax probability, the class track (top-k neurons of the class Shapley row of the
    predicted class) and the sample track (top-k of the sample's own contributions), each with its
    neurons' major concepts, and the cosine similarity of the two concept heatmaps (eq. 4). A
    gallery of correct and mispredicted samples is drawn as in the paper's figures 5 and 6."""
    import torch

    from www_assets.figures.explanations import explanation_figure
    from www_assets.methods.contributions import taylor_contributions_from_model, top_neurons
    from www_assets.methods.heatmaps import (
        concept_heatmap, heatmap_similarity, neuron_activation_maps, region_masks, spatial_maps,
    )
    from www_resources.hooks import LayerRecorder
    from www_resources.probes import open_probe_set
    from www_resources.target import TargetModel

    entry = model_entry(context)
    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    probe = open_probe_set(entry.explain_set or entry.probe_set)
    manifest = probe.manifest()
    size = model.pre.size
    k_classes = int(class_shapley["class_id"].max()) + 1
    class_matrix = torch.zeros(k_classes, int(class_shapley["neuron"].max()) + 1)
    class_matrix[class_shapley["class_id"].to_numpy(), class_shapley["neuron"].to_numpy()] = torch.from_numpy(
        class_shapley["value"].to_numpy())
    class_top, class_top_w = top_neurons(class_matrix, config.top_k)  # (K, k)
    concepts = _neuron_concepts_lookup(neuron_concepts, entry, config.concept_method)
    names = lambda ns: [concepts.get(int(n), "(no concept)") for n in ns]

    rows, keep_for_gallery = [], []
    progress = Progress(context, "sample explanations")
    batches = device.batches("gradient", "sample explanations", context.log.info)
    chunk = max(device.batch_size * 8, 256)
    for start in range(0, len(manifest), chunk):
        part = manifest.iloc[start:start + chunk]
        images, ids, _ = probe.load(part, size, model.pre.resize)
        labels = part.set_index("image_id").loc[ids, "label"].to_numpy()

        def contributions_and_maps(b, e):
            x = model.to_input(images[b:e])
            with LayerRecorder(model.module, [entry.spatial_layer]) as recorder:
                contrib, logits = taylor_contributions_from_model(model.module, entry.head, x)
                maps = spatial_maps(recorder.outputs[entry.spatial_layer].detach(), model.num_prefix_tokens).float().cpu()
            return contrib.float().cpu(), logits.float().cpu(), maps

        for b, _, (contrib, logits, maps) in batches(len(ids), contributions_and_maps):
            prob = torch.softmax(logits, 1)
            msp, pred = prob.max(1)
            s_top, s_w = top_neurons(contrib, config.top_k)
            c_top, c_w = class_top[pred], class_top_w[pred]
            s_nam = neuron_activation_maps(maps, s_top, (size, size))
            c_nam = neuron_activation_maps(maps, c_top, (size, size))
            s_heat, c_heat = concept_heatmap(s_nam, s_w), concept_heatmap(c_nam, c_w)
            sim = heatmap_similarity(c_heat, s_heat)
            for i in range(len(pred)):
                n = b + i
                rows.append({
                    "image_id": ids[n], "label": int(labels[n]), "pred": int(pred[i]), "msp": float(msp[i]),
                    "correct": bool(pred[i] == labels[n]),
                    "class_top": c_top[i].tolist(), "class_top_concepts": names(c_top[i]),
                    "sample_top": s_top[i].tolist(), "sample_top_concepts": names(s_top[i]),
                    "heatmap_similarity": float(sim[i]), "figure": None,
                })
                want_correct = rows[-1]["correct"] and sum(g[1]["correct"] for g in keep_for_gallery) < config.gallery_correct
                want_wrong = (not rows[-1]["correct"]) and sum(not g[1]["correct"] for g in keep_for_gallery) < config.gallery_mispredicted
                if want_correct or want_wrong:
                    keep_for_gallery.append((images[n], rows[-1], {
                        "class": {"neurons": c_top[i].tolist(), "concepts": names(c_top[i]), "weights": c_w[i].tolist(),
                                  "masks": region_masks(c_nam[i:i + 1], config.percentile)[0].numpy(), "heatmap": c_heat[i].numpy()},
                        "sample": {"neurons": s_top[i].tolist(), "concepts": names(s_top[i]), "weights": s_w[i].tolist(),
                                   "masks": region_masks(s_nam[i:i + 1], config.percentile)[0].numpy(), "heatmap": s_heat[i].numpy()},
                    }))
        progress(min(start + chunk, len(manifest)), len(manifest))
    class_names = probe.class_names()
    folder = warehouse.artifacts / "explanations" / entry.name
    meta_pictures = {}
    for image, row, tracks in keep_for_gallery:
        verdict = "correct" if row["correct"] else f"WRONG (true: {class_names[row['label']]})"
        path = explanation_figure(
            image, tracks["class"], tracks["sample"],
            f"{row['image_id']}: predicted {class_names[row['pred']]} ({row['msp']:.2f}), {verdict}",
            folder / f"{row['image_id'].replace('/', '_')}.png",
        )
        row["figure"] = str(path)
        meta_pictures[f"explanation {row['image_id']}"] = dg.MetadataValue.md(image_markdown(path, row["image_id"]))
    df = pd.DataFrame(rows)
    context.add_output_metadata({
        **table_metadata(df, accuracy=float(df["correct"].mean()),
                         mean_similarity_correct=float(df[df["correct"]]["heatmap_similarity"].mean()),
                         mean_similarity_wrong=float(df[~df["correct"]]["heatmap_similarity"].mean())),
        **meta_pictures,
    })
    return df


@dg.multi_asset(
    partitions_def=models,
    outs={
        "misprediction_detection": dg.AssetOut(code_version="1", kinds={"pandas", "parquet"}, group_name="why"),
        "rejection_curves": dg.AssetOut(code_version="1", kinds={"pandas", "parquet"}, group_name="why"),
    },
    ins={"sample_explanations": dg.AssetIn()},
)
def uncertainty(context: dg.AssetExecutionContext, warehouse: WarehouseResource, sample_explanations: pd.DataFrame):
    """AUROC of detecting mispredictions with heatmap similarity and with the max softmax
    probability (low value = flagged), and the rejection curve of each (seed 000 §F)."""
    from www_assets.figures.explanations import rejection_curve_figure
    from www_assets.methods.uncertainty import misprediction_auroc, rejection_curve

    entry = model_entry(context)
    df = sample_explanations
    correct = df["correct"].to_numpy()
    n_wrong = int((~correct).sum())
    scores = {"heatmap_similarity": df["heatmap_similarity"].to_numpy(), "msp": df["msp"].to_numpy()}
    aurocs, curves = {}, {}
    for name, values in scores.items():
        aurocs[name] = misprediction_auroc(values, correct) if 0 < n_wrong < len(df) else float("nan")
        curves[name] = rejection_curve(values, correct).assign(score=name)
    table = pd.DataFrame({"score": list(aurocs), "auroc": list(aurocs.values()), "n": len(df), "n_mispredicted": n_wrong})
    curve = pd.concat(curves.values(), ignore_index=True)[["score", "share_rejected", "mispredictions_caught", "accuracy_of_kept"]]
    picture = rejection_curve_figure({k: v for k, v in curves.items()}, aurocs,
                                     warehouse.artifacts / "explanations" / entry.name / "rejection_curve.png")
    yield dg.Output(table, "misprediction_detection", metadata={
        **table_metadata(table), "rejection curve": dg.MetadataValue.md(image_markdown(picture, "rejection curve"))})
    yield dg.Output(curve, "rejection_curves", metadata=table_metadata(curve))
