"""Scoring the selected concepts of every method against each neuron's truth, and the summary
over neurons (mean +- standard error, paired t-tests against the reference methods).

Inputs are the catalog's frames (`neuron_concepts`, `concept_eval`); the metrics themselves
are in `metrics.py`. Embedding models enter as callables `encode(list[str]) -> (n, d)`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from www_assets.methods.metrics import embedding_cosines, f1, hit, mean_stderr, paired_t_test
from www_assets.methods.tables import REFERENCE_METHODS

__all__ = ["METRICS", "evaluate_selections", "summarize_concept_eval"]

METRICS = ("clip_cos", "text_cos", "f1", "hit")


def evaluate_selections(selected: pd.DataFrame, truth_by_layer: dict, clip_encode, text_encode) -> pd.DataFrame:
    """Score each neuron's selected major concepts per method and layer against its truth.

    selected: rows of `neuron_concepts` (layer, neuron, method, kind, rank, concept); minor
    concepts are not judged, a NULL concept is an empty selection. truth_by_layer: layer ->
    {neuron: truth words}; layers and neurons without truth are left out."""
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


def summarize_concept_eval(per_neuron: pd.DataFrame) -> pd.DataFrame:
    """Mean +- standard error of every metric per model x concept set x layer x method over its
    neurons, and the p-value of a paired t-test (pairs = the same neuron) of each method against
    each reference method (`REFERENCE_METHODS`); NaN against itself or an absent reference."""
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
