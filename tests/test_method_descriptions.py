"""What the tables and `www methods` say about each concept-scoring method is what the methods do:
which ones can select nothing (concept NULL), and the scale of their scores."""

import re

import torch

from www_assets.methods.concept_scoring import METHODS, ConceptInputs, score_concepts
from www_resources.tables import TABLES


def _no_concept_beats_the_template() -> ConceptInputs:
    """Two views, both e1, one neuron whose examples are both; the bare template is e1 too and the
    concepts are e2 and -e1. By hand, for either view v = e1:
        cos(v, t_tem) = 1; cos(v, e2) = 0; cos(v, -e1) = -1
        ACS:      0 - 1 = -1 and -1 - 1 = -2          -> max <= 0: nothing selected
        t-vMF:    phi(0) - phi(1) < 0, phi(-1) - phi(1) < 0 (phi rises with c) -> nothing
        cosine:   0 and -1 (max 0 <= 0)               -> threshold rule keeps the best alone; argmax too
        L1 / L2:  -|e1 - e2| < 0 and -|e1 + e1| < 0   -> argmax keeps the best
    """
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    concepts = torch.stack([e2, -e1])
    return ConceptInputs(
        view_features=torch.stack([e1, e1]), examples=torch.tensor([[0, 1]]), concept_features=concepts,
        template_feature=e1, raw_concept_features=concepts.clone(), view_activations=torch.tensor([[1.0], [0.5]]))


def _null_methods_named_in(description: str) -> set[str]:
    sentence = description.split("Concept NULL")[1].split("the other methods")[0]
    return set(re.findall(r"\b[a-z][a-z_]+\b", sentence)) & set(METHODS)


def test_the_description_names_the_methods_that_can_select_nothing():
    inputs = _no_concept_beats_the_template()
    empty = {m for m in METHODS if not score_concepts(m, inputs, top_n=2, alpha=0.95).selected[0]}
    assert empty == {"www", "www_tvmf", "www_gradcam", "www_gradcam_tvmf"}
    assert _null_methods_named_in(TABLES["neuron_concepts"].description) == empty
    # and every method's scale is named in concept_scores' description
    for method in METHODS:
        assert re.search(rf"\b{method}\b", TABLES["concept_scores"].description), method


def test_the_methods_table_says_which_methods_can_select_nothing():
    from www_assets.methods.tables import methods_markdown

    rows = {line.split("|")[1].strip(" `"): line.split("|")[-2].strip() for line in methods_markdown().splitlines()[2:]}
    assert set(rows) == set(METHODS)
    inputs = _no_concept_beats_the_template()
    for method, null in rows.items():
        selects_nothing = not score_concepts(method, inputs, top_n=2, alpha=0.95).selected[0]
        assert (null != "never") == selects_nothing, method


def test_the_score_scales_hold_on_random_unit_features():
    """cosine-type scores lie in [-1, 1], L2 in [-2, 0], L1 below 0, ACS in [-2, 2] (a difference
    of two cosines), as the descriptions say."""
    generator = torch.Generator().manual_seed(0)
    views = torch.nn.functional.normalize(torch.randn(50, 16, generator=generator), dim=1)
    concepts = torch.nn.functional.normalize(torch.randn(30, 16, generator=generator), dim=1)
    inputs = ConceptInputs(
        view_features=views, examples=torch.randint(0, 50, (6, 5), generator=generator), concept_features=concepts,
        template_feature=concepts[0], raw_concept_features=concepts.flip(0), view_activations=torch.rand(50, 6))
    bounds = {"cosine": (-1, 1), "template_only": (-1, 1), "no_template": (-1, 1), "l2": (-2, 0), "l1": (None, 0),
              "www": (-2, 2), "www_gradcam": (-2, 2)}
    for method, (low, high) in bounds.items():
        scores = score_concepts(method, inputs, top_n=30, alpha=0.95).top_scores
        assert float(scores.max()) <= high + 1e-6, method
        assert low is None or float(scores.min()) >= low - 1e-6, method
    assert float(score_concepts("l1", inputs, top_n=30, alpha=0.95).top_scores.max()) < 0


def test_neuron_concepts_metadata_counts_every_method_and_says_what_the_preview_shows():
    import pandas as pd

    from www_assets.concepts import per_method_metadata

    # 3 www rows (2 major, 1 minor) and 2 clip_dissect rows (major)
    selected = pd.DataFrame({"layer": ["fc"] * 5, "neuron": [0, 1, 0, 0, 1], "method": ["www"] * 3 + ["clip_dissect"] * 2,
                             "kind": ["major", "major", "minor", "major", "major"], "concept": list("abcde")})
    meta = per_method_metadata(selected)
    assert meta["rows"] == 5  # every method's rows, as dagster/row_count counts them
    counts = meta["rows per method"].value
    assert "| clip_dissect |       2 |       0 |" in counts and "| www          |       2 |       1 |" in counts
    preview = meta["preview (method www, first 10 rows)"].value
    assert preview.count("| www ") == 3 and "clip_dissect" not in preview
    assert "preview" not in per_method_metadata(selected[selected["method"] == "clip_dissect"])  # no www rows
    assert "preview (first 10 rows)" in per_method_metadata(selected[selected["method"] == "clip_dissect"])
