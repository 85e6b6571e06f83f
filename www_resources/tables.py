"""The product's public surface: every table, its grain, its columns and their types.

Partition columns (`partition_by`) are folders in the warehouse, not file columns; `file_by`
columns split one partition into several files (needed when a vector column's width differs
between, say, layers). `VECTOR` marks a fixed-size float32 list whose width is read off the data.
The README's table reference is written from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pyarrow as pa

VECTOR = "vector"

STR = pa.string()
I32 = pa.int32()
I64 = pa.int64()
F32 = pa.float32()
F64 = pa.float64()
BOOL = pa.bool_()
STR_LIST = pa.list_(pa.string())
I32_LIST = pa.list_(pa.int32())
F32_LIST = pa.list_(pa.float32())

MODEL = ("model",)
MODEL_CONCEPTS = ("model", "concept_set")
CLIP_CONCEPTS = ("clip", "concept_set")  # shared by every model with that CLIP and concept set
CLIP_PROBES = ("clip", "probe")  # shared by every model with that CLIP and probe view


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    columns: dict
    partition_by: tuple[str, ...] = ()
    file_by: tuple[str, ...] = ()
    grain: tuple[str, ...] = field(default=())

    def without(self, names) -> "TableSpec":
        return replace(self, columns={k: v for k, v in self.columns.items() if k not in names}, file_by=())


TABLES: dict[str, TableSpec] = {}


def table(name, description, columns, partition_by=(), file_by=(), grain=()):
    TABLES[name] = TableSpec(name, description, dict(columns), tuple(partition_by), tuple(file_by), tuple(grain))
    return TABLES[name]


BOX = {"box_x0": I32, "box_y0": I32, "box_x1": I32, "box_y1": I32}

# --- the embedded world ---------------------------------------------------------------------
table(
    "world_classes",
    "The world's classes with their hierarchy, parts, confusable twin and spurious background.",
    {
        "class_id": I32, "name": STR, "synonyms": STR_LIST, "superclass": STR, "path": STR_LIST,
        "parts": STR_LIST, "main_part": STR, "palette": STR_LIST, "confusable_with": STR,
        "spurious_background": STR, "spurious_share": F64,
    },
    grain=("class_id",),
)
table(
    "world_scenes",
    "One row per generated image: class, hierarchy path, object box, background, colour, caption.",
    {
        "image_id": STR, "split": STR, "index": I32, "label": I32, "label_name": STR,
        "superclass": STR, "path": STR_LIST, **BOX, "background": STR, "colour": STR,
        "texture": STR, "caption": STR, "part_names": STR_LIST, "flipped": BOOL, "scale": F64,
        "shade": F64, "noise_std": F64, "n_distractors": I32, "distractor_shapes": STR_LIST,
        "distractor_colours": STR_LIST, "distractor_boxes": pa.list_(I32_LIST),
    },
    grain=("image_id",),
)
table(
    "world_parts",
    "One row per drawn part of each image's object, with its box and colour.",
    {"image_id": STR, "index": I32, "part": STR, "instance": I32, "x0": I32, "y0": I32, "x1": I32, "y1": I32,
     "colour": STR, "area": I32},
    grain=("image_id", "part", "instance"),
)
table(
    "world_vocabulary",
    "The world's concept words: class names, synonyms, superclasses, parts, colours, textures, backgrounds.",
    {"concept": STR, "kind": STR, "refers_to": STR},
    grain=("concept", "kind"),
)
table(
    "model_training",
    "Training record of each trained target model and of the world CLIP: accuracy and timings.",
    {"metric": STR, "value": F64},
    partition_by=MODEL,
    grain=("metric",),
)

table(
    "world_clip",
    "Training record of the world CLIP: zero-shot class accuracy and per-attribute retrieval on test.",
    {"metric": STR, "value": F64},
    grain=("metric",),
)

# --- probe set and the forward pass ---------------------------------------------------------
table(
    "probe_images",
    "The probe set of each model: one row per image, with whether it could be decoded.",
    {
        "probe_set": STR, "image_id": STR, "path": STR, "label": I32, "label_name": STR,
        "split": STR, "readable": BOOL, "error": STR,
    },
    partition_by=MODEL,
    grain=("image_id",),
)
table(
    "predictions",
    "The model's prediction on each probe image: class, max softmax probability, top-5, correct.",
    {"image_id": STR, "label": I32, "pred": I32, "msp": F32, "top5": I32_LIST, "correct": BOOL},
    partition_by=MODEL,
    grain=("image_id",),
)
table(
    "activations",
    "Spatially pooled activation vector of every configured layer for each probe image.",
    {"layer": STR, "image_id": STR, "vector": VECTOR},
    partition_by=MODEL,
    file_by=("layer",),
    grain=("layer", "image_id"),
)
table(
    "neuron_examples",
    "Top-k probe images per neuron (kind=image) by pooled activation; box columns are NULL (whole image).",
    {
        "layer": STR, "neuron": I32, "kind": STR, "rank": I32, "image_id": STR, "view": STR,
        **BOX, "activation": F32,
    },
    partition_by=MODEL,
    grain=("layer", "neuron", "kind", "rank"),
)

table(
    "crop_examples",
    "Top-k crops per neuron: grid crops (kind=crop, for minor concepts) and Grad-CAM crops "
    "(kind=gradcam_crop), with the crop box and the neuron's activation on the resized crop.",
    TABLES["neuron_examples"].columns,
    partition_by=MODEL,
    grain=("layer", "neuron", "kind", "rank"),
)

# --- what: concept discovery ----------------------------------------------------------------
table(
    "gradcam_crops",
    "Grad-CAM window of each probe image for its predicted class: the model's input size, centred on the "
    "CAM maximum, in pixels of the resized frame; the peak is NULL when the map was flat.",
    {"image_id": STR, "pred": I32, **BOX, "cam_peak_x": I32, "cam_peak_y": I32},
    partition_by=MODEL,
    grain=("image_id",),
)
table(
    "clip_image_embeddings",
    "CLIP image features of every probe image (view full) and of each of its grid crops (view crop:r,c), "
    "shared by the models with the same CLIP and probe view (`probe`: the probe set and geometry key).",
    {"clip_model": STR, "probe_set": STR, "image_id": STR, "view": STR, "vector": VECTOR},
    partition_by=CLIP_PROBES,
    grain=("image_id", "view"),
)
table(
    "clip_gradcam_embeddings",
    "CLIP image features of the Grad-CAM window of every probe image (view gradcam): the only CLIP views "
    "that depend on the model.",
    {"clip_model": STR, "probe_set": STR, "image_id": STR, "view": STR, "vector": VECTOR},
    partition_by=MODEL,
    grain=("image_id", "view"),
)
table(
    "clip_text_embeddings",
    "CLIP text features of each concept as templated prompt, as raw word, and of the bare template, "
    "shared by the models with the same CLIP and concept set.",
    {"clip_model": STR, "concept_id": I32, "concept": STR, "form": STR, "text": STR, "vector": VECTOR},
    partition_by=CLIP_CONCEPTS,
    grain=("concept_id", "form"),
)
table(
    "concept_scores",
    "Top-N concepts per neuron with their scores, for every method (clip_dissect: major only). Higher "
    "is better; the scale is each method's own, so compare scores within a method: ACS, the mean cosine "
    "to the prompt minus that to the bare template (www, www_gradcam: small, either sign) and its t-vMF "
    "form (www_tvmf, www_gradcam_tvmf); mean cosine, -1 to 1 (cosine, template_only, no_template); "
    "minus the mean L1 or L2 distance of unit vectors, always negative (l1, l2); soft-WPMI, either sign "
    "(clip_dissect). `www methods` lists them.",
    {"layer": STR, "neuron": I32, "method": STR, "kind": STR, "rank": I32, "concept": STR, "score": F32},
    partition_by=MODEL_CONCEPTS,
    grain=("layer", "neuron", "method", "kind", "rank"),
)
table(
    "neuron_concepts",
    "The selected major and minor concepts per neuron and method (clip_dissect: major only), score "
    "on the method's scale as in concept_scores. Concept NULL (rank 0, score NULL): the method selected "
    "nothing, which only www, www_tvmf, www_gradcam and www_gradcam_tvmf do, when no concept scores "
    "above 0 (none beats the bare template); the other methods always keep their best concept, "
    "whatever its sign (every l1 and l2 score is below 0; clip_dissect's can be). tie_size and tied: "
    "the concepts whose score is within the tie tolerance of the neuron's best (1 and the best alone: "
    "no tie).",
    {"layer": STR, "neuron": I32, "method": STR, "kind": STR, "rank": I32, "concept": STR, "score": F32,
     "tie_size": I32, "tied": STR_LIST},
    partition_by=MODEL_CONCEPTS,
    grain=("layer", "neuron", "method", "kind", "rank"),
)
table(
    "neuron_galleries",
    "Pictures of chosen neurons with their top images, crops and concepts (PNG paths).",
    {"layer": STR, "method": STR, "neurons": I32_LIST, "path": STR},
    partition_by=MODEL_CONCEPTS,
    grain=("layer", "method"),
)

# --- where and why --------------------------------------------------------------------------
table(
    "class_shapley",
    "Mean Taylor contribution a * df_c/da of each penultimate neuron to each class over its samples; "
    "sign: signed or absolute (the sample track follows it).",
    {"class_id": I32, "class_name": STR, "neuron": I32, "value": F32, "n_samples": I32, "sign": STR},
    partition_by=MODEL,
    grain=("class_id", "neuron"),
)
table(
    "sample_explanations",
    "Per test image: prediction, the class's and the sample's top neurons with their concepts, and "
    "the cosine similarity of the class heatmap and the sample heatmap.",
    {
        "image_id": STR, "label": I32, "pred": I32, "msp": F32, "correct": BOOL,
        "class_top": I32_LIST, "class_top_concepts": STR_LIST,
        "sample_top": I32_LIST, "sample_top_concepts": STR_LIST,
        "heatmap_similarity": F32, "figure": STR,
    },
    partition_by=MODEL,
    grain=("image_id",),
)
table(
    "misprediction_detection",
    "AUROC of detecting mispredictions on the test split, per confidence score (heatmap similarity, "
    "max softmax probability, Jaccard of the class and sample tracks' top-k neurons), with a 95 % "
    "stratified bootstrap interval and the score's mean on correct and on mispredicted images.",
    {"score": STR, "auroc": F64, "ci_low": F64, "ci_high": F64, "mean_correct": F64, "mean_mispredicted": F64,
     "n": I32, "n_mispredicted": I32},
    partition_by=MODEL,
    grain=("score",),
)
table(
    "localization_eval",
    "Where, against the world's boxes: per test image, the share of the class track's, the sample track's "
    "and a plain Grad-CAM heatmap's positive mass inside the object box and a pointing-game hit; per top "
    "neuron whose major concept is a part drawn in the image (map part_neuron), the same against that "
    "part's boxes plus the share of its concept region inside them; box_share is the chance level.",
    {"image_id": STR, "correct": BOOL, "map": STR, "neuron": I32, "concept": STR, "mass_in_box": F64,
     "pointing_hit": F64, "region_in_box": F64, "box_share": F64},
    partition_by=MODEL,
    grain=("image_id", "map", "neuron"),
)
table(
    "rejection_curves",
    "Share of mispredictions caught vs share of test images rejected (lowest confidence first).",
    {"score": STR, "share_rejected": F64, "mispredictions_caught": F64, "accuracy_of_kept": F64},
    partition_by=MODEL,
    grain=("score", "share_rejected"),
)

# --- evaluation -----------------------------------------------------------------------------
table(
    "concept_eval",
    "Per neuron and method: ground truth, selected concepts, CLIP cos, text cos, F1 and hit; the "
    "tie-aware hit (a truth word anywhere in the tied top set) and the tied set's size; for hidden "
    "neurons the truth's AUROC, its precision among the neuron's top-40 images and whether the "
    "neuron passes the truth floor (judged; the summary uses judged neurons only).",
    {
        "layer": STR, "method": STR, "neuron": I32, "truth": STR_LIST, "predicted": STR_LIST,
        "clip_cos": F64, "text_cos": F64, "f1": F64, "hit": F64, "hit_tie_aware": F64, "tied_top": F64,
        "tie_size": I32, "truth_auroc": F64, "truth_precision": F64, "judged": BOOL,
    },
    partition_by=MODEL_CONCEPTS,
    grain=("layer", "method", "neuron"),
)
table(
    "evaluation_summary",
    "Mean +- standard error per model x concept set x layer x method x metric over the judged "
    "neurons (n of n_candidates), with paired t-test p-values against clip_dissect and against www.",
    {
        "model": STR, "concept_set": STR, "layer": STR, "method": STR, "metric": STR,
        "mean": F64, "stderr": F64, "n": I32, "n_candidates": I32,
        "p_value_vs_clip_dissect": F64, "p_value_vs_www": F64,
    },
    grain=("model", "concept_set", "layer", "method", "metric"),
)
table(
    "ablation_curves",
    "Evaluation metrics as a function of k (examples per neuron) and alpha (concept sensitivity).",
    {
        "layer": STR, "method": STR, "parameter": STR,
        "value": F64, "metric": STR, "mean": F64, "stderr": F64, "n": I32,
    },
    partition_by=MODEL_CONCEPTS,
    grain=("layer", "method", "parameter", "value", "metric"),
)

# --- HINT: hierarchical concepts --------------------------------------------------------------
table(
    "concept_hierarchy",
    "The concept tree over the model's classes: the classes and every ancestor covering at least two "
    "of them (the world's own hierarchy, or WordNet hypernyms of the class folders' wnids).",
    {"concept": STR, "name": STR, "parent": STR, "depth": I32, "classes": I32_LIST, "class_names": STR_LIST,
     "n_classes": I32, "is_class": BOOL},
    partition_by=MODEL,
    grain=("concept",),
)
table(
    "responsible_regions",
    "Per training image and concept on its path: the normalised gradient saliency of each position of the "
    "hidden layer (row-major h x w) and how many positions are responsible (above the threshold).",
    {"layer": STR, "image_id": STR, "label": I32, "concept": STR, "depth": I32, "grid_h": I32, "grid_w": I32,
     "saliency": F32_LIST, "threshold": F64, "n_responsible": I32},
    partition_by=MODEL,
    grain=("layer", "image_id", "concept"),
)
table(
    "concept_classifiers",
    "Linear classifier per concept node on the hidden layer's position vectors (modified Huber SGD): "
    "weights over all neurons, intercept, positions used, training and held-out accuracy.",
    {"layer": STR, "concept": STR, "depth": I32, "weights": F32_LIST, "intercept": F64, "n_positive": I32,
     "n_negative": I32, "train_accuracy": F64, "heldout_accuracy": F64},
    partition_by=MODEL,
    grain=("layer", "concept"),
)
table(
    "neuron_concept_shapley",
    "Shapley value of every neuron for every concept classifier (sampled coalitions over the concept's and "
    "the background's positions), with the neuron's rank for the concept and the concept's depth.",
    {"layer": STR, "concept": STR, "depth": I32, "neuron": I32, "value": F64, "rank": I32,
     "n_positions": I32, "n_samples": I32},
    partition_by=MODEL,
    grain=("layer", "concept", "neuron"),
)
table(
    "concept_localization",
    "Weakly supervised localisation per concept: accuracy (IoU >= 0.5) and mean IoU of the concept "
    "classifier's box using the top share of neurons by Shapley value (method hint), and of the Grad-CAM box "
    "(method cam), on the same test images.",
    {"layer": STR, "concept": STR, "depth": I32, "method": STR, "neuron_share": F64, "n_neurons": I32,
     "n_images": I32, "accuracy": F64, "mean_iou": F64, "train_accuracy": F64, "heldout_accuracy": F64},
    partition_by=MODEL,
    grain=("layer", "concept", "method", "neuron_share"),
)
table(
    "hint_agreement",
    "Per concept node: the share of its top neurons by Shapley value whose WWW concept names the concept or "
    "something under it (source www), or whose strongest class by class Shapley lies under it (source "
    "class_shapley), and the same share over all neurons (chance).",
    {"layer": STR, "concept": STR, "depth": I32, "source": STR, "top_k": I32, "n_neurons": I32,
     "share": F64, "chance": F64, "agreeing": I32_LIST},
    partition_by=MODEL,
    grain=("layer", "concept", "source"),
)

# --- class concepts and class contrasting ---------------------------------------------------
table(
    "class_concepts",
    "Per class: the NMF concepts of the attribution-scaled layer positions of the images the model "
    "predicts as the class, with each concept's share of the reconstruction and its words (CLIP + WWW).",
    {
        "layer": STR, "attribution": STR, "class_id": I32, "class_name": STR, "concept": I32,
        "basis": VECTOR, "share": F64, "n_images": I32, "n_positions": I32, "words": STR_LIST,
    },
    partition_by=MODEL,
    grain=("class_id", "concept"),
)
table(
    "class_contrasts",
    "Per class pair A over B: the linear classifier between their strongly attributed positions "
    "(accuracy, bias) and the NMF concepts of A's positions scaled by max(w.x + b, 0), with words.",
    {
        "layer": STR, "class_id": I32, "class_name": STR, "other_id": I32, "other_name": STR,
        "reason": STR, "classifier_accuracy": F64, "bias": F64, "n_positions_a": I32,
        "n_positions_b": I32, "concept": I32, "basis": VECTOR, "share": F64, "words": STR_LIST,
    },
    partition_by=MODEL,
    grain=("class_id", "other_id", "concept"),
)
table(
    "class_concept_crops",
    "The dataset crops closest (cosine) to each class or contrast concept, allowing or excluding "
    "crops the model predicts as the class; other_id = -1 for single-class concepts.",
    {
        "kind": STR, "class_id": I32, "other_id": I32, "concept": I32, "variant": STR, "rank": I32,
        "image_id": STR, "view": STR, **BOX, "similarity": F32, "image_pred": I32,
    },
    partition_by=MODEL,
    grain=("kind", "class_id", "other_id", "concept", "variant", "rank"),
)
table(
    "prediction_test",
    "The stitched image of each explanation's top crops (one per concept) through the model: the "
    "softmax of the explained class, the predicted class and whether it is the explained one.",
    {
        "kind": STR, "class_id": I32, "class_name": STR, "other_id": I32, "variant": STR,
        "n_concepts": I32, "softmax_target": F64, "softmax_other": F64, "predicted": I32,
        "predicted_name": STR, "passed": BOOL, "figure": STR,
    },
    partition_by=MODEL,
    grain=("kind", "class_id", "other_id", "variant"),
)
table(
    "shifting_test",
    "Mean softmax of class A on B's images when their layer activations move along the pair "
    "classifier's unit normal by each offset of the ladder (offset 0 = unchanged).",
    {
        "class_id": I32, "class_name": STR, "other_id": I32, "other_name": STR, "offset": F64,
        "mean_softmax_target": F64, "std_softmax_target": F64, "n_images": I32,
    },
    partition_by=MODEL,
    grain=("class_id", "other_id", "offset"),
)
table(
    "class_concept_comparison",
    "Prediction test of this method (NMF rerun per n) against a CRAFT-style baseline (10 NMF "
    "concepts of crop activations ranked by Sobol importance) for n = 1..10 concepts and two layers.",
    {
        "layer": STR, "method": STR, "n_concepts": I32, "variant": STR, "class_id": I32,
        "softmax_target": F64, "passed": BOOL,
    },
    partition_by=MODEL,
    grain=("layer", "method", "n_concepts", "variant", "class_id"),
)
table(
    "class_concept_truth",
    "Embedded world only: what the concepts' top crops show in the world's truth: the share of the "
    "class's parts they cover, the share of crops on the class's spurious background, and the "
    "share showing the part that tells a confusable pair apart.",
    {
        "kind": STR, "class_id": I32, "class_name": STR, "other_id": I32, "other_name": STR,
        "variant": STR, "n_crops": I32, "parts": STR_LIST, "parts_covered": STR_LIST,
        "part_coverage": F64, "background": STR, "background_share": F64,
        "distinguishing_parts": STR_LIST, "distinguishing_share": F64,
    },
    partition_by=MODEL,
    grain=("kind", "class_id", "other_id", "variant"),
)
