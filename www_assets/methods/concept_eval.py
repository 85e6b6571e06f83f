"""Scoring the selected concepts of every method against each neuron's truth, and the summary
over neurons (mean +- standard error, paired t-tests against the reference methods).

Inputs are the catalog's frames (`neuron_concepts`, `concept_eval`); the metrics themselves
are in `metrics.py`. Embedding models enter as callables `encode(list[str]) -> (n, d)`.

Two readings of a tie. When a neuron's best score is shared (within the scoring's tie
tolerance) by several concepts, the strict reading (`hit`, `f1`, ...) judges the concept the
tie-break selected; the tie-aware reading `hit_tie_aware` counts a hit when any concept of the
tied set (or of the selection) is a truth word. `tied_top` is 1 for a neuron whose top set
is tied, so its mean is the share of such neurons.

Which neurons are judged. A truth may mark neurons as not judged (hidden neurons whose best
attribute is below the truth floor, see `neuron_truth.py`); their rows stay in the per-neuron
table and the summary leaves them out, counting them in `n_candidates`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from www_assets.methods.metrics import embedding_cosines, f1, hit, mean_stderr, paired_t_test
from www_assets.methods.tables import REFERENCE_METHODS

__all__ = ["DESCRIPTIVE_METRICS", "METRICS", "evaluate_selections", "summarize_concept_eval", "truth_frame"]

METRICS = ("clip_cos", "text_cos", "f1", "hit", "hit_tie_aware", "tied_top")
#: Metrics that describe the neurons rather than rate a method (no winner is named).
DESCRIPTIVE_METRICS = ("tied_top",)
TRUTH_COLUMNS = ("truth_auroc", "truth_precision", "judged")


def truth_frame(truth) -> pd.DataFrame:
    """A layer's truth as a frame indexed by neuron with columns truth (words), truth_auroc,
    truth_precision and judged; a plain {neuron: words} mapping gives NaN scores and judges
    every neuron."""
    if isinstance(truth, pd.DataFrame):
        frame = truth.set_index("neuron") if "neuron" in truth.columns else truth
        return frame.reindex(columns=["truth", *TRUTH_COLUMNS])
    neurons = sorted(truth)
    return pd.DataFrame({"truth": [list(truth[n]) for n in neurons], "truth_auroc": np.nan,
                         "truth_precision": np.nan, "judged": True}, index=pd.Index(neurons, name="neuron"))


def evaluate_selections(selected: pd.DataFrame, truth_by_layer: dict, clip_encode, text_encode) -> pd.DataFrame:
    """Score each neuron's selected major concepts per method and layer against its truth.

    selected: rows of `neuron_concepts` (layer, neuron, method, kind, rank, concept, and
    optionally tie_size and tied); minor concepts are not judged, a NULL concept is an empty
    selection. truth_by_layer: layer -> truth (a `truth_frame` or a {neuron: words} mapping);
    layers and neurons without truth are left out."""
    frames = []
    major = selected[selected["kind"] == "major"]
    for (layer, method), rows in major.groupby(["layer", "method"]):
        if layer not in truth_by_layer or not len(truth_by_layer[layer]):
            continue
        truth = truth_frame(truth_by_layer[layer])
        rows = rows.sort_values("rank")
        by_neuron = rows.groupby("neuron")["concept"].apply(lambda s: [c for c in s if isinstance(c, str)])
        first = rows.groupby("neuron").first()
        neurons = [n for n in sorted(by_neuron.index) if n in truth.index]
        preds = [by_neuron[n] for n in neurons]
        gts = [list(truth.at[n, "truth"]) for n in neurons]
        tied = [_words(first.at[n, "tied"]) if "tied" in first.columns else [] for n in neurons]
        tie_size = [int(first.at[n, "tie_size"]) if "tie_size" in first.columns else 1 for n in neurons]
        frames.append(pd.DataFrame({
            "layer": layer, "method": method, "neuron": np.asarray(neurons, np.int32),
            "truth": gts, "predicted": preds,
            "clip_cos": embedding_cosines(preds, gts, clip_encode),
            "text_cos": embedding_cosines(preds, gts, text_encode),
            "f1": [f1(p, g) for p, g in zip(preds, gts)],
            "hit": [hit(p, g) for p, g in zip(preds, gts)],
            "hit_tie_aware": [hit([*p, *t], g) for p, t, g in zip(preds, tied, gts)],
            "tied_top": [float(size > 1) for size in tie_size],
            "tie_size": np.asarray(tie_size, np.int32),
            "truth_auroc": truth.loc[neurons, "truth_auroc"].to_numpy(float),
            "truth_precision": truth.loc[neurons, "truth_precision"].to_numpy(float),
            "judged": truth.loc[neurons, "judged"].to_numpy(bool),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["layer", "method", "neuron", "truth", "predicted", *METRICS, "tie_size", *TRUTH_COLUMNS])


def _words(value) -> list[str]:
    return [w for w in value if isinstance(w, str)] if value is not None and not isinstance(value, float) else []


def summarize_concept_eval(per_neuron: pd.DataFrame) -> pd.DataFrame:
    """Mean +- standard error of every metric per model x concept set x layer x method over its
    neurons, and the p-value of a paired t-test (pairs = the same neuron) of each method against
    each reference method (`REFERENCE_METHODS`); NaN against itself or an absent reference.
    Only judged neurons count (column `judged`, when present); `n_candidates` is the number of
    neurons with a truth before that filter. Metrics absent from the table are left out."""
    rows = []
    metrics = [m for m in METRICS if m in per_neuron.columns]
    for (model, cset, layer), group in per_neuron.groupby(["model", "concept_set", "layer"]):
        candidates = group["neuron"].nunique()
        # every method keeps its rows, with n = 0 and NaN means when no neuron is judged
        judged = group["judged"].astype(bool) if "judged" in group.columns else pd.Series(True, index=group.index)
        wide = {m: g[judged.loc[g.index]].set_index("neuron") for m, g in group.groupby("method")}
        for method, g in wide.items():
            for metric in metrics:
                mean, stderr, n = mean_stderr(g[metric].to_numpy(float))
                p = {}
                for ref in REFERENCE_METHODS:
                    if ref in wide and ref != method:
                        common = g.index.intersection(wide[ref].index)
                        p[ref] = paired_t_test(g.loc[common, metric].to_numpy(float),
                                               wide[ref].loc[common, metric].to_numpy(float))[1]
                    else:
                        p[ref] = np.nan
                rows.append((model, cset, layer, method, metric, mean, stderr, n, candidates,
                             *(p[r] for r in REFERENCE_METHODS)))
    summary = pd.DataFrame(rows, columns=["model", "concept_set", "layer", "method", "metric", "mean", "stderr", "n",
                                          "n_candidates", *(f"p_value_vs_{r}" for r in REFERENCE_METHODS)])
    summary[["n", "n_candidates"]] = summary[["n", "n_candidates"]].astype(np.int32)
    return summary
