"""Class concepts and class contrasting (Herdt & Otero Baguer; METHODS.md section 6).

Why does the model predict class A, and why A rather than B? Both answers are a few vectors of
a hidden layer (the concepts), each shown by the dataset crops whose layer representation is
closest to it, and checked by the model itself.

Class concepts of A
    Images the model *predicts* as A (the label is ignored). Attribution of logit A to the
    layer (captum: DeepLift against a white image after normalisation by default; gradient x
    activation or SmoothGrad over DeepLift as options). Per spatial position p the score
    m_p = mean over channels of the attribution; positions with m_p <= 0 are dropped and the
    rest scaled, x'_p = m_p x_p. NMF (scikit-learn) of all kept x' of all images into n
    components; the n rows of H are the concepts.
Visualisation
    Every image of the crop set is cut into a 3 x 3 grid (`methods.crops.grid_boxes`); a crop
    is represented by the mean of the layer's positions under it (the full image's map
    average-pooled to the grid, as the reference code does, so no extra forward pass). The
    m = 8 crops with the highest cosine similarity to a concept show it: one matrix product
    per class. The *excluding* variant skips crops whose source image or which themselves the
    model predicts as A.
Prediction test
    The top crop of each concept, stacked top to bottom into one image, goes through the
    model: does it predict A (and with which softmax)?
Contrasting A vs B
    Per class, positions whose (unscaled) attribution is at least 0.25 x the image's maximum;
    a logistic classifier (one linear layer with bias, sigmoid, full-batch SGD, lr 0.01, 100
    epochs) separates A's positions (label 1) from B's (label 0). Then on all positions of
    A's images z = w.x + b, x' = max(z, 0) x, and NMF as above. Many pairs train at once as
    one batched tensor program (`train_pairwise_classifiers`).
Shifting test
    The layer activations of B's images are moved by `offset x w / |w|` (towards A) at the
    reference code's ladder of offsets (`SHIFT_OFFSETS`); the mean softmax of A per offset.
CRAFT-style baseline (Fel et al. 2023)
    NMF of the crops' layer representations of A's images into 10 concepts, ranked by total
    Sobol indices of the concept coefficients for logit A (Jansen estimator, masks on the
    per-position coefficients, reconstruction through the rest of the model).

Layers. A conv map (B, C, H, W) has H x W positions. A ViT layer's patch tokens are the
positions (the class and register tokens are left out). NMF needs non-negative vectors: a
layer with negative values (ViT token layers) is represented by [max(x, 0), max(-x, 0)]
(twice the channels) wherever NMF or the crop similarity is involved; classifiers and shifts
use the raw vectors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

ATTRIBUTIONS = ("deeplift", "grad_x_activation", "smoothgrad")
# the reference code's offsets along the unit normal (it subtracts -offset x normal)
SHIFT_OFFSETS = (0.0, 0.5, 1.0, 2.0, 10.0, 15.0, 20.0, 35.0, 50.0, 200.0)
STRICT_CUTOFF = 0.25  # contrast filter: attribution >= 0.25 x the image's maximum


class ClassConceptError(ValueError):
    """A class cannot be explained as configured; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# positions of a layer


def to_positions(output: Tensor, num_prefix_tokens: int = 0) -> Tensor:
    """A layer output as (B, P, C) position vectors: conv (B, C, H, W) -> H*W positions (row-
    major); tokens (B, T, C) -> the T - num_prefix_tokens patch tokens."""
    if output.ndim == 4:
        return output.flatten(2).transpose(1, 2)
    if output.ndim == 3:
        return output[:, num_prefix_tokens:]
    raise ValueError(f"a layer with spatial positions gives (B, C, H, W) or (B, T, C), got {tuple(output.shape)}")


def grid_side(n_positions: int) -> int:
    side = math.isqrt(n_positions)
    if side * side != n_positions:
        raise ValueError(f"{n_positions} patch tokens do not form a square grid")
    return side


def positions_to_map(positions: Tensor, height: int, width: int) -> Tensor:
    """(B, P, C) -> (B, C, H, W)."""
    return positions.transpose(1, 2).reshape(positions.shape[0], positions.shape[2], height, width)


def nonnegative(x: Tensor, split: bool) -> Tensor:
    """The vectors NMF sees: x itself, or [max(x, 0), max(-x, 0)] for a signed layer."""
    return torch.cat([x.clamp(min=0), (-x).clamp(min=0)], dim=-1) if split else x.clamp(min=0)


def crop_vectors(maps: Tensor, grid: int = 3) -> Tensor:
    """(B, C, H, W) non-negative maps -> (B, grid*grid, C): each grid crop's mean of the map's
    positions under it (adaptive average pooling), crops row-major like `grid_boxes`."""
    pooled = nn.functional.adaptive_avg_pool2d(maps, grid)  # (B, C, g, g)
    return pooled.flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# attribution


def white_baseline(to_input: Callable, height: int, width: int) -> Tensor:
    """A white image (255 in every channel) after the model's normalisation, (1, 3, H, W)."""
    return to_input(np.full((1, height, width, 3), 255, np.uint8))


def layer_attribution(model: nn.Module, layer: nn.Module, inputs: Tensor, target: Tensor, method: str = "deeplift",
                      baseline: Tensor | None = None, nt_samples: int = 20, nt_std: float = 0.25) -> Tensor:
    """Attribution of logit `target[i]` of every input to the output of `layer` (captum), in the
    layer output's shape. deeplift: LayerDeepLift against `baseline`; grad_x_activation:
    LayerGradientXActivation; smoothgrad: NoiseTunnel(LayerDeepLift), `nt_samples` draws of
    Gaussian noise with standard deviation `nt_std` (the reference code's 20 and 0.25)."""
    from captum.attr import LayerDeepLift, LayerGradientXActivation, NoiseTunnel

    if method not in ATTRIBUTIONS:
        raise ValueError(f"attribution must be one of {ATTRIBUTIONS}, got {method!r}")
    target = torch.as_tensor(target, device=inputs.device).long()
    if method == "grad_x_activation":
        return LayerGradientXActivation(model, layer).attribute(inputs, target=target).detach()
    if baseline is None:
        raise ValueError(f"attribution {method!r} needs a baseline image")
    baselines = baseline.expand(inputs.shape[0], -1, -1, -1)
    model, layer = deeplift_ready(model, layer, inputs[:1])
    with warnings.catch_warnings():  # captum warns that it sets requires_grad on the inputs
        warnings.simplefilter("ignore", UserWarning)
        deeplift = LayerDeepLift(model, layer)
        if method == "deeplift":
            return deeplift.attribute(inputs, baselines=baselines, target=target).detach()
        return NoiseTunnel(deeplift).attribute(
            inputs, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=nt_std,
            nt_samples_batch_size=max(1, nt_samples // 4), baselines=baselines, target=target).detach()


class PlainReLU(nn.Module):
    """max(x, 0) that captum's DeepLift does not treat as a DeepLift non-linearity: the
    gradient passes it unchanged."""

    def forward(self, x):
        return torch.relu(x)


_DEEPLIFT_READY: dict[int, tuple] = {}


def deeplift_ready(model: nn.Module, layer: nn.Module, example: Tensor) -> tuple[nn.Module, nn.Module]:
    """The model and layer as captum's DeepLift can take them. DeepLift's rescale rule needs
    each ReLU module to run once per forward pass; torchvision's BasicBlock and Bottleneck call
    their `relu` two or three times, which captum refuses. A copy of the model gets a PlainReLU
    in place of every ReLU module called more than once (the gradient passes those unchanged;
    single-use ReLUs keep the rescale rule); models without reused ReLUs come back unchanged.
    The copy is kept per model object."""
    import copy
    import weakref

    key = id(model)
    if key in _DEEPLIFT_READY and _DEEPLIFT_READY[key][0]() is model:
        _, ready, names = _DEEPLIFT_READY[key]
        return ready, ready.get_submodule(names[layer]) if names[layer] else ready
    calls: dict[str, int] = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
               for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    reused = [n for n, c in calls.items() if c > 1]
    names = {m: n for n, m in model.named_modules()}
    ready = model
    if reused:
        ready = copy.deepcopy(model)
        for name in reused:
            parent, _, attribute = name.rpartition(".")
            setattr(ready.get_submodule(parent) if parent else ready, attribute, PlainReLU())
    _DEEPLIFT_READY[key] = (weakref.ref(model), ready, {m: names[m] for m in names})
    return ready, ready.get_submodule(names[layer]) if names[layer] else ready


def attribution_scores(attribution: Tensor) -> Tensor:
    """(B, P, C) attribution at the positions -> (B, P) scores m: the mean over channels."""
    return attribution.mean(dim=-1)


def scaled_positions(vectors: Tensor, scores: Tensor) -> Tensor:
    """The class-concept filter: positions with score m <= 0 are dropped, the others scaled by
    m. vectors (N, C), scores (N,) -> (kept, C)."""
    keep = scores > 0
    return vectors[keep] * scores[keep, None]


def strict_positions(vectors: Tensor, scores: Tensor, cutoff: float = STRICT_CUTOFF) -> Tensor:
    """The contrast filter, one image: positions whose score is at least `cutoff` x the
    image's maximum score (and positive), unscaled. vectors (P, C), scores (P,)."""
    top = scores.max()
    if top <= 0:
        return vectors[:0]
    return vectors[scores >= cutoff * top]


# ---------------------------------------------------------------------------------------------
# NMF


@dataclass
class Factorisation:
    basis: np.ndarray  # (n, C) the concepts
    share: np.ndarray  # (n,) each concept's share of the reconstruction's total mass
    n_rows: int


def factorise(vectors: np.ndarray | Tensor, n: int, seed: int = 0, max_iter: int = 400) -> Factorisation:
    """NMF (scikit-learn) of non-negative row vectors into n concepts.

    The reconstruction W H is non-negative, so its total mass splits exactly into the concepts'
    parts (sum of column k of W) x (sum of row k of H): `share` is that split. Raises
    ClassConceptError when there are fewer rows than concepts or nothing but zeros."""
    from sklearn.decomposition import NMF

    x = vectors.numpy() if isinstance(vectors, Tensor) else np.asarray(vectors)
    x = x.astype(np.float32, copy=False)
    if n < 1:
        raise ClassConceptError(f"the number of concepts must be at least 1, got {n}")
    if x.shape[0] < n:
        raise ClassConceptError(f"{x.shape[0]} kept position(s) cannot give {n} concepts: "
                                "lower n or use more images")
    if (x < 0).any():
        raise ClassConceptError("NMF needs non-negative vectors")
    if not np.any(x > 0):
        raise ClassConceptError("every kept position is zero: nothing to factorise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the concepts are still usable
        model = NMF(n_components=n, init="nndsvda", random_state=seed, max_iter=max_iter)
        w = model.fit_transform(x)
    h = model.components_
    mass = w.sum(axis=0) * h.sum(axis=1)
    share = mass / mass.sum() if mass.sum() > 0 else np.full(n, 1.0 / n)
    order = np.argsort(-share, kind="stable")  # the biggest concept first
    return Factorisation(h[order].astype(np.float32), share[order].astype(np.float64), int(x.shape[0]))


# ---------------------------------------------------------------------------------------------
# crops that show a concept


def concept_similarities(basis: np.ndarray | Tensor, crops: Tensor) -> Tensor:
    """Cosine similarity of every concept (n, C) with every crop vector (V, C): (n, V), one
    matrix product."""
    b = torch.as_tensor(np.asarray(basis), dtype=torch.float32)
    b = b / b.norm(dim=1, keepdim=True).clamp(min=1e-12)
    c = crops.float()
    c = c / c.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return b @ c.T


def top_crops(similarity: Tensor, m: int, target: int, crop_image: np.ndarray, image_pred: np.ndarray,
              predict_crops: Callable[[np.ndarray], np.ndarray] | None = None, exclude: bool = False,
              step: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """The m most similar crops of each concept (rows of `similarity`, (n, V)), best first.

    exclude=False: any crop. exclude=True: skip crops whose source image (crop_image[v] indexes
    image_pred) or which themselves the model predicts as `target`; crop predictions come from
    `predict_crops(crop indices) -> classes`, asked lazily for the best candidates in blocks of
    `step`, so only the crops that can be chosen go through the model. Returns per concept
    (crop indices, similarities); fewer than m when not enough crops qualify."""
    out = []
    order = torch.argsort(similarity, dim=1, descending=True, stable=True).numpy()
    for row, ranked in enumerate(order):
        if not exclude:
            pick = ranked[:m]
        else:
            ranked = ranked[image_pred[crop_image[ranked]] != target]
            chosen: list[int] = []
            for start in range(0, len(ranked), step):
                block = ranked[start:start + step]
                ok = block[np.asarray(predict_crops(block)) != target]
                chosen.extend(ok[:m - len(chosen)].tolist())
                if len(chosen) >= m:
                    break
            pick = np.asarray(chosen, dtype=np.int64)
        out.append((pick, similarity[row, pick].numpy() if len(pick) else np.zeros(0, np.float32)))
    return out


def stitch(crops: Sequence[np.ndarray], out_size: int | None = None) -> np.ndarray:
    """The prediction test's image: crops (h, w, 3) uint8 stacked top to bottom, as the paper
    does; resized (bilinear) to out_size x out_size when the model needs a fixed square input."""
    if not len(crops):
        raise ClassConceptError("no crop to stitch")
    strip = np.concatenate([np.asarray(c) for c in crops], axis=0)
    if out_size is None:
        return strip
    t = torch.from_numpy(strip).permute(2, 0, 1)[None].float()
    t = nn.functional.interpolate(t, size=(out_size, out_size), mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


# ---------------------------------------------------------------------------------------------
# pairwise linear classifiers


@dataclass
class PairClassifiers:
    weight: Tensor  # (P, C) normal of each pair's hyperplane, pointing from B to A
    bias: Tensor  # (P,)
    accuracy: Tensor  # (P,) training accuracy (threshold 0.5)


def _memberships(pairs: Sequence[tuple[int, int]]) -> dict[int, tuple[Tensor, Tensor]]:
    """For every class: the pairs it takes part in and its label there (1 as A, 0 as B)."""
    members: dict[int, tuple[list, list]] = {}
    for p, (a, b) in enumerate(pairs):
        members.setdefault(a, ([], []))[0].append(p), members[a][1].append(1.0)
        members.setdefault(b, ([], []))[0].append(p), members[b][1].append(0.0)
    return {c: (torch.tensor(i), torch.tensor(y)) for c, (i, y) in members.items()}


def train_pairwise_classifiers(by_class: Sequence[Tensor], pairs: Sequence[tuple[int, int]], epochs: int = 100,
                               lr: float = 0.01, pairs_per_batch: int = 4096) -> PairClassifiers:
    """One logistic classifier per pair (a, b): label 1 for the position vectors of class a,
    0 for those of class b, weights and bias from zero, full-batch gradient descent on the mean
    binary cross-entropy (what SGD does with the whole set as one batch), `epochs` steps of
    size `lr`.

    All pairs of a block train together. A class's positions X_c take part in every pair that
    contains c, so each step does, per class, one matrix product X_c W_c^T with the weights of
    all those pairs and one X_c^T R_c for their gradients (R = (sigmoid(z) - y) / N_pair): the
    gradient X^T (sigmoid(Xw + b) - y) / N of each pair, exactly what autograd gives for the
    pair alone, with the class's data read once for all its pairs."""
    for a, b in pairs:
        if a == b:
            raise ClassConceptError(f"pair ({a}, {b}) contrasts a class with itself")
        if not len(by_class[a]) or not len(by_class[b]):
            raise ClassConceptError(f"pair ({a}, {b}): a class has no positions to train on")
    weights, biases, accs = [], [], []
    for start in range(0, len(pairs), pairs_per_batch):
        chunk = list(pairs[start:start + pairs_per_batch])
        members = _memberships(chunk)
        data = {c: by_class[c].float() for c in members}
        count = torch.tensor([len(by_class[a]) + len(by_class[b]) for a, b in chunk], dtype=torch.float32)
        channels = data[chunk[0][0]].shape[1]
        w = torch.zeros(len(chunk), channels)
        b = torch.zeros(len(chunk))
        for _ in range(epochs):
            grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
            for c, (index, label) in members.items():
                z = data[c] @ w[index].T + b[index]  # (n_c, pairs of c)
                residual = (torch.sigmoid(z) - label) / count[index]
                grad_w.index_add_(0, index, residual.T @ data[c])
                grad_b.index_add_(0, index, residual.sum(0))
            w -= lr * grad_w
            b -= lr * grad_b
        correct = torch.zeros(len(chunk))
        for c, (index, label) in members.items():
            z = data[c] @ w[index].T + b[index]
            correct.index_add_(0, index, ((z > 0).float() == label).float().sum(0))
        weights.append(w), biases.append(b), accs.append(correct / count)
    return PairClassifiers(torch.cat(weights), torch.cat(biases), torch.cat(accs))


def train_pair_loop(xa: Tensor, xb: Tensor, epochs: int = 100, lr: float = 0.01) -> tuple[Tensor, Tensor]:
    """The one-pair-at-a-time baseline: nn.Linear + BCEWithLogitsLoss + torch.optim.SGD, full
    batch, weights from zero. Returns (weight (C,), bias ())."""
    x = torch.cat([xa, xb])
    y = torch.cat([torch.ones(len(xa)), torch.zeros(len(xb))])
    layer = nn.Linear(x.shape[1], 1)
    nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
    optimiser = torch.optim.SGD(layer.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss_fn(layer(x)[:, 0], y).backward()
        optimiser.step()
    return layer.weight.detach()[0], layer.bias.detach()[0]


def contrast_positions(vectors: Tensor, nmf_vectors: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The contrast filter: z = w.x + b on the raw vectors (N, C); rows with z <= 0 dropped, the
    NMF vectors of the others scaled by z: (kept, C')."""
    z = vectors @ weight + bias
    keep = z > 0
    return nmf_vectors[keep] * z[keep, None]


# ---------------------------------------------------------------------------------------------
# running the model with a changed layer


class ReplaceLayerOutput:
    """Forward hook that swaps a layer's positions for `fn(positions)` (B, P, C) -> (B, P, C);
    for token layers the class/register tokens pass unchanged."""

    def __init__(self, layer: nn.Module, fn: Callable[[Tensor], Tensor], num_prefix_tokens: int = 0):
        self.layer, self.fn, self.prefix = layer, fn, num_prefix_tokens
        self.handle = None

    def _hook(self, module, inputs, output):
        if output.ndim == 4:
            b, c, h, w = output.shape
            return positions_to_map(self.fn(to_positions(output)), h, w)
        return torch.cat([output[:, :self.prefix], self.fn(output[:, self.prefix:])], dim=1)

    def __enter__(self):
        self.handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def shifted_softmax(model: nn.Module, layer: nn.Module, inputs: Tensor, normal: Tensor, target: int,
                    offsets: Sequence[float] = SHIFT_OFFSETS, relu: bool = True, num_prefix_tokens: int = 0,
                    batch_size: int = 256) -> np.ndarray:
    """Softmax of class `target` after adding offset x normal / |normal| to every position of
    the layer (then ReLU for a non-negative layer, as the reference code does): (offsets, B)."""
    unit = normal / normal.norm().clamp(min=1e-12)
    out = np.zeros((len(offsets), inputs.shape[0]), np.float64)
    for i, offset in enumerate(offsets):
        def shift(x, offset=offset):
            moved = x + offset * unit.to(x.dtype)
            return moved.clamp(min=0) if relu else moved

        with torch.no_grad(), ReplaceLayerOutput(layer, shift, num_prefix_tokens):
            for start in range(0, inputs.shape[0], batch_size):
                logits = model(inputs[start:start + batch_size])
                out[i, start:start + batch_size] = torch.softmax(logits.float(), 1)[:, target].cpu().numpy()
    return out


# ---------------------------------------------------------------------------------------------
# CRAFT-style baseline


def jansen_total_indices(evaluate: Callable[[np.ndarray], np.ndarray], k: int, n_design: int = 16,
                         seed: int = 0) -> np.ndarray:
    """Total Sobol indices of k inputs in [0, 1] of `evaluate(masks (M, k)) -> (M,)` with the
    Jansen estimator: ST_i = mean((f(A) - f(A with column i from B))^2) / (2 Var f), A and B
    from a scrambled Sobol sequence of n_design points (CRAFT's design)."""
    from scipy.stats import qmc

    points = qmc.Sobol(d=2 * k, scramble=True, seed=seed).random(n_design)
    a, b = points[:, :k], points[:, k:]
    mixed = np.repeat(a[None], k, axis=0)
    for i in range(k):
        mixed[i, :, i] = b[:, i]
    y = np.asarray(evaluate(np.concatenate([a, b, mixed.reshape(-1, k)])), np.float64)
    ya, yb, ym = y[:n_design], y[n_design:2 * n_design], y[2 * n_design:].reshape(k, n_design)
    variance = np.var(np.concatenate([ya, yb]))
    if variance <= 0:
        return np.zeros(k)
    return ((ya[None] - ym) ** 2).mean(axis=1) / (2 * variance)


def nmf_coefficients(components: np.ndarray, vectors: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """Non-negative coefficients U >= 0 with U H ~ vectors for fixed components H (k, C), by
    multiplicative updates (what NMF.transform does): (N, k)."""
    h = torch.as_tensor(components, dtype=torch.float64)
    x = torch.as_tensor(vectors, dtype=torch.float64)
    u = torch.full((x.shape[0], h.shape[0]), float(x.mean().clamp(min=1e-6) / max(h.mean().item(), 1e-6)),
                   dtype=torch.float64)
    hht = h @ h.T
    xht = x @ h.T
    for _ in range(max_iter):
        u *= xht / (u @ hht).clamp(min=1e-12)
    return u.numpy()


# ---------------------------------------------------------------------------------------------
# truth of the embedded world


def box_overlap(crop: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> int:
    x0, y0 = max(crop[0], box[0]), max(crop[1], box[1])
    x1, y1 = min(crop[2], box[2]), min(crop[3], box[3])
    return max(0, x1 - x0) * max(0, y1 - y0)


def crop_truth(crops, parts, scenes, part_share: float = 0.5, background_object_share: float = 0.25):
    """What each crop shows in the world's truth.

    crops: frame with image_id and box_x0..box_y1; parts: world_parts rows (image_id, part,
    x0..y1 exclusive ends); scenes: world_scenes indexed by image_id (background, box_*).
    A crop shows a part when it holds at least `part_share` of the part's box area; it is
    background when the object box covers less than `background_object_share` of it.
    Returns lists: parts shown per crop, and (background name or None) per crop."""
    by_image = {k: g for k, g in parts.groupby("image_id")}
    shown, background = [], []
    for row in crops.itertuples(index=False):
        box = (row.box_x0, row.box_y0, row.box_x1, row.box_y1)
        names = set()
        for p in by_image.get(row.image_id, parts.iloc[:0]).itertuples(index=False):
            area = max(1, (p.x1 - p.x0) * (p.y1 - p.y0))
            if box_overlap(box, (p.x0, p.y0, p.x1, p.y1)) >= part_share * area:
                names.add(p.part)
        shown.append(sorted(names))
        scene = scenes.loc[row.image_id]
        obj = (scene["box_x0"], scene["box_y0"], scene["box_x1"], scene["box_y1"])
        crop_area = max(1, (box[2] - box[0]) * (box[3] - box[1]))
        background.append(scene["background"] if box_overlap(box, obj) < background_object_share * crop_area else None)
    return shown, background


# ---------------------------------------------------------------------------------------------
# many classes at once, one failure never stopping the others


def explain_classes(positions_by_class: dict[int, Tensor], n: int, seed: int = 0
                    ) -> tuple[dict[int, Factorisation], dict[int, str]]:
    """Factorise each class's kept (non-negative) positions into n concepts. A class without
    predicted images or with fewer positions than n gets an error message instead; the other
    classes still complete. Returns (factorisations, errors) keyed by class."""
    done, errors = {}, {}
    for cls, vectors in positions_by_class.items():
        if vectors is None or len(vectors) == 0:
            errors[cls] = "no image is predicted as this class (or no position has positive attribution)"
            continue
        try:
            done[cls] = factorise(vectors, n, seed=seed)
        except ClassConceptError as err:
            errors[cls] = str(err)
    return done, errors


def default_pairs(confusion: np.ndarray, twins: dict[int, int] | None = None) -> list[tuple[int, int, str]]:
    """Pairs (A, B, reason): each class A with the class B it is most often mistaken for
    (confusion[a, b] = images of label a predicted as b; classes never confused pair with
    nothing), plus both orders of every confusable twin pair. Duplicates are dropped."""
    pairs: dict[tuple[int, int], str] = {}
    k = confusion.shape[0]
    for a in range(k):
        row = confusion[a].astype(float).copy()
        row[a] = -1
        if row.max() > 0:
            pairs[(a, int(row.argmax()))] = "most confused"
    for a, b in (twins or {}).items():
        for pair in ((a, b), (b, a)):
            pairs[pair] = "confusable twin" if pair not in pairs else pairs[pair] + ", confusable twin"
    return [(a, b, reason) for (a, b), reason in sorted(pairs.items())]


def truth_table(crops, parts, scenes, classes, part_share: float = 0.5, background_object_share: float = 0.25):
    """Per (kind, class, other, variant) of `class_concept_crops`: the class's parts covered by
    its concepts' crops, the share of crops on a background (the class's spurious background, or
    for the other classes the world's spurious background, as the baseline to compare with), and
    the share of crops showing a part that tells A from B (B = the contrast's other class, or the
    confusable twin for single-class concepts; none otherwise)."""
    import pandas as pd

    shown, background = crop_truth(crops, parts, scenes, part_share, background_object_share)
    crops = crops.assign(shown=shown, on_background=background)
    info = classes.set_index("class_id")
    names = info["name"].to_dict()
    by_name = {n: i for i, n in names.items()}
    world_cue = next((b for b in info["spurious_background"] if isinstance(b, str)), None)
    rows = []
    for (kind, a, b, variant), g in crops.groupby(["kind", "class_id", "other_id", "variant"], sort=True):
        own = list(info.loc[a, "parts"])
        seen = set().union(*map(set, g["shown"]))
        covered = sorted(set(own) & seen)
        cue = info.loc[a, "spurious_background"] if isinstance(info.loc[a, "spurious_background"], str) else world_cue
        twin = b if b >= 0 else by_name.get(info.loc[a, "confusable_with"], -1) if isinstance(
            info.loc[a, "confusable_with"], str) else -1
        telling = sorted(set(own) - set(info.loc[twin, "parts"])) if twin >= 0 else []
        rows.append({
            "kind": kind, "class_id": int(a), "class_name": names[a], "other_id": int(b),
            "other_name": names.get(b) if b >= 0 else None, "variant": variant, "n_crops": len(g),
            "parts": own, "parts_covered": covered, "part_coverage": len(covered) / max(1, len(own)),
            "background": cue,
            "background_share": float((g["on_background"] == cue).mean()) if cue else float("nan"),
            "distinguishing_parts": telling,
            "distinguishing_share": float(np.mean([bool(set(s) & set(telling)) for s in g["shown"]]))
            if telling else float("nan"),
        })
    df = pd.DataFrame(rows)
    if len(df):
        df = df.astype({"class_id": np.int32, "other_id": np.int32, "n_crops": np.int32})
    return df


# ---------------------------------------------------------------------------------------------
# the README's results section

RESULT_TABLES = ("prediction_test", "class_concepts", "class_contrasts", "shifting_test", "class_concept_truth",
                 "class_concept_comparison", "world_classes")
PAPER_PREDICTION_TEST = {  # ResNet-50 (torchvision), layer4.2, all 1000 classes: tables 1 and 2
    "allow": (0.981, 0.996), "exclude": (0.892, 0.911)}
PAPER_SHIFTING = (0.000, 0.995)  # table 3, ResNet-50 layer4.2: default and shifted softmax of A


def _fmt(value, digits=3):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_markdown(tables: dict, heading_level: int = 3) -> str:
    """The class-concept part of the README's results, from the catalog's tables (keys:
    prediction_test, class_concepts, class_contrasts, shifting_test, class_concept_truth,
    class_concept_comparison; each with a `model` column). Empty string when nothing exists."""
    head = "#" * heading_level
    tests = tables.get("prediction_test")
    if tests is None or not len(tests):
        return ""
    layers = {}
    concepts = tables.get("class_concepts")
    if concepts is not None and len(concepts):
        layers = concepts.groupby("model")["layer"].first().to_dict()
    out = [f"{head} Class concepts: the prediction test (beside the paper's tables 1 and 2)", "",
           "Stitched image of each class's top crop per concept (n = 4) through the model; average softmax of "
           "the class and share of classes it is predicted as.", "",
           "| Model | Layer | Allowing: avg pred | Allowing: predicts class | Excluding: avg pred "
           "| Excluding: predicts class | Classes |", "|:--|:--|--:|--:|--:|--:|--:|"]
    single = tests[tests["kind"] == "class"]
    for model, g in single.groupby("model", sort=True):
        cells = []
        for variant in ("allow", "exclude"):
            v = g[g["variant"] == variant]
            cells += [_fmt(v["softmax_target"].mean()), f"{100 * v['passed'].mean():.1f}%"]
        out.append(f"| `{model}` | {layers.get(model, '')} | " + " | ".join(cells) + f" | {g['class_id'].nunique()} |")
    a, e = PAPER_PREDICTION_TEST["allow"], PAPER_PREDICTION_TEST["exclude"]
    out += [f"| paper: ResNet-50 (1000 classes) | layer4.2 | {a[0]:.3f} | {100 * a[1]:.1f}% | {e[0]:.3f} | "
            f"{100 * e[1]:.1f}% | 1000 |", ""]

    contrasts = tests[tests["kind"] == "contrast"]
    shifting = tables.get("shifting_test")
    if len(contrasts):
        out += [f"{head} Class contrasts and the shifting test (beside the paper's table 3)", "",
                "Contrast explanations of A over B (each class with its most confused class, and the world's "
                "confusable twins): the prediction test of their stitched crops, the pair classifiers' accuracy, "
                "and the softmax of A on B's images before and after moving their layer activations along the "
                "classifier's normal (mean over pairs, best offset per pair).", "",
                "| Model | Pairs | Classifier accuracy | Allowing: p(A) | Allowing: predicts A | Excluding: p(A) "
                "| Excluding: predicts A | Shifting: default p(A) | Shifting: best p(A) |",
                "|:--|--:|--:|--:|--:|--:|--:|--:|--:|"]
        accuracy = tables.get("class_contrasts")
        for model, g in contrasts.groupby("model", sort=True):
            cells = []
            for variant in ("allow", "exclude"):
                v = g[g["variant"] == variant]
                cells += [_fmt(v["softmax_target"].mean()), f"{100 * v['passed'].mean():.1f}%"]
            acc = accuracy[accuracy["model"] == model].drop_duplicates(["class_id", "other_id"])["classifier_accuracy"] \
                if accuracy is not None and len(accuracy) else None
            default = best = ""
            if shifting is not None and len(shifting):
                s = shifting[shifting["model"] == model]
                default = _fmt(s[s["offset"] == 0]["mean_softmax_target"].mean())
                best = _fmt(s.groupby(["class_id", "other_id"])["mean_softmax_target"].max().mean())
            out.append(f"| `{model}` | {g[['class_id', 'other_id']].drop_duplicates().shape[0]} | "
                       f"{_fmt(acc.mean()) if acc is not None else ''} | " + " | ".join(cells) + f" | {default} | {best} |")
        out += [f"| paper: ResNet-50 layer4.2 | | | | | | | {PAPER_SHIFTING[0]:.3f} | {PAPER_SHIFTING[1]:.3f} |", ""]

    truth = tables.get("class_concept_truth")
    if truth is not None and len(truth):
        out += [f"{head} Class concepts against the world's planted truth", "",
                "Share of the class's parts covered by its concepts' crops (mean over classes); share of the "
                "spurious class's crops on its spurious background against the same share for the other classes; "
                "share of crops showing the part that tells a confusable pair apart, contrast concepts against the "
                "single-class concepts of the same class, for the confusable twins (allowing variant).", "",
                "| Model | Part coverage (allow) | Part coverage (exclude) | Spurious class: crops on its background "
                "| Other classes: crops on that background | Pair: distinguishing part in contrast crops "
                "| ... in single-class crops |", "|:--|--:|--:|--:|--:|--:|--:|"]
        for model, g in truth.groupby("model", sort=True):
            single_t = g[g["kind"] == "class"]
            cover = {v: single_t[single_t["variant"] == v]["part_coverage"].mean() for v in ("allow", "exclude")}
            allow = single_t[single_t["variant"] == "allow"]
            spurious_class = _spurious_rows(tables, model, allow)
            spur = ", ".join(f"{r.class_name} on {r.background}: {_fmt(r.background_share)}"
                             for r in spurious_class.itertuples())
            others = allow[~allow["class_id"].isin(spurious_class["class_id"])]["background_share"].mean() \
                if len(spurious_class) else float("nan")
            contrast_t = g[(g["kind"] == "contrast") & (g["variant"] == "allow") & g["distinguishing_share"].notna()]
            twins = _twin_pairs(tables)
            contrast_t = contrast_t[[(a, b) in twins for a, b in zip(contrast_t["class_name"], contrast_t["other_name"])]]
            pair_cells, single_cells = [], []
            for r in contrast_t.itertuples():
                s = allow[(allow["class_id"] == r.class_id) & allow["distinguishing_share"].notna()]
                telling = ", ".join(r.distinguishing_parts)
                pair_cells.append(f"{r.class_name} over {r.other_name} ({telling}): {_fmt(r.distinguishing_share)}")
                single_cells.append(f"{r.class_name}: {_fmt(s['distinguishing_share'].mean()) if len(s) else ''}")
            out.append(f"| `{model}` | {_fmt(cover['allow'])} | {_fmt(cover['exclude'])} | {spur} | {_fmt(others)} | "
                       f"{'; '.join(pair_cells)} | {'; '.join(single_cells)} |")
        out.append("")

    comparison = tables.get("class_concept_comparison")
    if comparison is not None and len(comparison):
        ns = sorted(comparison["n_concepts"].unique())
        out += [f"{head} This method against a CRAFT-style baseline (beside the paper's figure 4)", "",
                "Excluding variant: average softmax of the class for the stitched top crops of n concepts (share "
                "of classes predicted in brackets), on the classes counted in the last column.", "",
                "| Model | Layer | Method | " + " | ".join(f"n={n}" for n in ns) + " | Classes |",
                "|:--|:--|:--|" + "--:|" * len(ns) + "--:|"]
        excl = comparison[comparison["variant"] == "exclude"]
        for (model, layer, method), g in excl.groupby(["model", "layer", "method"], sort=True):
            cells = []
            for n in ns:
                v = g[g["n_concepts"] == n]
                cells.append(f"{_fmt(v['softmax_target'].mean(), 2)} ({100 * v['passed'].mean():.0f}%)" if len(v) else "")
            out.append(f"| `{model}` | {layer} | {'this method' if method == 'ours' else 'CRAFT-style'} | "
                       + " | ".join(cells) + f" | {g['class_id'].nunique()} |")
        out.append("")
    return "\n".join(out)


def _spurious_rows(tables, model, allow):
    """The single-class rows (allowing variant) of classes whose spurious background is known."""
    return allow[allow["background"].notna() & allow["class_name"].isin(_spurious_classes(tables))]


def _twin_pairs(tables) -> set:
    """(A, B) name pairs of the world's confusable twins, both orders."""
    classes = tables.get("world_classes")
    if classes is None or not len(classes):
        return set()
    rows = classes[classes["confusable_with"].notna()]
    return {(a, b) for a, b in zip(rows["name"], rows["confusable_with"])} | \
        {(b, a) for a, b in zip(rows["name"], rows["confusable_with"])}


def _spurious_classes(tables) -> set:
    classes = tables.get("world_classes")
    if classes is None or not len(classes):
        return set()
    return set(classes.loc[classes["spurious_background"].notna(), "name"])
