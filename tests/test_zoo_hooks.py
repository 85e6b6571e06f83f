"""Model zoo specs, loading, error messages, checkpoints; layer hooks and pooling."""

from __future__ import annotations

import sys
import time
import types
import urllib.error

import pytest
import torch
from torch import nn

from www_resources import offline
from www_resources.hooks import (
    LayerRecorder,
    captured_output,
    eval_mode,
    layer_kind,
    num_prefix_tokens,
    pool_activation,
)
from www_resources.zoo import (
    ModelSpec,
    ModelUnavailableError,
    UnknownArchitectureError,
    coerce_option,
    default_preprocessing,
    load_model,
    parse_model_spec,
    save_checkpoint,
)

TINY_VIT = "timm:vit_tiny_patch16_224?pretrained=false&img_size=32&patch_size=8&num_classes=5"


@pytest.fixture()
def offline_empty_caches(tmp_path, monkeypatch):
    """No cached weights anywhere and downloads off: TORCH_HOME and the HF cache are empty folders."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("WWW_OFFLINE", "1")
    return tmp_path


# -- spec parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "spec, expected",
    [
        ("torchvision:resnet50?weights=IMAGENET1K_V2", ModelSpec("torchvision", "resnet50", {"weights": "IMAGENET1K_V2"})),
        ("timm:vit_base_patch16_224.augreg_in21k_ft_in1k", ModelSpec("timm", "vit_base_patch16_224.augreg_in21k_ft_in1k", {})),
        ("checkpoint:path/to/file.pt", ModelSpec("checkpoint", "path/to/file.pt", {})),
        ("torchvision:resnet18?weights=none&num_classes=24",
         ModelSpec("torchvision", "resnet18", {"weights": "none", "num_classes": "24"})),
        (" TIMM:vit_tiny_patch16_224?pretrained=false ", ModelSpec("timm", "vit_tiny_patch16_224", {"pretrained": "false"})),
        ("checkpoint:/abs/c:d.pt?strict=false", ModelSpec("checkpoint", "/abs/c:d.pt", {"strict": "false"})),
    ],
)
def test_parse_model_spec_accepts_documented_forms(spec, expected):
    assert parse_model_spec(spec) == expected


def test_spec_renders_back_to_an_equivalent_string():
    spec = "torchvision:resnet18?weights=none&num_classes=24"
    assert str(parse_model_spec(spec)) == spec
    assert parse_model_spec(str(parse_model_spec(spec))) == parse_model_spec(spec)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("resnet50", "must start with one of torchvision:, timm:, checkpoint:"),
        ("keras:resnet50", "must start with one of"),
        ("torchvision:", "nothing follows 'torchvision:'"),
        ("torchvision:resnet18?weights", "not key=value pairs"),
        ("torchvision:resnet18?weights=", "has no value"),
        ("torchvision:resnet18?a=1&a=2", "given twice"),
        ("timm:vit?pretrained=maybe", "pretrained='maybe' must be true or false"),
        ("checkpoint:x.pt?arch=resnet", "take only the option 'strict'"),
        ("torchvision:res net", "is not a model name"),
        ("", "non-empty string"),
        (None, "non-empty string"),
    ],
)
def test_bad_specs_raise_value_error_naming_spec_and_forms(spec, fragment):
    with pytest.raises(ValueError) as info:
        parse_model_spec(spec)
    message = str(info.value)
    assert fragment in message
    assert repr(spec) in message
    assert "torchvision:<name>" in message and "timm:<name>" in message and "checkpoint:<path.pt>" in message


@pytest.mark.parametrize(
    "raw, value",
    [("none", None), ("Null", None), ("true", True), ("False", False), ("24", 24), ("-3", -3), ("0.5", 0.5),
     ("IMAGENET1K_V2", "IMAGENET1K_V2"), ("1e-3", 1e-3)],
)
def test_coerce_option(raw, value):
    assert coerce_option(raw) == value and type(coerce_option(raw)) is type(value)


# -- loading --------------------------------------------------------------------------------

def test_torchvision_random_init_with_constructor_options():
    model = load_model("torchvision:resnet18?weights=none&num_classes=24")
    assert not model.training
    assert model.fc.out_features == 24
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 24)


def test_timm_random_init_small_vit():
    model = load_model(TINY_VIT)
    assert not model.training
    assert model.patch_embed.patch_size == (8, 8)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_unknown_architectures_list_known_names():
    with pytest.raises(UnknownArchitectureError) as info:
        load_model("torchvision:resnet181?weights=none")
    message = str(info.value)
    assert "'resnet181'" in message and "Close matches: ['resnet18'" in message
    assert "alexnet" in message  # the full list of torchvision classifiers
    assert isinstance(info.value, ValueError) and isinstance(info.value, ModelUnavailableError)

    with pytest.raises(UnknownArchitectureError) as info:
        load_model("timm:vit_tiny_patch16_2240?pretrained=false")
    assert "vit_tiny_patch16_224" in str(info.value) and "timm.list_models()" in str(info.value)


def test_unknown_torchvision_weights_tag_lists_the_tags():
    with pytest.raises(ValueError) as info:
        load_model("torchvision:resnet18?weights=IMAGENET1K_V9")
    assert "'IMAGENET1K_V9'" in str(info.value) and "['IMAGENET1K_V1', 'DEFAULT']" in str(info.value)
    with pytest.raises(ValueError, match="belong to another model"):
        load_model("torchvision:resnet18?weights=ResNet50_Weights.IMAGENET1K_V2")


def test_uncached_torchvision_weights_fail_fast_with_fetch_command(offline_empty_caches):
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as info:
        load_model("torchvision:resnet50?weights=IMAGENET1K_V2")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "'torchvision:resnet50?weights=IMAGENET1K_V2'" in message
    assert str(offline_empty_caches / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    assert "python -c \"import torchvision; torchvision.models.get_model('resnet50', weights='IMAGENET1K_V2')\"" in message
    assert "downloads are off" in message


def test_uncached_timm_weights_fail_fast_with_fetch_command(offline_empty_caches):
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as info:
        load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert str(offline_empty_caches / "hf") in message
    assert "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in message
    assert "timm.create_model('vit_tiny_patch16_224.augreg_in21k_ft_in1k', pretrained=True)" in message


def test_unreachable_server_is_reported_without_trying(offline_empty_caches, monkeypatch):
    monkeypatch.delenv("WWW_OFFLINE")
    monkeypatch.setattr(offline, "host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(ModelUnavailableError, match="download.pytorch.org cannot be reached"):
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1")


def test_failed_download_becomes_model_unavailable(offline_empty_caches, monkeypatch):
    monkeypatch.delenv("WWW_OFFLINE")
    monkeypatch.setattr(offline, "host_reachable", lambda url, timeout=3.0: True)
    attempts = []

    def no_network(url, dst, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelUnavailableError) as info:
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1")
    assert attempts == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert "download failed" in str(info.value) and "Name or service not known" in str(info.value)


def test_cached_torchvision_weights_load_with_downloads_off(offline_empty_caches):
    torch.manual_seed(0)
    reference = load_model("torchvision:resnet18?weights=none")
    cache = offline_empty_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    loaded = load_model("torchvision:resnet18?weights=IMAGENET1K_V1")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))


def test_cached_timm_weights_load_from_hf_cache_with_downloads_off(offline_empty_caches):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = load_model("timm:vit_tiny_patch16_224?pretrained=false")
    repo = offline_empty_caches / "hf" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snapshot / "model.safetensors"))
    loaded = load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference(x), atol=1e-6)


# -- checkpoints ----------------------------------------------------------------------------

def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_plain_state_dict_round_trip_with_architecture(tmp_path):
    torch.manual_seed(1)
    model = load_model("torchvision:resnet18?weights=none&num_classes=10")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    loaded = load_model("checkpoint:plain.pt", architecture="torchvision:resnet18?num_classes=10", base_dir=tmp_path)
    x = torch.rand(2, 3, 32, 32)
    assert not loaded.training
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def test_saved_checkpoint_carries_its_architecture(tmp_path):
    torch.manual_seed(2)
    model = load_model(TINY_VIT)
    save_checkpoint(model, tmp_path / "sub" / "vit.pt",
                    architecture="timm:vit_tiny_patch16_224?img_size=32&patch_size=8&num_classes=5")
    assert not (tmp_path / "sub" / "vit.pt.partial").exists()
    loaded = load_model(f"checkpoint:{tmp_path / 'sub' / 'vit.pt'}")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def test_data_parallel_prefix_is_stripped(tmp_path):
    model = load_model("torchvision:resnet18?weights=none&num_classes=3")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "dp.pt")
    loaded = load_model(f"checkpoint:{tmp_path / 'dp.pt'}", architecture="torchvision:resnet18?num_classes=3")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ModelUnavailableError) as info:
        load_model("checkpoint:models/absent.pt", base_dir=tmp_path)
    assert str(tmp_path / "models" / "absent.pt") in str(info.value)

    model = load_model("torchvision:resnet18?weights=none&num_classes=10")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ModelUnavailableError, match="names no architecture"):
        load_model(f"checkpoint:{tmp_path / 'plain.pt'}")
    with pytest.raises(ValueError, match="does not fit architecture"):
        load_model(f"checkpoint:{tmp_path / 'plain.pt'}", architecture="torchvision:resnet18?num_classes=7")
    with pytest.raises(ValueError, match="must be a torchvision: or timm: spec"):
        load_model(f"checkpoint:{tmp_path / 'plain.pt'}", architecture="checkpoint:other.pt")

    torch.save({"format": "something-else", "state_dict": {}}, tmp_path / "odd.pt")
    with pytest.raises(ModelUnavailableError, match="format 'something-else'"):
        load_model(f"checkpoint:{tmp_path / 'odd.pt'}")

    torch.save(nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # needs weights_only=False: refused
    with pytest.raises(ModelUnavailableError, match="weights_only=True"):
        load_model(f"checkpoint:{tmp_path / 'pickled_module.pt'}")


def test_world_classifier_format_is_rebuilt_by_build_classifier(tmp_path, monkeypatch):
    calls = []

    def build_classifier(kind, num_classes, image_size, width):
        calls.append((kind, num_classes, image_size, width))
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, num_classes))

    fake = types.ModuleType("www_resources.world.models")
    fake.build_classifier = build_classifier
    monkeypatch.setitem(sys.modules, "www_resources.world.models", fake)
    torch.manual_seed(3)
    original = build_classifier("cnn", 4, 8, 16)
    arch = {"kind": "cnn", "num_classes": 4, "image_size": 8, "width": 16}
    torch.save({"format": "www-classifier-v1", "arch": arch, "state_dict": original.state_dict(),
                "image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.8, 0.7]}, tmp_path / "world.pt")
    loaded = load_model("checkpoint:world.pt", base_dir=tmp_path)
    assert calls[-1] == ("cnn", 4, 8, 16)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(_outputs(loaded, x), _outputs(original, x))
    pre = default_preprocessing("checkpoint:world.pt", base_dir=tmp_path)
    assert pre == {"size": 8, "resize": 8, "mean": (0.1, 0.2, 0.3), "std": (0.9, 0.8, 0.7), "interpolation": "bilinear"}


# -- preprocessing --------------------------------------------------------------------------

def test_default_preprocessing_from_weights_and_configs(tmp_path):
    assert default_preprocessing("torchvision:resnet50?weights=IMAGENET1K_V2") == {
        "size": 224, "resize": 232, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "interpolation": "bilinear",
    }
    swag = default_preprocessing("torchvision:vit_b_16?weights=IMAGENET1K_SWAG_E2E_V1")
    assert (swag["size"], swag["resize"], swag["interpolation"]) == (384, 384, "bicubic")
    assert default_preprocessing("torchvision:resnet18?weights=none")["resize"] == 256
    vit = default_preprocessing("timm:vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert vit == {"size": 224, "resize": 248, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                   "interpolation": "bicubic"}  # resize = floor(224 / crop_pct 0.9)
    assert default_preprocessing("timm:vit_tiny_patch16_224?img_size=32")["size"] == 32
    model = load_model("torchvision:resnet18?weights=none&num_classes=3")
    save_checkpoint(model, tmp_path / "r.pt", architecture="timm:vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert default_preprocessing(f"checkpoint:{tmp_path / 'r.pt'}") == vit


# -- hooks ----------------------------------------------------------------------------------

def test_resnet_hooks_agree_with_an_independent_capture():
    torch.manual_seed(4)
    model = load_model("torchvision:resnet18?weights=none&num_classes=10")
    x = torch.rand(3, 3, 32, 32)
    fc_inputs = []
    handle = model.fc.register_forward_pre_hook(lambda module, args: fc_inputs.append(args[0].detach()))
    with torch.no_grad(), LayerRecorder(model, ["layer4", "fc", "layer3", "layer4"]) as recorder:
        logits = model(x)
    handle.remove()
    assert set(recorder.outputs) == {"layer3", "layer4", "fc"}
    assert recorder.outputs["layer4"].shape == (3, 512, 1, 1)
    assert layer_kind(recorder.outputs["layer3"]) == "conv" and layer_kind(recorder.outputs["fc"]) == "vector"
    assert torch.allclose(pool_activation(recorder.outputs["layer4"]), fc_inputs[0], atol=1e-6)
    assert torch.equal(pool_activation(recorder.outputs["fc"]), logits)
    assert num_prefix_tokens(model) == 0


def test_vit_hooks_cls_and_mean_pooling_reproduce_the_head():
    torch.manual_seed(5)
    model = load_model(TINY_VIT)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), LayerRecorder(model, ["norm", "blocks.11"]) as recorder:
        logits = model(x)
    tokens = recorder.outputs["norm"]
    assert tokens.shape == (2, 1 + 16, 192) and layer_kind(tokens) == "tokens"
    assert num_prefix_tokens(model) == 1
    cls = pool_activation(tokens, token_pooling="cls", num_prefix_tokens=1)
    with torch.no_grad():
        assert torch.allclose(model.head(cls), logits, atol=1e-5)
    mean = pool_activation(tokens, token_pooling="mean", num_prefix_tokens=1)
    assert torch.allclose(mean, tokens[:, 1:, :].sum(dim=1) / 16, atol=1e-6)


def test_vit_with_register_tokens_and_average_pooling():
    torch.manual_seed(6)
    model = load_model(TINY_VIT + "&reg_tokens=4&class_token=false&global_pool=avg")
    assert num_prefix_tokens(model) == 4
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), LayerRecorder(model, ["norm"]) as recorder:
        logits = model(x)
    tokens = recorder.outputs["norm"]
    mean = pool_activation(tokens, token_pooling="mean", num_prefix_tokens=num_prefix_tokens(model))
    with torch.no_grad():
        assert torch.allclose(model.head(model.fc_norm(mean)), logits, atol=1e-5)
    no_cls = load_model(TINY_VIT + "&class_token=false&global_pool=avg")
    assert num_prefix_tokens(no_cls) == 0
    with pytest.raises(ValueError, match="token_pooling='mean'"):
        pool_activation(torch.zeros(1, 16, 4), token_pooling="cls", num_prefix_tokens=0)


def test_unknown_layer_name_lists_close_matches():
    model = load_model("torchvision:resnet18?weights=none&num_classes=3")
    with pytest.raises(KeyError) as info:
        LayerRecorder(model, ["layer5"])
    assert "'layer5'" in str(info.value) and "layer4" in str(info.value)


def test_hooks_are_removed_even_when_the_block_raises():
    model = load_model("torchvision:resnet18?weights=none&num_classes=3")
    with pytest.raises(RuntimeError, match="boom"):
        with LayerRecorder(model, ["layer4", "fc"]):
            model(torch.rand(1, 3, 32, 32))
            raise RuntimeError("boom")
    assert not model.layer4._forward_hooks and not model.fc._forward_hooks


def test_keep_grad_outputs_get_the_gradient_autograd_computes():
    torch.manual_seed(7)
    model = load_model("torchvision:resnet18?weights=none&num_classes=3")
    x = torch.rand(2, 3, 32, 32)
    captured = []  # an independent capture of layer4's output, differentiated with autograd.grad
    handle = model.layer4.register_forward_hook(lambda module, args, output: captured.append(output))
    reference_logits = model(x)
    handle.remove()
    expected = torch.autograd.grad(reference_logits[:, 1].sum(), captured[0])[0]
    with LayerRecorder(model, ["layer4"], keep_grad=True) as recorder:
        logits = model(x)
        logits[:, 1].sum().backward()
    feature_map = recorder.outputs["layer4"]
    assert feature_map.grad is not None and torch.allclose(feature_map.grad, expected, atol=1e-7)
    with torch.no_grad(), LayerRecorder(model, ["layer4"]) as detached:
        model(x)
    assert not detached.outputs["layer4"].requires_grad


def test_pool_activation_by_hand():
    conv = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    assert torch.equal(pool_activation(conv), torch.tensor([[1.5, 5.5]]))
    tokens = torch.tensor([[[10.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]])  # (1, T=4, C=2)
    assert torch.equal(pool_activation(tokens), torch.tensor([[10.0, 0.0]]))
    assert torch.equal(pool_activation(tokens, token_pooling="mean"), torch.tensor([[3.0, 5.0]]))
    assert torch.equal(pool_activation(tokens, token_pooling="mean", num_prefix_tokens=2), torch.tensor([[4.0, 6.5]]))
    vector = torch.tensor([[1.0, -2.0]])
    assert torch.equal(pool_activation(vector), vector)
    with pytest.raises(ValueError, match="token_pooling"):
        pool_activation(tokens, token_pooling="max")
    with pytest.raises(ValueError, match="neither"):
        pool_activation(torch.zeros(2))
    with pytest.raises(ValueError, match="leaves no patch tokens"):
        pool_activation(tokens, token_pooling="mean", num_prefix_tokens=4)
    with pytest.raises(ValueError):
        layer_kind(torch.zeros(1, 2, 3, 4, 5))


def test_captured_output_keeps_the_graph_and_eval_mode_restores_on_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    x = torch.ones(2, 3)
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model), captured_output(model[0]) as captured:
            assert not model.training and not model[1].training
            out = model(x)
            # the kept output is the layer's own, in the graph: d(sum out)/d(hidden) is W2 summed
            (grad,) = torch.autograd.grad(out.sum(), captured[0])
            hidden = model[0](x)
            expected = (hidden > 0).float() * model[3].weight.sum(dim=0)
            assert torch.allclose(grad, expected)
            raise RuntimeError("inside")
    assert model.training and model[1].training  # mode restored although the block raised
    assert not model[0]._forward_hooks  # hook removed although the block raised
