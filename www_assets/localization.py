"""Where, scored against the world's truth: concept heatmaps, part neurons' regions and a plain
Grad-CAM baseline against the object and part boxes of the test images (methods/localization.py)."""

import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import Progress, image_markdown, model_entry, table_metadata
from www_assets.methods.localization import PART_NEURON, localization_summary
from www_assets.partitions import models
from www_resources.dagster_resources import TorchDevice, WarehouseResource

MAPS = ("class", "sample", "gradcam")  # the heatmaps scored against the object box


class LocalizationConfig(dg.Config):
    top_k: int = 3  # neurons per track, as in sample_explanations
    percentile: float = 70.0  # concept region: a neuron's map above this percentile
    concept_method: str = "www"


@dg.asset(
    partitions_def=models,
    ins={"class_shapley": dg.AssetIn(), "neuron_concepts": dg.AssetIn()},
    deps=["model_training", "world_scenes", "world_parts"],
    code_version="1",
    kinds={"pytorch", "parquet"},
    group_name="why",
    pool="gpu",
)
def localization_eval(context: dg.AssetExecutionContext, config: LocalizationConfig, device: TorchDevice,
                      warehouse: WarehouseResource, class_shapley: pd.DataFrame,
                      neuron_concepts: pd.DataFrame) -> pd.DataFrame:
    """For every image of the explain set that has boxes (the world's): the share of the class
    track's and the sample track's concept heatmap's positive mass inside the object box and a
    pointing-game hit, the same for a plain Grad-CAM heatmap of the predicted class (the baseline),
    and for every top neuron whose major concept is a part drawn in the image, how much of its
    concept region and of its map lies in that part's boxes. `box_share` is the chance level."""
    import torch

    from www_assets.explanations import ExplainSetup
    from www_assets.figures.explanations import localization_figure
    from www_assets.methods.gradcam import gradcam
    from www_assets.methods.localization import area_share, boxes_mask, pointing_hits, positive_mass_inside

    entry = model_entry(context)
    spec = entry.explain_set or entry.probe_set
    columns = ["image_id", "correct", "map", "neuron", "concept", "mass_in_box", "pointing_hit", "region_in_box",
               "box_share"]
    if not spec.startswith("world:"):
        context.add_output_metadata({"rows": 0, "note": f"{spec} has no object boxes; nothing to score"})
        return pd.DataFrame(columns=columns)
    setup = ExplainSetup(context, device, class_shapley, neuron_concepts, config.concept_method, entry=entry)
    model = setup.model
    scenes = warehouse.read("world_scenes").set_index("image_id")
    parts = warehouse.read("world_parts")
    part_names = set(parts["part"])
    part_boxes = {key: g[["x0", "y0", "x1", "y1"]].to_numpy() for key, g in parts.groupby(["image_id", "part"])}
    size = model.pre.size
    scale = size / _world_side(setup.probe)

    def score(images, batch_ids, labels):
        """Rows of one gradient batch: the three heatmaps against the object box, and part neurons."""
        x = model.to_input(images)
        ex = setup.explain(x, config.top_k)
        with torch.enable_grad():
            cam, _ = gradcam(model.module, setup.map_layer, x,
                             num_prefix_tokens=model.num_prefix_tokens)
        box = scenes.loc[batch_ids, ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy() * scale
        inside = torch.stack([boxes_mask([bx], size, size) for bx in box])
        chance = area_share(inside).numpy()
        correct = ex.predicted.numpy() == labels
        out = []
        for name, heat in (("class", ex.class_heatmap), ("sample", ex.sample_heatmap), ("gradcam", cam.float().cpu())):
            mass, hit = positive_mass_inside(heat, inside).numpy(), pointing_hits(heat, inside).numpy()
            out += [(i, bool(c), name, None, None, m, h, np.nan, s)
                    for i, c, m, h, s in zip(batch_ids, correct, mass, hit, chance)]
        return out + _part_neuron_rows(ex, batch_ids, correct, setup.concepts, part_names, part_boxes, scale, size,
                                       config.percentile)

    rows = []
    progress = Progress(context, "localization")
    batches = device.batches("gradient", "localization", context.log.info)
    for done, _part, images, ids in setup.chunks():
        labels = scenes.loc[ids, "label"].to_numpy()
        for _b, _e, batch_rows in batches(len(ids), lambda b, e: score(images[b:e], ids[b:e], labels[b:e])):
            rows += batch_rows
        progress(done, len(setup.manifest))
    df = pd.DataFrame(rows, columns=columns)
    df["neuron"] = pd.array(df["neuron"], dtype="Int32")
    for c in ("mass_in_box", "pointing_hit", "region_in_box", "box_share"):
        df[c] = df[c].astype(np.float64)
    summary = localization_summary(df)
    picture = localization_figure(summary, f"{entry.name} {entry.spatial_layer} (maps at {entry.cam_layer}): "
                                  f"where the heatmaps look ({spec})",
                                  warehouse.artifacts / "explanations" / entry.name / "localization.png")
    context.add_output_metadata({**table_metadata(df), "summary": dg.MetadataValue.md(summary.to_markdown(index=False)),
                                 "picture": dg.MetadataValue.md(image_markdown(picture, "localisation"))})
    return df


def _world_side(probe) -> int:
    from www_resources.probes import world_images_path

    return int(np.load(world_images_path(probe.options["split"]), mmap_mode="r").shape[1])


def _part_neuron_rows(ex, ids, correct, concepts, part_names, part_boxes, scale, size, percentile):
    """Rows for the top neurons (either track, once per image) whose major concept is a part drawn in the image."""
    import torch

    from www_assets.methods.heatmaps import region_masks
    from www_assets.methods.localization import (
        area_share,
        boxes_mask,
        pointing_hits,
        positive_mass_inside,
        region_share_inside,
    )

    picked = []  # (row in batch, neuron, part, map)
    for i, image_id in enumerate(ids):
        seen = set()
        for top, maps in ((ex.class_top, ex.class_maps), (ex.sample_top, ex.sample_maps)):
            for j, neuron in enumerate(top[i].tolist()):
                concept = concepts.get(int(neuron))
                if neuron in seen or concept not in part_names or (image_id, concept) not in part_boxes:
                    continue
                seen.add(neuron)
                picked.append((i, int(neuron), concept, maps[i, j]))
    if not picked:
        return []
    maps = torch.stack([p[3] for p in picked])
    inside = torch.stack([boxes_mask(part_boxes[(ids[i], concept)] * scale, size, size) for i, _, concept, _ in picked])
    regions = region_masks(maps[:, None], percentile)[:, 0]
    mass, hit = positive_mass_inside(maps, inside).numpy(), pointing_hits(maps, inside).numpy()
    share, chance = region_share_inside(regions, inside).numpy(), area_share(inside).numpy()
    return [(ids[i], bool(correct[i]), PART_NEURON, neuron, concept, m, h, r, s)
            for (i, neuron, concept, _), m, h, r, s in zip(picked, mass, hit, share, chance)]
