"""One batch of class-vs-sample explanations: contributions, neuron maps with a causal path, sign."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from www_assets.methods.contributions import taylor_contributions_from_model
from www_assets.methods.explanation import explain_batch
from www_assets.methods.heatmaps import heatmap_similarity
from www_resources.hooks import LayerRecorder
from www_resources.world.models import build_classifier


def world_cnn(seed=0):
    torch.manual_seed(seed)
    return build_classifier("cnn", 24, 64, width=16).eval()


def world_vit(seed=0):
    from www_resources.registry import get_model

    entry = get_model("world-vit")
    arch = {k: v for k, v in entry.train.items() if k not in ("kind", "epochs", "batch_size", "lr", "seed")}
    torch.manual_seed(seed)
    return entry, build_classifier("vit", 24, 64, **arch).eval()


def images(n, seed):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_cnn_maps_are_the_activation_maps_and_the_tracks_are_right():
    model = world_cnn()
    x = images(4, 1)
    class_matrix = torch.randn(24, 128, generator=torch.Generator().manual_seed(2))
    ex = explain_batch(model, "fc", model.layer4, x, class_matrix, top_k=3)
    with LayerRecorder(model, ["layer4"]) as rec, torch.no_grad():
        logits = model(x)
    act = rec.outputs["layer4"]
    contrib, _ = taylor_contributions_from_model(model, "fc", x)
    torch.testing.assert_close(ex.logits, logits)
    torch.testing.assert_close(ex.contributions, contrib)
    pred = logits.argmax(1)
    for i in range(4):
        # sample track: the 3 largest contributions; class track: the predicted class's row
        assert ex.sample_top[i].tolist() == contrib[i].argsort(descending=True)[:3].tolist()
        assert ex.class_top[i].tolist() == class_matrix[pred[i]].argsort(descending=True)[:3].tolist()
        for track_top, track_maps in ((ex.sample_top, ex.sample_maps), (ex.class_top, ex.class_maps)):
            expected = F.interpolate(act[i:i + 1, track_top[i]], size=(64, 64), mode="bilinear", align_corners=False)[0]
            torch.testing.assert_close(track_maps[i], expected, atol=1e-5, rtol=1e-4)
    # heatmaps: weights normalised to sum 1 (they are positive here), cosine of the two
    w = ex.sample_weights / ex.sample_weights.abs().sum(1, keepdim=True)
    torch.testing.assert_close(ex.sample_heatmap, torch.einsum("bk,bkhw->bhw", w, ex.sample_maps), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ex.similarity, heatmap_similarity(ex.class_heatmap, ex.sample_heatmap))


def test_vit_maps_come_from_tokens_the_head_reads():
    # Independent computation, one image and one neuron at a time: the gradient of the pooled
    # neuron with respect to the map layer's tokens, times the tokens, summed over channels.
    entry, model = world_vit()
    x = images(3, 4)
    layer = model.get_submodule(entry.cam_layer)
    class_matrix = torch.rand(24, 96, generator=torch.Generator().manual_seed(5))
    ex = explain_batch(model, entry.head, layer, x, class_matrix, top_k=2, num_prefix_tokens=1)
    for i in range(3):
        with LayerRecorder(model, [entry.cam_layer], keep_grad=True) as rec:
            features = model.forward_head(model.forward_features(x[i:i + 1]), pre_logits=True)
        z = rec.outputs[entry.cam_layer]
        for j, u in enumerate(ex.sample_top[i].tolist()):
            (g,) = torch.autograd.grad(features[0, u], z, retain_graph=True)
            per_patch = (g * z)[0, 1:].sum(-1).reshape(8, 8) * 64
            expected = F.interpolate(per_patch[None, None].detach(), size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
            torch.testing.assert_close(ex.sample_maps[i, j], expected, atol=1e-5, rtol=1e-3)
            assert float(expected.std()) > 0  # a real map, not a constant
    # the final norm's patch tokens never reach the head: their maps are zero (the activation
    # maps of those tokens, used before, pictured tokens without any effect on the prediction)
    at_norm = explain_batch(model, entry.head, model.get_submodule("norm"), x, class_matrix, top_k=2, num_prefix_tokens=1)
    assert float(at_norm.sample_maps.abs().max()) == 0.0


def test_absolute_applies_to_the_sample_track():
    model = world_cnn(seed=3)
    x = images(5, 6)
    class_matrix = torch.rand(24, 128, generator=torch.Generator().manual_seed(7))
    signed = explain_batch(model, "fc", model.layer4, x, class_matrix, top_k=4)
    absolute = explain_batch(model, "fc", model.layer4, x, class_matrix, top_k=4, absolute=True)
    assert bool((signed.contributions < 0).any())  # the test means something
    torch.testing.assert_close(absolute.contributions, signed.contributions.abs())
    for i in range(5):
        assert absolute.sample_top[i].tolist() == signed.contributions[i].abs().argsort(descending=True)[:4].tolist()


def test_sample_explanations_follow_the_class_matrix_sign():
    from www_assets.explanations import class_matrix_of

    frame = pd.DataFrame({"class_id": np.repeat([0, 1], 3).astype(np.int32), "neuron": np.tile([0, 1, 2], 2).astype(np.int32),
                          "value": np.arange(6, dtype=np.float32), "class_name": "c", "n_samples": 1})
    matrix, absolute = class_matrix_of(frame.assign(sign="absolute"))
    assert absolute and matrix.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert class_matrix_of(frame.assign(sign="signed"))[1] is False
    with pytest.raises(ValueError, match="one sign"):
        class_matrix_of(frame.assign(sign=["signed"] * 3 + ["absolute"] * 3))


def test_class_matrix_from_a_parquet_table_is_built_without_warnings(tmp_path):
    import warnings

    from www_assets.explanations import class_matrix_of

    pd.DataFrame({"class_id": [0, 1, 1], "neuron": [2, 0, 2], "value": [0.5, -1.0, 2.0], "sign": "signed"}) \
        .to_parquet(tmp_path / "t.parquet")
    table = pd.read_parquet(tmp_path / "t.parquet")  # columns may come back as read-only arrays
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matrix, absolute = class_matrix_of(table)
    assert not absolute
    assert matrix.tolist() == [[0.0, 0.0, 0.5], [-1.0, 0.0, 2.0]]
