"""Concept-matching metrics against hand-computed cases and scipy's paired t-test."""

import math

import numpy as np
import pytest
from scipy import stats

from www_assets.methods.metrics import (
    EMPTY_PREDICTION,
    embedding_cosines,
    f1,
    hit,
    mean_pair_cosine,
    mean_stderr,
    normalise_concept,
    paired_t_test,
)

# --- normalise_concept -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Golden_Retriever ", "golden retriever"),
        ("TABBY\t  cat", "tabby cat"),
        ("ice__cream", "ice cream"),
        ("", ""),
    ],
)
def test_normalise_concept(raw, expected):
    assert normalise_concept(raw) == expected


def test_normalise_concept_rejects_non_strings():
    with pytest.raises(ValueError, match="must be a string"):
        normalise_concept(3)


# --- hit ---------------------------------------------------------------------------


def test_hit_exact_and_synonym():
    assert hit(["dog"], ["dog"]) == 1.0
    assert hit(["wheel", "puss"], ["cat", "puss", "tabby"]) == 1.0


def test_hit_normalises_case_and_underscores():
    assert hit(["Tabby_Cat"], ["tabby cat"]) == 1.0


def test_hit_needs_whole_string():
    assert hit(["cat"], ["tabby cat"]) == 0.0
    assert hit(["tabby cat"], ["cat"]) == 0.0


def test_hit_empty_selection_is_a_miss():
    assert hit([], ["cat"]) == 0.0
    # even a class literally named "none" is not hit by an empty selection
    assert hit([], [EMPTY_PREDICTION]) == 0.0


def test_hit_rejects_bad_inputs():
    with pytest.raises(ValueError, match="ground-truth"):
        hit(["cat"], [])
    with pytest.raises(ValueError, match="single string"):
        hit("cat", ["cat"])


# --- f1 ----------------------------------------------------------------------------


def test_f1_exact_match_is_one():
    assert f1(["cat"], ["cat"]) == 1.0


def test_f1_hand_cases():
    # P = 1/2, R = 1 -> 2/3
    assert f1(["cat", "dog"], ["cat"]) == pytest.approx(2 / 3)
    # P = 2/2, R = 2/3 -> 0.8
    assert f1(["cat", "kitty"], ["cat", "kitty", "puss"]) == pytest.approx(0.8)
    # P = 1/3, R = 1/2 -> 2 * (1/6) / (5/6) = 0.4
    assert f1(["puss", "dog", "wheel"], ["cat", "puss"]) == pytest.approx(0.4)


def test_f1_duplicates_in_prediction_count_in_precision():
    # len(pred) counts both copies: P = 1/2, R = 1, F1 = 2/3 (a set would give 1.0)
    assert f1(["cat", "cat"], ["cat"]) == pytest.approx(2 / 3)
    # "Cat" and "cat" become duplicates after normalisation
    assert f1(["Cat", "cat", "dog"], ["cat"]) == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))


def test_f1_normalisation():
    assert f1(["Golden_Retriever"], ["golden retriever"]) == 1.0


def test_f1_no_overlap_and_empty_selection_are_zero():
    assert f1(["dog"], ["cat"]) == 0.0
    assert f1([], ["cat"]) == 0.0


# --- mean_pair_cosine --------------------------------------------------------------


def test_mean_pair_cosine_hand_cases():
    assert mean_pair_cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    # cos([3,4],[4,3]) = 24/25, cos([3,4],[0,2]) = 8/10
    assert mean_pair_cosine(np.array([[3.0, 4.0]]), np.array([[4.0, 3.0], [0.0, 2.0]])) == pytest.approx(0.88)
    # two predictions x one truth: cos 1 and cos -1 -> 0
    assert mean_pair_cosine(np.array([[1.0, 0.0], [-2.0, 0.0]]), np.array([[5.0, 0.0]])) == pytest.approx(0.0)


def test_mean_pair_cosine_rejects_bad_inputs():
    with pytest.raises(ValueError, match="none"):
        mean_pair_cosine(np.zeros((0, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="embedding sizes differ"):
        mean_pair_cosine(np.ones((1, 2)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="zero"):
        mean_pair_cosine(np.zeros((1, 2)), np.ones((1, 2)))


# --- embedding_cosines -------------------------------------------------------------


class FakeEncoder:
    """Fixed word vectors; records what it was asked to encode."""

    vectors = {
        "cat": [1.0, 0.0, 0.0],
        "kitty": [2.0, 2.0, 0.0],  # not unit length on purpose; cos with cat = 1/sqrt(2)
        "dog": [0.0, 3.0, 0.0],
        "none": [0.0, 0.0, 1.0],
        "wheel": [0.0, -1.0, 0.0],
    }

    def __init__(self):
        self.calls = []

    def __call__(self, words):
        self.calls.append(list(words))
        return np.array([self.vectors[w] for w in words])


def test_embedding_cosines_hand_computed():
    encoder = FakeEncoder()
    preds = [["Cat", "dog"], [], ["kitty", "kitty"], ["wheel"]]
    gts = [["cat", "kitty"], ["dog"], ["cat"], ["dog", "cat"]]
    result = embedding_cosines(preds, gts, encoder, batch_size=2)
    root_half = 1 / math.sqrt(2)
    expected = [
        (1.0 + root_half + 0.0 + root_half) / 4,  # cat-cat, cat-kitty, dog-cat, dog-kitty
        0.0,  # empty selection -> "none" vs dog
        root_half,  # kitty-cat twice
        (-1.0 + 0.0) / 2,  # wheel-dog, wheel-cat
    ]
    np.testing.assert_allclose(result, expected, atol=1e-12)
    encoded = [w for call in encoder.calls for w in call]
    assert sorted(encoded) == sorted(set(encoded)) == ["cat", "dog", "kitty", "none", "wheel"]
    assert all(len(call) <= 2 for call in encoder.calls)


def test_embedding_cosines_checks_inputs():
    encoder = FakeEncoder()
    with pytest.raises(ValueError, match="preds has 1 neurons but gts has 2"):
        embedding_cosines([["cat"]], [["cat"], ["dog"]], encoder)
    with pytest.raises(ValueError, match="ground-truth"):
        embedding_cosines([["cat"]], [[]], encoder)
    with pytest.raises(ValueError, match="encode returned shape"):
        embedding_cosines([["cat"]], [["dog"]], lambda words: np.ones((len(words) + 1, 3)))
    assert embedding_cosines([], [], encoder).shape == (0,)


# --- mean_stderr -------------------------------------------------------------------


def test_mean_stderr_hand_case():
    mean, stderr, n = mean_stderr([1.0, 2.0, 3.0, 4.0])
    # sample variance = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    assert (mean, n) == (2.5, 4)
    assert stderr == pytest.approx(math.sqrt(5 / 3) / 2)


def test_mean_stderr_small_samples():
    mean, stderr, n = mean_stderr([0.7])
    assert mean == 0.7 and math.isnan(stderr) and n == 1
    mean, stderr, n = mean_stderr([])
    assert math.isnan(mean) and math.isnan(stderr) and n == 0
    with pytest.raises(ValueError, match="NaN"):
        mean_stderr([1.0, float("nan")])


# --- paired_t_test -----------------------------------------------------------------


def test_paired_t_test_hand_case():
    # d = [1, 2, 3]: mean 2, sd 1, t = 2 * sqrt(3); for 2 degrees of freedom the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12/14)
    t, p, n = paired_t_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert n == 3
    assert t == pytest.approx(2 * math.sqrt(3))
    assert p == pytest.approx(1 - math.sqrt(12 / 14))


@pytest.mark.parametrize(("n", "shift", "seed"), [(2, 0.3, 0), (5, 0.1, 1), (30, 0.0, 2), (200, -0.05, 3), (1000, 0.02, 4)])
def test_paired_t_test_matches_scipy(n, shift, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = a + shift + rng.normal(scale=0.5, size=n)
    t, p, count = paired_t_test(a, b)
    reference = stats.ttest_rel(a, b)
    assert count == n
    assert t == pytest.approx(reference.statistic, rel=1e-10)
    assert p == pytest.approx(reference.pvalue, rel=1e-8, abs=1e-300)


def test_paired_t_test_degenerate_cases():
    assert paired_t_test([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == (0.0, 1.0, 3)
    t, p, n = paired_t_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert t == math.inf and p == 0.0 and n == 3
    t, p, n = paired_t_test([1.0], [0.0])
    assert math.isnan(t) and math.isnan(p) and n == 1


def test_paired_t_test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="pair up"):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_t_test([1.0, float("nan")], [1.0, 2.0])
