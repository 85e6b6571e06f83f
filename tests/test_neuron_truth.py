"""Hidden-neuron ground truth: planted neurons, hand AUROCs, a naive sklearn loop, presence tables."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from www_assets.methods.neuron_truth import attribute_auroc, best_matching_attribute, presence_matrix


def test_auroc_hand_cases():
    activations = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 2.0], [4.0, 5.0]])
    presence = np.array(
        [
            [False, True, True],
            [False, False, False],
            [True, True, False],
            [True, False, False],
        ]
    )
    auroc = attribute_auroc(activations, presence)
    assert auroc.shape == (3, 2)
    # attribute 0 = images {2, 3}, the two highest of neuron 0: perfect
    assert auroc[0, 0] == pytest.approx(1.0)
    # attribute 1 = images {0, 2} on neuron 0: pairs (1>2? no, 1>4? no, 3>2 yes, 3>4 no) -> 1/4
    assert auroc[1, 0] == pytest.approx(0.25)
    # attribute 2 = image {0} on neuron 1 (values 1 | 1, 2, 5): tie 1/2, lose, lose -> 0.5/3
    assert auroc[2, 1] == pytest.approx(0.5 / 3)


def test_constant_attributes_are_skipped():
    activations = np.array([[0.0], [1.0], [2.0]])
    presence = np.array([[True, False, True], [True, False, False], [True, False, True]])
    auroc = attribute_auroc(activations, presence)
    assert np.isnan(auroc[0, 0]) and np.isnan(auroc[1, 0])
    assert auroc[2, 0] == pytest.approx(0.5)
    table = best_matching_attribute(activations, presence, ["everywhere", "nowhere", "sometimes"])
    assert table["attribute"].tolist() == ["sometimes"]


def test_auroc_matches_naive_sklearn_loop():
    rng = np.random.default_rng(0)
    n_images, n_neurons, n_attributes = 60, 7, 9
    # integer activations make ties common
    activations = rng.integers(0, 6, size=(n_images, n_neurons)).astype(float)
    presence = rng.random((n_images, n_attributes)) < rng.uniform(0.1, 0.9, size=n_attributes)
    presence[:, 4] = True  # present everywhere
    presence[:, 7] = False  # present nowhere
    auroc = attribute_auroc(activations, presence)
    for attribute in range(n_attributes):
        for neuron in range(n_neurons):
            if attribute in (4, 7):
                assert np.isnan(auroc[attribute, neuron])
            else:
                expected = roc_auc_score(presence[:, attribute], activations[:, neuron])
                assert auroc[attribute, neuron] == pytest.approx(expected, abs=1e-12)


def test_planted_neurons_find_their_attribute():
    rng = np.random.default_rng(1)
    n_images = 300
    names = ["red", "wheel", "grass", "striped", "vehicle"]
    presence = rng.random((n_images, len(names))) < 0.4
    noise = rng.normal(scale=0.1, size=(n_images, 3))
    activations = np.column_stack(
        [
            2.0 * presence[:, 2] + noise[:, 0],  # neuron 0 fires on grass
            presence[:, 0] * 3.0 + noise[:, 1],  # neuron 1 fires on red
            -1.0 * presence[:, 3] + 0.5 * presence[:, 4] + noise[:, 2],  # neuron 2: vehicle, suppressed by striped
        ]
    )
    table = best_matching_attribute(activations, presence, names)
    assert table.columns.tolist() == ["neuron", "attribute", "score"]
    assert table["neuron"].tolist() == [0, 1, 2]
    assert table["attribute"].tolist() == ["grass", "red", "vehicle"]
    assert table["score"].iloc[0] == pytest.approx(1.0)
    assert table["score"].iloc[1] == pytest.approx(1.0)
    assert table["score"].iloc[2] == pytest.approx(roc_auc_score(presence[:, 4], activations[:, 2]))
    assert 0.5 < table["score"].iloc[2] < 1.0


def test_ties_between_attributes_pick_the_first():
    activations = np.array([[0.0], [1.0], [2.0], [3.0]])
    same = np.array([False, False, True, True])
    presence = np.column_stack([~same, same, same])
    table = best_matching_attribute(activations, presence, ["low", "high_a", "high_b"])
    assert table["attribute"].tolist() == ["high_a"]


def test_best_matching_attribute_rejects_bad_inputs():
    activations = np.zeros((4, 2))
    presence = np.array([[True], [False], [True], [False]])
    with pytest.raises(ValueError, match="unknown method"):
        best_matching_attribute(activations, presence, ["a"], method="correlation")
    with pytest.raises(ValueError, match="attribute_names has 2 names"):
        best_matching_attribute(activations, presence, ["a", "b"])
    with pytest.raises(ValueError, match="3 images"):
        best_matching_attribute(activations[:3], presence, ["a"])
    with pytest.raises(ValueError, match="bool"):
        best_matching_attribute(activations, presence.astype(int), ["a"])
    with pytest.raises(ValueError, match="no attribute can be scored"):
        best_matching_attribute(activations, np.ones((4, 1), dtype=bool), ["a"])
    with pytest.raises(ValueError, match="NaN"):
        best_matching_attribute(np.full((4, 2), np.nan), presence, ["a"])


# --- presence_matrix ---------------------------------------------------------------


@pytest.fixture
def world_tables():
    scenes = pd.DataFrame(
        {
            "image_id": [10, 11, 12],
            "label_name": ["Orange", "bus", "bus"],
            "superclass": ["fruit", "vehicle", "vehicle"],
            "colour": ["orange", "Red", "red"],
            "texture": ["dotted", None, "striped"],
            "background": ["grass", "road", "road"],
        }
    )
    parts = pd.DataFrame({"image_id": [11, 11, 12, 10, 11], "part": ["wheel", "door", "wheel", "Leaf", "wheel"]})
    return scenes, parts


def test_presence_matrix_merges_equal_words(world_tables):
    scenes, parts = world_tables
    presence, names = presence_matrix(scenes, parts)
    expected_names = [
        "bus", "orange",  # label_name (sorted); colour "orange" merges into it
        "fruit", "vehicle",  # superclass
        "red",  # colour (orange already known)
        "dotted", "striped",  # texture; None is absent
        "grass", "road",  # background
        "door", "leaf", "wheel",  # parts
    ]
    assert names == expected_names
    expected_rows = {
        10: {"orange", "fruit", "dotted", "grass", "leaf"},
        11: {"bus", "vehicle", "red", "road", "door", "wheel"},
        12: {"bus", "vehicle", "red", "striped", "road", "wheel"},
    }
    assert presence.dtype == bool and presence.shape == (3, len(expected_names))
    for row, image_id in enumerate(scenes["image_id"]):
        assert {n for n, p in zip(names, presence[row]) if p} == expected_rows[image_id]


def test_presence_matrix_qualified_names(world_tables):
    scenes, parts = world_tables
    presence, names = presence_matrix(scenes, parts, columns=("label_name", "colour"), qualify=True)
    assert names == ["label_name=bus", "label_name=orange", "colour=orange", "colour=red", "part=door", "part=leaf", "part=wheel"]
    np.testing.assert_array_equal(
        presence,
        [
            [False, True, True, False, False, True, False],
            [True, False, False, True, True, False, True],
            [True, False, False, True, False, False, True],
        ],
    )


def test_presence_matrix_rejects_bad_tables(world_tables):
    scenes, parts = world_tables
    with pytest.raises(ValueError, match="scenes lacks the columns \\['colour'\\]"):
        presence_matrix(scenes.drop(columns="colour"), parts)
    with pytest.raises(ValueError, match="duplicated image_id"):
        presence_matrix(pd.concat([scenes, scenes.iloc[[0]]]), parts)
    with pytest.raises(ValueError, match="scenes does not have: \\[99\\]"):
        presence_matrix(scenes, pd.DataFrame({"image_id": [99], "part": ["wheel"]}))
    with pytest.raises(ValueError, match="parts lacks"):
        presence_matrix(scenes, parts.rename(columns={"part": "name"}))


# ------------------------------------------------------------------ truth words, floor, top-k precision


def _cars_and_trucks():
    scenes = pd.DataFrame({
        "image_id": [f"i{i}" for i in range(8)],
        "label_name": ["car"] * 4 + ["truck"] * 4,
        "colour": ["red", "red", "blue", "blue"] * 2,
    })
    parts = pd.DataFrame({"image_id": pd.Series([], dtype=object), "part": pd.Series([], dtype=object)})
    presence, names = presence_matrix(scenes, parts, columns=("label_name", "colour"))
    activations = np.array([
        [5, 6, 7, 8, 1, 2, 3, 4],  # neuron 0: every car image above every truck image -> car, AUROC 1
        [1, 8, 2, 7, 3, 6, 4, 5],  # neuron 1: no attribute predicts it (every AUROC 0.5)
    ], dtype=float).T
    return presence, names, activations


def test_hidden_truth_names_classes_with_synonyms_and_judges_only_neurons_above_the_floor():
    from www_assets.methods.neuron_truth import TRUTH_AUROC_FLOOR, hidden_neuron_truth, truth_words

    presence, names, activations = _cars_and_trucks()
    synonyms = {"car": ["car", "automobile"], "truck": ["truck", "lorry"]}
    truth = hidden_neuron_truth(activations, presence, names, synonyms, k=6).set_index("neuron")
    assert truth.at[0, "attribute"] == "car" and truth.at[0, "truth"] == ["car", "automobile"]
    assert truth.at[0, "truth_auroc"] == pytest.approx(1.0) and bool(truth.at[0, "judged"])
    # top-6 of neuron 0: images 3, 2, 1, 0 (cars), then 7, 6 (trucks) -> 4/6
    assert truth.at[0, "truth_precision"] == pytest.approx(4 / 6)
    assert truth.at[1, "truth_auroc"] == pytest.approx(0.5) and not bool(truth.at[1, "judged"])
    assert 0.5 < TRUTH_AUROC_FLOOR <= 1.0
    assert truth_words("red", synonyms) == ["red"] and truth_words("Truck", synonyms) == ["truck", "lorry"]
    # a lower floor judges neuron 1 too
    assert hidden_neuron_truth(activations, presence, names, synonyms, floor=0.5)["judged"].all()


def test_top_k_precision_hand_case_and_ties():
    from www_assets.methods.neuron_truth import top_k_precision

    presence = np.array([[True, False], [False, True], [True, True], [False, False]])
    activations = np.array([[3.0, 1.0], [3.0, 2.0], [1.0, 2.0], [0.0, 2.0]])
    # neuron 0, attribute 0: top-2 = images 0, 1 (tie at 3 broken by the earlier image) -> 1/2
    # neuron 1, attribute 1: values 1, 2, 2, 2 -> top-2 = images 1, 2 -> both present -> 1
    assert top_k_precision(activations, presence, np.array([0, 1]), 2).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="one entry per neuron"):
        top_k_precision(activations, presence, np.array([0]), 2)


def test_a_synonym_hits_the_hidden_truth_and_unjudged_neurons_leave_the_summary():
    from www_assets.methods.concept_eval import evaluate_selections, summarize_concept_eval
    from www_assets.methods.neuron_truth import hidden_neuron_truth

    presence, names, activations = _cars_and_trucks()
    truth = hidden_neuron_truth(activations, presence, names, {"car": ["car", "automobile"]})
    selected = pd.DataFrame([("layer4", 0, "www", "major", 1, "automobile"), ("layer4", 1, "www", "major", 1, "red")],
                            columns=["layer", "neuron", "method", "kind", "rank", "concept"])
    encode = lambda words: np.array([[1.0, len(w)] for w in words])  # noqa: E731
    scored = evaluate_selections(selected, {"layer4": truth}, encode, encode).set_index("neuron")
    assert scored.at[0, "hit"] == 1.0 and scored.at[0, "truth_auroc"] == pytest.approx(1.0)
    assert not bool(scored.at[1, "judged"])
    summary = summarize_concept_eval(scored.reset_index().assign(model="m", concept_set="c"))
    hits = summary[summary["metric"] == "hit"].iloc[0]
    assert (hits["mean"], hits["n"], hits["n_candidates"]) == (1.0, 1, 2)
