"""What each neuron means: Grad-CAM crops, crop-level examples, CLIP embeddings, concept scores
and the selected major and minor concepts of every method (METHODS.md sections 1-3)."""

import warnings

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import Progress, image_markdown, model_entry, preview, table_metadata
from www_assets.methods.concept_scoring import DEFAULT_KAPPA, MAJOR_ALPHA, MINOR_ALPHA, TIE_TOLERANCE
from www_assets.methods.examples import FULL_VIEW as FULL
from www_assets.methods.examples import GRADCAM_VIEW as GRADCAM
from www_assets.methods.examples import ExamplePool, crop_view, examples_frame
from www_assets.partitions import (
    clip_concepts,
    clip_probes,
    concept_set_key,
    model_concepts,
    models,
    shared_keys,
    sharing_model,
    view_geometry,
)
from www_resources.dagster_resources import TorchDevice, WarehouseResource


@dg.asset(
    partitions_def=models,
    ins={"probe_images": dg.AssetIn()},
    deps=["model_training"],
    code_version="3",
    kinds={"pytorch", "parquet"},
    group_name="what",
    pool="gpu",
)
def gradcam_crops(context: dg.AssetExecutionContext, device: TorchDevice, probe_images: pd.DataFrame) -> pd.DataFrame:
    """The Grad-CAM window of each probe image for its predicted class (seed 002, geometry in
    methods/gradcam.py): Grad-CAM at the registry's `gradcam_layer` (default `spatial_layer`) on the
    whole resized frame, ReLU, upsampled to the frame, and a window of the model's input size centred
    on the maximum and shifted inside the frame. Boxes are in frame pixels; a flat map (no positive
    evidence) has no peak (NULL) and the centred window. The share of flat maps is in the metadata."""
    import torch

    from www_assets.methods.gradcam import cam_peaks, gradcam, gradcam_boxes, gradcam_frame_side
    from www_resources.probes import open_probe_set
    from www_resources.target import TargetModel

    entry = model_entry(context)
    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    layer = model.module.get_submodule(entry.cam_layer)
    probe = open_probe_set(entry.probe_set)
    rows = probe_images[probe_images["readable"]].reset_index(drop=True)
    size = model.pre.size
    frame = gradcam_frame_side(size, model.pre.resize)
    out = []
    progress = Progress(context, "Grad-CAM")
    for start in range(0, len(rows), device.batch_size):
        part = rows.iloc[start:start + device.batch_size]
        # the whole frame (resize x resize square) shown at the model's input resolution
        images, ids, _ = probe.load(part, size, size)
        if not len(ids):
            continue
        with torch.enable_grad():
            cam, pred = gradcam(model.module, layer, model.to_input(images),
                                num_prefix_tokens=model.num_prefix_tokens, out_size=(frame, frame))
        boxes = gradcam_boxes(cam, size).cpu().numpy()
        peaks, flat = cam_peaks(cam)
        peaks, flat = peaks.cpu().numpy(), flat.cpu().numpy()
        out.append(pd.DataFrame({
            "image_id": ids, "pred": pred.cpu().numpy().astype(np.int32),
            "box_x0": boxes[:, 0], "box_y0": boxes[:, 1], "box_x1": boxes[:, 2], "box_y1": boxes[:, 3],
            "cam_peak_x": pd.array(np.where(flat, None, peaks[:, 0]), dtype="Int32"),
            "cam_peak_y": pd.array(np.where(flat, None, peaks[:, 1]), dtype="Int32"),
        }))
        progress(min(start + device.batch_size, len(rows)), len(rows))
    df = pd.concat(out, ignore_index=True)
    for c in ("box_x0", "box_y0", "box_x1", "box_y1"):
        df[c] = df[c].astype(np.int32)
    flat_share = float(df["cam_peak_x"].isna().mean())
    if flat_share > 0:
        context.log.warning(f"{flat_share:.1%} of the Grad-CAM maps at {entry.cam_layer} are flat (centred window)")
    context.add_output_metadata(table_metadata(
        df, layer=entry.cam_layer, frame_side_px=frame, window_side_px=size, flat_share=flat_share))
    return df


def gradcam_frame_pixels(probe, part: pd.DataFrame, pre) -> tuple:
    """The frames the Grad-CAM boxes refer to, as float (B, 3, F, F) in [0, 1], and their image ids.

    Both the target model (crop_examples) and CLIP (clip_image_embeddings) cut the Grad-CAM view
    out of these same pixels."""
    import torch

    from www_assets.methods.gradcam import gradcam_frame_side

    frame = gradcam_frame_side(pre.size, pre.resize)
    images, ids, _ = probe.load(part, frame, frame)
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0, ids


class CropExamplesConfig(dg.Config):
    k: int = 80  # stored examples per neuron (methods use the first 40; the k ablation goes to 80)
    grid: int = 3  # minor concepts: each image cut into grid x grid crops


@dg.asset(
    partitions_def=models,
    ins={"probe_images": dg.AssetIn(), "gradcam_crops": dg.AssetIn()},
    deps=["model_training"],
    code_version="2",
    kinds={"pytorch", "parquet"},
    group_name="what",
    pool="gpu",
)
def crop_examples(context: dg.AssetExecutionContext, config: CropExamplesConfig, device: TorchDevice,
                  probe_images: pd.DataFrame, gradcam_crops: pd.DataFrame) -> pd.DataFrame:
    """Top-k crops per neuron: grid crops (kind = crop, for minor concepts) and Grad-CAM crops
    (kind = gradcam_crop, the seed-002 variant), each crop resized to the model input and ranked
    by the neuron's pooled activation on it. Same columns as `neuron_examples`."""
    import torch

    from www_assets.methods.crops import crop_resize, grid_boxes
    from www_resources.probes import open_probe_set
    from www_resources.target import TargetModel

    entry = model_entry(context)
    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    probe = open_probe_set(entry.probe_set)
    rows = probe_images[probe_images["readable"]].reset_index(drop=True)
    size = model.pre.size
    grid = grid_boxes(size, size, config.grid)  # (g*g, 4)
    cam = gradcam_crops.set_index("image_id")
    layers = list(entry.layers)
    pools = {(layer, kind): ExamplePool(config.k) for layer in layers for kind in ("crop", "gradcam_crop")}
    views = {"crop": [], "gradcam_crop": []}
    seen = {"crop": 0, "gradcam_crop": 0}
    progress = Progress(context, "crop forward passes")
    step = max(1, device.batch_size // (config.grid ** 2))
    for start in range(0, len(rows), step):
        part = rows.iloc[start:start + step]
        images, ids, _ = probe.load(part, size, model.pre.resize)
        if not len(ids):
            continue
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        b, g2 = len(ids), len(grid)
        grid_batch = crop_resize(pixels.repeat_interleave(g2, 0), grid.repeat(b, 1), size)
        cam_boxes = torch.tensor(cam.loc[ids, ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy())
        frames, frame_ids = gradcam_frame_pixels(probe, part, model.pre)
        if list(frame_ids) != list(ids):
            raise RuntimeError(f"the Grad-CAM frames and the plain views of {len(ids)} images decoded differently")
        cam_batch = crop_resize(frames, cam_boxes, size)
        for kind, batch, boxes, names in (
            ("crop", grid_batch, grid.repeat(b, 1), [crop_view(i // config.grid, i % config.grid) for i in range(g2)] * b),
            ("gradcam_crop", cam_batch, cam_boxes, [GRADCAM] * b),
        ):
            image_ids = np.repeat(ids, g2) if kind == "crop" else np.asarray(ids)
            for _, _, outputs in model.run(batch, layers, len(batch)):
                for layer in layers:
                    pools[(layer, kind)].add(outputs[layer], seen[kind])
            boxes = boxes.numpy()
            views[kind].append(pd.DataFrame({
                "image_id": image_ids, "view": names, "box_x0": boxes[:, 0], "box_y0": boxes[:, 1],
                "box_x1": boxes[:, 2], "box_y1": boxes[:, 3],
            }))
            seen[kind] += len(batch)
        progress(min(start + step, len(rows)), len(rows))
    frames = []
    for (layer, kind), pool in pools.items():
        table = pd.concat(views[kind], ignore_index=True)
        frames.append(examples_frame(layer, kind, pool.values.numpy(), pool.views.numpy(), table))
    df = pd.concat(frames, ignore_index=True)
    for c in ("box_x0", "box_y0", "box_x1", "box_y1"):
        df[c] = df[c].astype(np.int32)
    context.add_output_metadata(table_metadata(df, k=config.k, grid=config.grid))
    return df


class ImageEmbeddingConfig(dg.Config):
    grid: int = 3  # grid crops per side; the same as crop_examples' grid


@dg.asset(
    partitions_def=clip_probes,
    deps=["world_clip", "world_scenes"],
    code_version="3",
    kinds={"pytorch", "parquet"},
    group_name="what",
    pool="gpu",
)
def clip_image_embeddings(context: dg.AssetExecutionContext, config: ImageEmbeddingConfig,
                          device: TorchDevice) -> pd.DataFrame:
    """CLIP image features (L2-normalised) of every probe image (view = full) and of every one of
    its grid crops (view = crop:r,c), for one CLIP and one probe view (probe set x the geometry
    the models frame it with): shared by every model with that CLIP and probe view, so a model
    zoo over one probe set pays for them once. Every grid crop is embedded, not only some neuron's
    example, since which crops are examples depends on the model. Images that do not decode are
    left out (as in `probe_images`)."""
    import torch

    from www_assets.methods.crops import crop_resize, grid_boxes
    from www_resources.clip import load_clip
    from www_resources.probes import open_probe_set
    from www_resources.registry import resolve_data_path
    from www_resources.target import preprocessing_for

    entry = sharing_model(context)
    clip = load_clip(entry.clip, base_dir=resolve_data_path("."), device=device.torch_device())
    pre = preprocessing_for(entry)
    probe = open_probe_set(entry.probe_set)
    rows = probe.manifest()
    grid = grid_boxes(pre.size, pre.size, config.grid)  # (g*g, 4), the boxes of crop_examples
    names = [crop_view(i // config.grid, i % config.grid) for i in range(len(grid))]
    out_ids, out_views, vectors = [], [], []
    progress = Progress(context, "CLIP image embeddings")
    step = max(1, device.batch_size // 4)
    for start in range(0, len(rows), step):
        part = rows.iloc[start:start + step]
        images, ids, _ = probe.load(part, pre.size, pre.resize)
        if not len(ids):
            continue
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        vectors.append(clip.encode_images(pixels, batch_size=device.batch_size).cpu())
        out_ids += list(ids)
        out_views += [FULL] * len(ids)
        b, g2 = len(ids), len(grid)
        crops = crop_resize(pixels.repeat_interleave(g2, 0), grid.repeat(b, 1), pre.size)
        vectors.append(clip.encode_images(crops, batch_size=device.batch_size).cpu())
        out_ids += [image_id for image_id in ids for _ in range(g2)]
        out_views += names * b
        progress(min(start + step, len(rows)), len(rows))
    matrix = torch.cat(vectors).numpy().astype(np.float32)
    df = pd.DataFrame({"clip_model": entry.clip, "probe_set": entry.probe_set, "image_id": out_ids,
                       "view": out_views, "vector": list(matrix)})
    context.add_output_metadata(table_metadata(
        df, dim=int(matrix.shape[1]), clip=entry.clip, probe_set=entry.probe_set, grid=config.grid,
        geometry=view_geometry(entry)))
    return df


@dg.asset(
    partitions_def=models,
    ins={"probe_images": dg.AssetIn(), "gradcam_crops": dg.AssetIn()},
    deps=["world_clip"],
    code_version="1",
    kinds={"pytorch", "parquet"},
    group_name="what",
    pool="gpu",
)
def clip_gradcam_embeddings(context: dg.AssetExecutionContext, device: TorchDevice, probe_images: pd.DataFrame,
                            gradcam_crops: pd.DataFrame) -> pd.DataFrame:
    """CLIP image features (L2-normalised) of the Grad-CAM window of every readable probe image
    (view = gradcam), cut from the same frame the target model saw and resized to its input: the
    one CLIP view that depends on the model (the window follows its Grad-CAM)."""
    import torch

    from www_assets.methods.crops import crop_resize
    from www_resources.clip import load_clip
    from www_resources.probes import open_probe_set
    from www_resources.registry import resolve_data_path
    from www_resources.target import preprocessing_for

    entry = model_entry(context)
    clip = load_clip(entry.clip, base_dir=resolve_data_path("."), device=device.torch_device())
    pre = preprocessing_for(entry)
    probe = open_probe_set(entry.probe_set)
    rows = probe_images[probe_images["readable"]].reset_index(drop=True)
    cam = gradcam_crops.set_index("image_id")
    out_ids, vectors = [], []
    progress = Progress(context, "CLIP Grad-CAM embeddings")
    step = max(1, device.batch_size // 4)
    for start in range(0, len(rows), step):
        part = rows.iloc[start:start + step]
        frames, ids = gradcam_frame_pixels(probe, part, pre)
        if not len(ids):
            continue
        boxes = torch.tensor(cam.loc[list(ids), ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy())
        vectors.append(clip.encode_images(crop_resize(frames, boxes, pre.size), batch_size=device.batch_size).cpu())
        out_ids += list(ids)
        progress(min(start + step, len(rows)), len(rows))
    matrix = torch.cat(vectors).numpy().astype(np.float32)
    df = pd.DataFrame({"clip_model": entry.clip, "probe_set": entry.probe_set, "image_id": out_ids,
                       "view": GRADCAM, "vector": list(matrix)})
    context.add_output_metadata(table_metadata(df, dim=int(matrix.shape[1]), clip=entry.clip))
    return df


def model_clip_views(warehouse: WarehouseResource, entry, gradcam: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every CLIP view of a model's probe images: the shared full-image and grid-crop rows of
    its CLIP x probe view, then its own Grad-CAM rows (when given).

    Raises:
        ValueError: when the shared partition has not been materialized.
    """
    clip, probe = shared_keys(entry)
    partition = {"clip": clip, "probe": probe}
    if not warehouse.warehouse.has_partition("clip_image_embeddings", partition):
        raise ValueError(f"clip_image_embeddings has no partition {partition} (the CLIP and probe view of "
                         f"{entry.name}); materialize it first")
    shared = warehouse.read("clip_image_embeddings", partition).drop(columns=["clip", "probe"])
    if gradcam is None:
        return shared
    return pd.concat([shared, gradcam[list(shared.columns)]], ignore_index=True)


def model_clip_texts(warehouse: WarehouseResource, entry, concept_set: str) -> pd.DataFrame:
    """The text embeddings of a concept set under the model's CLIP (the shared clip x concept-set
    partition), without the partition columns.

    Raises:
        ValueError: when that partition has not been materialized.
    """
    partition = {"clip": shared_keys(entry)[0], "concept_set": concept_set}
    if not warehouse.warehouse.has_partition("clip_text_embeddings", partition):
        raise ValueError(f"clip_text_embeddings has no partition {partition} (the CLIP of {entry.name}); "
                         "materialize it first")
    return warehouse.read("clip_text_embeddings", partition).drop(columns=["clip", "concept_set"])


# the shared CLIP tables, as deps of a model x concept-set asset: the concept set maps one to one,
# every CLIP / probe view maps to every model (the policy narrows it to the model's own partition:
# www_assets/orchestration.py, SharedInputsUpdated). The configuration sources come with them:
# these assets read the registry file (which partitions are the model's) and the concept set, and
# with them an edit requests them in the same tick as their model's runs, as it did when the text
# embeddings were the model's own
with warnings.catch_warnings():
    # MultiPartitionMapping is beta; dagster is pinned in pyproject.toml
    warnings.simplefilter("ignore", dg.BetaWarning)
    TEXTS_BY_CONCEPT_SET = dg.MultiPartitionMapping(
        {"concept_set": dg.DimensionPartitionMapping("concept_set", dg.IdentityPartitionMapping())}
    )
SHARED_CLIP_DEPS = [
    dg.AssetDep("clip_image_embeddings", partition_mapping=dg.AllPartitionMapping()),
    dg.AssetDep("clip_text_embeddings", partition_mapping=TEXTS_BY_CONCEPT_SET),
    dg.AssetDep("registry_file"),
    dg.AssetDep("concept_set_spec"),
]


class TextConfig(dg.Config):
    template: str = "a photo of a {}"  # WWW's prompt; the bare template is the text before "{}"


def load_concepts(name: str) -> list[str]:
    from www_resources.concept_sets import load_concept_set
    from www_resources.registry import load_concept_sets, resolve_data_path

    specs = load_concept_sets()
    if name not in specs:
        raise ValueError(f"concept set {name!r} is not defined in concept_sets.yaml ({sorted(specs)})")
    world = None
    if specs[name].startswith("world:"):
        from www_assets.world import WorldSettings, world_config

        world = world_config(WorldSettings())  # the same world the world assets generate
    return load_concept_set(specs[name], base_dir=resolve_data_path("."), world_config=world)


@dg.asset(
    partitions_def=clip_concepts,
    deps=["world_clip", "world_scenes"],
    code_version="4",  # 4: the world's distractors come from the shipped list on every machine
    kinds={"pytorch", "parquet"},
    group_name="what",
    pool="gpu",
)
def clip_text_embeddings(context: dg.AssetExecutionContext, config: TextConfig, device: TorchDevice) -> pd.DataFrame:
    """CLIP text features of each concept as the templated prompt (form = prompt) and as the raw
    word (form = raw), and of the bare template (form = template, concept_id and concept NULL), for
    one CLIP and one concept set: shared by every model with that CLIP and concept set."""
    from www_resources.clip import load_clip
    from www_resources.registry import resolve_data_path

    entry = sharing_model(context)
    concepts = load_concepts(concept_set_key(context))
    clip = load_clip(entry.clip, base_dir=resolve_data_path("."), device=device.torch_device())
    bare = config.template.split("{}")[0].strip()
    prompts = [config.template.format(c) for c in concepts]
    texts = [bare] + prompts + list(concepts)
    matrix = clip.encode_texts(texts, batch_size=max(device.batch_size, 256)).cpu().numpy().astype(np.float32)
    m = len(concepts)
    df = pd.DataFrame({
        "clip_model": entry.clip,
        "concept_id": [None] + [*range(m)] * 2,  # the bare template is no concept
        "concept": [None] + list(concepts) + list(concepts),
        "form": ["template"] + ["prompt"] * m + ["raw"] * m,
        "text": texts,
        "vector": list(matrix),
    })
    context.add_output_metadata(table_metadata(df, concepts=m, template=config.template))
    return df


class ScoringConfig(dg.Config):
    k: int = 40  # examples per neuron (WWW: 40 images and 40 crops)
    top_n: int = 10  # concept_scores keeps the best top_n per neuron
    alpha_major: float = MAJOR_ALPHA
    alpha_minor: float = MINOR_ALPHA
    kappa: float = DEFAULT_KAPPA  # t-vMF concentration (seed 002 method; kappa = 0 is the cosine)
    tie_tolerance: float = TIE_TOLERANCE  # scores this close to a neuron's best are tied with it
    baseline_text: str = "raw"  # cosine / L1 / L2 baselines: "raw" word (the paper) or "templated" prompt
    methods: list[str] = []  # empty: every method


@dg.multi_asset(
    partitions_def=model_concepts,
    outs={
        "concept_scores": dg.AssetOut(code_version="2", kinds={"pytorch", "parquet"}, group_name="what"),
        "neuron_concepts": dg.AssetOut(code_version="2", kinds={"pytorch", "parquet"}, group_name="what"),
    },
    ins={
        "neuron_examples": dg.AssetIn(), "crop_examples": dg.AssetIn(), "activations": dg.AssetIn(),
        "clip_gradcam_embeddings": dg.AssetIn(),
    },
    deps=SHARED_CLIP_DEPS,
)
def concept_discovery(context: dg.AssetExecutionContext, config: ScoringConfig, warehouse: WarehouseResource,
                      neuron_examples: pd.DataFrame, crop_examples: pd.DataFrame, activations: pd.DataFrame,
                      clip_gradcam_embeddings: pd.DataFrame):
    """Score every concept for every neuron of every configured layer with every method, and select
    major concepts (top images, alpha_major) and minor concepts (top grid crops, alpha_minor).

    The CLIP views are the model's CLIP x probe-view partition of `clip_image_embeddings` (read
    from the warehouse, restricted to the full images and the crops that are some neuron's
    example, the views these methods score) and its own `clip_gradcam_embeddings`; the texts are
    its CLIP x concept-set partition of `clip_text_embeddings`.

    Methods and the views they use are the table `METHODS` of methods/concept_scoring.py: www,
    www_tvmf, template_only, no_template, cosine, l1, l2 and clip_dissect on whole images;
    www_gradcam and www_gradcam_tvmf on Grad-CAM crops. Minor concepts always come from the grid
    crops. Each selection row carries the size and members of the neuron's tied top set.
    """
    from www_assets.methods.concept_scoring import METHODS, ConceptInputs, score_concepts
    from www_assets.methods.scoring_inputs import (
        example_index,
        example_views,
        full_view_activations,
        score_frame,
        scoring_inputs,
        selection_frame,
    )
    from www_assets.probe import activation_matrix

    entry = model_entry(context)
    examples = pd.concat([neuron_examples, crop_examples], ignore_index=True)
    views = example_views(model_clip_views(warehouse, entry, clip_gradcam_embeddings), examples)
    shared = scoring_inputs(views, model_clip_texts(warehouse, entry, concept_set_key(context)))
    methods = list(config.methods) or list(METHODS)
    if unknown := sorted(set(methods) - set(METHODS)):
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    concepts = shared.concepts
    score_rows, concept_rows = [], []
    layers = sorted(examples["layer"].unique())
    for layer in layers:
        view_acts = full_view_activations(*activation_matrix(activations, layer), shared.index)
        for method in methods:
            spec = METHODS[method]
            for kind, ex_kind, alpha in (
                ("major", "image" if spec.views == "image" else "gradcam_crop", config.alpha_major),
                ("minor", "crop", config.alpha_minor),
            ):
                inputs = ConceptInputs(
                    view_features=shared.view_features,
                    examples=example_index(examples, layer, ex_kind, config.k, shared.index),
                    concept_features=shared.concept_features,
                    template_feature=shared.template_feature,
                    raw_concept_features=shared.raw_concept_features,
                    view_activations=view_acts if kind == "major" and ex_kind == "image" else None,
                )
                if spec.score == "soft_wpmi" and inputs.view_activations is None:
                    continue  # CLIP-Dissect ranks whole images only
                result = score_concepts(method, inputs, top_n=config.top_n, alpha=alpha, kappa=config.kappa,
                                        text=config.baseline_text if spec.text_choice else None,
                                        tie_tolerance=config.tie_tolerance)
                score_rows.append(score_frame(layer, method, kind, result, concepts))
                concept_rows.append(selection_frame(layer, method, kind, result, concepts))
            context.log.info(f"{layer}: {method} scored ({len(concepts)} concepts)")
    scores = pd.concat(score_rows, ignore_index=True)
    selected = pd.concat(concept_rows, ignore_index=True)
    empty = int(selected["concept"].isna().sum())
    firsts = selected[(selected["kind"] == "major") & (selected["rank"] <= 1)]
    ties = firsts.groupby(["layer", "method"])["tie_size"].apply(lambda s: f"{int((s > 1).sum())}/{len(s)}")
    yield dg.Output(scores, "concept_scores", metadata={**per_method_metadata(scores), "methods": ", ".join(methods)})
    yield dg.Output(selected, "neuron_concepts", metadata={
        **per_method_metadata(selected), "neurons_with_nothing_selected": empty,
        "neurons_with_a_tied_top": dg.MetadataValue.md(ties.rename("tied / neurons").reset_index().to_markdown(index=False)),
        "tie_tolerance": config.tie_tolerance, "baseline_text": config.baseline_text})


def per_method_metadata(df: pd.DataFrame, method: str = "www") -> dict:
    """Metadata of a table with a row set per method: `rows` counts every method's rows (as
    `dagster/row_count` does), `rows per method` splits them, and the preview says which
    method's rows it shows."""
    counts = df.groupby(["method", "kind"]).size().unstack(fill_value=0) if len(df) else pd.DataFrame()
    shown = df[df["method"] == method] if (df["method"] == method).any() else df
    label = f"preview (method {method}, first 10 rows)" if shown is not df else "preview (first 10 rows)"
    return {"rows": len(df), "rows per method": dg.MetadataValue.md(counts.reset_index().to_markdown(index=False)),
            label: preview(shown)}


class GalleryConfig(dg.Config):
    neurons: list[int] = [0, 1, 2, 3, 4, 5]  # which neurons of each layer to draw
    method: str = "www"
    images_per_neuron: int = 5


@dg.asset(
    partitions_def=model_concepts,
    ins={"neuron_concepts": dg.AssetIn(), "neuron_examples": dg.AssetIn(), "crop_examples": dg.AssetIn(),
         "probe_images": dg.AssetIn()},
    code_version="1",
    kinds={"matplotlib", "parquet"},
    group_name="what",
)
def neuron_galleries(context: dg.AssetExecutionContext, config: GalleryConfig, warehouse: WarehouseResource,
                     neuron_concepts: pd.DataFrame, neuron_examples: pd.DataFrame, crop_examples: pd.DataFrame,
                     probe_images: pd.DataFrame) -> pd.DataFrame:
    """One picture per layer: for the chosen neurons, their top images and top crops with the
    major and minor concepts the method selected. Shown in the UI as asset metadata."""
    import torch

    from www_assets.figures.neurons import neuron_gallery
    from www_assets.methods.crops import crop_resize
    from www_resources.probes import open_probe_set
    from www_resources.target import preprocessing_for

    entry = model_entry(context)
    pre = preprocessing_for(entry)
    probe = open_probe_set(entry.probe_set)
    manifest = probe_images.set_index("image_id")
    folder = warehouse.artifacts / "galleries" / entry.name / concept_set_key(context)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = neuron_concepts[neuron_concepts["method"] == config.method]
    rows, shown = [], {}
    for layer in entry.layers:
        panels = []
        for neuron in config.neurons:
            def chosen_examples(examples, kind):
                ex = examples[(examples["layer"] == layer) & (examples["neuron"] == neuron) & (examples["kind"] == kind)]
                return ex.sort_values("rank").head(config.images_per_neuron)

            def pictures(examples, kind):
                ex = chosen_examples(examples, kind)
                if ex.empty:
                    return []
                images, _, _ = probe.load(manifest.loc[ex["image_id"]].reset_index(), pre.size, pre.resize)
                if kind == "image":
                    return list(images)
                pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
                boxes = torch.tensor(ex[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy())
                crops = crop_resize(pixels, boxes, pre.size).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
                return list(crops)

            sel = chosen[(chosen["layer"] == layer) & (chosen["neuron"] == neuron)]
            if sel.empty:
                continue
            pick = lambda kind: [(c, float(s)) for c, s in sel[sel["kind"] == kind].sort_values("rank")[["concept", "score"]].itertuples(index=False) if c is not None]
            panels.append({
                "title": f"{entry.name} {layer} neuron {neuron}",
                "images": pictures(neuron_examples, "image"),
                "crops": pictures(crop_examples, "crop"),
                "activations": chosen_examples(neuron_examples, "image")["activation"].tolist(),
                "crop_activations": chosen_examples(crop_examples, "crop")["activation"].tolist(),
                "major": pick("major"),
                "minor": pick("minor"),
            })
        if not panels:
            continue
        path = neuron_gallery(panels, folder / f"{layer}-{config.method}.png",
                              title=f"{entry.name} {layer}: top images and crops, concepts by {config.method} "
                                    f"(concept set {concept_set_key(context)}; a = activation)")
        rows.append((layer, config.method, [int(n) for n in config.neurons], str(path)))
        shown[layer] = path
    df = pd.DataFrame(rows, columns=["layer", "method", "neurons", "path"])
    meta = {"rows": len(df)}
    for layer, path in shown.items():
        meta[f"gallery {layer}"] = dg.MetadataValue.md(image_markdown(path, f"{layer} neurons"))
    context.add_output_metadata(meta)
    return df

