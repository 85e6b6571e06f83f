"""Why the model predicts a class, and why one class over another: class concepts, their
dataset crops, the prediction test, class contrasts, the shifting test and a CRAFT-style
comparison (METHODS.md section 6; the algorithms live in www_assets/methods/class_concepts.py).

One step computes them all, so that the attribution pass, the layer maps of the crop set and the
model are paid for once; each table is still its own asset. `class_concept_truth` scores the
crops against the embedded world's truth.
"""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import Progress, image_markdown, model_entry, table_metadata
from www_assets.partitions import models
from www_resources.dagster_resources import TorchDevice, WarehouseResource


class ClassConceptConfig(dg.Config):
    layer: str = ""  # empty: the registry's class_concepts.layer, else its spatial_layer
    attribution: str = "deeplift"  # deeplift (white-image baseline) | grad_x_activation | smoothgrad
    n_concepts: int = 4  # the paper's n
    max_images: int = 500  # images predicted as the class (the paper's 500; the world's probe set has ~170)
    crops_per_concept: int = 8  # the paper's m
    grid: int = 3  # crops per side
    pairs: str = ""  # empty: the registry's class_concepts.pairs, else "default"; "all" for every ordered pair
    epochs: int = 100
    lr: float = 0.01
    shift_images: int = 32  # images of B per pair in the shifting test (cost)
    compare_every: int = 8  # CRAFT comparison: every 8th class, 3 of the world's 24 (cost; the paper used every 10th)
    compare_images: int = 50  # ... images per class (the CRAFT example used 300)
    compare_max_n: int = 10
    craft_components: int = 10
    sobol_images: int = 4  # images per class for CRAFT's Sobol importance (cost)
    sobol_design: int = 8  # Sobol points (CRAFT uses 32; cost)
    figures: int = 6  # concept grids embedded in the UI (all are written under data/artifacts)


def _layers(entry, config: ClassConceptConfig) -> tuple[str, list[str]]:
    """The explained layer and the comparison's layers (the one before it among the registry's
    layers, then it)."""
    options = entry.class_concepts or {}
    layer = config.layer or options.get("layer") or entry.spatial_layer
    compare = options.get("compare_layers")
    if not compare:
        layers = list(entry.layers)
        compare = ([layers[layers.index(layer) - 1]] if layer in layers and layers.index(layer) > 0 else []) + [layer]
    return layer, list(dict.fromkeys(compare))


class _Bank:
    """The crop set: every image's grid crops as non-negative layer vectors (per layer), the
    image predictions, and lazily computed crop predictions."""

    def __init__(self, model, probe, manifest, grid, batch_size):
        self.model, self.probe, self.manifest, self.grid, self.batch_size = model, probe, manifest, grid, batch_size
        self.vectors: dict[str, list] = {}
        self.split: dict[str, bool] = {}
        self.pred = None
        self._crop_pred: dict[int, int] = {}

    def pixels(self, rows) -> np.ndarray:
        images, _, _ = self.probe.load(self.manifest.iloc[rows], self.model.pre.size, self.model.pre.resize)
        return images

    def boxes(self):
        from www_assets.methods.crops import grid_boxes

        return grid_boxes(self.model.pre.size, self.model.pre.size, self.grid)

    def crops(self, index: np.ndarray) -> np.ndarray:
        """uint8 crops (native size) of crop indices."""
        boxes = self.boxes().numpy()
        g2 = len(boxes)
        images = self.pixels(np.asarray(index) // g2)
        out = []
        for image, i in zip(images, index):
            x0, y0, x1, y1 = boxes[i % g2]
            out.append(image[y0:y1, x0:x1])
        return out

    def predict_crops(self, index: np.ndarray) -> np.ndarray:
        import torch

        from www_assets.methods.crops import crop_resize

        todo = [int(i) for i in index if int(i) not in self._crop_pred]
        if todo:
            g2 = self.grid ** 2
            images = self.pixels(np.asarray(todo) // g2)
            pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
            boxes = self.boxes()[torch.tensor(todo) % g2]
            resized = crop_resize(pixels, boxes, self.model.pre.size).round().clamp(0, 255).byte().permute(0, 2, 3, 1)
            with torch.no_grad():
                preds = [self.model.module(self.model.to_input(resized[s:s + self.batch_size])).argmax(1).cpu()
                         for s in range(0, len(todo), self.batch_size)]
            for i, p in zip(todo, torch.cat(preds).tolist()):
                self._crop_pred[i] = p
        return np.asarray([self._crop_pred[int(i)] for i in index])


def _forward_pass(context, model, bank: _Bank, layers: list[str], batch_size: int):
    """Predictions and crop vectors of every image of the crop set, for each layer."""
    import torch

    from www_assets.methods.class_concepts import crop_vectors, nonnegative, positions_to_map, to_positions
    from www_resources.hooks import LayerRecorder

    preds, vectors = [], {layer: [] for layer in layers}
    progress = Progress(context, "class concepts: layer maps of the crop set")
    n = len(bank.manifest)
    chunk = max(batch_size * 8, 256)
    with torch.no_grad(), LayerRecorder(model.module, layers) as recorder:
        for start in range(0, n, chunk):
            images = bank.pixels(np.arange(start, min(start + chunk, n)))
            for b in range(0, len(images), batch_size):
                logits = model.module(model.to_input(images[b:b + batch_size]))
                preds.append(logits.argmax(1).cpu())
                for layer in layers:
                    out = recorder.outputs[layer].float()
                    pos = to_positions(out, model.num_prefix_tokens)
                    if layer not in bank.split:
                        bank.split[layer] = bool(out.ndim == 3 or (out < 0).any())
                    side = int(round(pos.shape[1] ** 0.5)) if out.ndim == 3 else None
                    h, w = (out.shape[2], out.shape[3]) if out.ndim == 4 else (side, side)
                    maps = positions_to_map(nonnegative(pos, bank.split[layer]), h, w)
                    vectors[layer].append(crop_vectors(maps, bank.grid).reshape(-1, maps.shape[1]).cpu())
            progress(min(start + chunk, n), n)
    bank.pred = torch.cat(preds).numpy()
    bank.vectors = {layer: torch.cat(v) for layer, v in vectors.items()}


def _attribution_pass(context, model, bank: _Bank, rows: np.ndarray, layer: str, config, batch_size: int):
    """Raw position vectors (N, P, C) and attribution scores (N, P) of the given crop-set rows,
    for logit = each image's predicted class."""
    import torch

    from www_assets.methods.class_concepts import (
        attribution_scores,
        layer_attribution,
        to_positions,
        white_baseline,
    )
    from www_resources.hooks import LayerRecorder

    module = model.module.get_submodule(layer)
    size = model.pre.size
    baseline = white_baseline(model.to_input, size, size)
    acts, scores = [], []
    if not len(rows):
        return torch.zeros(0, 0, 0), torch.zeros(0, 0)
    progress = Progress(context, f"class concepts: attribution at {layer}")
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        x = model.to_input(bank.pixels(part))
        target = torch.as_tensor(bank.pred[part])
        with torch.no_grad(), LayerRecorder(model.module, [layer]) as recorder:
            model.module(x)
            raw = to_positions(recorder.outputs[layer].float(), model.num_prefix_tokens).cpu()
        attribution = layer_attribution(model.module, module, x, target, config.attribution, baseline)
        acts.append(raw)
        scores.append(attribution_scores(to_positions(attribution.float(), model.num_prefix_tokens)).cpu())
        progress(min(start + batch_size, len(rows)), len(rows))
    return torch.cat(acts), torch.cat(scores)


def _select(bank: _Bank, cls: int, limit: int) -> np.ndarray:
    return np.flatnonzero(bank.pred == cls)[:limit]


def _prediction(model, image: np.ndarray, target: int, other: int | None):
    import torch

    with torch.no_grad():
        prob = torch.softmax(model.module(model.to_input(image[None])).float(), 1)[0].cpu().numpy()
    return float(prob[target]), (float(prob[other]) if other is not None and other >= 0 else np.nan), int(prob.argmax())


ASSET_NAMES = ("class_concepts", "class_contrasts", "class_concept_crops", "prediction_test", "shifting_test",
               "class_concept_comparison")


def _empty(table: str):
    """No rows: an empty frame with the table's columns, or None (nothing written) for a table
    with a vector column, whose width an empty frame cannot give."""
    from www_resources.tables import TABLES, VECTOR

    if VECTOR in TABLES[table].columns.values():
        return None
    return pd.DataFrame(columns=list(TABLES[table].columns))


def _rows_or_nothing(df: pd.DataFrame, table: str):
    return df if len(df) else _empty(table)


@dg.multi_asset(
    partitions_def=models,
    outs={
        name: dg.AssetOut(code_version="1", kinds={"pytorch", "parquet"}, group_name="why_class")
        for name in ASSET_NAMES
    },
    ins={
        "probe_images": dg.AssetIn(),
        "predictions": dg.AssetIn(),
    },
    # the model's CLIP x probe view and CLIP x first concept set (read from the warehouse)
    deps=["model_training", "world_classes", "registry_file",
          *[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping())
            for name in ("clip_image_embeddings", "clip_text_embeddings")]],
    pool="gpu",
)
def class_concept_analysis(context: dg.AssetExecutionContext, config: ClassConceptConfig, device: TorchDevice,
                           warehouse: WarehouseResource, probe_images: pd.DataFrame, predictions: pd.DataFrame):
    """Class concepts (attribution-filtered NMF of the layer positions of the images predicted as
    each class), their top dataset crops (allowing / excluding crops predicted as the class) with
    words from CLIP and the WWW scorer, the prediction test of the stitched crops, contrasts of
    class pairs (batched pairwise logistic classifiers, then NMF of the positions scaled by the
    classifier), the shifting test, and the comparison with a CRAFT-style baseline over n =
    1..10 concepts at two layers. Images and crops come from the registry's probe set."""
    import torch

    from www_assets.methods import class_concepts as cc
    from www_resources.probes import open_probe_set
    from www_resources.target import TargetModel

    entry = model_entry(context)
    if config.attribution not in cc.ATTRIBUTIONS:
        raise ValueError(f"attribution must be one of {cc.ATTRIBUTIONS}, got {config.attribution!r}")
    layer, compare_layers = _layers(entry, config)
    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    probe = open_probe_set(entry.probe_set)
    manifest = probe.manifest().set_index("image_id")
    readable = probe_images.loc[probe_images["readable"], "image_id"]
    manifest = manifest.loc[sorted(readable)].reset_index()
    names = probe.class_names()
    k = len(names)
    bank = _Bank(model, probe, manifest, config.grid, device.batch_size)
    _forward_pass(context, model, bank, list(dict.fromkeys([layer, *compare_layers])), device.batch_size)
    split = bank.split[layer]
    context.log.info(f"layer {layer}: {'signed, split into positive and negative parts' if split else 'non-negative'}")

    # --- single-class concepts --------------------------------------------------------------
    rows_by_class = {c: _select(bank, c, config.max_images) for c in range(k)}
    chosen = np.concatenate([r for r in rows_by_class.values()]) if k else np.zeros(0, int)
    acts, scores = _attribution_pass(context, model, bank, chosen, layer, config, device.batch_size)
    where = {int(r): i for i, r in enumerate(chosen)}
    if not len(scores) or float(scores.abs().max()) == 0.0:
        message = (f"the attribution at layer {layer} is zero at every position (or no image was attributed): the "
                   f"logits do not depend on its spatial positions (e.g. a ViT whose head reads only the class token "
                   f"after the last block); set class_concepts.layer in {entry.source_file} to a block before the "
                   f"last one. Nothing was explained.")
        context.log.error(message)
        for name in ASSET_NAMES:
            yield dg.Output(_empty(name), name, metadata={"rows": 0, "problem": message})
        return
    kept, strict, all_positions = {}, {}, {}
    for c, rows in rows_by_class.items():
        idx = [where[int(r)] for r in rows]
        if not idx:
            kept[c] = None
            strict[c] = torch.zeros(0, acts.shape[2])
            continue
        a, s = acts[idx], scores[idx]
        kept[c] = cc.scaled_positions(cc.nonnegative(a.reshape(-1, a.shape[2]), split), s.reshape(-1))
        strict[c] = torch.cat([cc.strict_positions(a[i], s[i]) for i in range(len(idx))])
        all_positions[c] = a.reshape(-1, a.shape[2])
    factors, errors = cc.explain_classes(kept, config.n_concepts)
    for c, message in errors.items():
        context.log.warning(f"class {names[c]}: {message}; skipped")

    # --- contrasts ----------------------------------------------------------------------------
    pairs = _pairs(entry, config, predictions, names)
    trainable = [(a, b, r) for a, b, r in pairs if len(strict[a]) and len(strict[b])]
    for a, b, _ in sorted(set(pairs) - set(trainable)):
        errors[(a, b)] = "a class of the pair has no strongly attributed position"
        context.log.warning(f"pair {names[a]} over {names[b]}: no strongly attributed positions; skipped")
    classifiers = cc.train_pairwise_classifiers(strict, [(a, b) for a, b, _ in trainable], config.epochs, config.lr) \
        if trainable else None
    contrasts = {}
    for p, (a, b, reason) in enumerate(trainable):
        w, bias = classifiers.weight[p], classifiers.bias[p]
        x = cc.contrast_positions(all_positions[a], cc.nonnegative(all_positions[a], split), w, bias)
        try:
            contrasts[(a, b)] = (cc.factorise(x, config.n_concepts), reason, p)
        except cc.ClassConceptError as err:
            errors[(a, b)] = str(err)
            context.log.warning(f"pair {names[a]} over {names[b]}: {err}; skipped")

    # --- crops, words, prediction test --------------------------------------------------------
    crop_image = np.repeat(np.arange(len(manifest)), config.grid ** 2)
    explanations = [("class", c, -1, f.basis) for c, f in factors.items()] + \
                   [("contrast", a, b, f.basis) for (a, b), (f, _, _) in contrasts.items()]
    crop_rows, tests, figures = [], [], []
    boxes = bank.boxes().numpy()
    # CNNs take the stacked strip as it is (as in the paper); a ViT's token grid needs its square input
    stitch_size = model.pre.size if model.num_prefix_tokens else None
    progress = Progress(context, "class concepts: crops and prediction tests")
    for number, (kind, a, b, basis) in enumerate(explanations):
        sim = cc.concept_similarities(basis, bank.vectors[layer])
        variants = {}
        for variant, exclude in (("allow", False), ("exclude", True)):
            picks = cc.top_crops(sim, config.crops_per_concept, a, crop_image, bank.pred, bank.predict_crops, exclude)
            variants[variant] = picks
            for concept, (index, values) in enumerate(picks):
                for rank, (i, v) in enumerate(zip(index, values), start=1):
                    x0, y0, x1, y1 = boxes[i % len(boxes)]
                    r, cidx = divmod(int(i % len(boxes)), config.grid)
                    crop_rows.append((kind, a, b, concept, variant, rank, manifest["image_id"].iloc[crop_image[i]],
                                      f"crop:{r},{cidx}", x0, y0, x1, y1, float(v), int(bank.pred[crop_image[i]])))
            firsts = [index[0] for index, _ in picks if len(index)]
            if len(firsts) < len(picks):
                tests.append((kind, a, b, variant, len(picks), np.nan, np.nan, -1, False, None))
                continue
            image = cc.stitch(bank.crops(np.asarray(firsts)), stitch_size)
            p_a, p_b, predicted = _prediction(model, image, a, b if b >= 0 else None)
            tests.append((kind, a, b, variant, len(picks), p_a, p_b, predicted, predicted == a, image))
        figures.append((kind, a, b, variants))
        progress(number + 1, len(explanations))

    crops = pd.DataFrame(crop_rows, columns=["kind", "class_id", "other_id", "concept", "variant", "rank", "image_id",
                                             "view", "box_x0", "box_y0", "box_x1", "box_y1", "similarity", "image_pred"])
    crops = crops.astype({c: np.int32 for c in ("class_id", "other_id", "concept", "rank", "box_x0", "box_y0",
                                                  "box_x1", "box_y1", "image_pred")}).astype({"similarity": np.float32})
    from www_assets.concepts import model_clip_texts, model_clip_views

    words = _concept_words(entry, device, bank, crops, model_clip_views(warehouse, entry),
                           model_clip_texts(warehouse, entry, entry.concept_sets[0]), config)

    # --- tables ------------------------------------------------------------------------------
    concepts = pd.DataFrame([
        (layer, config.attribution, c, names[c], i, f.basis[i], f.share[i], len(rows_by_class[c]), f.n_rows,
         words.get(("class", c, -1, i), []))
        for c, f in sorted(factors.items()) for i in range(len(f.basis))
    ], columns=["layer", "attribution", "class_id", "class_name", "concept", "basis", "share", "n_images",
                "n_positions", "words"])
    contrast_table = pd.DataFrame([
        (layer, a, names[a], b, names[b], reason, float(classifiers.accuracy[p]), float(classifiers.bias[p]),
         len(strict[a]), len(strict[b]), i, f.basis[i], f.share[i], words.get(("contrast", a, b, i), []))
        for (a, b), (f, reason, p) in sorted(contrasts.items()) for i in range(len(f.basis))
    ], columns=["layer", "class_id", "class_name", "other_id", "other_name", "reason", "classifier_accuracy", "bias",
                "n_positions_a", "n_positions_b", "concept", "basis", "share", "words"])
    for frame in (concepts, contrast_table):
        for column in ("class_id", "concept", "n_images", "n_positions", "other_id", "n_positions_a", "n_positions_b"):
            if column in frame:
                frame[column] = frame[column].astype(np.int32)
        frame["basis"] = [np.asarray(v, np.float32) for v in frame["basis"]]

    folder = warehouse.artifacts / "class_concepts" / entry.name
    test_rows, shown = [], {}
    word_of = lambda kind, a, b, i: ", ".join(words.get((kind, a, b, i), [])) or "(no words)"
    tests_by_key = {(t[0], t[1], t[2], t[3]): t for t in tests}
    for kind, a, b, variants in figures:
        title = f"{entry.name} {layer}: {names[a]}" + (f" over {names[b]}" if b >= 0 else "")
        panels = []
        for variant, picks in variants.items():
            t = tests_by_key[(kind, a, b, variant)]
            rows = [(word_of(kind, a, b, i), bank.crops(index) if len(index) else []) for i, (index, _) in enumerate(picks)]
            verdict = "no stitched image" if t[9] is None else \
                f"p({names[a]})={t[5]:.2f}, predicted {names[t[7]]}"
            panels.append({"label": variant, "rows": rows, "stitched": t[9], "verdict": verdict})
        stem = f"{kind}-{names[a]}" + (f"-over-{names[b]}" if b >= 0 else "")
        path = _figure(title, panels, folder / f"{stem.replace(' ', '_')}.png")
        for variant in variants:
            tests_by_key[(kind, a, b, variant)] = tests_by_key[(kind, a, b, variant)][:9] + (str(path),)
        shown[stem] = path
    for t in tests_by_key.values():
        kind, a, b, variant, n, p_a, p_b, predicted, passed, figure = t
        test_rows.append((kind, a, names[a], b, variant, n, p_a, p_b, predicted,
                          names[predicted] if predicted >= 0 else None, bool(passed), figure))
    prediction_test = pd.DataFrame(test_rows, columns=[
        "kind", "class_id", "class_name", "other_id", "variant", "n_concepts", "softmax_target", "softmax_other",
        "predicted", "predicted_name", "passed", "figure"]).astype({"class_id": np.int32, "other_id": np.int32,
                                                                    "n_concepts": np.int32, "predicted": np.int32})
    prediction_test = prediction_test.sort_values(["kind", "class_id", "other_id", "variant"]).reset_index(drop=True)

    shifting = _shifting(context, model, bank, layer, split, trainable, classifiers, names, config)
    comparison = _comparison(context, model, bank, compare_layers, config, names, device.batch_size, crop_image)

    summary = prediction_test.groupby(["kind", "variant"]).agg(
        average_softmax=("softmax_target", "mean"), passed=("passed", "mean"), n=("passed", "size")).reset_index()
    pictures = {f"concepts {s}": dg.MetadataValue.md(image_markdown(p, s)) for s, p in _ui_pictures(shown, entry, names, config)}
    skipped = {(names[key] if isinstance(key, int) else f"{names[key[0]]} over {names[key[1]]}"): v
               for key, v in errors.items()}
    yield dg.Output(_rows_or_nothing(concepts, "class_concepts"), "class_concepts", metadata={
        **table_metadata(concepts.drop(columns=["basis"])), "layer": layer, "skipped": dg.MetadataValue.json(skipped)})
    yield dg.Output(_rows_or_nothing(contrast_table, "class_contrasts"), "class_contrasts",
                    metadata=table_metadata(contrast_table.drop(columns=["basis"])))
    yield dg.Output(crops, "class_concept_crops", metadata={**table_metadata(crops), **pictures})
    yield dg.Output(prediction_test, "prediction_test", metadata={
        **table_metadata(prediction_test.drop(columns=["figure"])),
        "summary": dg.MetadataValue.md(summary.to_markdown(index=False, floatfmt=".3f"))})
    yield dg.Output(shifting, "shifting_test", metadata=table_metadata(shifting))
    yield dg.Output(comparison, "class_concept_comparison", metadata=table_metadata(comparison))


def _figure(title, panels, path):
    from www_assets.figures.class_concepts import concept_grid_figure

    return concept_grid_figure(title, panels, path)


def _ui_pictures(shown: dict, entry, names, config) -> list:
    """The grids embedded in the UI: the world's confusable and spurious classes and their
    contrasts first, then the first classes, `config.figures` in all (all are on disk)."""
    first = []
    if entry.is_world_model:
        from www_resources.storage import default_warehouse

        classes = default_warehouse().read("world_classes")
        special = set(classes.loc[classes["confusable_with"].notna() | classes["spurious_background"].notna(), "name"])
        first = [s for s in shown if any(s.startswith(f"{kind}-{n}") for n in special for kind in ("class", "contrast"))]
    rest = [s for s in shown if s not in first]
    return [(s, shown[s]) for s in (first + rest)[:config.figures]]


def _pairs(entry, config, predictions: pd.DataFrame, names: list[str]) -> list[tuple[int, int, str]]:
    """The class pairs to contrast: the config, else the registry's class_concepts.pairs, else
    the default (each class with its most confused class, plus the world's confusable twins)."""
    from www_assets.methods.class_concepts import default_pairs

    option = config.pairs or (entry.class_concepts or {}).get("pairs") or "default"
    k = len(names)
    if option == "all":
        return [(a, b, "all pairs") for a in range(k) for b in range(k) if a != b]
    if isinstance(option, list):
        index = {n: i for i, n in enumerate(names)}
        unknown = [p for pair in option for p in pair if p not in index]
        if unknown:
            raise ValueError(f"class_concepts.pairs names unknown classes {unknown}")
        return [(index[a], index[b], "listed") for a, b in option]
    if option != "default":
        raise ValueError(f"pairs must be 'default', 'all' or a list of [A, B] class names, got {option!r}")
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (predictions["label"].to_numpy(), predictions["pred"].to_numpy()), 1)
    twins = {}
    if entry.is_world_model:
        from www_resources.storage import default_warehouse

        classes = default_warehouse().read("world_classes")
        index = {n: i for i, n in enumerate(names)}
        twins = {index[a]: index[b] for a, b in zip(classes["name"], classes["confusable_with"])
                 if isinstance(b, str) and a in index and b in index}
    return default_pairs(confusion, twins)


def _shifting(context, model, bank, layer, split, trainable, classifiers, names, config) -> pd.DataFrame:
    """The shifting test of every trained pair on up to `shift_images` images predicted as B."""
    from www_assets.methods.class_concepts import SHIFT_OFFSETS, shifted_softmax

    module = model.module.get_submodule(layer)
    rows = []
    progress = Progress(context, "shifting test")
    for p, (a, b, _) in enumerate(trainable):
        sources = _select(bank, b, config.shift_images)
        if not len(sources):
            continue
        x = model.to_input(bank.pixels(sources))
        soft = shifted_softmax(model.module, module, x, classifiers.weight[p].to(x.device), a, SHIFT_OFFSETS,
                               relu=not split, num_prefix_tokens=model.num_prefix_tokens)
        for offset, values in zip(SHIFT_OFFSETS, soft):
            rows.append((a, names[a], b, names[b], offset, float(values.mean()), float(values.std()), len(sources)))
        progress(p + 1, len(trainable))
    df = pd.DataFrame(rows, columns=["class_id", "class_name", "other_id", "other_name", "offset",
                                     "mean_softmax_target", "std_softmax_target", "n_images"])
    return df.astype({"class_id": np.int32, "other_id": np.int32, "n_images": np.int32})


def _comparison(context, model, bank, layers, config, names, batch_size, crop_image) -> pd.DataFrame:
    """This method (NMF rerun for each n) against the CRAFT-style baseline (NMF of the crops'
    vectors into `craft_components`, concepts ranked by Sobol importance) on the prediction test,
    for every `compare_every`-th class, at each layer."""

    from www_assets.methods import class_concepts as cc

    classes = list(range(0, len(names), max(1, config.compare_every)))
    rows = []
    stitch_size = model.pre.size if model.num_prefix_tokens else None
    g2 = config.grid ** 2

    def test(a, basis, layer):
        sim = cc.concept_similarities(basis, bank.vectors[layer])
        out = []
        for variant, exclude in (("allow", False), ("exclude", True)):
            picks = cc.top_crops(sim, 1, a, crop_image, bank.pred, bank.predict_crops, exclude, step=4)
            firsts = [index[0] for index, _ in picks if len(index)]
            if len(firsts) < len(picks):
                out.append((variant, np.nan, False))
                continue
            p_a, _, predicted = _prediction(model, cc.stitch(bank.crops(np.asarray(firsts)), stitch_size), a, None)
            out.append((variant, p_a, predicted == a))
        return out

    for layer in layers:
        module = model.module.get_submodule(layer)
        split = bank.split[layer]
        for a in classes:
            rows_a = _select(bank, a, config.compare_images)
            if not len(rows_a):
                continue
            acts, scores = _attribution_pass(context, model, bank, rows_a, layer, config, batch_size)
            kept = cc.scaled_positions(cc.nonnegative(acts.reshape(-1, acts.shape[2]), split), scores.reshape(-1))
            for n in range(1, config.compare_max_n + 1):
                try:
                    basis = cc.factorise(kept, n).basis
                except cc.ClassConceptError:
                    continue
                for variant, p_a, passed in test(a, basis, layer):
                    rows.append((layer, "ours", n, variant, a, p_a, passed))
            # CRAFT: NMF of the crops of A's images, importance by total Sobol indices
            crop_rows = (rows_a[:, None] * g2 + np.arange(g2)[None]).reshape(-1)
            try:
                craft = cc.factorise(bank.vectors[layer][crop_rows], config.craft_components)
            except cc.ClassConceptError:
                continue
            importance = np.zeros(len(craft.basis))
            for r in rows_a[:config.sobol_images]:
                positions = acts[list(rows_a).index(r)]  # (P, C) raw
                coefficients = cc.nmf_coefficients(craft.basis, cc.nonnegative(positions, split).numpy())
                importance += cc.jansen_total_indices(
                    _craft_evaluator(model, module, bank.pixels([r]), coefficients, craft.basis, split, a,
                                     positions.shape[1], batch_size),
                    len(craft.basis), config.sobol_design)
            order = np.argsort(-importance, kind="stable")
            for n in range(1, min(config.compare_max_n, len(order)) + 1):
                for variant, p_a, passed in test(a, craft.basis[order[:n]], layer):
                    rows.append((layer, "craft", n, variant, a, p_a, passed))
        context.log.info(f"comparison at {layer}: {len(classes)} classes done")
    df = pd.DataFrame(rows, columns=["layer", "method", "n_concepts", "variant", "class_id", "softmax_target", "passed"])
    return df.astype({"n_concepts": np.int32, "class_id": np.int32})


def _craft_evaluator(model, module, image, coefficients, basis, split, target, channels, batch_size):
    """f(masks) = logit `target` of the image with the layer's positions replaced by the NMF
    reconstruction of mask-scaled coefficients (back to signed vectors for a split layer)."""
    import torch

    from www_assets.methods.class_concepts import ReplaceLayerOutput

    u = torch.as_tensor(coefficients, dtype=torch.float32)
    h = torch.as_tensor(basis, dtype=torch.float32)
    x = model.to_input(image)

    def evaluate(masks):
        out = []
        for start in range(0, len(masks), batch_size):
            m = torch.as_tensor(masks[start:start + batch_size], dtype=torch.float32)
            recon = (u[None] * m[:, None, :]) @ h  # (M, P, C')
            if split:
                recon = recon[..., :channels] - recon[..., channels:]
            with torch.no_grad(), ReplaceLayerOutput(module, lambda _, r=recon: r.to(x.device, x.dtype),
                                                     model.num_prefix_tokens):
                logits = model.module(x.expand(len(m), -1, -1, -1))
            out.append(logits[:, target].float().cpu().numpy())
        return np.concatenate(out)

    return evaluate


def _concept_words(entry, device, bank, crops: pd.DataFrame, image_embeddings: pd.DataFrame,
                   text_embeddings: pd.DataFrame, config) -> dict:
    """Words of every concept: the CLIP features of its top crops (allowing variant) scored with
    the WWW scorer (ACS, alpha 0.95) against the model's first concept set. Crop features come
    from clip_image_embeddings where that table has the crop, else from the same CLIP."""
    import torch

    from www_assets.methods.class_concepts import ClassConceptError
    from www_assets.methods.concept_scoring import ConceptInputs, score_concepts
    from www_assets.methods.scoring_inputs import scoring_inputs

    rows = crops[crops["variant"] == "allow"]
    if rows.empty or text_embeddings.empty:
        return {}
    concept_set = entry.concept_sets[0]
    texts = text_embeddings[text_embeddings["concept_set"] == concept_set] if "concept_set" in text_embeddings else text_embeddings
    views = rows.drop_duplicates(["image_id", "view"])[["image_id", "view", "box_x0", "box_y0", "box_x1", "box_y1"]]
    known = image_embeddings.set_index(["image_id", "view"])["vector"] if len(image_embeddings) else pd.Series(dtype=object)
    have = views.apply(lambda r: (r["image_id"], r["view"]) in known.index, axis=1) if len(known) else pd.Series(False, index=views.index)
    missing = views[~have.to_numpy()]
    vectors = {key: np.asarray(known.loc[key], np.float32) for key in zip(views["image_id"][have.to_numpy()],
                                                                           views["view"][have.to_numpy()])}
    if len(missing):
        from www_assets.methods.crops import crop_resize
        from www_resources.clip import load_clip
        from www_resources.registry import resolve_data_path

        clip = load_clip(entry.clip, base_dir=resolve_data_path("."), device=device.torch_device())
        position = {image_id: i for i, image_id in enumerate(bank.manifest["image_id"])}
        images = bank.pixels(np.asarray([position[i] for i in missing["image_id"]]))
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        boxes = torch.tensor(missing[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.int64))
        features = clip.encode_images(crop_resize(pixels, boxes, bank.model.pre.size), batch_size=device.batch_size)
        for key, v in zip(zip(missing["image_id"], missing["view"]), features.numpy()):
            vectors[key] = v
    keys = list(vectors)
    index = {key: i for i, key in enumerate(keys)}
    view_features = torch.from_numpy(np.stack([vectors[key] for key in keys]))
    shared = scoring_inputs(pd.DataFrame({"image_id": [k[0] for k in keys], "view": [k[1] for k in keys],
                                          "vector": list(view_features.numpy())}), texts)
    groups = list(rows.groupby(["kind", "class_id", "other_id", "concept"]))
    width = max(len(g) for _, g in groups)
    examples = torch.tensor([
        [index[(i, v)] for i, v in zip(g.sort_values("rank")["image_id"], g.sort_values("rank")["view"])] +
        [index[(g["image_id"].iloc[0], g["view"].iloc[0])]] * (width - len(g))  # pad with the best crop
        for _, g in groups])
    try:
        result = score_concepts("www", ConceptInputs(
            view_features=view_features, examples=examples, concept_features=shared.concept_features,
            template_feature=shared.template_feature, raw_concept_features=shared.raw_concept_features),
            top_n=3, alpha=0.95)
    except ValueError as err:
        raise ClassConceptError(f"naming the class concepts failed: {err}") from err
    concepts = shared.concepts
    return {(kind, int(a), int(b), int(c)): [concepts[j] for j, _ in chosen[:3]]
            for ((kind, a, b, c), _), chosen in zip(groups, result.selected)}


class TruthConfig(dg.Config):
    part_share: float = 0.5  # a crop shows a part when it holds this share of the part's box
    background_object_share: float = 0.25  # a crop is background when the object covers less of it


@dg.asset(
    partitions_def=models,
    ins={"class_concept_crops": dg.AssetIn()},
    deps=["world_scenes", "world_parts", "world_classes"],
    code_version="1",
    kinds={"pandas", "parquet"},
    group_name="why_class",
)
def class_concept_truth(context: dg.AssetExecutionContext, config: TruthConfig, warehouse: WarehouseResource,
                        class_concept_crops: pd.DataFrame) -> pd.DataFrame:
    """Embedded world only: per class (and contrast) and variant, what the concepts' top crops
    show in the world's truth: the share of the class's parts they cover, the share of crops on
    the class's spurious background (snow for rabbit), and the share showing a part that tells
    a confusable pair apart (cargo box, dorsal fin) for contrasts and for the single-class
    concepts of the same class. Empty for other models."""
    from www_assets.methods.class_concepts import truth_table

    entry = model_entry(context)
    if not entry.is_world_model:
        context.log.info(f"{entry.name} is not a world model: no planted truth to score against")
        return _empty("class_concept_truth")
    scenes = warehouse.read("world_scenes").set_index("image_id")
    parts = warehouse.read("world_parts")
    classes = warehouse.read("world_classes")
    crops = class_concept_crops
    parts = parts[parts["image_id"].isin(set(crops["image_id"]))]
    df = truth_table(crops, parts, scenes, classes, config.part_share, config.background_object_share)
    if df.empty:
        df = _empty("class_concept_truth")
    context.add_output_metadata(table_metadata(df))
    return df
