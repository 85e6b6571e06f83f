"""HINT: hierarchy, responsible regions, classifier samples, the Shapley estimator, boxes and IoU."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from www_assets.methods import hint

# --- the concept hierarchy -----------------------------------------------------------------------


def test_world_paths_give_the_four_level_tree():
    from www_resources.world import CLASS_SPECS, class_path

    names = [c.name for c in CLASS_SPECS]
    tree = hint.hierarchy_from_paths([class_path(n) for n in names], names).set_index("concept")
    assert len(tree) == 24 + 6 + 2 + 1
    assert tree.loc["thing", "depth"] == 0 and tree.loc["thing", "parent"] is None
    assert tree.loc["vehicle", "parent"] == "artifact" and tree.loc["vehicle", "depth"] == 2
    assert tree.loc["vehicle", "class_names"] == ["car", "truck", "bus", "airplane"]
    assert tree.loc["shark", "parent"] == "sea animal" and tree.loc["shark", "depth"] == 3
    assert tree.loc["organism", "n_classes"] == 12 and not tree.loc["organism", "is_class"]


def test_nodes_covering_one_class_are_pruned_and_parents_skip_them():
    paths = [["root", "a", "a1", "x"], ["root", "a", "y"], ["root", "b", "b1", "z"]]
    tree = hint.hierarchy_from_paths(paths, ["x", "y", "z"]).set_index("concept")
    assert sorted(tree.index) == ["a", "root", "x", "y", "z"]  # a1, b and b1 cover one class each
    assert tree.loc["x", "parent"] == "a" and tree.loc["x", "depth"] == 2
    assert tree.loc["z", "parent"] == "root" and tree.loc["z", "depth"] == 1
    assert tree.loc["a", "classes"] == [0, 1]


@pytest.fixture
def wordnet(tmp_path_factory, monkeypatch):
    import nltk

    from www_resources import wordnet_setup
    from www_resources.concept_sets import WordNetUnavailableError, wordnet_reader

    try:
        return wordnet_reader()
    except WordNetUnavailableError:
        pass
    if not (wordnet_setup.DEBIAN_WORDNET_DIR / "data.noun").is_file():
        pytest.skip("WordNet is not installed for nltk and Debian's wordnet-base is missing "
                    "(python -m www_resources.wordnet_setup; CI installs it)")
    root = tmp_path_factory.mktemp("nltk_data")
    wordnet_setup.copy_database(wordnet_setup.DEBIAN_WORDNET_DIR, root)
    monkeypatch.setattr(nltk.data, "path", [str(root), *nltk.data.path])
    return wordnet_reader()


def test_wordnet_hierarchy_of_three_imagenet_classes(wordnet):
    wnids = ["n02085620", "n02123045", "n04285008"]  # Chihuahua, tabby cat, sports car
    paths, names = hint.wordnet_class_paths(wnids, wordnet)
    assert [p[-1] for p in paths] == ["chihuahua.n.03", "tabby.n.01", "sports_car.n.01"]
    tree = hint.hierarchy_from_paths(paths, ["Chihuahua", "tabby", "sports car"], names=names).set_index("concept")
    # dog and cat meet at the carnivores; every class is a whole object
    assert tree.loc["carnivore.n.01", "classes"] == [0, 1]
    assert tree.loc["whole.n.02", "classes"] == [0, 1, 2]
    assert tree.loc["entity.n.01", "depth"] == 0
    assert "dog.n.01" not in tree.index and "car.n.01" not in tree.index  # one class each
    assert tree.loc["chihuahua.n.03", "parent"] == "carnivore.n.01"
    assert tree.loc["tabby.n.01", "parent"] == "carnivore.n.01"
    assert tree.loc["sports_car.n.01", "parent"] == "whole.n.02"
    assert tree.loc["carnivore.n.01", "name"] == "carnivore"


def test_wordnet_hierarchy_rejects_folders_that_are_not_wnids():
    with pytest.raises(ValueError, match="not a WordNet noun id"):
        hint.wordnet_class_paths(["cats"], wordnet=None)


# --- responsible regions -------------------------------------------------------------------------


class HandModel(nn.Module):
    """layer -> ReLU -> logits = sum over channels and positions of W[k] * relu(features)."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.layer = nn.Identity()
        self.relu = nn.ReLU()
        self.register_buffer("w", weights)  # (K, C, h, w)

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", self.relu(self.layer(x)), self.w)


def _hand_weights():
    w = torch.zeros(2, 3, 4, 4)
    w[0, :, 1, 2] = 1.0  # positive evidence for class 0 at (1, 2)
    w[0, :, 3, 0] = 1.0  # and at (3, 0)
    w[0, :, 0, 0] = -1.0  # negative evidence at (0, 0)
    w[1, :, 2, 2] = 0.5
    return w


def test_saliency_finds_the_positions_the_class_reads():
    model = HandModel(_hand_weights())
    x = torch.rand(2, 3, 4, 4) + 0.1  # positive, so the ReLU passes everything
    objective = lambda logits: logits[:, 0].sum()[None]
    _, (guided,) = hint.layer_gradients(model, model.layer, x, objective, guided=True)
    _, (vanilla,) = hint.layer_gradients(model, model.layer, x, objective, guided=False)
    expected_guided = np.zeros((4, 4), bool)
    expected_guided[1, 2] = expected_guided[3, 0] = True
    expected_vanilla = expected_guided.copy()
    expected_vanilla[0, 0] = True  # the negative evidence has the same gradient norm
    for b in range(2):
        assert (hint.responsible_positions(hint.position_saliency(guided))[b].numpy() == expected_guided).all()
        assert (hint.responsible_positions(hint.position_saliency(vanilla))[b].numpy() == expected_vanilla).all()
    # the gradient itself is the weight: sqrt(3) at the read positions
    assert torch.allclose(vanilla[0].pow(2).sum(0).sqrt()[1, 2], torch.tensor(math.sqrt(3.0)))


def test_saliency_normalisation_by_the_percentile():
    g = torch.zeros(1, 1, 2, 5)
    g[0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    g[0, 0, 1] = torch.tensor([5.0, 6.0, 7.0, 8.0, 10.0])
    s = hint.position_saliency(g, percentile=50.0)  # median of 0..8,10 = 4.5, min 0
    assert torch.allclose(s.flatten(), (torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 10.0]) / 4.5).clamp(0, 1))
    assert hint.position_saliency(torch.zeros(1, 3, 2, 2)).sum() == 0  # flat: nothing responsible


def test_vit_default_layer_is_the_input_of_the_last_block():
    from www_resources.world import build_classifier

    vit = build_classifier("vit", 4, 32, depth=3, embed_dim=32, num_heads=2)
    assert hint.default_hint_layer(vit, "norm") == "blocks.1"
    assert hint.default_hint_layer(vit, "blocks.0") == "blocks.0"
    single = build_classifier("vit", 4, 32, depth=1, embed_dim=32, num_heads=2)
    assert hint.default_hint_layer(single, "norm") == "norm_pre"
    cnn = build_classifier("cnn", 4, 32)
    assert hint.default_hint_layer(cnn, "layer4") == "layer4"


# --- classifier samples --------------------------------------------------------------------------


def test_classifier_samples_positives_and_negatives():
    own = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)  # 2 images, 3 positions, 2 neurons
    own_resp = np.array([[True, False, False], [False, True, True]])
    sib = 100 + np.arange(1 * 3 * 2, dtype=float).reshape(1, 3, 2)
    sib_resp = np.array([[False, True, False]])
    X, y = hint.classifier_samples(own, own_resp, sib, sib_resp)
    assert y.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert X[:3].tolist() == [[0, 1], [8, 9], [10, 11]]  # the concept's responsible positions
    assert X[3].tolist() == [102, 103]  # the sibling's responsible position
    assert sorted(map(tuple, X[4:].tolist())) == [(2, 3), (4, 5), (6, 7), (100, 101), (104, 105)]


def test_concept_classifier_learns_a_separable_concept_and_keeps_neuron_ids():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    y = (X[:, 4] > 0).astype(np.int8)
    clf = hint.train_concept_classifier(X, y, neurons=np.array([1, 4]))
    assert clf.heldout_accuracy > 0.95 and clf.train_accuracy > 0.95
    assert np.count_nonzero(clf.weights) <= 2 and clf.weights[4] > 0
    assert clf.weights[0] == clf.weights[2] == clf.weights[3] == clf.weights[5] == 0


# --- Shapley values --------------------------------------------------------------------------------


def _exact_shapley(value, x):
    """Shapley values of the game S -> value(x with only S kept), by enumerating every coalition."""
    d = len(x)
    phi = np.zeros(d)
    for j in range(d):
        others = [k for k in range(d) if k != j]
        for size in range(d):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            for subset in itertools.combinations(others, size):
                mask = np.zeros(d)
                mask[list(subset)] = 1
                with_j = mask.copy()
                with_j[j] = 1
                phi[j] += weight * (value(x * with_j) - value(x * mask))
    return phi


def test_sampled_shapley_converges_to_the_exact_values_of_a_nonlinear_classifier():
    rng = np.random.default_rng(1)
    d, r = 5, 4
    w = rng.normal(size=d).astype(np.float32)
    b = -0.2
    X = rng.normal(size=(r, d)).astype(np.float32)
    value = lambda v: float(hint.modified_huber_proba(v @ w + b))
    exact = np.stack([_exact_shapley(value, X[i].astype(np.float64)) for i in range(r)])  # (R, D)
    expected = np.abs(exact).mean(axis=0)
    assert not np.allclose(expected, hint.linear_shapley_closed_form(w, X) / 2, atol=1e-3)  # clipping matters
    phi, per_position = hint.linear_link_shapley(torch.from_numpy(w), b, torch.from_numpy(X), 6000, seed=0)
    assert np.abs(per_position.numpy() - exact).max() < 0.02
    assert np.abs(phi.numpy() - expected).max() < 0.02


def test_cumulative_sum_path_equals_the_generic_estimator():
    rng = np.random.default_rng(2)
    d, r = 7, 30
    w = torch.from_numpy(rng.normal(size=d).astype(np.float32))
    X = torch.from_numpy(rng.normal(size=(r, d)).astype(np.float32))
    b = 0.3
    generic = lambda masked: hint.modified_huber_proba(masked @ w + b)
    phi_a, per_a = hint.sampled_shapley(generic, X, 50, seed=3)
    phi_b, per_b = hint.linear_link_shapley(w, b, X, 50, seed=3, chunk=64)  # small chunks: several passes
    assert torch.allclose(per_a, per_b, atol=1e-5) and torch.allclose(phi_a, phi_b, atol=1e-6)


def test_linear_output_gives_the_closed_form_with_any_number_of_samples():
    rng = np.random.default_rng(3)
    w = rng.normal(size=6).astype(np.float32)
    X = rng.normal(size=(20, 6)).astype(np.float32)
    expected = hint.linear_shapley_closed_form(w, X)
    for n_samples in (1, 3):
        phi, _ = hint.linear_link_shapley(torch.from_numpy(w), 0.7, torch.from_numpy(X), n_samples,
                                          link=lambda z: z, seed=n_samples)
        assert np.allclose(phi.numpy(), expected, atol=1e-5)
        phi, _ = hint.sampled_shapley(lambda m: m @ torch.from_numpy(w) + 0.7, torch.from_numpy(X), n_samples)
        assert np.allclose(phi.numpy(), expected, atol=1e-5)


def test_top_neurons_by_share():
    phi = np.array([0.1, 0.5, 0.5, 0.0, 0.3, 0.2, 0.9, 0.05, 0.4, 0.6])
    assert hint.top_neurons_by_share(phi, 0.1).tolist() == [6]
    assert hint.top_neurons_by_share(phi, 0.4).tolist() == [6, 9, 1, 2]  # tie: lower id first
    assert len(hint.top_neurons_by_share(phi, 0.8)) == 8


# --- boxes ------------------------------------------------------------------------------------------


def test_box_from_mask_takes_the_largest_component():
    mask = np.zeros((8, 10), bool)
    mask[1:3, 1:3] = True  # 4 pixels
    mask[4:7, 5] = True  # an L of 5 pixels: (4..6, 5) and (6, 6..7)
    mask[6, 6:8] = True
    assert hint.box_from_mask(mask) == (5, 4, 8, 7)
    diagonal = np.eye(3, dtype=bool)  # 4-connectivity: three components of one pixel, the first wins
    assert hint.box_from_mask(diagonal) == (0, 0, 1, 1)
    assert hint.box_from_mask(np.zeros((4, 4), bool)) is None


def test_box_iou_hand_cases():
    assert hint.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert hint.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert hint.box_iou((0, 0, 10, 10), (2, 2, 4, 6)) == pytest.approx(8 / 100)
    assert hint.box_iou((0, 0, 4, 4), (4, 0, 8, 4)) == 0.0
    assert hint.box_iou(None, (0, 0, 1, 1)) == 0.0


def test_box_file_boxes_follow_the_probe_loader(tmp_path):
    # 200 x 100 image, shorter side to 50, centre crop 50: the image becomes 100 x 50, crop from x = 25
    assert hint.map_box_to_input((100, 0, 200, 100), 200, 100, 50, 50) == (25, 0, 50, 50)
    assert hint.map_box_to_input((0, 0, 40, 20), 200, 100, 50, 50) == (0, 0, 0, 10)
    (tmp_path / "boxes.csv").write_text("image_id,x0,y0,x1,y1\na/1.jpg,1,2,3,4\n")
    assert hint.read_box_file(tmp_path / "boxes.csv").iloc[0].tolist() == ["a/1.jpg", 1, 2, 3, 4]
    (tmp_path / "bad.csv").write_text("image,x0\n")
    with pytest.raises(ValueError, match="missing column"):
        hint.read_box_file(tmp_path / "bad.csv")


# --- agreement ----------------------------------------------------------------------------------------


def test_agreement_shares_against_chance():
    import pandas as pd

    tree = hint.hierarchy_from_paths([["t", "v", "car"], ["t", "v", "bus"], ["t", "cat"]], ["car", "bus", "cat"])
    words = hint.concept_words(tree, {0: ["car", "auto"], 1: ["bus"], 2: ["cat"]})
    assert words["v"] == {"v", "car", "auto", "bus"}
    shapley = pd.DataFrame({"concept": "v", "neuron": [0, 1, 2, 3], "rank": [1, 2, 3, 4]})
    rows = hint.agreement_rows(tree[tree["concept"] == "v"], shapley, 2,
                               www_concepts={0: "auto", 1: "cat", 2: "bus", 3: "cat"},
                               class_of_neuron={0: 0, 1: 1, 2: 2, 3: 2}, words=words).set_index("source")
    assert rows.loc["www", "share"] == 0.5 and rows.loc["www", "chance"] == 0.5
    assert rows.loc["class_shapley", "share"] == 1.0 and rows.loc["class_shapley", "chance"] == 0.5


def test_a_layer_right_before_global_pooling_is_skipped_for_the_one_before():
    from www_resources.world import build_classifier

    torch.manual_seed(0)
    cnn = build_classifier("cnn", 4, 32, width=8).eval()
    x = torch.randn(3, 3, 32, 32)
    objective = lambda logits: logits[:, 1].sum()[None]
    _, (at_layer4,) = hint.layer_gradients(cnn, cnn.layer4, x, objective)
    assert hint.saliency_is_flat(at_layer4)  # avgpool + fc: the same gradient at every position
    candidates = hint.hint_layer_candidates(cnn, "layer4", ["layer4", "fc"])
    assert candidates == ["layer4", "layer3"]
    assert hint.choose_hint_layer(cnn, candidates, x, objective) == "layer3"
    assert hint.hint_layer_candidates(cnn, "layer4", ["layer2", "layer3", "layer4", "fc"]) == ["layer4", "layer3", "layer2"]


def test_level_accuracy_weights_concepts_by_their_images_and_the_section_shows_it():
    import pandas as pd

    rows = []
    for concept, depth, n, acc_all, acc_cam in [("t", 0, 40, 0.75, 0.5), ("a", 1, 10, 0.5, 0.0), ("b", 1, 30, 1.0, 0.2)]:
        rows += [{"model": "m", "concept": concept, "depth": depth, "method": "hint", "neuron_share": 1.0,
                  "n_images": n, "accuracy": acc_all},
                 {"model": "m", "concept": concept, "depth": depth, "method": "cam", "neuron_share": 1.0,
                  "n_images": n, "accuracy": acc_cam}]
    levels = hint.localization_by_level(pd.DataFrame(rows)).set_index(["depth", "column"])["accuracy"]
    assert levels[(1, "all")] == pytest.approx((0.5 * 10 + 1.0 * 30) / 40)
    assert levels[(1, "CAM")] == pytest.approx(0.2 * 30 / 40)
    text = hint.results_markdown(pd.DataFrame(rows), None, None)
    assert "| `m` | 1 |  | 40 | **87.5%** | 15.0% |" in text
    assert "beats the CAM box at 2 of 2 levels" in text


def test_concept_objective_is_the_log_sum_exp_of_the_concept_classes():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    # level 0: image 0 -> classes {0, 1}, image 1 -> {0, 1, 2}; level 1: image 0 -> {1}, image 1 none
    objective = hint.concept_objective([[[0, 1], [0, 1, 2]], [[1], None]], 3)
    values = objective(logits)
    expected0 = math.log(math.e + math.e ** 2) + math.log(1 + math.e ** -1 + math.e ** 3)
    assert values[0].item() == pytest.approx(expected0) and values[1].item() == pytest.approx(2.0)
    (grad,) = torch.autograd.grad(values[0], logits)
    soft = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    assert torch.allclose(grad[0], torch.tensor([soft[0], soft[1], 0.0]))
    (grad,) = torch.autograd.grad(objective(logits)[1], logits)
    assert torch.isfinite(grad).all() and grad[1].abs().sum() == 0


def _imagenet_folder(root: Path, wnids) -> Path:
    from PIL import Image

    for wnid in wnids:
        (root / wnid).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / wnid / "a.png")
    return root


def test_image_folder_hierarchy_from_wnids(tmp_path, wordnet):
    from www_assets.hierarchy import wordnet_hierarchy
    from www_resources.probes import open_probe_set

    folder = _imagenet_folder(tmp_path / "val", ["n02085620", "n02123045", "n04285008"])
    tree = wordnet_hierarchy("resnet", open_probe_set(f"imagefolder:{folder}")).set_index("concept")
    assert tree.loc["carnivore.n.01", "class_names"] == ["n02085620", "n02123045"]
    assert tree[tree["is_class"]].index.tolist() == ["sports_car.n.01", "chihuahua.n.03", "tabby.n.01"]


def test_missing_wordnet_names_the_corpus_and_the_install_command(tmp_path, monkeypatch):
    from www_assets.hierarchy import wordnet_hierarchy
    from www_resources import concept_sets
    from www_resources.probes import open_probe_set

    def absent():
        raise concept_sets.WordNetUnavailableError(f"WordNet is not installed ... {concept_sets.WORDNET_INSTALL_COMMAND}")

    monkeypatch.setattr(concept_sets, "wordnet_reader", absent)
    folder = _imagenet_folder(tmp_path / "val", ["n02085620", "n02123045"])
    with pytest.raises(concept_sets.WordNetUnavailableError, match="needs nltk's 'wordnet' corpus") as info:
        wordnet_hierarchy("resnet", open_probe_set(f"imagefolder:{folder}"))
    assert "python -m www_resources.wordnet_setup" in str(info.value)
