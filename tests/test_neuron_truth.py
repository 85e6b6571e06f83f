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
