"""Class concepts and class contrasting: the methods against hand-computed values and
independent implementations (www_assets/methods/class_concepts.py)."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from www_assets.methods import class_concepts as cc


class LinearTail(nn.Module):
    """features (identity conv) -> mean over positions -> linear head: logit = W mean(x) + b."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_nmf_recovers_planted_components():
    rng = np.random.default_rng(0)
    planted = np.zeros((3, 12))
    planted[0, 0:4], planted[1, 4:8], planted[2, 8:12] = 1.0, 2.0, 0.5
    planted[0, 5] = 0.3  # some overlap
    weights = rng.exponential(1.0, (400, 3)) * (rng.random((400, 3)) < 0.5)
    x = weights @ planted
    result = cc.factorise(x, 3)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    cosines = unit(result.basis) @ unit(planted).T
    assert sorted(cosines.argmax(axis=1).tolist()) == [0, 1, 2]
    assert cosines.max(axis=1).min() > 0.99
    assert result.share.sum() == pytest.approx(1.0)
    assert result.n_rows == 400


def test_nmf_shares_follow_the_mass_of_each_component():
    basis = np.array([[1.0, 0.0], [0.0, 1.0]])
    x = np.array([[3.0, 0.0], [3.0, 0.0], [0.0, 2.0]])  # mass 6 on the first axis, 2 on the second
    result = cc.factorise(x, 2)
    assert result.share == pytest.approx([0.75, 0.25], abs=1e-3)
    assert np.abs(result.basis / result.basis.max(axis=1, keepdims=True) - basis).max() < 1e-3


def test_gradient_times_activation_at_a_linear_head_is_w_dot_x():
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4), torch.randn(3)
    model = LinearTail(weight, bias).eval()
    x = torch.rand(2, 4, 2, 3)
    target = torch.tensor([2, 0])
    attribution = cc.layer_attribution(model, model.features, x, target, "grad_x_activation")
    positions = x.shape[2] * x.shape[3]
    expected = x * weight[target][:, :, None, None] / positions  # x_cp * w_tc / P, by hand
    assert torch.allclose(attribution, expected, atol=1e-6)
    # summed over channels and positions: w . mean(x) = logit - bias
    logits = model(x)
    assert torch.allclose(attribution.sum(dim=(1, 2, 3)), logits[[0, 1], target] - bias[target], atol=1e-5)


def test_deeplift_at_a_linear_head_is_the_difference_to_the_baseline_times_w():
    torch.manual_seed(1)
    weight, bias = torch.randn(3, 4), torch.randn(3)
    model = LinearTail(weight, bias).eval()
    x, baseline = torch.rand(2, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5)
    target = torch.tensor([1, 1])
    attribution = cc.layer_attribution(model, model.features, x, target, "deeplift", baseline)
    expected = (x - baseline) * weight[1][None, :, None, None] / 4
    assert torch.allclose(attribution, expected, atol=1e-6)


def test_attribution_filter_drops_negative_positions_and_scales_the_rest():
    vectors = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    scores = torch.tensor([0.5, -1.0, 0.0, 2.0])
    kept = cc.scaled_positions(vectors, scores)
    assert torch.equal(kept, torch.tensor([[0.5, 1.0], [14.0, 16.0]]))
    # the stricter contrast filter: >= 0.25 x the image's maximum, unscaled
    strict = cc.strict_positions(vectors, torch.tensor([0.4, 0.6, 2.0, -3.0]))
    assert torch.equal(strict, torch.tensor([[3.0, 4.0], [5.0, 6.0]]))
    assert len(cc.strict_positions(vectors, -torch.ones(4))) == 0
    assert torch.equal(cc.attribution_scores(torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])), torch.tensor([[2.0, -1.0]]))


def test_positions_of_conv_maps_and_token_sequences():
    conv = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    positions = cc.to_positions(conv)
    assert positions.shape == (2, 4, 3)
    assert torch.equal(positions[1, 3], conv[1, :, 1, 1])
    assert torch.equal(cc.positions_to_map(positions, 2, 2), conv)
    tokens = torch.randn(2, 5, 3)  # class token + 2 x 2 patches
    assert torch.equal(cc.to_positions(tokens, 1), tokens[:, 1:])
    split = cc.nonnegative(torch.tensor([[1.0, -2.0]]), True)
    assert torch.equal(split, torch.tensor([[1.0, 0.0, 0.0, 2.0]]))


def test_crop_vectors_are_the_means_of_the_positions_under_each_crop():
    maps = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    crops = cc.crop_vectors(maps, 3)  # windows [0,2), [1,3), [2,4) on each axis
    assert crops.shape == (1, 9, 1)
    assert crops[0, 0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))
    assert crops[0, 4, 0] == pytest.approx(np.mean([5, 6, 9, 10]))
    assert crops[0, 8, 0] == pytest.approx(np.mean([10, 11, 14, 15]))


def test_excluding_variant_never_uses_a_crop_or_image_predicted_as_the_class():
    rng = np.random.default_rng(0)
    n_images, per_image = 30, 9
    crop_image = np.repeat(np.arange(n_images), per_image)
    image_pred = rng.integers(0, 3, n_images)
    crop_pred = rng.integers(0, 3, n_images * per_image)
    asked = []

    def predict(index):
        asked.extend(index.tolist())
        return crop_pred[index]

    similarity = torch.from_numpy(rng.random((4, n_images * per_image)).astype(np.float32))
    target = 1
    picks = cc.top_crops(similarity, 8, target, crop_image, image_pred, predict, exclude=True, step=5)
    for index, values in picks:
        assert len(index) == 8
        assert not np.any(image_pred[crop_image[index]] == target)
        assert not np.any(crop_pred[index] == target)
        assert np.all(np.diff(values) <= 0)  # best first
    # every eligible crop more similar than the last pick was taken
    for row, (index, _) in enumerate(picks):
        eligible = np.flatnonzero((image_pred[crop_image] != target) & (crop_pred != target))
        best = eligible[np.argsort(-similarity[row, eligible].numpy(), kind="stable")[:8]]
        assert sorted(best.tolist()) == sorted(index.tolist())
    assert len(set(asked)) < n_images * per_image  # crops are predicted lazily, not all of them
    allow = cc.top_crops(similarity, 8, target, crop_image, image_pred, None, exclude=False)
    assert allow[0][0].tolist() == torch.argsort(similarity[0], descending=True)[:8].tolist()


def test_contrast_classifier_separates_and_its_normal_points_from_b_to_a():
    torch.manual_seed(0)
    a = torch.randn(60, 5) * 0.3 + torch.tensor([2.0, 0, 1, 0, 0])
    b = torch.randn(40, 5) * 0.3 + torch.tensor([0.0, 2, 1, 0, 0])
    c = torch.randn(50, 5) * 0.3 + torch.tensor([0.0, 0, 0, 2, 0])
    result = cc.train_pairwise_classifiers([a, b, c], [(0, 1), (1, 2), (2, 0)], epochs=300, lr=0.5)
    assert result.accuracy.tolist() == [1.0, 1.0, 1.0]
    assert float(result.weight[0] @ (a.mean(0) - b.mean(0))) > 0  # normal of (A=0, B=1) points to A
    assert float(result.weight[1] @ (b.mean(0) - c.mean(0))) > 0
    # the batched program trains exactly what nn.Linear + BCE + SGD trains pair by pair
    paper = cc.train_pairwise_classifiers([a, b, c], [(0, 1), (2, 0)], epochs=100, lr=0.01)
    for p, (x, y) in enumerate(((a, b), (c, a))):
        w, bias = cc.train_pair_loop(x, y, epochs=100, lr=0.01)
        assert torch.allclose(paper.weight[p], w, atol=1e-6)
        assert float(paper.bias[p]) == pytest.approx(float(bias), abs=1e-6)


def test_contrast_positions_keep_the_a_side_scaled_by_the_distance():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    weight, bias = torch.tensor([1.0, -1.0]), torch.tensor(0.5)
    kept = cc.contrast_positions(vectors, vectors.abs(), weight, bias)  # z = 1.5, -0.5, 2.5
    assert torch.allclose(kept, torch.tensor([[1.5, 0.0], [5.0, 0.0]]))


def test_shifting_along_the_normal_raises_the_softmax_of_a():
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    model = LinearTail(weight, torch.zeros(3)).eval()
    x = torch.zeros(4, 3, 2, 2)
    x[:, 1] = 2.0  # class 1 (B) images
    normal = torch.tensor([3.0, -3.0, 0.0])  # from B (1) to A (0)
    soft = cc.shifted_softmax(model, model.features, x, normal, target=0, offsets=(0.0, 1.0, 2.0, 10.0), relu=True)
    # by hand: offset t adds t/sqrt(2) to channel 0 and removes it from channel 1 (ReLU at 0)
    for i, t in enumerate((0.0, 1.0, 2.0, 10.0)):
        s = t / np.sqrt(2)
        logits = np.array([s, max(2.0 - s, 0.0), 0.0])
        assert soft[i] == pytest.approx(np.full(4, np.exp(logits[0]) / np.exp(logits).sum()), abs=1e-6)
    assert np.all(np.diff(soft.mean(axis=1)) > 0)


def test_bad_classes_get_a_clear_message_and_the_others_complete():
    rng = np.random.default_rng(0)
    good = torch.from_numpy(rng.random((50, 6)).astype(np.float32))
    done, errors = cc.explain_classes({0: good, 1: None, 2: good[:2], 3: good}, n=4)
    assert sorted(done) == [0, 3]
    assert "no image is predicted" in errors[1]
    assert "2 kept position(s) cannot give 4 concepts" in errors[2]
    with pytest.raises(cc.ClassConceptError, match="non-negative"):
        cc.factorise(-good, 2)
    with pytest.raises(cc.ClassConceptError, match="no positions"):
        cc.train_pairwise_classifiers([good, torch.zeros(0, 6)], [(0, 1)])


def test_stitch_stacks_crops_top_to_bottom_and_resizes_on_request():
    a = np.full((2, 3, 3), 10, np.uint8)
    b = np.full((2, 3, 3), 200, np.uint8)
    strip = cc.stitch([a, b])
    assert strip.shape == (4, 3, 3)
    assert strip[:2].max() == 10 and strip[2:].min() == 200
    assert cc.stitch([a, b], out_size=6).shape == (6, 6, 3)
    with pytest.raises(cc.ClassConceptError):
        cc.stitch([])


def test_default_pairs_take_the_most_confused_class_and_both_twin_orders():
    confusion = np.array([[9, 3, 1], [0, 9, 0], [2, 0, 9]])
    pairs = cc.default_pairs(confusion, twins={1: 2})
    assert pairs == [(0, 1, "most confused"), (1, 2, "confusable twin"), (2, 0, "most confused"),
                     (2, 1, "confusable twin")]


def test_jansen_total_indices_of_a_linear_function():
    coefficients = np.array([1.0, 2.0, 0.0, 3.0])
    indices = cc.jansen_total_indices(lambda m: m @ coefficients, 4, n_design=4096)
    # independent uniform inputs: the total index of u_i is a_i^2 / sum a_j^2
    assert indices == pytest.approx(coefficients ** 2 / (coefficients ** 2).sum(), abs=0.03)


def test_nmf_coefficients_recover_known_weights():
    basis = np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    weights = np.array([[1.0, 0.5], [0.0, 2.0], [3.0, 0.0]])
    recovered = cc.nmf_coefficients(basis, weights @ basis, max_iter=2000)
    assert recovered == pytest.approx(weights, abs=1e-3)


def test_crop_truth_reads_parts_and_background_from_the_boxes():
    crops = pd.DataFrame({"image_id": ["a", "a"], "box_x0": [0, 40], "box_y0": [0, 40], "box_x1": [22, 62],
                          "box_y1": [22, 62]})
    parts = pd.DataFrame({"image_id": ["a", "a"], "part": ["wheel", "cargo box"], "x0": [2, 30], "y0": [2, 30],
                          "x1": [12, 50], "y1": [12, 50]})
    scenes = pd.DataFrame({"background": ["snow"], "box_x0": [0], "box_y0": [0], "box_x1": [20], "box_y1": [20]},
                          index=["a"])
    shown, background = cc.crop_truth(crops, parts, scenes)
    # crop 2 holds 100 of the cargo box's 400 px: less than half
    assert shown == [["wheel"], []]
    assert background == [None, "snow"]  # crop 1 is mostly object, crop 2 has no object at all


def test_results_section_reports_the_means_beside_the_paper():
    tests = pd.DataFrame({
        "model": "m", "kind": ["class"] * 4 + ["contrast"] * 2, "class_id": [0, 0, 1, 1, 0, 0],
        "other_id": [-1, -1, -1, -1, 1, 1], "variant": ["allow", "exclude"] * 3,
        "softmax_target": [0.9, 0.5, 0.7, 0.1, 0.8, 0.2], "passed": [True, True, True, False, True, False]})
    shifting = pd.DataFrame({"model": "m", "class_id": 0, "other_id": 1, "offset": [0.0, 1.0, 2.0],
                             "mean_softmax_target": [0.01, 0.6, 0.4]})
    contrasts = pd.DataFrame({"model": "m", "class_id": [0], "other_id": [1], "classifier_accuracy": [0.75]})
    concepts = pd.DataFrame({"model": "m", "layer": ["layer4"]})
    text = cc.results_markdown({"prediction_test": tests, "shifting_test": shifting, "class_contrasts": contrasts,
                                "class_concepts": concepts})
    # allowing: mean(0.9, 0.7) = 0.8, both passed; excluding: mean(0.5, 0.1) = 0.3, one of two
    assert "| `m` | layer4 | 0.800 | 100.0% | 0.300 | 50.0% | 2 |" in text
    assert "| paper: ResNet-50 (1000 classes) | layer4.2 | 0.981 | 99.6% | 0.892 | 91.1% | 1000 |" in text
    # contrast: one pair; shifting default 0.01 and best 0.6
    assert "| `m` | 1 | 0.750 | 0.800 | 100.0% | 0.200 | 0.0% | 0.010 | 0.600 |" in text
    assert cc.results_markdown({}) == ""


def test_deeplift_runs_through_blocks_that_reuse_their_relu():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    baseline = torch.zeros(1, 3, 32, 32)
    # layer3's attribution passes layer4's BasicBlock, whose relu runs twice per forward pass
    attribution = cc.layer_attribution(net, net.layer3, x, torch.tensor([0, 2]), "deeplift", baseline)
    assert attribution.shape == (2, 256, 2, 2) and torch.isfinite(attribution).all()
    # DeepLift's completeness: the attributions sum to the logit difference to the baseline,
    # as the copy computes the same function
    with torch.no_grad():
        delta = net(x)[[0, 1], [0, 2]] - net(baseline.expand(2, -1, -1, -1))[[0, 1], [0, 2]]
    assert torch.allclose(attribution.sum(dim=(1, 2, 3)), delta, rtol=1e-3, atol=1e-3)


def test_truth_table_by_hand():
    classes = pd.DataFrame({"class_id": [0, 1, 2], "name": ["car", "truck", "rabbit"],
                            "parts": [["wheel"], ["wheel", "cargo box"], ["ear"]],
                            "confusable_with": ["truck", "car", None], "spurious_background": [None, None, "snow"]})
    scenes = pd.DataFrame({"background": ["road", "snow"], "box_x0": [0, 0], "box_y0": [0, 0], "box_x1": [30, 10],
                           "box_y1": [30, 10]}, index=["t", "r"])
    parts = pd.DataFrame({"image_id": ["t", "t", "r"], "part": ["wheel", "cargo box", "ear"],
                          "x0": [0, 20, 0], "y0": [0, 0, 0], "x1": [10, 30, 5], "y1": [10, 10, 5]})
    box = lambda x0, y0: {"box_x0": x0, "box_y0": y0, "box_x1": x0 + 10, "box_y1": y0 + 10}
    crops = pd.DataFrame([
        {"kind": "contrast", "class_id": 1, "other_id": 0, "variant": "allow", "image_id": "t", **box(20, 0)},
        {"kind": "contrast", "class_id": 1, "other_id": 0, "variant": "allow", "image_id": "t", **box(0, 0)},
        {"kind": "class", "class_id": 1, "other_id": -1, "variant": "allow", "image_id": "t", **box(0, 0)},
        {"kind": "class", "class_id": 2, "other_id": -1, "variant": "allow", "image_id": "r", **box(40, 40)},
        {"kind": "class", "class_id": 2, "other_id": -1, "variant": "allow", "image_id": "r", **box(0, 0)},
    ])
    table = cc.truth_table(crops, parts, scenes, classes).set_index(["kind", "class_id"])
    contrast, truck, rabbit = table.loc[("contrast", 1)], table.loc[("class", 1)], table.loc[("class", 2)]
    assert contrast["distinguishing_parts"] == ["cargo box"] and contrast["distinguishing_share"] == 0.5
    assert contrast["parts_covered"] == ["cargo box", "wheel"] and contrast["part_coverage"] == 1.0
    assert truck["distinguishing_share"] == 0.0 and truck["part_coverage"] == 0.5  # only the wheel
    assert rabbit["background"] == "snow" and rabbit["background_share"] == 0.5  # one crop off the object
    assert np.isnan(rabbit["distinguishing_share"])
    assert truck["background"] == "snow" and truck["background_share"] == 0.0  # the world's cue as baseline
