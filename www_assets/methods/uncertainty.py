"""Misprediction detection from a confidence score (seed 001 fig. 4 right, table S.2).

A confidence score (heatmap similarity between class and sample explanation, or the
maximum softmax probability, MSP) should be low for mispredicted samples. Two views:

* AUROC of detecting mispredictions, with the mispredicted samples as positives and
  ``-confidence`` as the detector's score (Mann-Whitney rank formula, ties count 1/2).
* Rejection curve: reject the least confident samples first and report, per share
  rejected, the fraction of all mispredictions caught and the accuracy of the rest.

Uncertainty of the AUROC: a percentile bootstrap (`bootstrap_auroc_ci`), resampling the
mispredicted and the correct samples separately (stratified), so every replicate has both.
Why heatmap similarity does or does not separate them: `top_k_jaccard`, how often the class
track and the sample track pick the same neurons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["average_ranks", "auroc", "misprediction_auroc", "bootstrap_auroc_ci", "rejection_curve", "top_k_jaccard"]


def _as_1d(values: object, name: str, dtype: type | None = None) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensors
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _scores_and_flags(scores: object, flags: object, score_name: str, flag_name: str):
    score_array = _as_1d(scores, score_name, np.float64)
    flag_array = _as_1d(flags, flag_name)
    if flag_array.dtype != bool:
        if not np.isin(flag_array, (0, 1)).all():
            raise ValueError(f"{flag_name} must be boolean (or 0/1)")
        flag_array = flag_array.astype(bool)
    if score_array.shape != flag_array.shape:
        raise ValueError(
            f"{score_name} and {flag_name} must have the same length, "
            f"got {score_array.shape[0]} and {flag_array.shape[0]}"
        )
    if not np.isfinite(score_array).all():
        raise ValueError(f"{score_name} contains NaN or infinite values")
    return score_array, flag_array


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Start index of each run of equal values in the sorted array.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.shape[0]]
    run_ranks = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(values.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def auroc(scores: object, is_positive: object) -> float:
    """Area under the ROC curve, P(score of a positive > score of a negative) + 1/2 P(tie).

    Mann-Whitney: ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with R_pos the
    sum of the positives' average ranks. Equals ``sklearn.metrics.roc_auc_score``.

    Args:
        scores: (N,) real scores, higher = more likely positive.
        is_positive: (N,) bool (or 0/1) labels.

    Raises:
        ValueError: if only one class is present, on NaN scores or mismatched lengths.
    """
    score_array, positive = _scores_and_flags(scores, is_positive, "scores", "is_positive")
    num_positive = int(positive.sum())
    num_negative = positive.shape[0] - num_positive
    if num_positive == 0 or num_negative == 0:
        raise ValueError(
            f"AUROC needs both classes; got {num_positive} positives and {num_negative} negatives"
        )
    rank_sum = average_ranks(score_array)[positive].sum()
    return float((rank_sum - num_positive * (num_positive + 1) / 2.0) / (num_positive * num_negative))


def misprediction_auroc(confidence: object, correct: object) -> float:
    """AUROC of flagging mispredictions by low confidence.

    Positives are the mispredicted samples (``correct == False``) and the detector's
    score is ``-confidence``: 1.0 means every misprediction is less confident than
    every correct prediction, 0.5 is chance. This is the number of table S.2 (MSP
    0.808, heatmap similarity 0.903 on ResNet-50 / ImageNet val).

    Args:
        confidence: (N,) heatmap similarity, MSP, or any score where high = trusted.
        correct: (N,) bool, whether the prediction was right.
    """
    confidence_array, correct_array = _scores_and_flags(confidence, correct, "confidence", "correct")
    return auroc(-confidence_array, ~correct_array)


def _auroc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every row of scores (R, N) against the same flags (N,), by the rank formula."""
    order = np.argsort(scores, axis=1, kind="stable")
    ranks = np.empty_like(scores)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, scores.shape[1] + 1, dtype=np.float64)
    # ties share their mean rank: fall back to the exact routine for rows that have ties
    ordered = np.take_along_axis(scores, order, axis=1)
    tied = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    for r in np.flatnonzero(tied):
        ranks[r] = average_ranks(scores[r])
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def bootstrap_auroc_ci(
    confidence: object, correct: object, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of `misprediction_auroc`.

    Replicate r draws, with replacement, as many mispredicted samples from the mispredicted
    ones and as many correct samples from the correct ones as there are (stratified), with
    `np.random.default_rng(seed)`: first the (n_boot, n_wrong) indices into the mispredicted
    samples, then the (n_boot, n_correct) indices into the correct ones. The interval is the
    (1 - level)/2 and (1 + level)/2 quantiles (linear interpolation) of the replicate AUROCs.
    """
    confidence_array, correct_array = _scores_and_flags(confidence, correct, "confidence", "correct")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    wrong_scores = -confidence_array[~correct_array]
    right_scores = -confidence_array[correct_array]
    if not len(wrong_scores) or not len(right_scores):
        raise ValueError("the interval needs both mispredicted and correct samples")
    rng = np.random.default_rng(seed)
    wrong_index = rng.integers(0, len(wrong_scores), size=(n_boot, len(wrong_scores)))
    right_index = rng.integers(0, len(right_scores), size=(n_boot, len(right_scores)))
    flags = np.r_[np.ones(len(wrong_scores), bool), np.zeros(len(right_scores), bool)]
    values = []
    for start in range(0, n_boot, 100):  # chunks keep memory at 100 x N
        block = np.concatenate([wrong_scores[wrong_index[start:start + 100]], right_scores[right_index[start:start + 100]]], axis=1)
        values.append(_auroc_rows(block, flags))
    replicate = np.concatenate(values)
    low, high = np.quantile(replicate, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def top_k_jaccard(first: object, second: object) -> np.ndarray:
    """Per row, |A & B| / |A | B| of two equally long lists of neuron ids (e.g. the class and
    the sample track's top-k); 1 = the same neurons, 0 = none shared."""
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError(f"need as many rows in both, got {len(first)} and {len(second)}")
    out = np.empty(len(first), dtype=np.float64)
    for i, (a, b) in enumerate(zip(first, second)):
        a, b = {int(v) for v in a}, {int(v) for v in b}
        union = a | b
        out[i] = len(a & b) / len(union) if union else np.nan
    return out


def rejection_curve(confidence: object, correct: object, steps: int | None = 101) -> pd.DataFrame:
    """Reject the least confident samples first; what is caught and what is left.

    Ties in confidence are resolved by expectation over random order: when the cut
    falls inside a group of equal confidence, the rejected part of the group counts
    its share of the group's mispredictions. The curve therefore does not depend on
    the order of the samples.

    Args:
        confidence: (N,) score, high = trusted.
        correct: (N,) bool.
        steps: number of evenly spaced rejection shares from 0 to 1 (rounded to whole
            samples, duplicates dropped); ``None`` gives every cut 0..N.

    Returns:
        DataFrame, one row per cut, ascending:
        ``n_rejected``; ``share_rejected`` = n_rejected / N;
        ``hits`` = expected number of mispredictions among the rejected;
        ``mispredictions_caught`` = hits / number of mispredictions (NaN if there are
        none); ``accuracy_of_kept`` = correct kept / kept (NaN when all are rejected).
    """
    confidence_array, correct_array = _scores_and_flags(confidence, correct, "confidence", "correct")
    total = confidence_array.shape[0]
    if total == 0:
        raise ValueError("confidence is empty")
    if steps is None:
        cuts = np.arange(total + 1)
    else:
        if steps < 2:
            raise ValueError(f"steps must be at least 2 (shares 0 and 1) or None, got {steps}")
        cuts = np.unique(np.rint(np.linspace(0.0, 1.0, steps) * total).astype(np.int64))

    order = np.argsort(confidence_array, kind="stable")
    ordered_confidence = confidence_array[order]
    ordered_wrong = (~correct_array[order]).astype(np.float64)
    wrong_before = np.r_[0.0, np.cumsum(ordered_wrong)]  # wrong_before[i] = mispredictions in first i
    # Tie group of the last rejected sample: [group_start, group_end) in the sorted order.
    last = np.clip(cuts - 1, 0, total - 1)
    group_start = np.searchsorted(ordered_confidence, ordered_confidence[last], side="left")
    group_end = np.searchsorted(ordered_confidence, ordered_confidence[last], side="right")
    group_wrong = wrong_before[group_end] - wrong_before[group_start]
    taken_from_group = cuts - group_start
    hits = wrong_before[group_start] + group_wrong * taken_from_group / (group_end - group_start)
    hits = np.where(cuts == 0, 0.0, hits)

    total_wrong = float(wrong_before[-1])
    kept = total - cuts
    correct_kept = kept - (total_wrong - hits)
    with np.errstate(invalid="ignore", divide="ignore"):
        caught = hits / total_wrong if total_wrong > 0 else np.full(cuts.shape, np.nan)
        accuracy_kept = np.where(kept > 0, correct_kept / np.maximum(kept, 1), np.nan)
    return pd.DataFrame(
        {
            "n_rejected": cuts,
            "share_rejected": cuts / total,
            "hits": hits,
            "mispredictions_caught": caught,
            "accuracy_of_kept": accuracy_kept,
        }
    )
