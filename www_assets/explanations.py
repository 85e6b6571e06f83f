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
    code_version="2",
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
    from www_assets.methods.explanation import contribution_sign
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
        "sign": contribution_sign(config.absolute),
    })
    folder = warehouse.artifacts / "explanations" / entry.name
    picture = shapley_matrix_figure(matrix.numpy(), names, folder / "class_shapley.png",
                                    title=f"{entry.name} {entry.spatial_layer} (the input of {entry.head})")
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


def major_concepts_by_neuron(neuron_concepts: pd.DataFrame, entry, method: str) -> dict[int, str]:
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


def class_matrix_of(class_shapley: pd.DataFrame):
    """The (K, D) class Shapley matrix and whether it holds absolute contributions (its `sign`)."""
    import torch

    signs = set(class_shapley["sign"].dropna()) if "sign" in class_shapley else {"signed"}
    if len(signs) != 1 or not signs <= {"signed", "absolute"}:
        raise ValueError(f"class_shapley must hold one sign ('signed' or 'absolute'), got {sorted(signs)}")
    k_classes = int(class_shapley["class_id"].max()) + 1
    matrix = torch.zeros(k_classes, int(class_shapley["neuron"].max()) + 1)
    # copies: columns read from Parquet can be read-only arrays, which torch will not wrap
    column = lambda name, dtype: torch.from_numpy(class_shapley[name].to_numpy(dtype=dtype, copy=True))
    matrix[column("class_id", np.int64), column("neuron", np.int64)] = column("value", np.float32)
    return matrix, signs == {"absolute"}


class ExplainSetup:
    """What the per-image explanation assets (`sample_explanations`, `localization_eval`) share:
    the model, its explain set, the class matrix and each neuron's major concept, and the images
    in chunks of at most `chunk` (loaded once, then cut into gradient batches)."""

    def __init__(self, context: dg.AssetExecutionContext, device: TorchDevice, class_shapley: pd.DataFrame,
                 neuron_concepts: pd.DataFrame, concept_method: str, entry=None):
        from www_resources.probes import open_probe_set
        from www_resources.target import TargetModel

        self.entry = entry or model_entry(context)
        self.spec = self.entry.explain_set or self.entry.probe_set
        self.model = TargetModel(self.entry, device.torch_device(), device.torch_dtype())
        self.probe = open_probe_set(self.spec)
        self.manifest = self.probe.manifest()
        self.class_matrix, self.absolute = class_matrix_of(class_shapley)
        self.concepts = major_concepts_by_neuron(neuron_concepts, self.entry, concept_method)
        self.map_layer = self.model.module.get_submodule(self.entry.cam_layer)
        self.chunk = max(device.batch_size * 8, 256)

    def chunks(self):
        """(images done so far, manifest rows, images, image ids) per chunk of the explain set."""
        for start in range(0, len(self.manifest), self.chunk):
            part = self.manifest.iloc[start:start + self.chunk]
            images, ids, _ = self.probe.load(part, self.model.pre.size, self.model.pre.resize)
            yield min(start + self.chunk, len(self.manifest)), part, images, ids

    def explain(self, x, top_k: int):
        """`explain_batch` of a batch of model inputs (the class and sample tracks with their maps)."""
        from www_assets.methods.explanation import explain_batch

        return explain_batch(self.model.module, self.entry.head, self.map_layer, x,
                             self.class_matrix, top_k, absolute=self.absolute,
                             num_prefix_tokens=self.model.num_prefix_tokens)


def explanation_rows(ex, ids, labels, names) -> list[dict]:
    """Rows of `sample_explanations` for one explained batch (figure paths are filled in later)."""
    msp, pred = ex.msp, ex.predicted
    return [{
        "image_id": ids[i], "label": int(labels[i]), "pred": int(pred[i]), "msp": float(msp[i]),
        "correct": bool(int(pred[i]) == int(labels[i])),
        "class_top": ex.class_top[i].tolist(), "class_top_concepts": names(ex.class_top[i]),
        "sample_top": ex.sample_top[i].tolist(), "sample_top_concepts": names(ex.sample_top[i]),
        "heatmap_similarity": float(ex.similarity[i]), "figure": None,
    } for i in range(len(pred))]


@dg.asset(
    partitions_def=models,
    ins={"class_shapley": dg.AssetIn(), "neuron_concepts": dg.AssetIn()},
    deps=["model_training", "world_scenes"],
    code_version="2",
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
    from www_assets.figures.explanations import explanation_figure
    from www_assets.methods.heatmaps import region_masks

    setup = ExplainSetup(context, device, class_shapley, neuron_concepts, config.concept_method)
    entry = setup.entry
    names = lambda ns: [setup.concepts.get(int(n), "(no concept)") for n in ns]

    rows, keep_for_gallery = [], []
    progress = Progress(context, "sample explanations")
    batches = device.batches("gradient", "sample explanations", context.log.info)
    for done, part, images, ids in setup.chunks():
        labels = part.set_index("image_id").loc[ids, "label"].to_numpy()
        for b, e, ex in batches(len(ids), lambda b, e: setup.explain(setup.model.to_input(images[b:e]), config.top_k)):
            new_rows = explanation_rows(ex, ids[b:e], labels[b:e], names)
            rows += new_rows
            for i, row in enumerate(new_rows):
                want_correct = row["correct"] and sum(g[1]["correct"] for g in keep_for_gallery) < config.gallery_correct
                want_wrong = (not row["correct"]) and sum(not g[1]["correct"] for g in keep_for_gallery) < config.gallery_mispredicted
                if want_correct or want_wrong:
                    track = lambda top, w, maps, heat: {
                        "neurons": top[i].tolist(), "concepts": names(top[i]), "weights": w[i].tolist(),
                        "masks": region_masks(maps[i:i + 1], config.percentile)[0].numpy(), "heatmap": heat[i].numpy()}
                    keep_for_gallery.append((images[b + i], row, {
                        "class": track(ex.class_top, ex.class_weights, ex.class_maps, ex.class_heatmap),
                        "sample": track(ex.sample_top, ex.sample_weights, ex.sample_maps, ex.sample_heatmap),
                    }))
        progress(done, len(setup.manifest))
    class_names = setup.probe.class_names()
    # a model may have more outputs than the probe set has classes (e.g. ImageNet's 1,000 on a few of them)
    name_of = lambda c: class_names[c] if 0 <= c < len(class_names) else f"class {c}"
    folder = warehouse.artifacts / "explanations" / entry.name
    meta_pictures = {}
    for image, row, tracks in keep_for_gallery:
        verdict = "correct" if row["correct"] else f"WRONG (true: {name_of(row['label'])})"
        path = explanation_figure(
            image, tracks["class"], tracks["sample"],
            f"{entry.name} {entry.spatial_layer} (maps at {entry.cam_layer}), {row['image_id']}: "
            f"predicted {name_of(row['pred'])} ({row['msp']:.2f}), {verdict}",
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
        "misprediction_detection": dg.AssetOut(code_version="2", kinds={"pandas", "parquet"}, group_name="why"),
        "rejection_curves": dg.AssetOut(code_version="2", kinds={"pandas", "parquet"}, group_name="why"),
    },
    ins={"sample_explanations": dg.AssetIn()},
)
def uncertainty(context: dg.AssetExecutionContext, warehouse: WarehouseResource, sample_explanations: pd.DataFrame):
    """AUROC of detecting mispredictions with heatmap similarity, with the max softmax probability
    and with the Jaccard overlap of the class and sample tracks' top-k neurons (low value =
    flagged), each with a 95 % stratified bootstrap interval and its mean on correct and on
    mispredicted images, and the rejection curve of each score (seed 000 §F)."""
    from www_assets.figures.explanations import rejection_curve_figure
    from www_assets.methods.uncertainty import bootstrap_auroc_ci, misprediction_auroc, rejection_curve, top_k_jaccard

    entry = model_entry(context)
    df = sample_explanations
    correct = df["correct"].to_numpy().astype(bool)
    n_wrong = int((~correct).sum())
    both = 0 < n_wrong < len(df)
    scores = {"heatmap_similarity": df["heatmap_similarity"].to_numpy(), "msp": df["msp"].to_numpy(),
              "track_jaccard": top_k_jaccard(df["class_top"], df["sample_top"])}
    rows, curves = [], {}
    for name, values in scores.items():
        low, high = bootstrap_auroc_ci(values, correct) if both else (float("nan"), float("nan"))
        rows.append({"score": name, "auroc": misprediction_auroc(values, correct) if both else float("nan"),
                     "ci_low": low, "ci_high": high,
                     "mean_correct": float(values[correct].mean()) if correct.any() else float("nan"),
                     "mean_mispredicted": float(values[~correct].mean()) if n_wrong else float("nan"),
                     "n": len(df), "n_mispredicted": n_wrong})
        curves[name] = rejection_curve(values, correct).assign(score=name)
    table = pd.DataFrame(rows)
    aurocs = dict(zip(table["score"], table["auroc"]))
    curve = pd.concat(curves.values(), ignore_index=True)[["score", "share_rejected", "mispredictions_caught", "accuracy_of_kept"]]
    picture = rejection_curve_figure({k: v for k, v in curves.items()}, aurocs,
                                     warehouse.artifacts / "explanations" / entry.name / "rejection_curve.png",
                                     title=f"{entry.name} {entry.spatial_layer}: rejecting the least confident test images")
    yield dg.Output(table, "misprediction_detection", metadata={
        **table_metadata(table), "rejection curve": dg.MetadataValue.md(image_markdown(picture, "rejection curve"))})
    yield dg.Output(curve, "rejection_curves", metadata=table_metadata(curve))
