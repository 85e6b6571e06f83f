"""The probe set and one forward pass over it: manifests, predictions, pooled activations, and the
top-k images of every neuron."""


import dagster as dg
import numpy as np
import pandas as pd

from www_assets.common import Progress, model_entry, table_metadata
from www_assets.partitions import models
from www_resources.dagster_resources import TorchDevice

WORLD_DEPS = ["world_scenes", "model_training"]


@dg.asset(
    partitions_def=models,
    deps=["world_scenes"],
    code_version="1",
    kinds={"pandas", "parquet"},
    group_name="probe",
)
def probe_images(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """The probe set of the model: one row per image with its label, and whether it decodes.

    Every file is decoded as the forward pass will decode it (`www_resources.probes.open_rgb`).
    Files that are not used (decompression bombs, files that are not images, empty files, symlink
    loops, corrupt data) are kept with `readable = false` and the reason in `error`, so nothing
    is dropped silently; later steps skip them. The metadata counts them by reason, and counts
    the files that needed an adjustment to be used (EXIF rotation, alpha, 16 bits, ...).
    """
    from www_resources.probes import inspect_image, open_probe_set

    entry = model_entry(context)
    probe = open_probe_set(entry.probe_set)
    manifest = probe.manifest()
    progress = Progress(context, "checking images")
    errors, refused, adjusted = [], {}, {}
    for i, path in enumerate(manifest["path"]):
        check = inspect_image(path)
        errors.append(check.error)
        if check.reason:
            refused[check.reason] = refused.get(check.reason, 0) + 1
        for note in check.adjustments:
            adjusted[note] = adjusted.get(note, 0) + 1
        progress(i + 1, len(manifest))
    manifest["error"] = errors
    manifest["readable"] = manifest["error"].isna()
    manifest["probe_set"] = entry.probe_set
    bad = manifest[~manifest["readable"]]
    if len(bad):
        context.log.warning(
            f"{len(bad)} image(s) not used ({', '.join(f'{n} {r}' for r, n in sorted(refused.items()))}); "
            f"first: {bad['path'].iloc[0]}: {bad['error'].iloc[0]}"
        )
    context.add_output_metadata(
        table_metadata(
            manifest,
            unreadable=len(bad),
            refused_by_reason=dg.MetadataValue.json(dict(sorted(refused.items()))),
            adjusted=dg.MetadataValue.json(dict(sorted(adjusted.items()))),
            classes=int(manifest["label"].nunique()),
        )
    )
    return manifest[["probe_set", "image_id", "path", "label", "label_name", "split", "readable", "error"]]


@dg.multi_asset(
    partitions_def=models,
    outs={
        "predictions": dg.AssetOut(code_version="1", kinds={"pytorch", "parquet"}, group_name="probe"),
        "activations": dg.AssetOut(code_version="1", kinds={"pytorch", "parquet"}, group_name="probe"),
    },
    ins={"probe_images": dg.AssetIn()},
    deps=["model_training"],
    pool="gpu",
)
def probe_forward(context: dg.AssetExecutionContext, device: TorchDevice, probe_images: pd.DataFrame):
    """One forward pass over the probe set serves every configured layer.

    predictions: predicted class, max softmax probability, top-5 and correctness per image.
    activations: the spatially pooled vector of each configured layer per image (conv: mean over
    H x W; tokens: CLS or mean of patch tokens as the registry says; the logit layer as is).
    """
    import torch

    from www_resources.probes import open_probe_set
    from www_resources.target import TargetModel

    entry = model_entry(context)
    model = TargetModel(entry, device.torch_device(), device.torch_dtype())
    probe = open_probe_set(entry.probe_set)
    rows = probe_images[probe_images["readable"]].reset_index(drop=True)
    layers = list(entry.layers)
    preds, pooled, kept_ids, failed = [], {layer: [] for layer in layers}, [], {}
    progress = Progress(context, "forward pass")
    forward_batch = device.batches("forward").size  # forward_batch_size, or batch_size when auto
    chunk = max(device.batch_size * 8, 256)
    for start in range(0, len(rows), chunk):
        part = rows.iloc[start:start + chunk]
        images, ok_ids, errors = probe.load(part, model.pre.size, model.pre.resize)
        failed.update(errors)
        for _, logits, outputs in model.run(images, layers, forward_batch):
            prob = torch.softmax(logits, dim=1)
            msp, pred = prob.max(dim=1)
            top5 = prob.topk(min(5, prob.shape[1]), dim=1).indices
            preds.append((pred.numpy(), msp.numpy(), top5.numpy()))
            for layer in layers:
                pooled[layer].append(outputs[layer].numpy())
        kept_ids.extend(ok_ids)
        progress(min(start + chunk, len(rows)), len(rows))
    if failed:
        context.log.warning(f"{len(failed)} image(s) failed to decode during the forward pass and were skipped: {failed}")
    labels = rows.set_index("image_id").loc[kept_ids, "label"].to_numpy()
    pred = np.concatenate([p[0] for p in preds]) if preds else np.zeros(0, int)
    predictions = pd.DataFrame(
        {
            "image_id": kept_ids,
            "label": labels.astype(np.int32),
            "pred": pred.astype(np.int32),
            "msp": np.concatenate([p[1] for p in preds]) if preds else np.zeros(0, np.float32),
            "top5": [list(map(int, t)) for p in preds for t in p[2]],
            "correct": pred == labels,
        }
    )
    frames = []
    for layer in layers:
        matrix = np.concatenate(pooled[layer]) if pooled[layer] else np.zeros((0, 0), np.float32)
        frames.append(pd.DataFrame({"layer": layer, "image_id": kept_ids, "vector": list(matrix.astype(np.float32))}))
    activations = pd.concat(frames, ignore_index=True)
    accuracy = float(predictions["correct"].mean()) if len(predictions) else float("nan")
    widths = {layer: int(len(pooled[layer][0][0])) if pooled[layer] else 0 for layer in layers}
    yield dg.Output(predictions, "predictions", metadata=table_metadata(predictions, accuracy=accuracy, skipped=len(failed)))
    yield dg.Output(activations, "activations", metadata=table_metadata(activations, neurons_per_layer=str(widths)))


def activation_matrix(activations: pd.DataFrame, layer: str) -> tuple[list[str], np.ndarray]:
    """(image ids, matrix (images, neurons)) of one layer from the activations table."""
    rows = activations[activations["layer"] == layer]
    return rows["image_id"].tolist(), np.stack(rows["vector"].to_numpy()).astype(np.float32)


class ExamplesConfig(dg.Config):
    k: int = 80  # stored examples per neuron (methods use the first 40; the k ablation goes to 80)


@dg.asset(partitions_def=models, code_version="1", kinds={"pandas", "parquet"}, group_name="probe")
def neuron_examples(context: dg.AssetExecutionContext, config: ExamplesConfig, activations: pd.DataFrame) -> pd.DataFrame:
    """The top-k probe images of every neuron of every configured layer (kind = image), ranked by
    the neuron's pooled activation; ties go to the earlier image id."""
    import torch

    from www_assets.methods.examples import top_k_examples

    frames = []
    for layer in sorted(activations["layer"].unique()):
        ids, matrix = activation_matrix(activations, layer)
        index, values = top_k_examples(torch.from_numpy(matrix), config.k)
        n, k = index.shape
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "neuron": np.repeat(np.arange(n), k).astype(np.int32),
                    "kind": "image",
                    "rank": np.tile(np.arange(1, k + 1), n).astype(np.int32),
                    "image_id": np.asarray(ids)[index.numpy().reshape(-1)],
                    "view": "full",
                    "box_x0": None, "box_y0": None, "box_x1": None, "box_y1": None,  # the whole image
                    "activation": values.numpy().reshape(-1).astype(np.float32),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    context.add_output_metadata(table_metadata(out, k=config.k))
    return out
