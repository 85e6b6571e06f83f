"""The code between the methods and the tables: which truth a neuron is judged against, how the
selected concepts of each method are scored, which views a neuron's examples point to, and the
summary's paired t-tests, each against hand-computed values or scipy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from www_assets.evaluation import class_truth
from www_assets.methods.concept_eval import METRICS, evaluate_selections, summarize_concept_eval
from www_assets.methods.scoring_inputs import example_index, full_view_activations, scoring_inputs
from www_assets.probe import activation_matrix

# three words with known 2-d embeddings: cos(cat, kitten) = 0.8, cos(cat, car) = 0, cos(kitten, car) = 0.6
WORDS = {"cat": [1.0, 0.0], "kitten": [0.8, 0.6], "car": [0.0, 1.0], "none": [-1.0, 0.0]}


def encode(words):
    return np.array([WORDS[w] for w in words])


def test_evaluate_selections_scores_each_method_and_layer_against_its_own_truth():
    selected = pd.DataFrame([
        # layer fc: neuron 0 selected [cat, kitten], neuron 1 nothing (a NULL row)
        ("fc", 0, "www", "major", 1, "cat"), ("fc", 0, "www", "major", 2, "kitten"),
        ("fc", 1, "www", "major", 0, None),
        # minor concepts are not judged
        ("fc", 1, "www", "minor", 1, "car"),
        # layer4: neuron 0 selected [car]; layer3 has no truth and is left out
        ("layer4", 0, "www", "major", 1, "car"),
        ("layer3", 0, "www", "major", 1, "cat"),
    ], columns=["layer", "neuron", "method", "kind", "rank", "concept"])
    truth = {"fc": {0: ["cat"], 1: ["car"]}, "layer4": {0: ["kitten"]}}
    out = evaluate_selections(selected, truth, encode, encode).set_index(["layer", "neuron"])
    assert sorted(out.index) == [("fc", 0), ("fc", 1), ("layer4", 0)]
    fc0, fc1, l40 = out.loc[("fc", 0)], out.loc[("fc", 1)], out.loc[("layer4", 0)]
    assert fc0["predicted"] == ["cat", "kitten"] and fc0["truth"] == ["cat"]
    # P = 1/2, R = 1 -> F1 = 2/3; hit; mean pair cosine (1 + 0.8) / 2
    assert fc0["f1"] == pytest.approx(2 / 3) and fc0["hit"] == 1.0
    assert fc0["clip_cos"] == pytest.approx(0.9) and fc0["text_cos"] == pytest.approx(0.9)
    # nothing selected counts as the word "none": cos(none, car) = 0, no hit, F1 0
    assert fc1["predicted"] == [] and fc1["f1"] == 0.0 and fc1["hit"] == 0.0
    assert fc1["clip_cos"] == pytest.approx(0.0)
    # layer4 neuron 0 is judged against its own truth (kitten), not against class 0 (cat)
    assert l40["clip_cos"] == pytest.approx(0.6) and l40["hit"] == 0.0


def test_evaluate_selections_uses_each_encoder_for_its_metric():
    selected = pd.DataFrame([("fc", 0, "www", "major", 1, "kitten")],
                            columns=["layer", "neuron", "method", "kind", "rank", "concept"])
    # another embedding space, in which kitten and car point the same way
    other = lambda words: np.array([{"kitten": [0.0, 2.0], "car": [0.0, 1.0]}[w] for w in words])  # noqa: E731
    out = evaluate_selections(selected, {"fc": {0: ["car"]}}, encode, other)
    assert out["clip_cos"].iloc[0] == pytest.approx(0.6)  # cos(kitten, car) in the first space
    assert out["text_cos"].iloc[0] == pytest.approx(1.0)  # and in the other one


def test_summary_pairs_neurons_and_tests_against_both_references():
    rng = np.random.default_rng(0)
    values = {m: rng.random((6, len(METRICS))) for m in ("www", "clip_dissect", "cosine")}
    rows = []
    for method, table in values.items():
        for neuron in range(6):
            rows.append({"model": "m", "concept_set": "c", "layer": "fc", "method": method, "neuron": neuron,
                         **dict(zip(METRICS, table[neuron]))})
    per_neuron = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # row order must not matter
    summary = summarize_concept_eval(per_neuron).set_index(["method", "metric"])
    for method, table in values.items():
        for j, metric in enumerate(METRICS):
            row = summary.loc[(method, metric)]
            assert row["mean"] == pytest.approx(table[:, j].mean())
            assert row["stderr"] == pytest.approx(table[:, j].std(ddof=1) / np.sqrt(6))
            assert row["n"] == 6
            for ref in ("www", "clip_dissect"):
                p = row[f"p_value_vs_{ref}"]
                if ref == method:
                    assert np.isnan(p)
                else:
                    assert p == pytest.approx(stats.ttest_rel(table[:, j], values[ref][:, j]).pvalue)


def test_summary_without_a_reference_has_no_p_value():
    per_neuron = pd.DataFrame({"model": "m", "concept_set": "c", "layer": "fc", "method": "cosine",
                               "neuron": [0, 1, 2], **{m: [0.1, 0.5, 0.9] for m in METRICS}})
    summary = summarize_concept_eval(per_neuron)
    assert summary["p_value_vs_www"].isna().all() and summary["p_value_vs_clip_dissect"].isna().all()
    assert summary["mean"].tolist() == pytest.approx([0.5] * len(METRICS))


def _embeddings_and_texts():
    embeddings = pd.DataFrame({
        "image_id": ["a", "a", "b", "b"],
        "view": ["full", "crop:0,0", "full", "crop:0,0"],
        "vector": [np.array([1, 0], np.float32), np.array([0, 1], np.float32),
                   np.array([0.6, 0.8], np.float32), np.array([0.8, 0.6], np.float32)],
    })
    texts = pd.DataFrame({  # deliberately out of order
        "concept_id": [1, None, 0, 1, 0],
        "concept": ["dog", None, "cat", "dog", "cat"],
        "form": ["prompt", "template", "raw", "raw", "prompt"],
        "vector": [np.array([0, 1.0]), np.array([0.5, 0.5]), np.array([1.0, 0.1]), np.array([0.1, 1.0]),
                   np.array([1.0, 0])],
    })
    return embeddings, texts


def test_scoring_inputs_align_concepts_prompts_and_raw_words():
    shared = scoring_inputs(*_embeddings_and_texts())
    assert shared.concepts == ["cat", "dog"]
    assert shared.concept_features.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert np.allclose(shared.raw_concept_features.numpy(), [[1.0, 0.1], [0.1, 1.0]])
    assert shared.template_feature.tolist() == [0.5, 0.5]
    assert shared.index == {("a", "full"): 0, ("a", "crop:0,0"): 1, ("b", "full"): 2, ("b", "crop:0,0"): 3}
    assert torch.equal(shared.view_features[3], torch.tensor([0.8, 0.6]))


def test_example_index_points_each_neuron_at_its_ranked_views():
    shared = scoring_inputs(*_embeddings_and_texts())
    examples = pd.DataFrame({
        "layer": ["fc"] * 6 + ["layer4"],
        "neuron": [1, 0, 1, 0, 0, 1, 0],
        "kind": ["crop", "crop", "crop", "crop", "image", "image", "crop"],
        "rank": [2, 1, 1, 2, 1, 1, 1],
        "image_id": ["a", "b", "b", "a", "b", "a", "a"],
        "view": ["crop:0,0"] * 4 + ["full", "full", "crop:0,0"],
    })
    crops = example_index(examples, "fc", "crop", 2, shared.index)
    assert crops.tolist() == [[3, 1], [3, 1]]  # neuron 0: b then a; neuron 1: b (rank 1) then a
    assert example_index(examples, "fc", "crop", 1, shared.index).tolist() == [[3], [3]]
    assert example_index(examples, "fc", "image", 1, shared.index).tolist() == [[2], [0]]


def test_full_view_activations_fill_only_full_views():
    shared = scoring_inputs(*_embeddings_and_texts())
    activations = pd.DataFrame({"layer": ["fc", "fc"], "image_id": ["b", "a"],
                                "vector": [np.array([5.0, 6.0], np.float32), np.array([1.0, 2.0], np.float32)]})
    acts = full_view_activations(*activation_matrix(activations, "fc"), shared.index)
    assert acts[0].tolist() == [1.0, 2.0] and acts[2].tolist() == [5.0, 6.0]
    assert torch.isinf(acts[1]).all() and torch.isinf(acts[3]).all()  # crops never rank as whole images


def test_class_truth_of_an_image_folder_splits_comma_separated_synonyms(tmp_path):
    from PIL import Image

    for name in ("n01", "n02"):
        (tmp_path / "val" / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "val" / name / "x.png")
    (tmp_path / "names.txt").write_text("tench, Tinca tinca\ngoldfish\n")
    entry = SimpleNamespace(is_world_model=False, probe_set=f"imagefolder:{tmp_path / 'val'}?classes={tmp_path / 'names.txt'}")
    assert class_truth(entry) == {0: ["tench", "Tinca tinca"], 1: ["goldfish"]}


def test_a_tie_containing_a_truth_word_counts_in_the_tie_aware_reading_only():
    selected = pd.DataFrame([
        # neuron 0: the tie-break picked "car" from the tied set {car, cat}; neuron 1: no tie
        ("fc", 0, "clip_dissect", "major", 1, "car", 2, ["car", "cat"]),
        ("fc", 1, "clip_dissect", "major", 1, "kitten", 1, ["kitten"]),
    ], columns=["layer", "neuron", "method", "kind", "rank", "concept", "tie_size", "tied"])
    out = evaluate_selections(selected, {"fc": {0: ["cat"], 1: ["car"]}}, encode, encode).set_index("neuron")
    assert out["hit"].tolist() == [0.0, 0.0]
    assert out["hit_tie_aware"].tolist() == [1.0, 0.0]
    assert out["tied_top"].tolist() == [1.0, 0.0] and out["tie_size"].tolist() == [2, 1]
    assert out["f1"].tolist() == [0.0, 0.0]  # the strict reading is unchanged
