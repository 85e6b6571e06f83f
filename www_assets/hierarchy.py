"""Hierarchical concepts (HINT, METHODS.md section 7): the concept tree over a model's classes,
responsible regions, concept classifiers, neuron Shapley values per concept, weakly supervised
localisation with the neuron ladder and a Grad-CAM baseline, and the agreement of the top
neurons with the WWW concepts and the class Shapley rows. The algorithms live in
www_assets/methods/hint.py; these assets load, call and write."""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import Progress, image_markdown, model_entry, table_metadata
from www_assets.partitions import models
from www_resources.dagster_resources import TorchDevice, WarehouseResource

LADDER = (0.1, 0.2, 0.4, 0.8)


@dg.asset(partitions_def=models, deps=["world_classes"], code_version="1", kinds={"pandas", "parquet"},
          group_name="hierarchy")
def concept_hierarchy(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """The concept tree over the model's classes: the classes (leaves) and every ancestor covering
    at least two of them. World models: the world's `thing -> artifact | organism -> superclass ->
    class`; image-folder probe sets: the WordNet hypernym path of each class folder's wnid (needs
    nltk's `wordnet` corpus: `python -m www_resources.wordnet_setup`)."""
    from www_assets.methods.hint import hierarchy_from_paths
    from www_resources.probes import open_probe_set

    entry = model_entry(context)
    probe = open_probe_set(entry.probe_set)
    if entry.is_world_model:
        from www_resources.storage import default_warehouse

        classes = default_warehouse().read("world_classes").sort_values("class_id")
        frame = hierarchy_from_paths([list(p) for p in classes["path"]], list(classes["name"]))
    elif probe.kind == "imagefolder" and _folders_are_wnids(probe):
        frame = wordnet_hierarchy(entry.name, probe)
    else:
        # no known tree over these classes (not a world, class folders not named by WordNet id): one
        # root over the classes, so the class level of HINT still runs and the user is told why
        names = probe.class_names()
        frame = hierarchy_from_paths([[FLAT_ROOT, f"class:{n}"] for n in names], names)
        context.log.warning(f"concept_hierarchy: probe set {entry.probe_set!r} has no known hierarchy (a world probe "
                            "set, or an image folder whose class folders are WordNet ids like n01440764, has one): "
                            f"using a flat tree, '{FLAT_ROOT}' over the {len(names)} classes")
    context.add_output_metadata(table_metadata(frame, levels=int(frame["depth"].max()) + 1,
                                               internal_nodes=int((~frame["is_class"]).sum())))
    return frame


FLAT_ROOT = "object"  # the root of the flat tree of a probe set with no known hierarchy


def _folders_are_wnids(probe) -> bool:
    from www_assets.methods.hint import is_wnid

    folders = [p.name for p in probe.location.iterdir() if p.is_dir()]
    return bool(folders) and all(is_wnid(f) for f in folders)


def wordnet_hierarchy(model_name: str, probe) -> pd.DataFrame:
    """The WordNet tree over an image folder's classes (folders named by wnid), or an error that
    names the missing corpus and the command that installs it."""
    from www_assets.methods.hint import hierarchy_from_paths, wordnet_class_paths
    from www_resources.concept_sets import WordNetUnavailableError, wordnet_reader

    try:
        wordnet = wordnet_reader()
    except WordNetUnavailableError as err:
        raise WordNetUnavailableError(f"concept_hierarchy for {model_name} needs nltk's 'wordnet' corpus "
                                      f"(WordNet 3.0) for the hypernym paths of its classes. {err}") from None
    wnids = sorted(p.name for p in probe.location.iterdir() if p.is_dir())
    paths, names = wordnet_class_paths(wnids, wordnet)
    return hierarchy_from_paths(paths, probe.class_names(), names=names)


# --------------------------------------------------------------------------------------------
# shared loading


def _hint_model(context, entry, device: TorchDevice, layer: str):
    """The loaded target model, the HINT layer's name and module (`layer` as chosen before)."""
    from www_resources.target import TargetModel

    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    modules = dict(model.module.named_modules())
    if layer not in modules:
        raise KeyError(f"HINT layer {layer!r} is not a module of {entry.name} (config `layer`)")
    return model, layer, modules[layer]


def _sample(manifest: pd.DataFrame, per_class: int, seed: int, classes: set[int]) -> pd.DataFrame:
    manifest = manifest[manifest["label"].isin(classes)]
    picked = [rows.sample(n=min(per_class, len(rows)), random_state=seed) for _, rows in manifest.groupby("label")]
    return pd.concat(picked).sort_values("image_id").reset_index(drop=True)


def _position_features(model, layer_name: str, probe, rows: pd.DataFrame, batch_size: int):
    """(N, P, D) position vectors of the layer for the given manifest rows, and the grid (h, w)."""

    from www_assets.methods.hint import position_grid

    images, ids, _ = probe.load(rows, model.pre.size, model.pre.resize)
    out = []
    for _, _, outputs in model.run(images, [layer_name], batch_size, pooled=False):
        grid = position_grid(outputs[layer_name], model.num_prefix_tokens)
        out.append(grid.flatten(2).transpose(1, 2).numpy())
        h, w = grid.shape[2:]
    return np.concatenate(out), (h, w), images, ids


def _regions_by_concept(regions: pd.DataFrame) -> dict[str, tuple[list[str], np.ndarray]]:
    """concept -> (image ids, responsible masks (n, P))."""
    result = {}
    for concept, rows in regions.groupby("concept"):
        masks = np.stack([np.asarray(s) > t for s, t in zip(rows["saliency"], rows["threshold"])])
        result[concept] = (list(rows["image_id"]), masks)
    return result


def _training_sets(hierarchy: pd.DataFrame, regions: pd.DataFrame, features: np.ndarray, ids: list[str]):
    """concept -> (X, y, own image rows, own masks) as the methods module builds them."""
    from www_assets.methods.hint import classifier_samples, siblings

    index = {image_id: i for i, image_id in enumerate(ids)}
    by_concept = _regions_by_concept(regions)
    sets = {}
    for concept in hierarchy["concept"]:
        if concept not in by_concept:
            continue
        own_ids, own_masks = by_concept[concept]
        sib_feats, sib_masks = [], []
        for sibling in siblings(hierarchy, concept):
            if sibling in by_concept:
                s_ids, s_masks = by_concept[sibling]
                sib_feats.append(features[[index[i] for i in s_ids]])
                sib_masks.append(s_masks)
        own = features[[index[i] for i in own_ids]]
        sib_f = np.concatenate(sib_feats) if sib_feats else own[:0]
        sib_m = np.concatenate(sib_masks) if sib_masks else own_masks[:0]
        X, y = classifier_samples(own, own_masks, sib_f, sib_m)
        sets[concept] = (X, y, own, own_masks)
    return sets


# --------------------------------------------------------------------------------------------
# responsible regions


class RegionsConfig(dg.Config):
    layer: str = ""  # empty: the registry's spatial_layer (for class-token ViTs the input of the last block)
    images_per_class: int = 40  # training images per class, from the probe set
    threshold: float = 0.5  # normalised saliency above which a position is responsible
    percentile: float = 99.0  # the saliency normaliser (reference code: the 99th percentile)
    target: str = "class"  # class: the true class's logit (reference code); concept: log-sum-exp over the concept's classes
    guided: bool = True  # guided backpropagation through the ReLUs after the layer (reference code)
    seed: int = 0


@dg.asset(partitions_def=models, ins={"concept_hierarchy": dg.AssetIn()}, deps=["model_training", "world_scenes"],
          code_version="1", kinds={"pytorch", "parquet"}, group_name="hierarchy", pool="gpu")
def responsible_regions(context: dg.AssetExecutionContext, config: RegionsConfig, device: TorchDevice,
                        concept_hierarchy: pd.DataFrame) -> pd.DataFrame:
    """For a sample of probe images per class and each concept on the image's path: the gradient
    saliency of each position of the hidden layer (guided backpropagation, per-position L2 norm,
    normalised per image by its 99th percentile) and the responsible positions (above 0.5).
    With target=class one backward pass serves every concept on the path."""
    import torch

    from www_assets.methods.hint import (
        choose_hint_layer,
        concept_objective,
        hint_layer_candidates,
        layer_gradients,
        position_saliency,
    )
    from www_resources.probes import open_probe_set

    if config.target not in ("class", "concept"):
        raise ValueError(f"responsible_regions: target must be 'class' or 'concept', got {config.target!r}")
    entry = model_entry(context)
    model, _, _ = _hint_model(context, entry, device, entry.spatial_layer)
    probe = open_probe_set(entry.probe_set)
    hierarchy = concept_hierarchy.sort_values("depth")
    class_paths: dict[int, list[tuple[str, int]]] = {}
    for concept, depth, classes in zip(hierarchy["concept"], hierarchy["depth"], hierarchy["classes"]):
        for c in classes:
            class_paths.setdefault(int(c), []).append((concept, int(depth)))
    rows_in = _sample(probe.manifest(), config.images_per_class, config.seed, set(class_paths))
    images, ids, _ = probe.load(rows_in, model.pre.size, model.pre.resize)
    labels = rows_in.set_index("image_id").loc[ids, "label"].to_numpy()
    n_levels = int(hierarchy["depth"].max()) + 1
    if config.layer:
        layer_name = config.layer
    else:  # the spatial layer unless its gradient is the same at every position (global pooling right after)
        candidates = hint_layer_candidates(model.module, entry.spatial_layer, entry.layers)
        first = torch.as_tensor(labels[:device.batch_size], device=model.device)
        layer_name = choose_hint_layer(model.module, candidates, model.to_input(images[:device.batch_size]),
                                       lambda logits: logits.gather(1, first[:, None]).sum()[None],
                                       num_prefix_tokens=model.num_prefix_tokens, guided=config.guided)
        if layer_name != entry.spatial_layer:
            context.log.info(f"HINT layer {layer_name}: the gradient at {entry.spatial_layer} is the same at every "
                             "position (or zero), so its saliency cannot pick regions")
    layer = dict(model.module.named_modules()).get(layer_name)
    if layer is None:
        raise KeyError(f"HINT layer {layer_name!r} is not a module of {entry.name} (config `layer`)")
    concept_classes = {c: [int(k) for k in cl] for c, cl in zip(hierarchy["concept"], hierarchy["classes"])}
    n_classes = None
    rows, progress = [], Progress(context, "responsible regions")
    for start in range(0, len(ids), device.batch_size):
        x = model.to_input(images[start:start + device.batch_size])
        y = torch.as_tensor(labels[start:start + device.batch_size], device=x.device)
        paths = [class_paths[int(c)] for c in y.tolist()]
        if n_classes is None:
            with torch.no_grad():
                n_classes = int(model.module(x[:1]).shape[1])
        if config.target == "class":
            objective, n_obj = (lambda logits: logits.gather(1, y[:, None]).sum()[None]), 1
        else:
            level_classes = [[next((concept_classes[c] for c, d in path if d == level), None) for path in paths]
                             for level in range(n_levels)]
            objective, n_obj = concept_objective(level_classes, n_classes), n_levels
        _, grads = layer_gradients(model.module, layer, x, objective, num_prefix_tokens=model.num_prefix_tokens,
                                   guided=config.guided, n_objectives=n_obj)
        saliency = [position_saliency(g, config.percentile).cpu().numpy() for g in grads]
        h, w = saliency[0].shape[1:]
        for b, path in enumerate(paths):
            for concept, depth in path:
                s = saliency[0 if config.target == "class" else depth][b].reshape(-1)
                rows.append({"layer": layer_name, "image_id": ids[start + b], "label": int(labels[start + b]),
                             "concept": concept, "depth": depth, "grid_h": int(h), "grid_w": int(w),
                             "saliency": s.astype(np.float32), "threshold": float(config.threshold),
                             "n_responsible": int((s > config.threshold).sum())})
        progress(min(start + device.batch_size, len(ids)), len(ids))
    df = pd.DataFrame(rows)
    context.add_output_metadata(table_metadata(
        df, layer=layer_name, images=len(ids), grid=f"{h} x {w}",
        mean_responsible_share=float(df["n_responsible"].mean() / (h * w))))
    return df


# --------------------------------------------------------------------------------------------
# concept classifiers and neuron Shapley values


class ClassifierConfig(dg.Config):
    alpha: float = 0.01  # SGDClassifier(loss="modified_huber", alpha=0.01) as the reference code
    heldout: float = 0.25  # share of positions held out for the accuracy
    max_train_positions: int = 20000  # positions per classifier at most (0: all)
    n_samples: int = 64  # sampled coalitions (random orders of the neurons) per concept
    max_shapley_positions: int = 2048  # positions r per concept at most (concept's and background's)
    seed: int = 0


@dg.multi_asset(
    partitions_def=models,
    ins={"concept_hierarchy": dg.AssetIn(), "responsible_regions": dg.AssetIn()},
    outs={
        "concept_classifiers": dg.AssetOut(code_version="1", kinds={"scikitlearn", "parquet"}, group_name="hierarchy"),
        "neuron_concept_shapley": dg.AssetOut(code_version="1", kinds={"pytorch", "parquet"}, group_name="hierarchy"),
    },
    deps=["model_training"],
    pool="gpu",
)
def concept_classifiers_and_shapley(context: dg.AssetExecutionContext, config: ClassifierConfig, device: TorchDevice,
                                    warehouse: WarehouseResource, concept_hierarchy: pd.DataFrame,
                                    responsible_regions: pd.DataFrame):
    """One linear classifier per concept node on the hidden layer's position vectors (positives:
    the concept's responsible positions; negatives: its siblings' responsible positions and the
    background), and the Shapley value of every neuron for it (seed 004's estimator, sampled
    coalitions over the concept's and the background's positions of the concept's images)."""
    import torch

    from www_assets.figures.hint import hierarchy_tree_figure
    from www_assets.methods.hint import linear_link_shapley, train_concept_classifier
    from www_resources.probes import open_probe_set

    entry = model_entry(context)
    layer_name = str(responsible_regions["layer"].iloc[0])
    model, _, _ = _hint_model(context, entry, device, layer_name)
    probe = open_probe_set(entry.probe_set)
    manifest = probe.manifest().set_index("image_id")
    wanted = sorted(set(responsible_regions["image_id"]))
    features, _, _, ids = _position_features(model, layer_name, probe, manifest.loc[wanted].reset_index(),
                                             device.batch_size)
    sets = _training_sets(concept_hierarchy, responsible_regions, features, ids)
    depth = dict(zip(concept_hierarchy["concept"], concept_hierarchy["depth"]))
    rng = np.random.default_rng(config.seed)
    clf_rows, shap_rows = [], []
    progress = Progress(context, "concept classifiers and Shapley values")
    for i, (concept, (X, y, own, own_masks)) in enumerate(sets.items()):
        try:
            clf = train_concept_classifier(X, y, alpha=config.alpha, heldout=config.heldout,
                                           max_samples=config.max_train_positions, seed=config.seed)
        except ValueError as err:  # e.g. a concept whose images have no responsible position
            context.log.warning(f"concept {concept!r}: no classifier ({err})")
            continue
        clf_rows.append({"layer": layer_name, "concept": concept, "depth": int(depth[concept]),
                         "weights": clf.weights.astype(np.float32), "intercept": clf.intercept,
                         "n_positive": clf.n_positive, "n_negative": clf.n_negative,
                         "train_accuracy": clf.train_accuracy, "heldout_accuracy": clf.heldout_accuracy})
        positions = own.reshape(-1, own.shape[-1])  # the concept's region and the background of its images
        if config.max_shapley_positions and len(positions) > config.max_shapley_positions:
            positions = positions[rng.choice(len(positions), config.max_shapley_positions, replace=False)]
        phi, _ = linear_link_shapley(torch.from_numpy(clf.weights), clf.intercept, torch.from_numpy(positions),
                                     config.n_samples, seed=config.seed + i)
        phi = phi.numpy().astype(np.float64)
        order = np.lexsort((np.arange(len(phi)), -phi))
        rank = np.empty(len(phi), np.int32)
        rank[order] = np.arange(1, len(phi) + 1)
        shap_rows.append(pd.DataFrame({
            "layer": layer_name, "concept": concept, "depth": np.int32(depth[concept]),
            "neuron": np.arange(len(phi), dtype=np.int32), "value": phi, "rank": rank,
            "n_positions": np.int32(len(positions)), "n_samples": np.int32(config.n_samples)}))
        progress(i + 1, len(sets))
    classifiers = pd.DataFrame(clf_rows)
    shapley = pd.concat(shap_rows, ignore_index=True)
    top = {c: list(rows.sort_values("rank")["neuron"].head(3)) for c, rows in shapley.groupby("concept")}
    picture = hierarchy_tree_figure(concept_hierarchy, top, f"{entry.name} {layer_name}: top-3 neurons per concept "
                                    "by Shapley value", warehouse.artifacts / "hint" / entry.name / "hierarchy.png")
    yield dg.Output(classifiers, "concept_classifiers", metadata=table_metadata(
        classifiers.drop(columns="weights"), layer=layer_name,
        mean_train_accuracy=float(classifiers["train_accuracy"].mean()),
        mean_heldout_accuracy=float(classifiers["heldout_accuracy"].mean())))
    yield dg.Output(shapley, "neuron_concept_shapley", metadata={
        **table_metadata(shapley[shapley["rank"] <= 3].sort_values(["depth", "concept", "rank"])),
        "hierarchy": dg.MetadataValue.md(image_markdown(picture, "concept hierarchy with top neurons"))})


# --------------------------------------------------------------------------------------------
# weakly supervised localisation


class LocalizationConfig(dg.Config):
    test_images_per_class: int = 20  # from the explain set (default: the probe set), never a training image
    shares: list[float] = list(LADDER)  # the neuron ladder; "all" neurons is the stored classifier
    map_threshold: float = 0.5  # on the classifier's probability
    cam_threshold: float = 0.2  # on the min-max normalised Grad-CAM map (the usual CAM WSOL threshold)
    iou: float = 0.5
    boxes: str = ""  # real probe sets: CSV image_id,x0,y0,x1,y1 in original pixels (README: HINT)
    figure_images: int = 6
    seed: int = 0


def _true_boxes(entry, config: LocalizationConfig, probe, rows: pd.DataFrame, size: int, resize: int):
    """image_id -> list of boxes in the model input's pixels."""
    if entry.is_world_model:
        from www_resources.storage import default_warehouse

        scenes = default_warehouse().read("world_scenes").set_index("image_id").loc[list(rows["image_id"])]
        from www_resources.probes import world_images_path

        native = int(np.load(world_images_path(probe.options["split"]), mmap_mode="r").shape[1])
        scale = size / native
        return {i: [tuple(int(round(v * scale)) for v in (r.box_x0, r.box_y0, r.box_x1, r.box_y1))]
                for i, r in scenes.iterrows()}
    if not config.boxes:
        raise ValueError(f"concept_localization for {entry.name} needs object boxes: set the config field `boxes` to "
                         "a CSV with columns image_id,x0,y0,x1,y1 in original image pixels (README: HINT)")
    from PIL import Image

    from www_assets.methods.hint import map_box_to_input, read_box_file
    from www_resources.paths import data_dir, resolve

    table = read_box_file(resolve(config.boxes, base=data_dir()))
    paths = dict(zip(rows["image_id"], rows["path"]))
    boxes = {}
    for image_id, group in table[table["image_id"].isin(set(paths))].groupby("image_id"):
        with Image.open(paths[image_id]) as img:
            width, height = img.size
        boxes[image_id] = [map_box_to_input((r.x0, r.y0, r.x1, r.y1), width, height, size, resize)
                           for r in group.itertuples()]
    return boxes


@dg.asset(partitions_def=models,
          ins={"concept_hierarchy": dg.AssetIn(), "responsible_regions": dg.AssetIn(),
               "concept_classifiers": dg.AssetIn(), "neuron_concept_shapley": dg.AssetIn()},
          deps=["model_training", "world_scenes"], code_version="1", kinds={"pytorch", "parquet"},
          group_name="hierarchy", pool="gpu")
def concept_localization(context: dg.AssetExecutionContext, config: LocalizationConfig, device: TorchDevice,
                         warehouse: WarehouseResource, concept_hierarchy: pd.DataFrame,
                         responsible_regions: pd.DataFrame, concept_classifiers: pd.DataFrame,
                         neuron_concept_shapley: pd.DataFrame) -> pd.DataFrame:
    """WSOL per concept node: each concept classifier (retrained on the top 10 / 20 / 40 / 80 % of
    neurons by Shapley value, and the stored one on all neurons) at every position of the test
    images of the concept gives a probability map; its largest component above 0.5 is the box, a
    hit at IoU >= 0.5 with the true object box. Baseline: the Grad-CAM box of the true class at
    the same layer on the same images."""
    import torch

    from www_assets.figures.hint import level_maps_figure
    from www_assets.methods.gradcam import gradcam
    from www_assets.methods.hint import (
        box_from_mask,
        box_iou,
        modified_huber_proba,
        top_neurons_by_share,
        train_concept_classifier,
        upsample_maps,
    )
    from www_resources.probes import open_probe_set

    entry = model_entry(context)
    if not entry.is_world_model and not config.boxes:
        # nothing to score against: an empty table that says why, and the rest of the run goes on
        import pyarrow as pa

        from www_resources.tables import TABLES

        reason = ("no object boxes: set the config field `boxes` to a CSV with columns image_id,x0,y0,x1,y1 in "
                  "original image pixels (README: HINT)")
        context.log.warning(f"concept_localization for {entry.name}: {reason}")
        context.add_output_metadata({"skipped": reason})
        return pa.schema(TABLES["concept_localization"].columns).empty_table().to_pandas()
    layer_name = str(responsible_regions["layer"].iloc[0])
    model, _, layer = _hint_model(context, entry, device, layer_name)
    size = model.pre.size
    # ladder classifiers are retrained on the same positions as the stored ones
    train_probe = open_probe_set(entry.probe_set)
    manifest = train_probe.manifest().set_index("image_id")
    wanted = sorted(set(responsible_regions["image_id"]))
    features, (h, w), _, ids = _position_features(model, layer_name, train_probe, manifest.loc[wanted].reset_index(),
                                                  device.batch_size)
    sets = _training_sets(concept_hierarchy, responsible_regions, features, ids)
    del features
    # test images: the explain set without the training images
    test_probe = open_probe_set(entry.explain_set or entry.probe_set)
    test_manifest = test_probe.manifest()
    test_manifest = test_manifest[~test_manifest["image_id"].isin(set(wanted))]
    classes = {int(c) for cl in concept_hierarchy["classes"] for c in cl}
    test_rows = _sample(test_manifest, config.test_images_per_class, config.seed, classes)
    boxes = _true_boxes(entry, config, test_probe, test_rows, size, model.pre.resize)
    test_rows = test_rows[test_rows["image_id"].isin(set(boxes))].reset_index(drop=True)
    test_feats, _, images, test_ids = _position_features(model, layer_name, test_probe, test_rows, device.batch_size)
    labels = test_rows.set_index("image_id").loc[test_ids, "label"].to_numpy()
    # Grad-CAM of the true class at the same layer
    cam_ious = np.zeros(len(test_ids))
    for start in range(0, len(test_ids), device.batch_size):
        x = model.to_input(images[start:start + device.batch_size])
        y = torch.as_tensor(labels[start:start + device.batch_size], device=x.device)
        cam, _ = gradcam(model.module, layer, x, y, num_prefix_tokens=model.num_prefix_tokens)
        for b, m in enumerate(cam.cpu().numpy()):
            image_id = test_ids[start + b]
            box = box_from_mask(m >= config.cam_threshold) if m.max() > 0 else None
            cam_ious[start + b] = max(box_iou(box, t) for t in boxes[image_id])

    stored = concept_classifiers.set_index("concept")
    phis = {c: rows.sort_values("neuron")["value"].to_numpy() for c, rows in neuron_concept_shapley.groupby("concept")}
    depth = dict(zip(concept_hierarchy["concept"], concept_hierarchy["depth"]))
    rows, figure_maps = [], {}
    figure_ids = set(test_ids[:: max(1, len(test_ids) // max(1, config.figure_images))][: config.figure_images])
    progress = Progress(context, "localisation")
    for k, (concept, klasses) in enumerate(zip(concept_hierarchy["concept"], concept_hierarchy["classes"])):
        if concept not in sets or concept not in stored.index or concept not in phis:
            continue
        members = np.isin(labels, [int(c) for c in klasses])
        if not members.any():
            continue
        X, y, _, _ = sets[concept]
        own = test_feats[members]  # (n, P, D)
        own_ids = [i for i, m in zip(test_ids, members) if m]
        ladder = [(s, None) for s in sorted(config.shares)] + [(1.0, stored.loc[concept])]
        for share, saved in ladder:
            if saved is None:
                neurons = top_neurons_by_share(phis[concept], share)
                clf = train_concept_classifier(X, y, neurons=neurons, max_samples=20000, seed=config.seed)
                weights, intercept, tr, ho = clf.weights, clf.intercept, clf.train_accuracy, clf.heldout_accuracy
                n_neurons = len(neurons)
            else:
                weights, intercept = np.asarray(saved["weights"], np.float32), float(saved["intercept"])
                tr, ho, n_neurons = float(saved["train_accuracy"]), float(saved["heldout_accuracy"]), len(weights)
            proba = modified_huber_proba(own @ weights + intercept).reshape(len(own), h, w)
            maps = upsample_maps(proba, size)
            ious = []
            for image_id, m in zip(own_ids, maps):
                box = box_from_mask(m > config.map_threshold)
                ious.append(max(box_iou(box, t) for t in boxes[image_id]))
                if saved is not None and image_id in figure_ids:
                    figure_maps.setdefault(image_id, []).append(
                        {"concept": concept, "depth": depth[concept], "map": m, "pred_box": box, "iou": ious[-1]})
            ious = np.asarray(ious)
            rows.append({"layer": layer_name, "concept": concept, "depth": int(depth[concept]), "method": "hint",
                         "neuron_share": float(share), "n_neurons": int(n_neurons), "n_images": len(ious),
                         "accuracy": float((ious >= config.iou).mean()), "mean_iou": float(ious.mean()),
                         "train_accuracy": tr, "heldout_accuracy": ho})
        cam = cam_ious[members]
        rows.append({"layer": layer_name, "concept": concept, "depth": int(depth[concept]), "method": "cam",
                     "neuron_share": 1.0, "n_neurons": int(test_feats.shape[-1]), "n_images": len(cam),
                     "accuracy": float((cam >= config.iou).mean()), "mean_iou": float(cam.mean()),
                     "train_accuracy": float("nan"), "heldout_accuracy": float("nan")})
        progress(k + 1, len(concept_hierarchy))
    df = pd.DataFrame(rows)
    names = dict(zip(concept_hierarchy["concept"], concept_hierarchy["name"]))
    class_names = {int(c[0]): n for c, n, is_class in zip(concept_hierarchy["classes"], concept_hierarchy["name"],
                                                          concept_hierarchy["is_class"]) if is_class}
    picture_rows = []
    for image_id in sorted(figure_maps):
        i = test_ids.index(image_id)
        levels = sorted(figure_maps[image_id], key=lambda r: r["depth"])
        for level in levels:
            level["concept"] = names[level["concept"]]
        picture_rows.append({"image": images[i], "caption": f"{image_id}\n{class_names.get(int(labels[i]), '')}",
                             "true_box": boxes[image_id][0], "levels": levels})
    meta = {}
    if picture_rows:
        path = level_maps_figure(picture_rows, warehouse.artifacts / "hint" / entry.name / "localization.png",
                                 f"{entry.name} {layer_name}: concept classifier maps (red: predicted box, green: true)")
        meta["maps"] = dg.MetadataValue.md(image_markdown(path, "concept classifier maps"))
    from www_assets.methods.hint import localization_by_level

    summary = localization_by_level(df).pivot(index="depth", columns="column", values="accuracy")
    context.add_output_metadata({**table_metadata(df), "by_level": dg.MetadataValue.md(summary.to_markdown()), **meta})
    return df


# --------------------------------------------------------------------------------------------
# agreement with WWW concepts and class Shapley rows


class AgreementConfig(dg.Config):
    top_k: int = 5  # top neurons per concept by Shapley value
    concept_method: str = "www"


@dg.asset(partitions_def=models,
          ins={"concept_hierarchy": dg.AssetIn(), "neuron_concept_shapley": dg.AssetIn(),
               "neuron_concepts": dg.AssetIn(), "class_shapley": dg.AssetIn()},
          code_version="1", kinds={"pandas", "parquet"}, group_name="hierarchy")
def hint_agreement(context: dg.AssetExecutionContext, config: AgreementConfig, warehouse: WarehouseResource,
                   concept_hierarchy: pd.DataFrame,
                   neuron_concept_shapley: pd.DataFrame, neuron_concepts: pd.DataFrame,
                   class_shapley: pd.DataFrame) -> pd.DataFrame:
    """For each concept node: the share of its top neurons by Shapley value whose WWW major concept
    (first concept set, same layer) is a word of the concept or of anything under it, and the
    share whose strongest class in the class Shapley matrix lies under the concept, each against
    the same share over all neurons. The class Shapley matrix is taken at the head's input; for a
    class-token ViT the HINT layer is an earlier block of the same residual stream, compared
    channel by channel."""
    from www_assets.evaluation import class_truth
    from www_assets.figures.hint import hierarchy_tree_figure
    from www_assets.methods.hint import agreement_rows, concept_words

    entry = model_entry(context)
    layer_name = str(neuron_concept_shapley["layer"].iloc[0])
    www = neuron_concepts[(neuron_concepts["layer"] == layer_name) & (neuron_concepts["method"] == config.concept_method)
                          & (neuron_concepts["kind"] == "major")]
    if "concept_set" in www:
        www = www[www["concept_set"] == entry.concept_sets[0]]
    first = www.sort_values("rank").drop_duplicates("neuron")
    www_concepts = {int(n): (c if isinstance(c, str) else "") for n, c in zip(first["neuron"], first["concept"])}
    class_of = {}
    if len(class_shapley):
        best = class_shapley.sort_values("value", ascending=False).drop_duplicates("neuron")
        n_layer = len(set(neuron_concept_shapley["neuron"]))
        if int(class_shapley["neuron"].max()) + 1 == n_layer:
            class_of = {int(n): int(c) for n, c in zip(best["neuron"], best["class_id"])}
        else:
            context.log.warning("class_shapley has another width than the HINT layer: no class Shapley agreement")
    words = concept_words(concept_hierarchy, class_truth(entry))
    df = agreement_rows(concept_hierarchy, neuron_concept_shapley, config.top_k, www_concepts=www_concepts,
                        class_of_neuron=class_of, words=words)
    df.insert(0, "layer", layer_name)
    df["agreeing"] = [np.asarray(a, np.int32) for a in df["agreeing"]]
    summary = df.groupby(["source", "depth"])[["share", "chance"]].mean().reset_index()
    top = {c: list(rows.sort_values("rank")["neuron"].head(3)) for c, rows in neuron_concept_shapley.groupby("concept")}
    picture = hierarchy_tree_figure(concept_hierarchy, top, f"{entry.name} {layer_name}: top-3 neurons per concept "
                                    f"by Shapley value, with their {config.concept_method} concept",
                                    warehouse.artifacts / "hint" / entry.name / "hierarchy_concepts.png",
                                    neuron_labels=www_concepts)
    context.add_output_metadata({**table_metadata(df), "by_level": dg.MetadataValue.md(summary.to_markdown(index=False)),
                                 "hierarchy": dg.MetadataValue.md(image_markdown(picture, "hierarchy with concepts"))})
    return df
