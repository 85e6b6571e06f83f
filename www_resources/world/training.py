"""Training and evaluation of the world's classifiers and its CLIP.

Classifiers (`train_classifier`): AdamW with a linear warm-up then cosine decay of the
learning rate, cross-entropy; augmentation (on by default) is a random horizontal mirror
(the world draws mirrored objects, so labels are unchanged) and a random integer shift of up
to S/16 pixels with edge padding.

CLIP (`train_clip`): open_clip's `ClipLoss` (symmetric InfoNCE over the batch) on pairs
(view, caption), where each epoch draws for every training image
* with probability `crop_prob` a random square crop (side 35-70% of the image), resized to
  the full input size, whose caption mentions only what the crop shows: the parts whose box
  lies at least half inside the crop, the background, and the class only when at least 60%
  of the object box is inside (the pipeline feeds CLIP 3x3 grid crops and Grad-CAM crops);
* otherwise the full image (randomly mirrored) with a caption drawn from a small grammar:
  20% name the object alone ("a photo of a car"; class 70%, a synonym 20%, superclass 7%,
  root 3%); 60% name it with its colour (p = 0.6), texture (0.4), parts (0.6) and background
  (0.5) each mentioned or not ("a photo of a red striped car with wheel and roof on a
  road"); 20% are single-concept captions
  "a photo of a {part | colour | texture | background}", the exact prompts the pipeline
  and `attribute_retrieval_accuracy` use.

Reproducibility (`fit_world_clip`): every random draw of a CLIP's training comes from the
seed: the initial weights (drawn from torch's global generator, so the seed is set right
before the model is built, inside a forked generator state that leaves the caller's alone),
the warm start's and the contrastive phase's order, crops, mirrors and captions. Two trainings
with the same seed and the same number of torch threads give bit-identical weights; with
another thread count the CPU kernels sum in another order and the weights differ in the last
bits, which training then amplifies (the thread count is returned with the history).

Evaluation (all on full images, prompts "a photo of a {}" unless given):
* `zero_shot_accuracy`: share of images whose highest-scoring class prompt is the label.
* `attribute_retrieval_accuracy(attribute)`: per image, the prompts of all values of the
  attribute are ranked by similarity and the top one must be true:
  - "colour" / "background" / "texture": the top prompt is the image's value (colour = the
    object's main colour);
  - "part": the top part prompt names a part the image shows (images show several parts, any
    of them is right; every part name of the world competes);
  - "part_pairs", stricter: per (image, part present in the image), the true part's prompt
    scores higher than the prompt of every part name absent from the image (other present
    parts are not competitors); the accuracy is the mean over all such pairs. A generic part
    ("body", in ten classes) must then beat every class-specific part of similar classes.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .models import build_world_clip, to_model_input
from .scenes import BACKGROUND_PHRASES, BACKGROUNDS, CLASS_BY_NAME, COLOUR_NAMES, SUPERCLASS_PARENT, TEXTURES

Log = Callable[[str], None] | None


def _say(log: Log, message: str) -> None:
    if log is not None:
        log(message)


def _check_images(images: np.ndarray, name: str = "images") -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{name} must be a uint8 numpy array (N, H, W, 3), got {shape} {getattr(images, 'dtype', type(images))}")


def _cosine_with_warmup(total_steps: int, warmup_share: float = 0.05) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _shift_and_mirror(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Per-sample random horizontal mirror and integer shift (edge padding): (B,3,S,S) -> same."""
    b, _, s, _ = x.shape
    mirror = torch.rand(b, generator=generator) < 0.5
    x = torch.where(mirror.view(b, 1, 1, 1), x.flip(-1), x)
    if max_shift <= 0:
        return x
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(s)[None, :])[:, None, :, None]  # (B,1,S,1)
    cols = (dx[:, None] + torch.arange(s)[None, :])[:, None, None, :]  # (B,1,1,S)
    batch = torch.arange(b)[:, None, None, None]
    chans = torch.arange(3)[None, :, None, None]
    return padded[batch, chans, rows, cols]


# --------------------------------------------------------------------------------------
# classifiers


def train_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Log = None,
    augment: bool = True,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.0,
) -> dict:
    """Train `model` in place on uint8 images (N, S, S, 3) with int labels (N,).

    AdamW (lr, weight_decay), 5% linear warm-up then cosine decay per step, cross-entropy
    (label_smoothing). Shuffling and augmentation are seeded by `seed`. Logs one line per
    epoch (loss, running train accuracy, images/s) through `log`.
    Returns {"loss": [mean loss per epoch], "train_accuracy": running accuracy of the last
    epoch, "seconds": wall time, "images_per_second": throughput, "epochs": epochs}."""
    _check_images(images)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(np.array(labels, dtype=np.int64))
    n = len(images)
    steps_per_epoch = max(1, n // batch_size)  # drop the last partial batch (BatchNorm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(epochs * steps_per_epoch))
    max_shift = max(1, images.shape[1] // 16)
    history: list[float] = []
    correct = seen = 0
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        epoch_start = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = to_model_input(images[idx.numpy()])
            if augment:
                x = _shift_and_mirror(x, generator, max_shift)
            y = y_all[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        history.append(total_loss / max(1, seen))
        rate = seen / max(1e-9, time.perf_counter() - epoch_start)
        _say(log, f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}, train acc {correct / max(1, seen):.3f}, {rate:.0f} images/s")
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "loss": history,
        "train_accuracy": correct / max(1, seen),
        "seconds": seconds,
        "images_per_second": epochs * steps_per_epoch * batch_size / max(1e-9, seconds),
        "epochs": epochs,
    }


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, C) of `model` in eval mode on uint8 images (N, S, S, 3)."""
    _check_images(images)
    model.eval()
    out = [model(to_model_input(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)


def classifier_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy (share in [0, 1]) of `model` on uint8 images (N, S, S, 3) with labels (N,)."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if len(images) == 0:
        raise ValueError("no images to score")
    pred = predict_logits(model, images, batch_size).argmax(1).numpy()
    return float((pred == labels).mean())


# --------------------------------------------------------------------------------------
# CLIP captions


class _PartIndex:
    """Part-instance boxes grouped by image index (CSR layout) for fast per-image lookups."""

    def __init__(self, parts: pd.DataFrame, n_images: int):
        order = np.argsort(parts["index"].to_numpy(), kind="stable")
        self.index = parts["index"].to_numpy()[order]
        self.names = parts["part"].to_numpy()[order]
        self.boxes = parts[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)[order]
        self.starts = np.searchsorted(self.index, np.arange(n_images + 1))

    def rows(self, i: int) -> slice:
        return slice(self.starts[i], self.starts[i + 1])


def _overlap_share(boxes: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Share of each box (K, 4) inside the crop box (4,)."""
    ix = np.clip(np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1]), 0, None)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
    return ix * iy / area


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _subset_phrase(rng: np.random.Generator, words: list[str], max_words: int = 3) -> str:
    k = int(rng.integers(1, min(max_words, len(words)) + 1))
    chosen = [words[i] for i in sorted(rng.choice(len(words), size=k, replace=False))]
    return chosen[0] if k == 1 else ", ".join(chosen[:-1]) + " and " + chosen[-1]


def sample_caption(
    rng: np.random.Generator,
    class_name: str,
    colour: str,
    texture: str,
    background: str,
    parts: list[str],
    object_visible: bool = True,
) -> str:
    """One training caption for a view of a scene, drawn from the caption grammar.

    `parts`: distinct part names visible in the view; `object_visible`: whether the class may
    be named (False for crops that show less than 60% of the object)."""
    r = rng.random()
    if not object_visible:
        if parts and r < 0.55:
            return f"a photo of a {_pick(rng, parts)}"
        if parts and r < 0.8:
            return f"a photo of a {_subset_phrase(rng, parts, 2)} {BACKGROUND_PHRASES[background]}"
        return f"a photo of a {background}"
    spec = CLASS_BY_NAME[class_name]
    nouns_r = rng.random()
    if nouns_r < 0.7:
        noun = class_name
    elif nouns_r < 0.9:
        noun = _pick(rng, (class_name, *spec.synonyms))
    elif nouns_r < 0.97:
        noun = spec.superclass
    else:
        noun = SUPERCLASS_PARENT[spec.superclass]
    if r < 0.2:
        # the object alone: colour and background cannot stand in for its shape
        return f"a photo of a {noun}"
    if r < 0.8:
        # the object named, each attribute mentioned or not: "a photo of a red striped car with
        # wheel and window on a road"
        words = []
        if rng.random() < 0.6:
            words.append(colour)
        if texture != "plain" and rng.random() < 0.4:
            words.append(texture)
        text = "a photo of a " + " ".join(words + [noun])
        if parts and rng.random() < 0.6:
            text += f" with {_subset_phrase(rng, parts)}"
        if rng.random() < 0.5:
            text += f" {BACKGROUND_PHRASES[background]}"
        return text
    if r < 0.87 and parts:
        return f"a photo of a {_pick(rng, parts)}"
    if r < 0.92:
        return f"a photo of a {colour}"
    if r < 0.97:
        return f"a photo of a {background}"
    return f"a photo of a {texture}"


class _TokenCache:
    """Tokenises captions once each; returns (B, context_length) LongTensors."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            for text, row in zip(missing, self.tokenizer(missing)):
                self.cache[text] = row
        return torch.stack([self.cache[t] for t in texts])


# --------------------------------------------------------------------------------------
# CLIP training


def train_clip(
    model: nn.Module,
    tokenizer,
    images: np.ndarray,
    scenes: pd.DataFrame,
    parts: pd.DataFrame,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Log = None,
    crop_prob: float = 0.35,
    weight_decay: float = 0.1,
) -> dict:
    """Train an open_clip CLIP in place on world images and generated captions.

    images: uint8 (N, S, S, 3); scenes: the split's scene table (rows in image order: column
    `index` must be 0..N-1); parts: its part table. Loss: `open_clip.loss.ClipLoss` with the
    model's learnable temperature (clamped at 100). AdamW (lr, weight_decay; no decay on
    gains, biases, embeddings and the temperature), 5% warm-up then cosine decay.
    Returns {"loss": [mean loss per epoch], "seconds", "pairs_per_second", "epochs",
    "distinct_captions"}."""
    from open_clip.loss import ClipLoss
    from torchvision.ops import roi_align

    _check_images(images)
    n, size = len(images), images.shape[1]
    if len(scenes) != n or not np.array_equal(scenes["index"].to_numpy(), np.arange(n)):
        raise ValueError("scenes must have one row per image, in image order (index 0..N-1)")
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 2, lr > 0; got {epochs}, {batch_size}, {lr}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    part_index = _PartIndex(parts, n)
    names = scenes["label_name"].to_numpy()
    colours = scenes["colour"].to_numpy()
    textures = scenes["texture"].to_numpy()
    backgrounds = scenes["background"].to_numpy()
    object_boxes = scenes[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float64)
    tokens = _TokenCache(tokenizer)

    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2 or "embedding" in name or "logit_scale" in name]
    decay = [p for name, p in model.named_parameters() if not (p.ndim < 2 or "embedding" in name or "logit_scale" in name)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    steps_per_epoch = max(1, n // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(epochs * steps_per_epoch))
    loss_fn = ClipLoss()
    history: list[float] = []
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(n)
        epoch_start, total = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            b = len(idx)
            x = to_model_input(images[idx])
            is_crop = rng.random(b) < crop_prob
            side = rng.uniform(0.35, 0.7, size=b) * size
            cx0 = rng.random(b) * (size - side)
            cy0 = rng.random(b) * (size - side)
            crops = np.stack([cx0, cy0, cx0 + side, cy0 + side], axis=1)
            mirror = torch.rand(b, generator=generator) < 0.5
            x = torch.where(mirror.view(b, 1, 1, 1), x.flip(-1), x)
            if is_crop.any():
                sel = np.flatnonzero(is_crop)
                boxes = torch.as_tensor(np.concatenate([sel[:, None], crops[sel]], axis=1), dtype=torch.float32)
                # mirrored images: mirror the crop box too so captions stay true
                flip_sel = mirror.numpy()[sel]
                boxes[flip_sel, 1], boxes[flip_sel, 3] = size - boxes[flip_sel, 3], size - boxes[flip_sel, 1]
                x[sel] = roi_align(x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
            captions = []
            for j, i in enumerate(idx):
                rows = part_index.rows(i)
                pnames, pboxes = part_index.names[rows], part_index.boxes[rows]
                if is_crop[j]:
                    visible = _overlap_share(pboxes, crops[j]) >= 0.5
                    seen_parts = list(dict.fromkeys(pnames[visible]))
                    obj_visible = _overlap_share(object_boxes[i : i + 1], crops[j])[0] >= 0.6
                else:
                    seen_parts, obj_visible = list(dict.fromkeys(pnames)), True
                captions.append(
                    sample_caption(rng, names[i], colours[i], textures[i], backgrounds[i], seen_parts, obj_visible)
                )
            text = tokens(captions)
            image_features = model.encode_image(x, normalize=True)
            text_features = model.encode_text(text, normalize=True)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            total += float(loss.detach()) * b
        history.append(total / (steps_per_epoch * batch_size))
        rate = steps_per_epoch * batch_size / max(1e-9, time.perf_counter() - epoch_start)
        _say(log, f"clip epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}, {rate:.0f} pairs/s, "
                  f"{len(tokens.cache)} distinct captions so far")
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "loss": history,
        "seconds": seconds,
        "pairs_per_second": epochs * steps_per_epoch * batch_size / max(1e-9, seconds),
        "epochs": epochs,
        "distinct_captions": len(tokens.cache),
    }


def fit_world_clip(
    images: np.ndarray,
    scenes: pd.DataFrame,
    parts: pd.DataFrame,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    pretrain_epochs: int = 0,
    pretrain_lr: float = 0.003,
    model_config: dict | None = None,
    log: Log = None,
    **train_options,
):
    """Build a world CLIP for these images, warm-start its image tower (`pretrain_epochs`, 0 to
    skip) and train it contrastively, every random draw from `seed` (see the module doc).

    model_config: overrides of `DEFAULT_CLIP_CONFIG`; train_options: further `train_clip`
    arguments (crop_prob, weight_decay). Returns (model, tokenizer, history): `train_clip`'s
    history plus "threads", the torch intra-op thread count the weights were computed with."""
    _check_images(images)
    # The initial weights come from torch's global generator: without the seed here they would
    # depend on whatever ran before in the same process (e.g. other assets of one run).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, tokenizer = build_world_clip(int(images.shape[1]), **(model_config or {}))
        if pretrain_epochs > 0:
            _say(log, f"supervised warm start of the image tower: {pretrain_epochs} epochs")
            pretrain_clip_image_tower(model, images, scenes, parts, epochs=pretrain_epochs, batch_size=batch_size,
                                      lr=pretrain_lr, seed=seed, log=log)
        history = train_clip(model, tokenizer, images, scenes, parts, epochs=epochs, batch_size=batch_size, lr=lr,
                             seed=seed, log=log, **train_options)
    history["threads"] = torch.get_num_threads()
    return model, tokenizer, history


WARM_START_WEIGHTS = {"label": 3.0, "colour": 1.0, "background": 1.0, "texture": 1.0, "parts": 10.0}


def warm_start_targets(scenes: pd.DataFrame, parts: pd.DataFrame, part_names: list[str]) -> dict[str, torch.Tensor]:
    """The warm start's targets per image (rows of `scenes` in image order): class, main colour,
    background and texture as class indices, and the parts present as a (N, P) 0/1 matrix."""
    n = len(scenes)
    if not np.array_equal(scenes["index"].to_numpy(), np.arange(n)):
        raise ValueError("scenes must have one row per image, in image order (index 0..N-1)")
    targets = {"label": torch.tensor(scenes["label"].to_numpy(np.int64))}
    for column, values in (("colour", COLOUR_NAMES), ("background", BACKGROUNDS), ("texture", TEXTURES)):
        position = {v: i for i, v in enumerate(values)}
        if unknown := sorted(set(scenes[column]) - set(position)):
            raise ValueError(f"scene {column} values {unknown} are not world values")
        targets[column] = torch.tensor(scenes[column].map(position).to_numpy(np.int64))
    position = {p: i for i, p in enumerate(part_names)}
    present = np.zeros((n, len(part_names)), np.float32)
    pairs = parts[["index", "part"]].drop_duplicates()
    pairs = pairs[pairs["part"].isin(position)]
    present[pairs["index"].to_numpy(), pairs["part"].map(position).to_numpy()] = 1.0
    targets["parts"] = torch.from_numpy(present)
    return targets


def pretrain_clip_image_tower(
    model: nn.Module,
    images: np.ndarray,
    scenes: pd.DataFrame,
    parts: pd.DataFrame,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Log = None,
    weights: dict[str, float] | None = None,
) -> dict:
    """Supervised warm start of a CLIP's image tower on what the captions talk about.

    Contrastive training from a random image tower needs many more epochs than a small CPU
    affords (the tower first latches on to background and colour); a supervised start is the
    usual remedy (as LiT does, here with the tower left trainable afterwards). The tower
    (`model.visual`) gets temporary linear heads on its output for the class, the object's main
    colour, the background and the texture (cross-entropy each) and the parts present
    (multi-label, binary cross-entropy); the loss is their sum weighted by `weights`
    (default `WARM_START_WEIGHTS`: the class counts three times, and the part term, a mean over
    all part names, ten). A class-only start leaves the colour nearly unknown to the CLIP
    (retrieval about 0.5 on the default world), which the colour head fixes. Augmentation and
    schedule are those of `train_classifier`. The heads are thrown away; the tower keeps its
    weights. Returns {"loss": [mean loss per epoch], "accuracy": {head: running accuracy of the
    last epoch}, "seconds"}."""
    _check_images(images)
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    weights = {**WARM_START_WEIGHTS, **(weights or {})}
    part_names = sorted(parts["part"].unique())
    targets = warm_start_targets(scenes, parts, part_names)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    width = int(model.visual.output_dim)
    sizes = {"label": int(targets["label"].max()) + 1, "colour": len(COLOUR_NAMES), "background": len(BACKGROUNDS),
             "texture": len(TEXTURES), "parts": len(part_names)}
    heads = nn.ModuleDict({name: nn.Linear(width, size) for name, size in sizes.items()})
    params = [*model.visual.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    n = len(images)
    steps_per_epoch = max(1, n // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(epochs * steps_per_epoch))
    max_shift = max(1, images.shape[1] // 16)
    history: list[float] = []
    start = time.perf_counter()
    model.visual.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total, seen, epoch_start = 0.0, 0, time.perf_counter()
        correct = {name: 0 for name in sizes if name != "parts"}
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = _shift_and_mirror(to_model_input(images[idx.numpy()]), generator, max_shift)
            features = model.visual(x)
            loss = weights["parts"] * F.binary_cross_entropy_with_logits(heads["parts"](features), targets["parts"][idx])
            for name in correct:
                logits = heads[name](features)
                loss = loss + weights[name] * F.cross_entropy(logits, targets[name][idx])
                correct[name] += int((logits.argmax(1) == targets[name][idx]).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append(total / max(1, seen))
        accuracy = {name: c / max(1, seen) for name, c in correct.items()}
        rate = seen / max(1e-9, time.perf_counter() - epoch_start)
        _say(log, f"warm start epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}, train acc "
                  + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()) + f", {rate:.0f} images/s")
    model.eval()
    return {"loss": history, "accuracy": accuracy, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------------------
# CLIP evaluation


@torch.no_grad()
def encode_images(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised CLIP image features (N, D) of uint8 images (N, S, S, 3)."""
    _check_images(images)
    model.eval()
    feats = [model.encode_image(to_model_input(images[i : i + batch_size]), normalize=True)
             for i in range(0, len(images), batch_size)]
    return torch.cat(feats)


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer, texts: list[str], batch_size: int = 1024) -> torch.Tensor:
    """L2-normalised CLIP text features (T, D) of strings."""
    if not texts:
        raise ValueError("no texts to encode")
    model.eval()
    feats = [model.encode_text(tokenizer(texts[i : i + batch_size]), normalize=True)
             for i in range(0, len(texts), batch_size)]
    return torch.cat(feats)


def zero_shot_accuracy(
    model: nn.Module,
    tokenizer,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    template: str = "a photo of a {}",
) -> float:
    """Share of images whose most similar class prompt (template.format(name)) is the label's."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    text = encode_texts(model, tokenizer, [template.format(c) for c in class_names])
    sims = encode_images(model, images) @ text.T
    return float((sims.argmax(1).numpy() == labels).mean())


ATTRIBUTES = ("part", "part_pairs", "colour", "background", "texture")


def attribute_retrieval_accuracy(
    model: nn.Module,
    tokenizer,
    images: np.ndarray,
    scenes: pd.DataFrame,
    parts: pd.DataFrame,
    attribute: str,
    template: str = "a photo of a {}",
    values: list[str] | None = None,
) -> float:
    """Retrieval accuracy of one attribute (definitions in the module docstring).

    attribute: one of `ATTRIBUTES`. values: the candidate values (default: all world values;
    for parts, every part name in `parts`)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    n = len(images)
    if len(scenes) != n:
        raise ValueError(f"scenes has {len(scenes)} rows for {n} images")
    image_features = encode_images(model, images)
    if attribute in ("part", "part_pairs"):
        values = values or sorted(parts["part"].unique())
        sims = (image_features @ encode_texts(model, tokenizer, [template.format(v) for v in values]).T).numpy()
        position = {v: k for k, v in enumerate(values)}
        present = np.zeros((n, len(values)), dtype=bool)
        pairs = parts[["index", "part"]].drop_duplicates()
        pairs = pairs[pairs["part"].isin(position)]
        present[pairs["index"].to_numpy(), pairs["part"].map(position).to_numpy()] = True
        if attribute == "part":
            shown = present.any(axis=1)
            if not shown.any():
                raise ValueError("no image shows any of the candidate parts")
            # ties go to the first candidate, as argmax does for the other attributes
            return float(present[np.arange(n), sims.argmax(axis=1)][shown].mean())
        best_absent = np.where(present, -np.inf, sims).max(axis=1)
        rows, cols = np.nonzero(present)
        if len(rows) == 0:
            raise ValueError("no (image, part) pairs to score")
        return float((sims[rows, cols] > best_absent[rows]).mean())
    defaults = {"colour": list(COLOUR_NAMES), "background": list(BACKGROUNDS), "texture": list(TEXTURES)}
    values = values or defaults[attribute]
    truth = scenes[attribute].to_numpy()
    position = {v: k for k, v in enumerate(values)}
    unknown = sorted(set(truth) - set(position))
    if unknown:
        raise ValueError(f"scene {attribute} values {unknown} are not among the candidate values")
    sims = image_features @ encode_texts(model, tokenizer, [template.format(v) for v in values]).T
    target = np.array([position[v] for v in truth])
    return float((sims.argmax(1).numpy() == target).mean())
