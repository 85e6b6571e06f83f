"""How much of the headline tables is the world CLIP's seed?

Trains the world CLIP once per seed (everything else as in data/world.yaml), recomputes what
depends on it (CLIP image and text embeddings, concept scores and selections, the per-neuron
evaluation and the summary) for every registered model and concept set, and prints, per
model x layer x concept set x method x metric, the mean over seeds, the standard deviation
and the range (max - min). A difference between two methods smaller than that spread says
little. Not part of the default run: each seed retrains the CLIP and rescores every neuron.

Each seed runs in its own process on a copy of a materialized data folder (the classifiers,
the world images and the probe tables are shared, read-only, by symbolic links), with a
throw-away Dagster instance, through Dagster's public `materialize`:

    .venv/bin/python benchmarks/clip_seed_spread.py --seeds 0 1 2 --work /tmp/clip-seeds
    .venv/bin/python benchmarks/clip_seed_spread.py --report /tmp/clip-seeds   # print again

Prints the world CLIP's accuracies per seed, then the spread of the summary, and writes both
as CSV under --work. Seeds already done under --work are reused (delete a seed's folder to
redo it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# tables whose files the CLIP's retraining rewrites; everything else is linked from --source
REWRITTEN = ("world_clip", "clip_image_embeddings", "clip_gradcam_embeddings", "clip_text_embeddings",
             "concept_scores", "neuron_concepts", "concept_eval", "evaluation_summary")
HEADLINE_METRICS = ("clip_cos", "text_cos", "f1", "hit", "hit_tie_aware")


def prepare(source: Path, target: Path) -> None:
    """A data folder for one seed: registry files copied, unchanged tables and artifacts linked,
    the tables the seed rewrites copied (so the seed's run replaces its own copy only)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("models", "concepts", "wordnet"):
        if (source / name).exists() and not (target / name).exists():
            shutil.copytree(source / name, target / name)
    for name in ("concept_sets.yaml", "world.yaml"):
        shutil.copy2(source / name, target / name)
    warehouse = target / "warehouse"
    warehouse.mkdir(exist_ok=True)
    for table in sorted((source / "warehouse").iterdir()):
        if (warehouse / table.name).exists():
            continue
        if table.name in REWRITTEN:
            shutil.copytree(table, warehouse / table.name)
        else:
            (warehouse / table.name).symlink_to(table.resolve())
    artifacts = target / "artifacts"
    artifacts.mkdir(exist_ok=True)
    for item in sorted((source / "artifacts").iterdir()):
        if (artifacts / item.name).exists():
            continue
        if item.name == "models":  # the CLIP checkpoint is rewritten; the classifiers are read
            (artifacts / "models").mkdir()
            for checkpoint in item.iterdir():
                (artifacts / "models" / checkpoint.name).symlink_to(checkpoint.resolve())
            (artifacts / "models" / "world-clip.pt").unlink(missing_ok=True)
        elif item.is_dir():
            (artifacts / item.name).symlink_to(item.resolve())


def run_seed(seed: int) -> None:
    """In the child process (WWW_DATA_DIR set): retrain the CLIP and rescore with it."""
    import dagster as dg
    import pandas as pd

    from www_assets.definitions import defs
    from www_assets.methods.concept_eval import summarize_concept_eval
    from www_assets.partitions import shared_keys
    from www_resources.registry import get_model, scan_models
    from www_resources.storage import default_warehouse

    instance = dg.DagsterInstance.ephemeral()
    names = sorted(scan_models().entries)
    concept_sets = sorted({c for name in names for c in get_model(name).concept_sets})
    # the shared CLIP partitions (www_assets/partitions.py): computed once for the models that share them
    shared = {name: shared_keys(get_model(name)) for name in names}
    instance.add_dynamic_partitions("models", names)
    instance.add_dynamic_partitions("concept_sets", concept_sets)
    instance.add_dynamic_partitions("clips", sorted({c for c, _ in shared.values()}))
    instance.add_dynamic_partitions("probe_sets", sorted({p for _, p in shared.values()}))
    assets = list(defs.assets)

    def step(selection, partition_key=None, run_config=None):
        started = time.monotonic()
        result = dg.materialize(assets, selection=selection, partition_key=partition_key, instance=instance,
                                resources=defs.resources, run_config=run_config or {}, raise_on_error=True)
        assert result.success
        print(f"seed {seed}: {', '.join(selection)} [{partition_key or '-'}] {time.monotonic() - started:.0f}s",
              flush=True)

    step(["world_clip"], run_config={"ops": {"world_clip": {"config": {"seed": seed}}}})
    for clip, probe in sorted(set(shared.values())):
        step(["clip_image_embeddings"], dg.MultiPartitionKey({"clip": clip, "probe": probe}))
    for clip, concept_set in sorted({(shared[n][0], c) for n in names for c in get_model(n).concept_sets}):
        step(["clip_text_embeddings"], dg.MultiPartitionKey({"clip": clip, "concept_set": concept_set}))
    for name in names:
        step(["clip_gradcam_embeddings"], name)
        for concept_set in get_model(name).concept_sets:
            key = dg.MultiPartitionKey({"model": name, "concept_set": concept_set})
            step(["concept_scores", "neuron_concepts", "concept_eval"], key)
    summary = summarize_concept_eval(default_warehouse().read("concept_eval"))
    clip = default_warehouse().read("world_clip")
    out = Path(os.environ["WWW_DATA_DIR"])
    summary.assign(seed=seed).to_csv(out / "summary.csv", index=False)
    clip.assign(seed=seed).to_csv(out / "world_clip.csv", index=False)
    pd.DataFrame({"done": [True]}).to_csv(out / "done.csv", index=False)


def report(work: Path) -> None:
    import pandas as pd

    from www_assets.methods.report import LayerRoles
    from www_assets.methods.tables import METHOD_LABELS, METRIC_LABELS

    seeds = sorted(p for p in work.glob("seed-*") if (p / "done.csv").exists())
    if not seeds:
        print(f"no finished seed under {work}")
        return
    clip = pd.concat([pd.read_csv(p / "world_clip.csv") for p in seeds], ignore_index=True)
    summary = pd.concat([pd.read_csv(p / "summary.csv") for p in seeds], ignore_index=True)
    wide = clip.pivot(index="metric", columns="seed", values="value")
    print("\nWorld CLIP per seed (test split)\n")
    print(wide.loc[[m for m in wide.index if m.startswith(("zero_shot", "retrieval"))]].to_markdown(floatfmt=".4f"))
    from www_assets.evaluation import registry_entry

    roles = LayerRoles(registry_entry)
    summary = summary[summary["metric"].isin(HEADLINE_METRICS)]
    keys = ["model", "layer", "concept_set", "method", "metric"]
    spread = summary.groupby(keys)["mean"].agg(["mean", "std", "min", "max", "count"]).reset_index()
    spread["range"] = spread["max"] - spread["min"]
    spread["role"] = [roles.role(m, l) for m, l in zip(spread["model"], spread["layer"])]
    spread.to_csv(work / "spread.csv", index=False)
    clip.to_csv(work / "world_clip.csv", index=False)
    print(f"\nSpread over {len(seeds)} CLIP seeds ({', '.join(p.name[5:] for p in seeds)}): mean, standard "
          "deviation and range (max - min) of each table cell\n")
    for (model, role, concept_set), rows in spread.groupby(["model", "role", "concept_set"]):
        cells = rows.pivot(index="method", columns="metric", values=["mean", "std", "range"])
        lines = []
        for method in [m for m in METHOD_LABELS if m in cells.index]:
            line = [METHOD_LABELS[method]]
            for metric in [m for m in HEADLINE_METRICS if m in rows["metric"].unique()]:
                line.append(f"{cells.loc[method, ('mean', metric)]:.3f} ± {cells.loc[method, ('std', metric)]:.3f} "
                            f"(range {cells.loc[method, ('range', metric)]:.3f})")
            lines.append(line)
        header = ["Method", *[METRIC_LABELS[m] for m in HEADLINE_METRICS if m in rows["metric"].unique()]]
        print(f"`{model}` {role}, concept set `{concept_set}`\n")
        print("| " + " | ".join(header) + " |\n|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|")
        print("\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--source", type=Path, default=ROOT / "data", help="a materialized data folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/www-clip-seeds"))
    parser.add_argument("--report", type=Path, help="only print the spread of the seeds done under this folder")
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_seed is not None:
        run_seed(args.one_seed)
        return 0
    if args.report:
        report(args.report)
        return 0
    if not (args.source / "warehouse" / "concept_eval").exists():
        print(f"{args.source} has no concept_eval: materialize the pipeline first (make demo)", file=sys.stderr)
        return 2
    for seed in args.seeds:
        folder = args.work / f"seed-{seed}"
        if (folder / "done.csv").exists():
            print(f"seed {seed}: done before, reused")
            continue
        prepare(args.source.resolve(), folder)
        env = {**os.environ, "WWW_DATA_DIR": str(folder), "PYTHONPATH": str(ROOT)}
        env.pop("WWW_MODELS_DIR", None)
        started = time.monotonic()
        subprocess.run([sys.executable, __file__, "--one-seed", str(seed)], env=env, check=True)
        print(f"seed {seed}: {time.monotonic() - started:.0f}s", flush=True)
    report(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
