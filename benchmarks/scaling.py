"""Benchmark: how the cost of the pipeline grows, and what a real model zoo would cost.

Two parts, each running the project's own assets through Dagster's public `materialize` on a
throw-away data folder, one stage per fresh process (so a stage's peak memory is its own):

--growth   the world's CNN and CLIP (random init) on growing probe sets of world images
           (1k, 2k, 4k, 8k) with 1,000 WordNet nouns, then on 2,000 images with growing
           concept sets (1k and 10k random WordNet nouns, and all 82,115). Prints per stage the
           time and the extra peak memory at each size, and the growth exponent b of each
           (least-squares slope of log(value) against log(size): 1 = linear, 0 = constant).
--dry-run  real architectures at their real sizes, random init, written as registry files like a
           user's: a torchvision ResNet-50 and a timm ViT-B/16 (layers as in the README's
           "Adding a model"), each explained with an open_clip ViT-B/32, on a small generated
           ImageFolder of 256-px JPEG world scenes (centre crop 224) and random samples of WordNet
           nouns. Every image stage runs on two probe sets (6 and 18 images), every concept stage
           on two samples (200 and 800 nouns); each is projected to ImageNet val (50,000 images) x
           WordNet (82,115 nouns) on this machine twice: along the line through its two sizes (a
           fixed part plus a rate), and with all of the larger run's time counted per unit (an
           upper bound). Prints per stage both rates, the extra peak memory and both projections.

A stage's time is its Dagster step (from the run's STEP_START and STEP_SUCCESS events): loading
its inputs from the warehouse, loading the model, the work, writing its table; not the
interpreter start nor the imports. Its memory is the extra resident memory at peak over the
whole `materialize` call (VmHWM after minus VmRSS before, Linux /proc; see benchmarks/_measure.py).

    .venv/bin/python benchmarks/scaling.py --growth --dry-run
    .venv/bin/python benchmarks/scaling.py --growth --dry-run --quick     # tiny sizes, a few minutes
    .venv/bin/python benchmarks/scaling.py --report /tmp/www-scaling-x    # the dry-run tables again
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._measure import growth_exponent, measured  # noqa: E402

IMAGENET_VAL_IMAGES = 50_000
WORDNET_NOUNS = 82_115
RESULT_TAG = "SCALING-RESULT "


@dataclass(frozen=True)
class Stage:
    label: str
    selection: tuple[str, ...]
    per_concept_set: bool  # run once per concept set (model x concept set, or CLIP x concept set)
    unit: str  # what its rate counts: images, views, concepts, or "" (a fixed cost per model)


STAGES = (
    Stage("decode check (probe_images)", ("probe_images",), False, "images"),
    Stage("forward pass (activations)", ("predictions", "activations"), False, "images"),
    Stage("top-k images (neuron_examples)", ("neuron_examples",), False, "images"),
    Stage("Grad-CAM (gradcam_crops)", ("gradcam_crops",), False, "images"),
    Stage("crop forward passes (crop_examples)", ("crop_examples",), False, "images"),
    Stage("CLIP image embeddings, full image and grid crops", ("clip_image_embeddings",), False, "views"),
    Stage("CLIP image embeddings, Grad-CAM windows", ("clip_gradcam_embeddings",), False, "views"),
    Stage("CLIP text embeddings", ("clip_text_embeddings",), True, "concepts"),
    Stage("concept scoring + selection", ("concept_scores", "neuron_concepts"), True, "concepts"),
    Stage("evaluation (concept_eval)", ("concept_eval",), True, ""),
    Stage("class x neuron contributions", ("class_shapley",), False, "images"),
    Stage("sample explanations", ("sample_explanations",), False, "images"),
)
CONCEPT_STAGES = tuple(s for s in STAGES if s.per_concept_set)
# the growth part times the chain probe -> concepts -> evaluation (the explanations are in the dry run)
GROWTH_STAGES = STAGES[:-2]


# ---------------------------------------------------------------------------------------------
# one stage in this (fresh) process


def run_stage(spec: dict) -> dict:
    """Materialize one stage's assets for one partition; time its step and its peak memory."""
    import dagster as dg
    import torch

    from www_assets.definitions import defs
    from www_assets.partitions import shared_keys
    from www_resources.dagster_resources import TorchDevice
    from www_resources.registry import get_model

    instance = dg.DagsterInstance.ephemeral()
    # the stage's partition, by what its asset is keyed by: the model, model x concept set, or the
    # model's CLIP x concept set / CLIP x probe view (the shared CLIP embeddings)
    clip, probe = shared_keys(get_model(spec["model"]))
    values = {"model": spec["model"], "concept_set": spec.get("concept_set"), "clip": clip, "probe": probe}
    dynamic = {"model": "models", "concept_set": "concept_sets", "clip": "clips", "probe": "probe_sets"}
    partitions_def = defs.get_assets_def(dg.AssetKey(spec["selection"][0])).partitions_def
    dimensions = [d.name for d in partitions_def.partitions_defs] if isinstance(
        partitions_def, dg.MultiPartitionsDefinition) else ["model"]
    for dimension in dimensions:
        instance.add_dynamic_partitions(dynamic[dimension], [values[dimension]])
    key = dg.MultiPartitionKey({d: values[d] for d in dimensions}) if len(dimensions) > 1 else spec["model"]
    resources = {**defs.resources, "device": TorchDevice(batch_size=spec.get("batch_size", 128))}
    with measured() as m:
        result = dg.materialize(list(defs.assets), selection=list(spec["selection"]), partition_key=key,
                                instance=instance, resources=resources, raise_on_error=True)
    starts, ends = {}, {}
    for entry in instance.all_logs(result.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                           dg.DagsterEventType.STEP_SUCCESS}):
        kind = entry.dagster_event.event_type_value
        (starts if kind == dg.DagsterEventType.STEP_START.value else ends)[entry.step_key] = entry.timestamp
    step_seconds = sum(ends[k] - starts[k] for k in ends)
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        value = materialization.metadata.get("rows")
        rows[materialization.asset_key.to_user_string()] = int(value.value) if value is not None else None
    return {"seconds": step_seconds, "run_seconds": m.seconds, "extra_peak_mib": m.extra_peak_mib,
            "rows": rows, "threads": torch.get_num_threads()}


# the libraries the assets import inside their bodies: imported once by the server, so that a
# stage's time is its work and not the interpreter's imports
PRELOAD = ("torchvision", "timm", "open_clip", "sentence_transformers", "www_assets.definitions",
           "www_assets.methods.concept_scoring", "www_assets.methods.concept_eval", "www_assets.methods.crops",
           "www_assets.methods.gradcam", "www_assets.methods.examples", "www_assets.methods.scoring_inputs",
           "www_assets.methods.contributions", "www_assets.methods.explanation", "www_assets.figures.explanations",
           "www_resources.clip", "www_resources.probes", "www_resources.target", "www_resources.text_models")


def _stage_child(spec: dict, queue) -> None:
    import traceback

    try:
        queue.put(run_stage(spec))
    except BaseException:  # noqa: BLE001 - reported to the server, which reports it to the caller
        queue.put({"error": traceback.format_exc()})


def serve() -> None:
    """Read a JSON list of stage specs on stdin; run each in a child forked from this process
    (imports done, nothing computed yet: a fresh process without the import time), print each result."""
    import importlib
    import multiprocessing

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    context = multiprocessing.get_context("fork")
    for spec in json.loads(sys.stdin.read()):
        queue = context.SimpleQueue()
        child = context.Process(target=_stage_child, args=(spec, queue))
        child.start()
        child.join()
        out = queue.get() if not queue.empty() else {"error": f"the stage process ended with exit code {child.exitcode}"}
        print(RESULT_TAG + json.dumps(out), flush=True)


def measure_stages(data: Path, jobs: list[tuple[Stage, str, str | None]], report) -> list[dict]:
    """Each (stage, model, concept set) in its own fresh process, with `data` as the data folder;
    `report(job, result)` is called as each ends."""
    specs = [{"selection": stage.selection, "model": model, "concept_set": concept_set if stage.per_concept_set else None}
             for stage, model, concept_set in jobs]
    env = {**os.environ, "WWW_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), "WWW_OFFLINE": "1",
           "DAGSTER_HOME": str(data.parent / "dagster_home")}
    env.pop("WWW_MODELS_DIR", None)
    (data.parent / "dagster_home").mkdir(exist_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "--serve"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    server.stdin.write(json.dumps(specs))
    server.stdin.close()
    results = []
    for line in server.stdout:
        if not line.startswith(RESULT_TAG):
            continue
        result = json.loads(line[len(RESULT_TAG):])
        job = jobs[len(results)]
        if "error" in result:
            server.kill()
            raise RuntimeError(f"stage {job[0].label} of {job[1]} failed:\n{result['error']}")
        results.append(result)
        report(job, result)
    server.wait()
    if len(results) != len(jobs):
        raise RuntimeError(f"the stage server ended after {len(results)} of {len(jobs)} stages (exit {server.returncode})")
    return results


# ---------------------------------------------------------------------------------------------
# data folders


def wordnet_sample(size: int, seed: int = 0) -> list[str]:
    """`size` WordNet nouns drawn without replacement (all 82,115 in WordNet's order for size >= all)."""
    import numpy as np

    from www_resources.concept_sets import wordnet_nouns

    nouns = wordnet_nouns()
    if size >= len(nouns):
        return nouns
    pick = np.sort(np.random.default_rng(seed).choice(len(nouns), size, replace=False))
    return [nouns[i] for i in pick]


def world_images(count: int, image_size: int, num_classes: int | None = None):
    """`count` probe-split world scenes: (uint8 images (n, s, s, 3), labels, class names)."""
    from www_resources.world import WorldConfig, class_table, generate_split

    config = WorldConfig.from_dict({"seed": 0, "image_size": image_size, "n_probe": count,
                                    "num_classes": num_classes})
    split = generate_split(config, "probe")
    names = class_table(config)["name"].tolist()
    return split.images, split.scenes["label"].to_numpy(), names


def write_folder(root: Path, images, labels, names, suffix: str) -> list[tuple[str, int, str]]:
    """An ImageFolder (one sub-folder per class); returns (relative path, label, class name)."""
    from PIL import Image

    rows = []
    for i, (pixels, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.{suffix}"
        Image.fromarray(pixels).save(path, quality=90) if suffix == "jpg" else Image.fromarray(pixels).save(path)
        rows.append((path.relative_to(root.parent).as_posix(), int(label), names[label]))
    return rows


def write_concept_sets(data: Path, sizes: dict[str, int]) -> None:
    (data / "concepts").mkdir(parents=True, exist_ok=True)
    lines = []
    for name, size in sizes.items():
        if size >= WORDNET_NOUNS:
            lines.append(f"{name}: wordnet:nouns")
        else:
            (data / "concepts" / f"{name}.txt").write_text("\n".join(wordnet_sample(size)) + "\n")
            lines.append(f"{name}: file:concepts/{name}.txt")
    (data / "concept_sets.yaml").write_text("\n".join(lines) + "\n")


def prepare_growth(data: Path, image_counts: list[int], concept_sizes: dict[str, int], series_model: str) -> None:
    """World images (64 px) with manifests of the first n, the world CNN and CLIP (random init),
    one registry file per probe-set size."""
    import pandas as pd
    import torch

    from www_resources.world import (
        WORLD_MEAN,
        WORLD_STD,
        build_classifier,
        build_world_clip,
        resolve_arch,
        save_classifier,
        save_clip_checkpoint,
    )

    data.mkdir(parents=True)
    images, labels, names = world_images(max(image_counts), 64)
    rows = pd.DataFrame(write_folder(data / "images", images, labels, names, "png"),
                        columns=["path", "label", "label_name"])
    for n in image_counts:  # paths relative to the manifest's folder
        rows.head(n).to_csv(data / f"probe-n{n}.csv", index=False)
    torch.manual_seed(0)
    arch = resolve_arch("cnn", len(names), 64)
    save_classifier(build_classifier(**arch), arch, data / "world-cnn.pt")
    clip, _ = build_world_clip(64)
    save_clip_checkpoint(clip, clip.world_config, data / "world-clip.pt")
    write_concept_sets(data, concept_sizes)
    (data / "models").mkdir()
    first = next(iter(concept_sizes))
    for n in image_counts:
        sets = list(concept_sizes) if f"n{n}" == series_model else [first]
        (data / "models" / f"n{n}.yaml").write_text(
            f"name: n{n}\nmodel: checkpoint:world-cnn.pt\nlayers: [layer3, layer4, fc]\nhead: fc\n"
            "spatial_layer: layer4\nfinal_layer: fc\n"
            f"preprocessing: {{size: 64, resize: 64, mean: {list(WORLD_MEAN)}, std: {list(WORLD_STD)}}}\n"
            f"probe_set: csv:probe-n{n}.csv\nconcept_sets: [{', '.join(sets)}]\nclip: checkpoint:world-clip.pt\n")


DRY_RUN_MODELS = {
    "resnet50": (
        "model: torchvision:resnet50?weights=none\nlayers: [layer3, layer4, fc]\nhead: fc\nspatial_layer: layer4\n"
        "final_layer: fc\n"
        "preprocessing: {size: 224, resize: 256, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n"),
    "vit-b16": (
        "model: timm:vit_base_patch16_224?pretrained=false\nlayers: [blocks.11, norm, head]\nhead: head\n"
        "spatial_layer: norm\ngradcam_layer: blocks.11.norm1\nfinal_layer: head\ntoken_pooling: cls\n"
        "preprocessing: {size: 224, resize: 248}\n"),
}
DRY_RUN_CLIP = "openclip:ViT-B-32?pretrained=none"


def prepare_dry_run(data: Path, image_counts: tuple[int, int], concept_sizes: dict[str, int], models: list[str]) -> None:
    """A 4-class ImageFolder of 256-px JPEG world scenes and a manifest of its first images, WordNet
    samples, and per architecture two registry files: `<name>` on the folder, `<name>-small` on the
    manifest."""
    import pandas as pd

    data.mkdir(parents=True)
    pixels, labels, names = world_images(image_counts[1], 256, num_classes=4)
    rows = pd.DataFrame(write_folder(data / "images", pixels, labels, names, "jpg"), columns=["path", "label", "label_name"])
    rows.head(image_counts[0]).to_csv(data / "probe-small.csv", index=False)
    write_concept_sets(data, concept_sizes)
    (data / "models").mkdir()
    for name in models:
        for suffix, probe in (("", "imagefolder:images"), ("-small", "csv:probe-small.csv")):
            (data / "models" / f"{name}{suffix}.yaml").write_text(
                f"name: {name}{suffix}\n{DRY_RUN_MODELS[name]}probe_set: {probe}\n"
                f"concept_sets: [{', '.join(concept_sizes)}]\nclip: {DRY_RUN_CLIP}\n")


# ---------------------------------------------------------------------------------------------
# reports


def _seconds(s: float) -> str:
    if s != s:
        return "n/a"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 100:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s" if s >= 1 else f"{s:.2f} s"


def _exponent(b: float) -> str:
    return "n/a" if b != b else f"{b:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def growth_table(results: dict[int, dict[str, dict]], stages, size_label: str) -> str:
    """One row per stage: time at each size, its exponent, extra peak memory at each size, its exponent."""
    sizes = sorted(results)
    header = ["Stage", *[f"{size_label} {s:,}" for s in sizes], "b (time)",
              *[f"MiB {s:,}" for s in sizes], "b (memory)"]
    rows, totals = [], [0.0] * len(sizes)
    for stage in stages:
        seconds = [results[s][stage.label]["seconds"] for s in sizes]
        memory = [results[s][stage.label]["extra_peak_mib"] for s in sizes]
        totals = [t + x for t, x in zip(totals, seconds)]
        rows.append([stage.label, *[_seconds(x) for x in seconds], _exponent(growth_exponent(sizes, seconds)),
                     *[f"{x:,.0f}" for x in memory], _exponent(growth_exponent(sizes, memory))])
    rows.append(["**all stages**", *[_seconds(x) for x in totals], _exponent(growth_exponent(sizes, totals)),
                 *[""] * len(sizes), ""])
    return _table(header, rows)


def run_growth(args, work: Path) -> None:
    image_counts = [32, 64, 128] if args.quick else [1000, 2000, 4000, 8000]
    concept_sizes = {"c50": 50, "c100": 100, "c200": 200} if args.quick else {
        "c1k": 1000, "c10k": 10_000, "wordnet": WORDNET_NOUNS}
    series_n = image_counts[1]
    data = work / "growth" / "data"
    started = time.monotonic()
    prepare_growth(data, image_counts, concept_sizes, f"n{series_n}")
    print(f"\ngrowth: data folder {data} ready in {time.monotonic() - started:.0f} s", flush=True)
    first = next(iter(concept_sizes))

    def report(job, r):
        stage, model, concept_set = job
        print(f"  {model} {concept_set if stage.per_concept_set else ''} {stage.label}: {r['seconds']:.1f} s, "
              f"{r['extra_peak_mib']:.0f} MiB, rows {r['rows']}", flush=True)

    jobs = [(stage, f"n{n}", first) for n in image_counts for stage in GROWTH_STAGES]
    jobs += [(stage, f"n{series_n}", name) for name in list(concept_sizes)[1:] for stage in CONCEPT_STAGES]
    results = iter(measure_stages(data, jobs, report))
    by_images = {n: {stage.label: next(results) for stage in GROWTH_STAGES} for n in image_counts}
    by_concepts: dict[int, dict[str, dict]] = {concept_sizes[first]: by_images[series_n]}
    for name, size in list(concept_sizes.items())[1:]:
        by_concepts[size] = {stage.label: next(results) for stage in CONCEPT_STAGES}
    threads = by_images[image_counts[0]][GROWTH_STAGES[0].label]["threads"]
    print(f"\n### Growth with the number of probe images (world CNN and CLIP, 64 px, random init; "
          f"{concept_sizes[first]:,} WordNet nouns; {threads} torch thread(s))\n")
    print(growth_table(by_images, GROWTH_STAGES, "n ="))
    print(f"\n### Growth with the number of concepts ({series_n:,} probe images; random WordNet samples, "
          f"then all {WORDNET_NOUNS:,} nouns)\n")
    print(growth_table(by_concepts, CONCEPT_STAGES, "M ="))
    print(f"\ngrowth: {time.monotonic() - started:.0f} s in all", flush=True)


def line_projection(x_small: float, t_small: float, x_large: float, t_large: float, x_target: float):
    """(projected time, seconds per unit, fixed seconds) of the line through two measurements,
    extended to x_target. Where noise makes the line meaningless (the larger took no longer, or the
    line would start below zero), the larger measurement is taken as all per unit (fixed = 0)."""
    per_unit = (t_large - t_small) / (x_large - x_small)
    fixed = t_small - per_unit * x_small
    if per_unit <= 0 or fixed < 0:
        return t_large * x_target / x_large, t_large / x_large, 0.0
    return fixed + per_unit * x_target, per_unit, fixed


def dry_run_table(model: str, m: dict) -> str:
    """The dry run's table of one model from its measurements `m` (see `run_dry`)."""
    n_small, n_large, m_small, m_large = m["n_small"], m["n_large"], m["m_small"], m["m_large"]
    small_images, results, large_concepts = m["small_images"], m["results"], m["large_concepts"]

    def views(stage, r, images):
        return r["rows"].get(stage.selection[0]) or images

    clip_stage = next(s for s in STAGES if s.selection == ("clip_image_embeddings",))
    views_large = views(clip_stage, results[clip_stage.label], n_large)
    views_small = views(clip_stage, small_images[clip_stage.label], n_small)
    rows, total, total_upper = [], 0.0, 0.0
    for stage in STAGES:
        r = results[stage.label]
        if stage.unit == "concepts":
            first, second = r, large_concepts[stage.label]
            x_small, x_large, target, unit = m_small, m_large, WORDNET_NOUNS, "concepts"
        elif stage.unit in ("images", "views"):
            first, second = small_images[stage.label], r
            if stage.unit == "views":
                # a fixed number of views per image (the full image and its grid crops, or one Grad-CAM
                # window), so the large run's views per image hold at 50,000 images
                x_small, x_large, unit = views(stage, first, n_small), views(stage, second, n_large), "views"
                target = x_large / n_large * IMAGENET_VAL_IMAGES
            else:
                x_small, x_large, target, unit = n_small, n_large, IMAGENET_VAL_IMAGES, "images"
        else:
            total += r["seconds"]
            total_upper += r["seconds"]
            rows.append([stage.label, _seconds(r["seconds"]), "fixed per model", "", f"{r['extra_peak_mib']:,.0f}",
                         _seconds(r["seconds"]), _seconds(r["seconds"])])
            continue
        projected, per_unit, fixed = line_projection(x_small, first["seconds"], x_large, second["seconds"], target)
        upper = second["seconds"] * target / x_large  # everything counted as per unit
        total += projected
        total_upper += upper
        rate = f"{1 / per_unit:,.1f} {unit}/s + {_seconds(fixed)}" if fixed > 0 else f"{1 / per_unit:,.1f} {unit}/s"
        rows.append([stage.label, f"{_seconds(first['seconds'])} / {_seconds(second['seconds'])}", rate,
                     f"{x_large / second['seconds']:,.1f} {unit}/s",
                     f"{first['extra_peak_mib']:,.0f} / {second['extra_peak_mib']:,.0f}",
                     _seconds(projected), _seconds(upper)])
    rows.append(["**all stages**", "", "", "", "", f"**{_seconds(total)}**", f"**{_seconds(total_upper)}**"])
    threads = results[STAGES[0].label]["threads"]
    caption = (f"Dry run `{model}` (random init) with `{DRY_RUN_CLIP}`: {n_small} / {n_large} images (4 classes; "
               f"{views_small / n_small:.1f} / {views_large / n_large:.1f} CLIP views per image), "
               f"{m_small:,} / {m_large:,} WordNet nouns; {threads} torch thread(s)")
    return f"### {caption}\n\n" + _table(
        ["Stage", "Measured (small / large)", "Rate: line through both + fixed", "Rate: large, all per unit",
         "Extra peak MiB (small / large)", f"Projected {IMAGENET_VAL_IMAGES:,} images x {WORDNET_NOUNS:,} nouns: line",
         "Projected: all per unit"], rows)


def run_dry(args, work: Path) -> None:
    n_small, n_large = (4, 8) if args.quick else args.dry_images
    m_small, m_large = (40, 120) if args.quick else args.dry_concepts
    data = work / "dry-run" / "data"
    started = time.monotonic()
    prepare_dry_run(data, (n_small, n_large), {"wordnet-small": m_small, "wordnet-large": m_large}, args.models)
    print(f"\ndry run: data folder {data} ready in {time.monotonic() - started:.0f} s", flush=True)
    image_stages = [s for s in STAGES if s.unit in ("images", "views")]
    for model in args.models:
        def report(job, r):
            print(f"  {job[1]} {job[2] if job[0].per_concept_set else ''} {job[0].label}: {r['seconds']:.1f} s, "
                  f"{r['extra_peak_mib']:.0f} MiB, rows {r['rows']}", flush=True)

        jobs = [(stage, f"{model}-small", None) for stage in image_stages]
        jobs += [(stage, model, "wordnet-small") for stage in STAGES]
        jobs += [(stage, model, "wordnet-large") for stage in STAGES if stage.unit == "concepts"]
        done = measure_stages(data, jobs, report)
        m = {"n_small": n_small, "n_large": n_large, "m_small": m_small, "m_large": m_large,
             "small_images": {s.label: r for (s, name, _), r in zip(jobs, done) if name != model},
             "results": {s.label: r for (s, name, c), r in zip(jobs, done) if name == model and c == "wordnet-small"},
             "large_concepts": {s.label: r for (s, _, c), r in zip(jobs, done) if c == "wordnet-large"}}
        (work / "dry-run" / f"{model}.json").write_text(json.dumps(m, indent=1))
        print("\n" + dry_run_table(model, m))
    print(f"\ndry run: {time.monotonic() - started:.0f} s in all", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--growth", action="store_true", help="growth with probe images and concepts")
    parser.add_argument("--dry-run", action="store_true", help="ResNet-50 and ViT-B/16 at real size, projected")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a check that everything runs)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the data (default: a new temp folder)")
    parser.add_argument("--dry-images", type=int, nargs=2, default=[6, 18], metavar=("SMALL", "LARGE"),
                        help="the two probe sets the image stages run on (then extended to 50,000 images)")
    parser.add_argument("--dry-concepts", type=int, nargs=2, default=[200, 800], metavar=("SMALL", "LARGE"),
                        help="the two WordNet samples the concept stages run on (then extended to all nouns)")
    parser.add_argument("--models", nargs="+", default=list(DRY_RUN_MODELS), choices=list(DRY_RUN_MODELS))
    parser.add_argument("--report", type=Path, help="print the dry-run tables again from the measurements under this work folder")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.report:
        for path in sorted((args.report / "dry-run").glob("*.json")):
            print("\n" + dry_run_table(path.stem, json.loads(path.read_text())))
        return 0
    if not (args.growth or args.dry_run):
        parser.error("choose --growth and/or --dry-run")
    import tempfile

    import torch

    work = args.work or Path(tempfile.mkdtemp(prefix="www-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; work folder {work}")
    if args.growth:
        run_growth(args, work)
    if args.dry_run:
        run_dry(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
