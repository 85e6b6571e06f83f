"""The first assets on a tiny ImageFolder and a real torchvision ResNet-18 checkpoint, in-process."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tests.tiny_data import write_tiny_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_world(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_tiny_data(data)
    net = torchvision.models.resnet18(num_classes=3)
    net.load_state_dict(torch.load(data / "tiny.pt", weights_only=True))
    net.eval()
    folder = data / "images"
    monkeypatch.setenv("WWW_DATA_DIR", str(data))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return data, net, folder


def expected_pooled(net, folder):
    """An independent computation: decode, resize, normalise and run the network by hand."""
    files = sorted(p for p in folder.rglob("*.png") if p.name != "broken.png")
    batch = []
    for f in files:
        img = Image.open(f).convert("RGB")
        w, h = img.size
        s = 32 / min(w, h)
        img = img.resize((max(32, round(w * s)), max(32, round(h * s))), Image.BILINEAR)
        w, h = img.size
        img = img.crop(((w - 32) // 2, (h - 32) // 2, (w - 32) // 2 + 32, (h - 32) // 2 + 32))
        batch.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    x = (torch.stack(batch) - 0.5) / 0.25
    with torch.no_grad():
        feats = {}
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h = net.layer2(net.layer1(h))
        h3 = net.layer3(h)
        h4 = net.layer4(h3)
        logits = net.fc(torch.flatten(net.avgpool(h4), 1))
        feats = {"layer3": h3.mean((2, 3)), "layer4": h4.mean((2, 3)), "fc": logits}
    ids = [f"{f.parent.name}/{f.name}" for f in files]
    return ids, feats


def test_first_assets_on_a_tiny_image_folder(tiny_world):
    import dagster as dg

    from www_assets.definitions import defs
    from www_assets.registry_sync import sync_partitions
    from www_resources.storage import default_catalog

    data, net, folder = tiny_world
    instance = dg.DagsterInstance.get()
    sync = sync_partitions(instance)
    assert sync.new_models == ["tiny"] and sync.new_concept_sets == ["tiny"]
    result = dg.materialize(
        list(defs.assets),
        selection=["model_training", "probe_images", "predictions", "activations", "neuron_examples"],
        partition_key="tiny",
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {"neuron_examples": {"config": {"k": 5}}}},
    )
    assert result.success
    catalog = default_catalog()
    probe = catalog.query("select image_id, readable, error from probe_images order by image_id")
    assert len(probe) == 13
    broken = probe[probe["image_id"] == "boat/broken.png"].iloc[0]
    assert not broken["readable"] and broken["error"].startswith("not an image: ")

    ids, feats = expected_pooled(net, folder)
    acts = catalog.query("select layer, image_id, vector from activations order by layer, image_id")
    assert sorted(acts["layer"].unique()) == ["fc", "layer3", "layer4"]
    for layer, width in (("layer3", 256), ("layer4", 512), ("fc", 3)):
        rows = acts[acts["layer"] == layer]
        assert rows["image_id"].tolist() == ids  # the broken image is skipped, nothing else
        got = np.stack(rows["vector"].to_numpy())
        assert got.shape == (12, width)
        np.testing.assert_allclose(got, feats[layer].numpy(), rtol=1e-4, atol=1e-4)

    preds = catalog.query("select image_id, label, pred, msp, correct, top5 from predictions order by image_id")
    probs = torch.softmax(feats["fc"], 1)
    assert preds["pred"].tolist() == probs.argmax(1).tolist()
    np.testing.assert_allclose(preds["msp"], probs.max(1).values.numpy(), rtol=1e-4)
    assert [list(t)[0] for t in preds["top5"]] == preds["pred"].tolist()
    classes = ["apple", "boat", "cloud"]  # label = index of the sorted folder name
    assert preds["label"].tolist() == [classes.index(i.split("/")[0]) for i in preds["image_id"]]
    assert preds["correct"].tolist() == (probs.argmax(1).numpy() == preds["label"].to_numpy()).tolist()

    examples = catalog.query(
        "select neuron, rank, image_id, activation from neuron_examples where layer = 'fc' and kind = 'image' order by neuron, rank")
    for neuron in range(3):
        got = examples[examples["neuron"] == neuron]
        order = np.argsort(-feats["fc"][:, neuron].numpy(), kind="stable")[:5]
        assert got["image_id"].tolist() == [ids[i] for i in order]
        assert got["rank"].tolist() == [1, 2, 3, 4, 5]

    # the `www sql` command answers from the DuckDB file
    out = subprocess.run(
        [sys.executable, "-m", "www_assets.cli", "sql", "select layer, count(*) as n from activations group by layer order by layer",
         "--format", "json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    )
    assert json.loads(out.stdout) == [{"layer": "fc", "n": 12}, {"layer": "layer3", "n": 12}, {"layer": "layer4", "n": 12}]


TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 1, "width": 32, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_whole_graph_on_a_real_model_path_then_nothing_is_recomputed(tiny_world, monkeypatch):
    """Every asset of a non-world model materializes through the runner; a second run launches nothing."""
    from www_assets.runner import materialize
    from www_resources.clip import build_clip_model, save_clip_checkpoint
    from www_resources.storage import default_catalog

    data, _, _ = tiny_world
    torch.manual_seed(0)
    clip = build_clip_model(TINY_CLIP).eval()
    save_clip_checkpoint(clip, data / "clip.pt", model_config=TINY_CLIP, image_mean=[0.5] * 3,
                         image_std=[0.25] * 3, image_size=32, context_length=16)
    registry = data / "models" / "tiny.yaml"
    registry.write_text(registry.read_text().replace("clip: openclip:none", "clip: checkpoint:clip.pt"))
    monkeypatch.setenv("WWW_OFFLINE", "1")
    logs = []
    report = materialize(log=logs.append)
    assert report.failed == [], logs
    catalog = default_catalog()
    methods = catalog.query("select distinct method from neuron_concepts order by 1")["method"].tolist()
    assert methods == sorted(["www", "www_tvmf", "www_gradcam", "www_gradcam_tvmf", "clip_dissect", "cosine",
                              "l1", "l2", "template_only", "no_template"])
    # one row per (layer, neuron, method, kind, rank); final-layer neurons are the 3 classes
    fc = catalog.query("select count(distinct neuron) n from concept_scores where layer = 'fc'")["n"].iloc[0]
    assert fc == 3
    shapley = catalog.query("select count(*) n, count(distinct class_id) k from class_shapley")
    assert shapley.to_dict("records") == [{"n": 3 * 512, "k": 3}]
    evals = catalog.query("select count(*) n from concept_eval where layer = 'fc' and method = 'www'")["n"].iloc[0]
    assert evals == 3
    summary = catalog.query("select distinct model, metric from evaluation_summary order by metric")
    assert summary["metric"].tolist() == ["clip_cos", "f1", "hit", "hit_tie_aware", "text_cos", "tied_top"]
    auroc = catalog.query("select score from misprediction_detection order by score")["score"].tolist()
    assert auroc == ["heatmap_similarity", "msp", "track_jaccard"]

    again = []
    second = materialize(log=again.append)
    assert second.launched == [] and second.failed == [], again

    # a second model with the same CLIP, probe set (and geometry) and concept set: its own chain
    # runs, the shared text and full/grid image embeddings do not
    shared_before = catalog.query("select count(*) n from clip_image_embeddings")["n"].iloc[0]
    (data / "models" / "tiny2.yaml").write_text(registry.read_text().replace("name: tiny", "name: tiny2"))
    added = []
    third = materialize(log=added.append)
    assert third.failed == [], added
    runs = Counter(label for label, entities in third.launched
                   for e in entities if ":" not in e and e in ("clip_text_embeddings", "clip_image_embeddings"))
    assert runs == Counter(), third.launched
    tiny2 = {e for label, entities in third.launched if "tiny2" in label for e in entities if ":" not in e}
    assert {"clip_gradcam_embeddings", "concept_scores", "concept_eval", "activations"} <= tiny2
    assert catalog.query("select count(*) n from clip_image_embeddings")["n"].iloc[0] == shared_before
    partitions = catalog.query("select count(distinct clip || probe) n from clip_image_embeddings")["n"].iloc[0]
    assert partitions == 1
    # the two identical models read the same embeddings: the same concepts, to the last bit
    scores = catalog.query("select model, layer, neuron, method, kind, rank, concept, score from concept_scores "
                           "order by layer, neuron, method, kind, rank, model")
    one, two = (scores[scores["model"] == m].drop(columns="model").reset_index(drop=True) for m in ("tiny", "tiny2"))
    assert len(one) and one.equals(two)
    last = []
    assert materialize(log=last.append).launched == [], last
