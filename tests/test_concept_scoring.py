"""Concept scoring (WWW "what"): hand-computed cases, naive re-implementations, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from www_assets.methods.concept_scoring import (
    METHODS,
    ConceptInputs,
    break_ties,
    score_concepts,
    soft_wpmi_scores,
)
from www_assets.methods.examples import top_k_examples, topk_lowest_index_first
from www_assets.methods.similarity import (
    chunk_slices,
    cosine_matrix,
    l1_distance_matrix,
    l2_distance_matrix,
    rows_per_chunk,
    tvmf,
    tvmf_,
)

# --------------------------------------------------------------------------- hand-made case
# d = 3. Views: v0 = e_x, v1 = e_y, v2 = e_z, v3 = (0.6, 0.8, 0).
# Templated concepts: t0 = e_x, t1 = e_y, t2 = (0.6, 0, 0.8), t3 = e_z.
# Bare template: t_tem = (0, 0.6, 0.8).
# Neurons (k = 2): n0 -> views [0, 3], n1 -> [1, 2], n2 -> [0, 0].
VIEWS = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])
TEMPLATED = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.6, 0, 0.8], [0, 0, 1.0]])
TEMPLATE = torch.tensor([0, 0.6, 0.8])
RAW = TEMPLATED[[3, 2, 1, 0]]  # the raw words point elsewhere: raw j = templated 3 - j
EXAMPLES = torch.tensor([[0, 3], [1, 2], [0, 0]])


def hand_inputs(**changes) -> ConceptInputs:
    fields = dict(
        view_features=VIEWS,
        examples=EXAMPLES,
        concept_features=TEMPLATED,
        template_feature=TEMPLATE,
        raw_concept_features=RAW,
    )
    fields.update(changes)
    return ConceptInputs(**fields)


def test_www_hand_case():
    # n0: mean view (0.8, 0.4, 0): cos to t = [0.8, 0.4, 0.48, 0], to t_tem 0.24
    #     -> s = [0.56, 0.16, 0.24, -0.24]; alpha 0.4: threshold 0.224 -> {0, 2}
    # n1: mean (0, 0.5, 0.5): cos [0, 0.5, 0.4, 0.5], t_tem 0.7 -> s = [-0.7, -0.2, -0.3, -0.2]
    #     max <= 0 -> nothing; tie -0.2 between 1 and 3 -> lower index first
    # n2: mean (1, 0, 0): cos [1, 0, 0.6, 0], t_tem 0 -> s = [1, 0, 0.6, 0] -> {0, 2}
    result = score_concepts("www", hand_inputs(), top_n=4, alpha=0.4)
    expected = torch.tensor([[0.56, 0.24, 0.16, -0.24], [-0.2, -0.2, -0.3, -0.7], [1.0, 0.6, 0.0, 0.0]])
    torch.testing.assert_close(result.top_scores, expected, atol=1e-6, rtol=0)
    assert result.top_index.tolist() == [[0, 2, 1, 3], [1, 3, 2, 0], [0, 2, 1, 3]]
    assert [[c for c, _ in sel] for sel in result.selected] == [[0, 2], [], [0, 2]]
    assert result.selected[0][0][1] == pytest.approx(0.56, abs=1e-6)
    assert result.selected[2][1][1] == pytest.approx(0.6, abs=1e-6)


def test_www_tvmf_hand_case_kappa_one():
    # kappa = 1: phi(c) = (2c - 1)/(2 - c): phi(1)=1, phi(0)=-1/2, phi(.6)=1/7, phi(.8)=1/2,
    # phi(.36)=-.28/1.64, phi(.48)=-.04/1.52.
    # n0: v0 cos [1, 0, .6, 0] (t_tem 0); v3 cos [.6, .8, .36, 0] (t_tem .48)
    phi = lambda c: (2 * c - 1) / (2 - c)  # noqa: E731
    n0 = [
        0.5 * ((phi(a) - phi(0)) + (phi(b) - phi(0.48)))
        for a, b in zip([1, 0, 0.6, 0], [0.6, 0.8, 0.36, 0])
    ]
    assert n0 == pytest.approx([0.8345865, 0.2631579, 0.2492206, -0.2368421], abs=1e-6)
    # n1: v1 cos [0, 1, 0, 0] (t_tem .6); v2 cos [0, 0, .8, 1] (t_tem .8)
    # -> s = [-23/28, -1/14, -9/28, -1/14]: max < 0, nothing selected
    result = score_concepts("www_tvmf", hand_inputs(), top_n=4, alpha=0.2, kappa=1.0)
    torch.testing.assert_close(result.top_scores[0], torch.tensor(sorted(n0, reverse=True)), atol=1e-6, rtol=0)
    assert result.top_index[0].tolist() == [0, 1, 2, 3]
    assert [c for c, _ in result.selected[0]] == [0, 1, 2]  # > 0.2 * 0.8346 = 0.1669
    assert sorted(result.top_scores[1].tolist()) == pytest.approx([-23 / 28, -9 / 28, -1 / 14, -1 / 14], abs=1e-6)
    assert result.selected[1] == []


def test_plain_cosine_methods_hand_case():
    # template_only: n1 mean cos [0, .5, .4, .5]; alpha .7 -> threshold .35 -> {1, 3, 2}
    result = score_concepts("template_only", hand_inputs(), top_n=2, alpha=0.7)
    assert [c for c, _ in result.selected[1]] == [1, 3, 2]
    assert result.top_index[1].tolist() == [1, 3]
    torch.testing.assert_close(result.top_scores[0], torch.tensor([0.8, 0.48]), atol=1e-6, rtol=0)
    # cosine on the prompts: same scores, argmax only
    result = score_concepts("cosine", hand_inputs(), top_n=2, text="templated")
    assert [[c for c, _ in sel] for sel in result.selected] == [[0], [1], [0]]
    # by default on the raw words (raw j = templated 3 - j): n1's raw cosines [.5, .4, .5, 0]
    # tie between 0 and 2 -> the first-listed concept
    result = score_concepts("cosine", hand_inputs(), top_n=2)
    assert [[c for c, _ in sel] for sel in result.selected] == [[3], [0], [3]]
    # no_template uses the raw words: raw j = templated (3 - j) -> reversed score order
    result = score_concepts("no_template", hand_inputs(), top_n=4, alpha=0.9)
    torch.testing.assert_close(result.top_scores[0], torch.tensor([0.8, 0.48, 0.4, 0.0]), atol=1e-6, rtol=0)
    assert result.top_index[0].tolist() == [3, 1, 2, 0]
    assert [c for c, _ in result.selected[0]] == [3]


def test_distance_methods_hand_case():
    # L1 to t = [t0..t3]: v0 [0, 2, 1.2, 2]; v3 [1.2, .8, 1.6, 2.4]
    # n0 mean [0.6, 1.4, 1.4, 2.2] (tie 1/2 -> lower index first)
    result = score_concepts("l1", hand_inputs(), top_n=4, text="templated")
    torch.testing.assert_close(result.top_scores[0], -torch.tensor([0.6, 1.4, 1.4, 2.2]), atol=1e-5, rtol=0)
    assert result.top_index[0].tolist() == [0, 1, 2, 3]
    assert result.selected[0] == [(0, pytest.approx(-0.6, abs=1e-5))]
    # L2: v0 [0, sqrt2, sqrt.8, sqrt2]; v3 [sqrt.8, sqrt.4, sqrt1.28, sqrt2]
    # n0 mean [0.4472136, 1.0233345, 1.0128990, 1.4142136]: L2 puts t2 before t1
    result = score_concepts("l2", hand_inputs(), top_n=4, text="templated")
    torch.testing.assert_close(
        result.top_scores[0], -torch.tensor([0.4472136, 1.0128990, 1.0233345, 1.4142136]), atol=1e-5, rtol=0
    )
    assert result.top_index[0].tolist() == [0, 2, 1, 3]


def test_non_positive_maximum_rules():
    # One view opposite to everything: cos to t = [-.6, -.8, -.36, 0] via v = (-.6, -.8, 0).
    views = torch.tensor([[-0.6, -0.8, 0.0]])
    inputs = hand_inputs(view_features=views, examples=torch.tensor([[0]]))
    # www: t_tem cos = -0.48 -> s = [-.12, -.32, .12, .48]: max > 0 -> {3} (alpha .5: > .24)
    assert [c for c, _ in score_concepts("www", inputs, alpha=0.5).selected[0]] == [3]
    # with the template equal to e_z, s = [-.6, -.8, -.36, 0]: max = 0 -> nothing
    flat = hand_inputs(view_features=views, examples=torch.tensor([[0]]), template_feature=torch.tensor([0, 0, 1.0]))
    assert score_concepts("www", flat).selected == [[]]
    assert score_concepts("www_tvmf", flat).selected == [[]]
    # plain cosine with max = 0: threshold would select nothing, the argmax is kept
    selected = score_concepts("template_only", flat).selected[0]
    assert [c for c, _ in selected] == [3] and selected[0][1] == pytest.approx(0.0, abs=1e-7)


# --------------------------------------------------------------------------- naive references


def random_inputs(seed: int, n_views=30, n_neurons=7, n_concepts=23, dim=6, k=5) -> ConceptInputs:
    gen = torch.Generator().manual_seed(seed)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=gen), dim=-1)  # noqa: E731
    activations = torch.randn(n_views, n_neurons, generator=gen)
    examples, _ = top_k_examples(activations, k)
    return ConceptInputs(
        view_features=unit(n_views, dim),
        examples=examples,
        concept_features=unit(n_concepts, dim),
        template_feature=unit(dim),
        raw_concept_features=unit(n_concepts, dim),
        view_activations=activations,
    )


def naive_scores(inputs: ConceptInputs, method: str, kappa: float = 16.0) -> torch.Tensor:
    """(N, M) scores by a per-neuron, per-example, per-concept loop on float64."""
    views = inputs.view_features.double()
    texts = (inputs.raw_concept_features if METHODS[method].text == "raw" else inputs.concept_features).double()
    template = inputs.template_feature.double()
    phi = lambda c: (1 + c) / (1 + kappa * (1 - c)) - 1  # noqa: E731
    out = torch.zeros(inputs.n_neurons, texts.shape[0], dtype=torch.float64)
    for n in range(inputs.n_neurons):
        for j in range(texts.shape[0]):
            total = 0.0
            for o in inputs.examples[n].tolist():
                v, t = views[o], texts[j]
                if method == "www":
                    total += float(v @ t - v @ template)
                elif method == "www_tvmf":
                    total += phi(float(v @ t)) - phi(float(v @ template))
                elif method in ("cosine", "template_only", "no_template"):
                    total += float(v @ t)
                elif method == "l1":
                    total -= float((v - t).abs().sum())
                elif method == "l2":
                    total -= float((v - t).norm())
            out[n, j] = total / inputs.examples.shape[1]
    return out


def naive_selection(scores: torch.Tensor, method: str, alpha: float) -> list[list[int]]:
    selected = []
    for row in scores.tolist():
        best = max(row)
        argmax = row.index(best)
        if method in ("www", "www_tvmf"):
            chosen = [j for j, s in enumerate(row) if s > alpha * best] if best > 0 else []
        elif method in ("template_only", "no_template"):
            chosen = [j for j, s in enumerate(row) if s > alpha * best] if best > 0 else [argmax]
        else:
            chosen = [argmax]
        selected.append(sorted(chosen, key=lambda j: (-row[j], j)))
    return selected


@pytest.mark.parametrize("method", ["www", "www_tvmf", "cosine", "template_only", "no_template", "l1", "l2"])
@pytest.mark.parametrize("budget", [1 << 30, 600])  # 600 bytes forces chunks of 1 neuron / few concepts
def test_vectorised_matches_naive_loop(method, budget):
    inputs = random_inputs(seed=3)
    expected = naive_scores(inputs, method)
    result = score_concepts(method, inputs, top_n=5, alpha=0.6, memory_budget_bytes=budget)
    order = torch.sort(expected, dim=1, descending=True, stable=True)
    torch.testing.assert_close(result.top_scores.double(), order.values[:, :5], atol=2e-6, rtol=0)
    assert torch.equal(result.top_index, order.indices[:, :5])
    assert [[c for c, _ in sel] for sel in result.selected] == naive_selection(expected, method, 0.6)


def test_tvmf_kappa_zero_equals_www():
    inputs = random_inputs(seed=5, n_concepts=40)
    www = score_concepts("www", inputs, top_n=40)
    tvmf0 = score_concepts("www_tvmf", inputs, top_n=40, kappa=0.0, memory_budget_bytes=2000)
    torch.testing.assert_close(tvmf0.top_scores, www.top_scores, atol=1e-6, rtol=0)
    assert [[c for c, _ in s] for s in tvmf0.selected] == [[c for c, _ in s] for s in www.selected]


def test_reported_names_use_their_scoring_function():
    inputs = random_inputs(seed=7)
    assert set(METHODS) == {
        "www", "www_gradcam_tvmf", "www_gradcam", "www_tvmf", "clip_dissect",
        "cosine", "l1", "l2", "template_only", "no_template",
    }
    for name, spec in METHODS.items():
        assert spec.name == name and spec.views in ("image", "gradcam_crop"), name
    assert (METHODS["www_gradcam_tvmf"].score, METHODS["www_gradcam_tvmf"].views) == ("tvmf_acs", "gradcam_crop")
    assert (METHODS["www_gradcam"].score, METHODS["www_gradcam"].views) == ("acs", "gradcam_crop")
    with pytest.raises(TypeError):
        METHODS["www"] = METHODS["cosine"]  # the table is frozen
    a = score_concepts("www_gradcam_tvmf", inputs, kappa=4.0)
    b = score_concepts("www_tvmf", inputs, kappa=4.0)
    assert torch.equal(a.top_scores, b.top_scores) and a.selected == b.selected


def test_one_example_and_fewer_views_than_k():
    inputs = random_inputs(seed=11, n_views=3, k=40)  # top_k_examples keeps k' = 3
    assert inputs.examples.shape == (7, 3)
    single = ConceptInputs(
        inputs.view_features, inputs.examples[:, :1], inputs.concept_features,
        inputs.template_feature, inputs.raw_concept_features,
    )
    result = score_concepts("www", single, top_n=3)
    v = inputs.view_features[inputs.examples[:, 0]]
    direct = v @ inputs.concept_features.T - (v @ inputs.template_feature).unsqueeze(1)
    torch.testing.assert_close(result.top_scores, direct.sort(dim=1, descending=True).values[:, :3], atol=1e-6, rtol=0)


def test_top_n_larger_than_concepts_and_unnormalised_inputs():
    inputs = hand_inputs(view_features=VIEWS * 3.0, concept_features=TEMPLATED * 0.5)
    result = score_concepts("www", inputs, top_n=50, alpha=0.4)
    assert result.top_scores.shape == (3, 4)
    assert result.top_scores[0, 0].item() == pytest.approx(0.56, abs=1e-6)


# --------------------------------------------------------------------------- CLIP-Dissect


def naive_soft_wpmi(views, texts, activations, top_k=100, a=10.0, lam=1.0):
    """Per neuron and concept, straight from the formulas (float64)."""
    cos = F.normalize(views.double(), dim=1) @ F.normalize(texts.double(), dim=1).T
    prob = torch.softmax(a * cos, dim=1)  # (V, M)
    n_views, n_neurons = activations.shape
    k = min(top_k, n_views)
    log_p_given_e = torch.zeros(n_neurons, texts.shape[0], dtype=torch.float64)
    for n in range(n_neurons):
        order = sorted(range(n_views), key=lambda v: (-float(activations[v, n]), v))[:k]
        for c in range(texts.shape[0]):
            total = 0.0
            for i, v in enumerate(order):
                p_i = 0.998 - i / k * (0.998 - 0.97)
                total += math.log(1 + p_i * (float(prob[v, c]) - 1) + 1e-7)
            log_p_given_e[n, c] = total
    log_p = torch.logsumexp(log_p_given_e, dim=0) - math.log(n_neurons)
    return log_p_given_e - lam * log_p


def test_clip_dissect_hand_case():
    # v0 = e_z (cos 0 to both concepts: P = [.5, .5]); v1 = e_x (cos [1, 0]: P = [s, 1 - s],
    # s = 1/(1 + e^-10)). Neuron 0 ranks [v1, v0], neuron 1 ranks [v0, v1]; k' = 2, p = [.998, .984].
    views = torch.tensor([[0.0, 0, 1], [1.0, 0, 0]])
    raw = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    activations = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    s = 1 / (1 + math.exp(-10))
    log = lambda x: math.log(x + 1e-7)  # noqa: E731
    n0 = [log(1 + 0.998 * (s - 1)) + log(1 - 0.984 * 0.5), log(1 - 0.998 * s) + log(1 - 0.984 * 0.5)]
    n1 = [log(1 - 0.998 * 0.5) + log(1 + 0.984 * (s - 1)), log(1 - 0.998 * 0.5) + log(1 - 0.984 * s)]
    log_p = [math.log((math.exp(n0[c]) + math.exp(n1[c])) / 2) for c in range(2)]
    expected = torch.tensor([[n0[c] - log_p[c] for c in range(2)], [n1[c] - log_p[c] for c in range(2)]])
    inputs = ConceptInputs(views, torch.tensor([[1], [0]]), raw, torch.tensor([0, 1.0, 0]), raw, activations)
    result = score_concepts("clip_dissect", inputs, top_n=2)
    got = torch.zeros(2, 2)
    got.scatter_(1, result.top_index, result.top_scores)
    torch.testing.assert_close(got, expected.float(), atol=1e-4, rtol=1e-5)
    assert [sel[0][0] for sel in result.selected] == [0, 1]


@pytest.mark.parametrize("budget", [1 << 30, 3000])
def test_clip_dissect_matches_naive_loop(budget):
    inputs = random_inputs(seed=13, n_views=130, n_neurons=6, n_concepts=17)  # top 100 of 130
    expected = naive_soft_wpmi(inputs.view_features, inputs.raw_concept_features, inputs.view_activations)
    result = score_concepts("clip_dissect", inputs, top_n=4, memory_budget_bytes=budget)
    order = torch.sort(expected, dim=1, descending=True, stable=True)
    torch.testing.assert_close(result.top_scores.double(), order.values[:, :4], atol=1e-4, rtol=1e-5)
    assert torch.equal(result.top_index, order.indices[:, :4])
    assert [sel[0][0] for sel in result.selected] == order.indices[:, 0].tolist()


def test_clip_dissect_fewer_views_than_top_k_and_options():
    inputs = random_inputs(seed=17, n_views=9, n_neurons=4, n_concepts=5)
    expected = naive_soft_wpmi(inputs.view_features, inputs.raw_concept_features, inputs.view_activations, lam=0.5)
    scores, index = soft_wpmi_scores(
        inputs.view_features, inputs.raw_concept_features, inputs.view_activations, lam=0.5, top_n=5
    )
    got = torch.zeros(4, 5, dtype=torch.float64).scatter_(1, index, scores.double())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_clip_dissect_needs_activations():
    with pytest.raises(ValueError, match="view_activations"):
        score_concepts("clip_dissect", hand_inputs())


# --------------------------------------------------------------------------- examples


def test_top_k_examples_ties_and_small_v():
    activations = torch.tensor([[1.0, 0.0], [3.0, 5.0], [3.0, 5.0], [2.0, 5.0], [3.0, -1.0]])
    indices, values = top_k_examples(activations, 3)
    assert indices.tolist() == [[1, 2, 4], [1, 2, 3]]  # equal values: lower view index first
    assert values.tolist() == [[3.0, 3.0, 3.0], [5.0, 5.0, 5.0]]
    indices, values = top_k_examples(activations, 2, memory_budget_bytes=1)  # one neuron per chunk
    assert indices.tolist() == [[1, 2], [1, 2]]
    indices, _ = top_k_examples(activations, 40)  # V = 5 < k
    assert indices.shape == (2, 5) and indices[0].tolist() == [1, 2, 4, 3, 0]
    with pytest.raises(ValueError, match="NaN"):
        top_k_examples(torch.tensor([[float("nan")]]), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_examples(activations, 0)


@pytest.mark.parametrize("levels", [4, 40, 1000])  # ties across the cut, inside the top set, rare
def test_topk_lowest_index_first_matches_stable_sort(levels):
    gen = torch.Generator().manual_seed(levels)
    scores = torch.randint(0, levels, (50, 60), generator=gen).float()
    for k in (1, 7, 60, 80):
        values, columns = topk_lowest_index_first(scores, k)
        order = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(columns, order.indices[:, :k]) and torch.equal(values, order.values[:, :k])
    # hand case: the set {0, 2, 3} is unique (4th value 2 < 3); equal 5s keep column order
    values, columns = topk_lowest_index_first(torch.tensor([[5.0, 1.0, 5.0, 3.0, 2.0]]), 3)
    assert columns.tolist() == [[0, 2, 3]] and values.tolist() == [[5.0, 5.0, 3.0]]


# --------------------------------------------------------------------------- similarity helpers


def test_similarity_helpers():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    torch.testing.assert_close(cosine_matrix(a, b), torch.tensor([[0.8, -0.6], [0.0, -1.0]]))
    # unit a = [(.6, .8), (1, 0)], unit b = [(0, 1), (-1, 0)]
    torch.testing.assert_close(l1_distance_matrix(a, b), torch.tensor([[0.8, 2.4], [2.0, 2.0]]))
    torch.testing.assert_close(
        l2_distance_matrix(a, b), torch.tensor([[math.sqrt(0.4), math.sqrt(3.2)], [math.sqrt(2), 2.0]])
    )
    cos = torch.tensor([1.0, 0.6, 0.0, -1.0])
    torch.testing.assert_close(tvmf(cos, 1.0), torch.tensor([1.0, 1 / 7, -0.5, -1.0]))
    torch.testing.assert_close(tvmf(cos, 16.0), torch.tensor([1.0, 1.6 / 7.4 - 1, 1 / 17 - 1, -1.0]))
    assert torch.equal(tvmf(cos, 0.0), cos)
    many = torch.linspace(-1, 1, 101)
    torch.testing.assert_close(tvmf_(many.clone(), 16.0), tvmf(many, 16.0), atol=1e-6, rtol=0)
    assert rows_per_chunk(100, 1000, 50) == 10 and rows_per_chunk(100, 10, 50) == 1
    assert rows_per_chunk(1, 1000, 7) == 7
    assert [(s.start, s.stop) for s in chunk_slices(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="kappa"):
        tvmf(cos, -1.0)


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(examples=torch.tensor([[0, 4], [1, 2], [0, 0]])), "examples must index"),
        (dict(examples=torch.tensor([[0.0, 1.0]])), "integer view indices"),
        (dict(concept_features=torch.ones(4, 2)), "concept_features has d=2"),
        (dict(raw_concept_features=torch.ones(3, 3)), "raw_concept_features must be"),
        (dict(template_feature=torch.ones(2)), "template_feature must be"),
        (dict(concept_features=torch.ones(0, 3), raw_concept_features=torch.ones(0, 3)), "concept set is empty"),
        (dict(view_activations=torch.ones(4, 5)), "view_activations must have shape"),
        (dict(view_features=VIEWS.clone().fill_(float("nan"))), "NaN"),
        (dict(template_feature=torch.tensor([0.0, float("inf"), 0.0])), "infinite"),
    ],
)
def test_bad_inputs_raise(changes, message):
    with pytest.raises(ValueError, match=message):
        hand_inputs(**changes)


def test_bad_options_raise():
    inputs = hand_inputs()
    with pytest.raises(ValueError, match="unknown concept-scoring method 'wwww'"):
        score_concepts("wwww", inputs)
    with pytest.raises(ValueError, match="alpha"):
        score_concepts("www", inputs, alpha=1.0)
    with pytest.raises(ValueError, match="top_n"):
        score_concepts("www", inputs, top_n=0)
    with pytest.raises(ValueError, match="kappa"):
        score_concepts("www_tvmf", inputs, kappa=-2.0)


# --------------------------------------------------------------------------- baselines and ties


@pytest.mark.parametrize("method", ["cosine", "l1", "l2"])
def test_baselines_compare_raw_words_like_the_paper(method):
    # Seed 000 table S.1's "Cosine" row equals seed 001 table 5's "no template" row: the
    # baselines score the raw word. Random prompts and raw words point in unrelated directions.
    inputs = random_inputs(seed=11)
    raw = score_concepts(method, inputs, top_n=5)
    expected = torch.sort(naive_scores(inputs, method), dim=1, descending=True, stable=True)
    assert METHODS[method].text == "raw"
    assert torch.equal(raw.top_index, expected.indices[:, :5])
    templated = score_concepts(method, inputs, top_n=5, text="templated")
    assert not torch.equal(templated.top_index[:, 0], raw.top_index[:, 0])
    if method == "cosine":  # same scores as the no-template ablation, argmax only
        no_template = score_concepts("no_template", inputs, top_n=5)
        assert torch.equal(raw.top_index[:, 0], no_template.top_index[:, 0])
        torch.testing.assert_close(raw.top_scores, no_template.top_scores)
    with pytest.raises(ValueError, match="not an option"):
        score_concepts("www", inputs, text="raw")


def near_tie_inputs() -> ConceptInputs:
    # one view e_x; raw words at cosines 0.5 (listed first) and 0.50004 (second) and 0.2
    def word(c):
        return [c, math.sqrt(1 - c * c), 0.0]

    words = torch.tensor([word(0.5), word(0.50004), word(0.2)], dtype=torch.float64).float()
    return ConceptInputs(
        view_features=torch.tensor([[1.0, 0, 0]]), examples=torch.tensor([[0]]),
        concept_features=words, template_feature=torch.tensor([0, 0, 1.0]), raw_concept_features=words,
        view_activations=torch.tensor([[1.0]]),
    )


def test_near_ties_go_to_the_first_listed_concept_and_are_recorded():
    inputs = near_tie_inputs()
    result = score_concepts("cosine", inputs, top_n=3)
    assert result.selected[0][0][0] == 0  # 0.50004 - 0.5 < TIE_TOLERANCE: the first listed wins
    assert result.top_index[0].tolist() == [0, 1, 2]
    assert result.tie_size.tolist() == [2] and result.tied == [[0, 1]]
    strict = score_concepts("cosine", inputs, top_n=3, tie_tolerance=0.0)
    assert strict.selected[0][0][0] == 1 and strict.tie_size.tolist() == [1] and strict.tied == [[1]]
    # threshold rules order their selection the same way
    no_template = score_concepts("no_template", inputs, top_n=3, alpha=0.5)
    assert [c for c, _ in no_template.selected[0]] == [0, 1]


def test_clip_dissect_records_its_tied_top():
    # two concepts with the same raw feature score exactly alike; a third is far away
    base = random_inputs(seed=13, n_concepts=6)
    raw = base.raw_concept_features.clone()
    raw[4] = raw[1]
    inputs = ConceptInputs(base.view_features, base.examples, base.concept_features, base.template_feature, raw,
                           base.view_activations)
    result = score_concepts("clip_dissect", inputs, top_n=3)
    for neuron in range(inputs.n_neurons):
        tied = result.tied[neuron]
        assert len(tied) == int(result.tie_size[neuron]) and tied == sorted(tied)
        assert result.selected[neuron][0][0] == tied[0] == int(result.top_index[neuron, 0])
        if 4 in tied:
            assert 1 in tied  # the duplicate is tied with its twin, which is listed first


def test_break_ties_hand_case():
    scores = torch.tensor([[0.9, 0.89995, 0.89991, 0.5], [0.9, 0.8, 0.7, 0.6]])
    index = torch.tensor([[7, 2, 5, 0], [3, 1, 2, 0]])
    s, i, size = break_ties(scores, index, 1e-4)
    assert i.tolist() == [[2, 5, 7, 0], [3, 1, 2, 0]] and size.tolist() == [3, 1]
    assert s[0].tolist() == pytest.approx([0.89995, 0.89991, 0.9, 0.5])
