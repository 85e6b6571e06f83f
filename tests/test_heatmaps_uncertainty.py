"""Heatmaps, region masks, heatmap similarity, misprediction AUROC, rejection curves, figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from www_assets.methods.heatmaps import (
    concept_heatmap,
    heatmap_similarity,
    normalise_heatmap_weights,
    region_masks,
    spatial_maps,
)
from www_assets.methods.uncertainty import auroc, average_ranks, misprediction_auroc, rejection_curve

# ---------------------------------------------------------------- spatial maps


def test_spatial_maps_conv_unchanged() -> None:
    maps = torch.randn(2, 3, 4, 5)
    assert spatial_maps(maps) is maps


def test_spatial_maps_tokens_match_manual_reshape() -> None:
    batch, side, channels = 2, 3, 4
    tokens = torch.randn(batch, 1 + side * side, channels)
    maps = spatial_maps(tokens, num_prefix_tokens=1)
    assert maps.shape == (batch, channels, side, side)
    for b in range(batch):
        for c in range(channels):
            for row in range(side):
                for column in range(side):
                    assert maps[b, c, row, column] == tokens[b, 1 + row * side + column, c]


def test_spatial_maps_errors() -> None:
    with pytest.raises(ValueError, match="square grid"):
        spatial_maps(torch.randn(1, 10, 4), num_prefix_tokens=0)
    with pytest.raises(ValueError, match="num_prefix_tokens must lie"):
        spatial_maps(torch.randn(1, 5, 4), num_prefix_tokens=5)
    with pytest.raises(ValueError, match="only applies to token"):
        spatial_maps(torch.randn(1, 4, 2, 2), num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"\(B, C, h, w\) or tokens"):
        spatial_maps(torch.randn(4, 2))


# ---------------------------------------------------------------- NAMs and heatmaps


def test_concept_heatmap_hand_case() -> None:
    nams = torch.stack([torch.full((2, 2), 4.0), torch.full((2, 2), 8.0)])[None]  # (1, 2, 2, 2)
    heatmap = concept_heatmap(nams, torch.tensor([[3.0, 1.0]]))
    # weights -> 0.75, 0.25; 0.75 * 4 + 0.25 * 8 = 5
    torch.testing.assert_close(heatmap, torch.full((1, 2, 2), 5.0))


def test_concept_heatmap_weight_normalisation_rules() -> None:
    # Non-negative: sums to 1 (the paper).
    torch.testing.assert_close(normalise_heatmap_weights(torch.tensor([[2.0, 6.0]])), torch.tensor([[0.25, 0.75]]))
    # Sum <= 0: divided by the sum of absolute values, signs kept (the map is not flipped).
    torch.testing.assert_close(normalise_heatmap_weights(torch.tensor([[-1.0, -3.0]])), torch.tensor([[-0.25, -0.75]]))
    # All zero: uniform.
    torch.testing.assert_close(normalise_heatmap_weights(torch.zeros(1, 4)), torch.full((1, 4), 0.25))
    # Mixed signs with a positive sum: same direction as w / sum(w), so the same cosine.
    generator = torch.Generator().manual_seed(0)
    nams = torch.rand(1, 2, 5, 5, generator=generator)
    weights = torch.tensor([[3.0, -1.0]])
    paper = (weights[0, 0] / 2.0) * nams[0, 0] + (weights[0, 1] / 2.0) * nams[0, 1]
    similarity = heatmap_similarity(concept_heatmap(nams, weights), paper[None])
    torch.testing.assert_close(similarity, torch.ones(1))


def test_concept_heatmap_errors() -> None:
    with pytest.raises(ValueError, match="weights must be"):
        concept_heatmap(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        concept_heatmap(torch.zeros(1, 2, 3, 3), torch.tensor([[1.0, float("nan")]]))


# ---------------------------------------------------------------- region masks


def test_region_mask_keeps_top_30_percent_of_a_ramp() -> None:
    ramp = torch.arange(100.0).reshape(1, 1, 10, 10)
    mask = region_masks(ramp)
    assert int(mask.sum()) == 30
    assert mask.flatten()[70:].all() and not mask.flatten()[:70].any()
    # An uneven size (63 pixels, values 0..62): the 70th percentile interpolates to 43.4, so the
    # 19 values 44..62 are kept, always the largest ones.
    ramp = torch.randperm(63).float().reshape(1, 1, 7, 9)
    mask = region_masks(ramp)
    assert int(mask.sum()) == 19
    assert ramp[mask].min() > ramp[~mask].max()


def test_region_mask_is_per_map_and_constant_map_is_empty() -> None:
    nams = torch.stack([torch.arange(16.0).reshape(4, 4), 100 + torch.arange(16.0).reshape(4, 4), torch.full((4, 4), 0.1)])[None]
    masks = region_masks(nams, percentile=50)
    assert masks[0, 0].sum() == 8 and masks[0, 1].sum() == 8  # own thresholds, not a shared one
    assert masks[0, 2].sum() == 0


def test_region_mask_rejects_bad_percentile() -> None:
    with pytest.raises(ValueError, match="percentile"):
        region_masks(torch.zeros(1, 1, 2, 2), percentile=120)


# ---------------------------------------------------------------- heatmap similarity


def test_heatmap_similarity_cases() -> None:
    generator = torch.Generator().manual_seed(1)
    base = torch.rand(4, 6, generator=generator)
    left = torch.zeros(4, 6)
    left[:, :3] = 1.0
    right = torch.zeros(4, 6)
    right[:, 3:] = 2.0
    a = torch.stack([base, left, base, torch.zeros(4, 6), left])
    b = torch.stack([base, right, -base, base, torch.ones(4, 6)])
    similarity = heatmap_similarity(a, b)
    # identical -> 1, disjoint (orthogonal) -> 0, negated -> -1, zero map -> 0, half the pixels -> 1/sqrt(2)
    torch.testing.assert_close(similarity, torch.tensor([1.0, 0.0, -1.0, 0.0, 1 / math.sqrt(2)]))


def test_heatmap_similarity_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        heatmap_similarity(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


# ---------------------------------------------------------------- AUROC


def test_average_ranks_with_ties() -> None:
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_auroc_hand_case_with_ties() -> None:
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.8, 0.8, 0.2])
    positive = np.array([0, 1, 0, 1, 0, 1, 1], dtype=bool)
    # Pairs (pos, neg): positives 0.4, 0.8, 0.8, 0.2 vs negatives 0.1, 0.4, 0.8:
    # 0.4: 1 + 0.5 + 0 ; 0.8: 1 + 1 + 0.5 (twice) ; 0.2: 1 + 0 + 0  -> 7.5 / 12
    assert auroc(scores, positive) == pytest.approx(7.5 / 12)
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))


def test_auroc_random_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = np.round(rng.normal(size=300), 1)  # rounding makes many ties
        positive = rng.random(300) < 0.3
        assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert auroc(torch.tensor([0.2, 0.9]), torch.tensor([0, 1])) == 1.0


def test_auroc_errors() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="same length"):
        auroc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="boolean"):
        auroc([0.1, 0.2], [2, 0])


def test_misprediction_auroc_low_confidence_flags_errors() -> None:
    confidence = np.array([0.9, 0.8, 0.3, 0.2, 0.85])
    correct = np.array([True, True, False, False, True])
    assert misprediction_auroc(confidence, correct) == 1.0
    assert misprediction_auroc(-confidence, correct) == 0.0
    rng = np.random.default_rng(1)
    confidence = rng.random(200)
    correct = rng.random(200) < confidence  # confident samples tend to be right
    expected = roc_auc_score(~correct, -confidence)
    assert misprediction_auroc(confidence, correct) == pytest.approx(expected)
    assert expected > 0.6


# ---------------------------------------------------------------- rejection curve


def test_rejection_curve_hand_case() -> None:
    confidence = [0.9, 0.1, 0.5, 0.5, 0.3]
    correct = [True, False, True, False, True]
    curve = rejection_curve(confidence, correct, steps=None)
    # Order by confidence: 0.1 (wrong), 0.3 (right), 0.5 & 0.5 (one wrong, one right: tie), 0.9 (right).
    assert curve["n_rejected"].tolist() == [0, 1, 2, 3, 4, 5]
    assert curve["share_rejected"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["hits"].tolist() == pytest.approx([0.0, 1.0, 1.0, 1.5, 2.0, 2.0])
    assert curve["mispredictions_caught"].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.75, 1.0, 1.0])
    kept_accuracy = curve["accuracy_of_kept"].tolist()
    assert kept_accuracy[:5] == pytest.approx([3 / 5, 3 / 4, 2 / 3, 1.5 / 2, 1.0])
    assert math.isnan(kept_accuracy[5])


def test_rejection_curve_does_not_depend_on_sample_order() -> None:
    rng = np.random.default_rng(2)
    confidence = np.round(rng.random(60), 1)
    correct = rng.random(60) < 0.7
    permutation = rng.permutation(60)
    first = rejection_curve(confidence, correct, steps=None)
    second = rejection_curve(confidence[permutation], correct[permutation], steps=None)
    pd.testing.assert_frame_equal(first, second)


def test_rejection_curve_grid_and_no_mispredictions() -> None:
    curve = rejection_curve([0.1, 0.2, 0.3, 0.4], [True] * 4, steps=3)
    assert curve["n_rejected"].tolist() == [0, 2, 4]
    assert curve["mispredictions_caught"].isna().all()
    assert curve["accuracy_of_kept"].tolist()[:2] == [1.0, 1.0]
    with pytest.raises(ValueError, match="steps"):
        rejection_curve([0.1], [True], steps=1)


# ---------------------------------------------------------------- figures


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _track(rng: np.random.Generator, size: int, k: int) -> dict:
    nams = torch.tensor(rng.random((1, k, size, size)), dtype=torch.float32)
    weights = torch.tensor(rng.random((1, k)), dtype=torch.float32)
    return {
        "neurons": list(range(k)),
        "concepts": ["wheel", "", "a very long concept name that needs shortening"][:k],
        "weights": weights[0].tolist(),
        "masks": region_masks(nams)[0].numpy(),
        "heatmap": concept_heatmap(nams, weights)[0].numpy(),
    }


def test_figures_write_pngs(tmp_path) -> None:
    from www_assets.figures.explanations import explanation_figure, rejection_curve_figure, shapley_matrix_figure

    rng = np.random.default_rng(3)
    image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    path = explanation_figure(image, _track(rng, 32, 3), _track(rng, 32, 2), "test", tmp_path / "a" / "expl.png")
    width, height = _png_size(path)
    assert width > 300 and height > 300
    with pytest.raises(ValueError, match="masks must be"):
        bad = _track(rng, 32, 3)
        bad["masks"] = bad["masks"][:2]
        explanation_figure(image, bad, _track(rng, 32, 3), "bad", tmp_path / "bad.png")

    matrix = rng.normal(size=(5, 80))
    path = shapley_matrix_figure(matrix, [f"class {i}" for i in range(5)], tmp_path / "shapley.png", max_neurons=20)
    assert _png_size(path)[0] > 300
    with pytest.raises(ValueError, match="class_names"):
        shapley_matrix_figure(matrix, ["a"], tmp_path / "bad.png")

    correct = rng.random(100) < 0.7
    confidence = rng.random(100)
    curves = {"MSP": rejection_curve(confidence, correct)}
    path = rejection_curve_figure(curves, {"MSP": misprediction_auroc(confidence, correct)}, tmp_path / "rejection.png")
    assert _png_size(path)[0] > 300


def test_shapley_figure_column_choice() -> None:
    from www_assets.figures.explanations import _order_neurons

    matrix = np.zeros((2, 6))
    matrix[0, 4] = 3.0
    matrix[1, 1] = 2.0
    matrix[0, 2] = 1.0
    matrix[1, 5] = -0.5
    # Strongest three by max |value|: 4, 1, 2; grouped by favourite class (0: 4, 2; 1: 1).
    assert _order_neurons(matrix, 3).tolist() == [4, 2, 1]


# --------------------------------------------------------------------------- AUROC intervals, Jaccard


def test_bootstrap_auroc_ci_matches_a_plain_loop_with_sklearn():
    from sklearn.metrics import roc_auc_score

    from www_assets.methods.uncertainty import bootstrap_auroc_ci, misprediction_auroc

    rng = np.random.default_rng(11)
    correct = rng.random(300) < 0.8
    confidence = np.round(rng.normal(np.where(correct, 0.6, 0.4), 0.2), 2)  # rounding makes ties
    low, high = bootstrap_auroc_ci(confidence, correct, n_boot=200, level=0.9, seed=3)
    # the documented draw order, replayed by hand
    draw = np.random.default_rng(3)
    wrong, right = -confidence[~correct], -confidence[correct]
    wi = draw.integers(0, len(wrong), size=(200, len(wrong)))
    ri = draw.integers(0, len(right), size=(200, len(right)))
    flags = np.r_[np.ones(len(wrong)), np.zeros(len(right))]
    reps = [roc_auc_score(flags, np.r_[wrong[wi[r]], right[ri[r]]]) for r in range(200)]
    expected = np.quantile(reps, [0.05, 0.95])
    assert low == pytest.approx(expected[0], abs=1e-12) and high == pytest.approx(expected[1], abs=1e-12)
    assert low < misprediction_auroc(confidence, correct) < high
    with pytest.raises(ValueError, match="both"):
        bootstrap_auroc_ci(confidence[correct], correct[correct])


def test_top_k_jaccard():
    from www_assets.methods.uncertainty import top_k_jaccard

    got = top_k_jaccard([[1, 2, 3], [1, 2, 3], [4, 5, 6]], [[3, 2, 1], [1, 7, 8], [7, 8, 9]])
    np.testing.assert_allclose(got, [1.0, 1 / 5, 0.0])
