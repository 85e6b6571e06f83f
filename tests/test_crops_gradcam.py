"""Grid crops (minor-concept views), Grad-CAM and Grad-CAM boxes, the neuron gallery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from www_assets.figures.neurons import neuron_gallery
from www_assets.methods.crops import crop_resize, grid_boxes, grid_crops
from www_assets.methods.gradcam import WWW_RESIZE_RATIO, cam_peaks, gradcam, gradcam_boxes, gradcam_frame_side

# --------------------------------------------------------------------------- grid boxes


def test_grid_boxes_224_by_3():
    # ceil(224 / 3) = 75; starts round_half_up(i * 149 / 2) = 0, 75 (74.5), 149
    boxes = grid_boxes(224, 224, 3)
    starts = [0, 75, 149]
    expected = [[x, y, x + 75, y + 75] for y in starts for x in starts]  # row-major
    assert boxes.dtype == torch.long and boxes.tolist() == expected


def test_grid_boxes_non_square_and_overlap():
    # height 10, width 7, grid 2: crop 5 x 4 (ceil); starts y [0, 5], x [0, 3]
    assert grid_boxes(10, 7, 2).tolist() == [[0, 0, 4, 5], [3, 0, 7, 5], [0, 5, 4, 10], [3, 5, 7, 10]]
    # overlap 0.5: lengths ceil(1.5 * 10 / 2) = 8 and ceil(1.5 * 7 / 2) = 6; starts y [0, 2], x [0, 1]
    assert grid_boxes(10, 7, 2, overlap=0.5).tolist() == [[0, 0, 6, 8], [1, 0, 7, 8], [0, 2, 6, 10], [1, 2, 7, 10]]
    assert grid_boxes(5, 9, 1).tolist() == [[0, 0, 9, 5]]


@pytest.mark.parametrize(("height", "width", "grid", "overlap"), [(224, 224, 3, 0.0), (31, 17, 4, 0.0), (50, 64, 3, 0.3), (9, 9, 9, 0.0)])
def test_grid_boxes_cover_the_image_with_equal_crops(height, width, grid, overlap):
    boxes = grid_boxes(height, width, grid, overlap)
    covered = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.tolist():
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        covered[y0:y1, x0:x1] = True
    assert bool(covered.all())
    sizes = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes.tolist()}
    assert len(sizes) == 1
    # row-major: y0 non-decreasing, x0 increasing within each row
    grid_x0 = boxes[:, 0].view(grid, grid)
    grid_y0 = boxes[:, 1].view(grid, grid)
    assert bool((grid_x0.diff(dim=1) > 0).all()) and bool((grid_y0.diff(dim=0) > 0).all())
    assert bool((grid_y0 == grid_y0[:, :1]).all())


def test_grid_boxes_bad_arguments():
    with pytest.raises(ValueError, match="too small"):
        grid_boxes(2, 10, 3)
    with pytest.raises(ValueError, match="grid must be"):
        grid_boxes(10, 10, 0)
    with pytest.raises(ValueError, match="overlap"):
        grid_boxes(10, 10, 2, overlap=-0.1)


# --------------------------------------------------------------------------- crop_resize


def reference_crop(image: torch.Tensor, box: list[int], out: int) -> torch.Tensor:
    x0, y0, x1, y1 = box
    return F.interpolate(image[None, :, y0:y1, x0:x1], size=(out, out), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("out_size", [5, 16, 40])  # down-sampling, mixed, up-sampling
def test_crop_resize_matches_slice_and_interpolate(out_size):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 21, 18, generator=gen)
    boxes = torch.tensor([[0, 0, 18, 21], [3, 2, 11, 19], [17, 20, 18, 21], [5, 7, 12, 10]])
    crops = crop_resize(images, boxes, out_size)
    assert crops.shape == (4, 3, out_size, out_size)
    for i in range(4):
        torch.testing.assert_close(crops[i], reference_crop(images[i], boxes[i].tolist(), out_size), atol=2e-6, rtol=0)


def test_crop_resize_shared_box_and_errors():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    crops = crop_resize(images, torch.tensor([2, 1, 4, 3]), 2)  # a 2 x 2 box kept at 2 x 2
    assert torch.equal(crops, images[:, :, 1:3, 2:4])
    with pytest.raises(ValueError, match="boxes must satisfy"):
        crop_resize(images, torch.tensor([4, 1, 4, 3]), 2)  # empty width
    with pytest.raises(ValueError, match="boxes must satisfy"):
        crop_resize(images, torch.tensor([0, 0, 7, 3]), 2)  # outside
    with pytest.raises(ValueError, match="floating point"):
        crop_resize(images.to(torch.uint8), torch.tensor([0, 0, 2, 2]), 2)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        crop_resize(images, torch.zeros(3, 4, dtype=torch.long), 2)


def test_grid_crops_order_is_image_major_row_major():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 12, 15, generator=gen)
    crops = grid_crops(images, grid=3, out_size=7)
    assert crops.shape == (18, 3, 7, 7)
    boxes = grid_boxes(12, 15, 3).tolist()
    for i in range(2):
        for j, box in enumerate(boxes):
            torch.testing.assert_close(crops[i * 9 + j], reference_crop(images[i], box, 7), atol=2e-6, rtol=0)


# --------------------------------------------------------------------------- Grad-CAM


class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1))
        self.act = nn.ReLU()
        self.norm = nn.BatchNorm2d(5)
        self.head = nn.Linear(5, 3)

    def trunk(self, x):
        return self.act(self.features(x))

    def rest(self, a):
        return self.head(self.norm(a).mean(dim=(2, 3)))

    def forward(self, x):
        return self.rest(self.trunk(x))


def hand_rolled_gradcam(model, x, classes):
    """Grad-CAM written out: split the net at the layer, take the gradient by autograd."""
    with torch.enable_grad():
        a = model.trunk(x).detach().requires_grad_(True)
        logits = model.rest(a)
        (g,) = torch.autograd.grad(logits[torch.arange(len(x)), classes].sum(), a)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()
    out = torch.zeros_like(cam)
    for i in range(len(x)):
        lo, hi = cam[i].min(), cam[i].max()
        if hi > lo:
            out[i] = (cam[i] - lo) / (hi - lo)
    return out, logits.argmax(dim=1)


def make_net(seed=0):
    torch.manual_seed(seed)
    model = TinyConvNet()
    with torch.no_grad():  # non-trivial eval statistics
        model.norm.running_mean.uniform_(-0.2, 0.2)
        model.norm.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_gradcam_matches_hand_rolled_computation():
    model = make_net()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cam, predicted = gradcam(model, model.act, x)
    expected, expected_pred = hand_rolled_gradcam(model, x, model(x).argmax(dim=1))
    assert cam.shape == (3, 16, 16) and torch.equal(predicted, expected_pred)
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=0)
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    # a given class: the map changes, the returned prediction does not
    classes = (predicted + 1) % 3
    cam_given, predicted_again = gradcam(model, model.act, x, class_index=classes)
    torch.testing.assert_close(cam_given, hand_rolled_gradcam(model, x, classes)[0], atol=1e-5, rtol=0)
    assert torch.equal(predicted_again, predicted)


def test_gradcam_closed_form_for_pooling_head():
    # Without BatchNorm, d logit_c / d A_k(y, x) = W[c, k] / (h w) everywhere, so
    # Grad-CAM = ReLU(sum_k W[c, k] A_k) up to a positive factor (the CAM of Zhou et al.).
    model = make_net(seed=3)
    model.norm = nn.Identity()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    cam, predicted = gradcam(model, model.act, x)
    with torch.no_grad():
        a = model.trunk(x)
        raw = F.relu(torch.einsum("k,bkhw->bhw", model.head.weight[predicted[0]], a[:1]))
        raw = torch.cat([raw, F.relu(torch.einsum("k,bkhw->bhw", model.head.weight[predicted[1]], a[1:]))])
    up = F.interpolate(raw[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    expected = (up - lo) / (up.amax(dim=(1, 2), keepdim=True) - lo)
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=0)


def test_gradcam_restores_mode_removes_hook_and_works_frozen():
    model = make_net()
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # the caller's no_grad must not break it
        cam, _ = gradcam(model, model.act, x)
    assert model.training and len(model.act._forward_hooks) == 0
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    expected, _ = hand_rolled_gradcam(model, x, model(x).argmax(dim=1))
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=0)


class TinyTokenNet(nn.Module):
    """ViT-shaped: 1 CLS + 4 x 4 patch tokens, a token-wise block, head on the CLS token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.block = nn.Sequential(nn.Linear(6, 6), nn.GELU())
        self.mix = nn.Linear(17, 17)  # mixes tokens so the CLS depends on all patches
        self.head = nn.Linear(6, 4)

    def tokens(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.block(torch.cat([self.cls.expand(len(x), -1, -1), t], dim=1))

    def rest(self, t):
        return self.head(self.mix(t.transpose(1, 2)).transpose(1, 2)[:, 0])

    def forward(self, x):
        return self.rest(self.tokens(x))


def test_gradcam_on_token_sequences():
    torch.manual_seed(6)
    model = TinyTokenNet().eval()
    x = torch.randn(2, 3, 16, 16)
    cam, predicted = gradcam(model, model.block, x, num_prefix_tokens=1)
    with torch.enable_grad():
        t = model.tokens(x).detach().requires_grad_(True)
        logits = model.rest(t)
        (g,) = torch.autograd.grad(logits[torch.arange(2), predicted].sum(), t)
    a = t.detach()[:, 1:].reshape(2, 4, 4, 6).permute(0, 3, 1, 2)
    g = g[:, 1:].reshape(2, 4, 4, 6).permute(0, 3, 1, 2)
    raw = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    up = F.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    for i in range(2):
        if up[i].max() > up[i].min():
            expected = (up[i] - up[i].min()) / (up[i].max() - up[i].min())
        else:
            expected = torch.zeros_like(up[i])
        torch.testing.assert_close(cam[i], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not a square grid"):
        gradcam(model, model.block, x, num_prefix_tokens=0)  # 17 tokens


def test_gradcam_without_evidence_is_zero():
    model = make_net()
    with torch.no_grad():
        model.head.weight.fill_(-1.0)  # with ReLU features, no positive evidence for any class
        model.norm = nn.Identity()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    cam, _ = gradcam(model, model.act, x)
    assert torch.equal(cam, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="did not run"):
        gradcam(model, nn.ReLU(), x)


# --------------------------------------------------------------------------- Grad-CAM boxes


def test_gradcam_boxes_centre_and_clamp():
    cam = torch.zeros(4, 20, 30)
    cam[0, 10, 15] = 1.0  # middle: box [15 - 4, 15 + 4) x [10 - 4, 10 + 4)
    cam[1, 0, 0] = 1.0  # top-left corner: clamped to 0
    cam[2, 19, 29] = 1.0  # bottom-right corner: clamped to (W - 8, H - 8)
    # cam[3] is flat: the centred box (WWW's centre crop)
    boxes = gradcam_boxes(cam, 8)
    assert boxes.dtype == torch.long
    assert boxes.tolist() == [[11, 6, 19, 14], [0, 0, 8, 8], [22, 12, 30, 20], [11, 6, 19, 14]]
    # equal maxima: the first in row-major order wins
    tie = torch.zeros(1, 20, 30)
    tie[0, 5, 25] = tie[0, 15, 3] = 1.0
    assert gradcam_boxes(tie, 4).tolist() == [[23, 3, 27, 7]]
    assert gradcam_boxes(cam, 20)[:, [1, 3]].tolist() == [[0, 20]] * 4  # full height
    with pytest.raises(ValueError, match="side must be"):
        gradcam_boxes(cam, 21)
    with pytest.raises(ValueError, match="side must be"):
        gradcam_boxes(cam, 0)


def test_default_geometry_is_an_input_size_window_in_the_resized_frame():
    # WWW: shorter side 256, centre 224; seed 002: a 224 window of the 256 frame around the peak
    assert WWW_RESIZE_RATIO == 256 / 224
    assert gradcam_frame_side(224, 256) == 256 and gradcam_frame_side(224, 248) == 248
    # no resize margin (the world's 64-px preset): the frame gets WWW's ratio, round(64 * 8 / 7) = 73
    assert gradcam_frame_side(64, 64) == 73 and gradcam_frame_side(224, 224) == 256
    with pytest.raises(ValueError, match="size <= resize"):
        gradcam_frame_side(224, 200)
    # a peak in the frame's margin, outside the central 224 x 224: the window follows it
    cam = torch.zeros(1, 256, 256)
    cam[0, 128, 250] = 1.0
    assert gradcam_boxes(cam, 224).tolist() == [[32, 16, 256, 240]]


def test_cam_peaks_and_flat_maps():
    cam = torch.zeros(3, 5, 7)
    cam[0, 2, 6] = 1.0
    cam[2] = 0.25  # constant but not zero: still flat
    peaks, flat = cam_peaks(cam)
    assert peaks[0].tolist() == [6, 2] and flat.tolist() == [False, True, True]


def test_gradcam_upsamples_to_a_given_frame():
    model = make_net()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    small, _ = gradcam(model, model.act, x)
    big, _ = gradcam(model, model.act, x, out_size=(20, 20))
    assert big.shape == (2, 20, 20)
    # the same low-resolution map, resampled: its maximum sits at the same relative place
    for i in range(2):
        ys, xs = divmod(int(small[i].argmax()), 16)
        yb, xb = divmod(int(big[i].argmax()), 20)
        assert abs(yb / 20 - ys / 16) < 0.15 and abs(xb / 20 - xs / 16) < 0.15


def _world_vit(seed=0):
    from www_resources.registry import get_model
    from www_resources.world.models import build_classifier

    entry = get_model("world-vit")
    arch = {k: v for k, v in entry.train.items() if k not in ("kind", "epochs", "batch_size", "lr", "seed")}
    torch.manual_seed(seed)
    return entry, build_classifier("vit", 24, 64, **arch).eval()


def test_world_vit_gradcam_layer_reaches_the_head():
    # The head reads only the CLS token: Grad-CAM at `norm` (the spatial layer) is flat for every
    # image; at the registry's gradcam_layer (the last block's attention input) it is not.
    entry, model = _world_vit()
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    modules = dict(model.named_modules())
    at_norm, _ = gradcam(model, modules[entry.spatial_layer], x, num_prefix_tokens=1)
    assert bool(cam_peaks(at_norm)[1].all())
    assert entry.cam_layer == "blocks.3.norm1"
    cam, _ = gradcam(model, modules[entry.cam_layer], x, num_prefix_tokens=1, out_size=(73, 73))
    assert cam.shape == (6, 73, 73) and not bool(cam_peaks(cam)[1].any())


def test_timm_vit_b16_with_the_readme_gradcam_layer():
    # timm's ViT-B/16 architecture (random weights), two 224-px images, the README's layers
    import re
    from pathlib import Path

    import timm

    readme = Path(__file__).resolve().parents[1] / "README.md"
    example = readme.read_text().split("# data/models/vit-b16.yaml", 1)[1].split("```", 1)[0]
    layer = re.search(r"^gradcam_layer: (\S+)", example, re.M).group(1)
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    modules = dict(model.named_modules())
    flat_at_norm = cam_peaks(gradcam(model, modules["norm"], x, num_prefix_tokens=1)[0])[1]
    assert bool(flat_at_norm.all())  # the README's old choice: every window the fallback box
    cam, _ = gradcam(model, modules[layer], x, num_prefix_tokens=1, out_size=(256, 256))
    assert not bool(cam_peaks(cam)[1].any())
    boxes = gradcam_boxes(cam, 224)
    assert bool(((boxes[:, 2] - boxes[:, 0]) == 224).all())


# --------------------------------------------------------------------------- gallery


def test_neuron_gallery_writes_a_png(tmp_path):
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[4:12, 4:12] = 255
    panels = [
        {"title": "fc neuron 0", "images": [image] * 3, "crops": [image] * 2,
         "major": [("dog", 0.031), ("puppy", 0.030)], "minor": [("ear", 0.02)]},
        {"title": "fc neuron 1", "images": [image], "crops": [], "major": [], "minor": []},
    ]
    path = neuron_gallery(panels, tmp_path / "sub" / "gallery.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks the keys"):
        neuron_gallery([{"title": "x"}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="panels is empty"):
        neuron_gallery([], tmp_path / "empty.png")
