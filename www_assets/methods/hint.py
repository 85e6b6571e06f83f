"""HINT: neurons and hierarchical concepts (seed 004, METHODS.md section 7). Pure code, no Dagster.

1. **Concept hierarchy**: the tree of concepts over a model's classes: the classes themselves
   (leaves) and every ancestor that covers at least `min_classes` (2) classes. On the world it
   comes from each class's path `thing -> artifact | organism -> superclass -> class`; for
   ImageNet-style probe sets from the WordNet hypernym path of each class's synset (the class
   folder's wnid). A node's `parent` is its nearest kept ancestor, its `depth` the number of
   kept ancestors above it (the root has depth 0).
2. **Responsible regions**: the gradient of a target (by default the image's true class logit,
   as the reference code does; optionally the log-sum-exp of the logits of the concept's
   classes) with respect to the hidden layer's output, with guided backpropagation through the
   ReLUs after the layer; per position the L2 norm over channels; per image normalised by
   (s - min) / (p99 - min), clipped to [0, 1]; a position is responsible when its value is above
   0.5. The other positions of the image are background.
3. **Concept classifiers**: a linear classifier on position vectors, scikit-learn's
   `SGDClassifier(loss="modified_huber", alpha=0.01)` as in the reference code; positives are
   the responsible positions of the concept's images, negatives the responsible positions of its
   sibling concepts' images and the background positions of both; a quarter is held out.
4. **Neuron Shapley values** (seed 004): for neuron d and concept e,
   `phi = sum_r |sum_i (L(S_i + d)(r) - L(S_i)(r))| / (M |r|)` over M sampled coalitions S_i
   and the positions r of the concept's and the background's regions, where L is the
   classifier's output (its probability, (clip(w.x + b, -1, 1) + 1) / 2 for modified Huber)
   with only the coalition's neurons kept (the others set to 0). Coalitions are drawn as the
   predecessors of d in a uniformly random order of the neurons, which makes the inner mean an
   unbiased estimate of the position's Shapley value; one order gives every neuron its
   coalition at once. For a classifier whose output is linear in the neurons the marginal is
   `w_d x_d(r)` whatever the coalition, so phi = mean_r |w_d x_d(r)| (the test oracle).
5. **Localisation** (WSOL): the classifier's probability at each position, upsampled
   (bilinear) to the image, thresholded at 0.5; the largest 4-connected component gives the
   box; a hit when IoU >= 0.5 with the true box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from www_resources.hooks import captured_output, eval_mode

__all__ = [
    "HIERARCHY_COLUMNS", "hierarchy_from_paths", "wordnet_class_paths", "descendant_classes",
    "default_hint_layer", "position_grid", "random_orders", "siblings", "hint_layer_candidates", "saliency_is_flat", "choose_hint_layer", "layer_gradients", "concept_objective", "position_saliency", "responsible_positions",
    "classifier_samples", "ConceptClassifier", "train_concept_classifier", "modified_huber_proba",
    "sampled_shapley", "linear_link_shapley", "linear_shapley_closed_form", "top_neurons_by_share",
    "box_from_mask", "box_iou", "upsample_maps", "map_box_to_input", "read_box_file",
    "concept_words", "agreement_rows", "localization_by_level", "results_markdown",
]

# --------------------------------------------------------------------------------------------
# 1. the concept hierarchy

HIERARCHY_COLUMNS = ["concept", "name", "parent", "depth", "classes", "class_names", "n_classes", "is_class"]


def hierarchy_from_paths(paths: Sequence[Sequence[str]], class_names: Sequence[str], *, min_classes: int = 2,
                         names: dict[str, str] | None = None) -> pd.DataFrame:
    """The concept tree over classes given each class's root-to-leaf path of node ids.

    paths[i] ends with class i's own node. Kept: every class node, and every other node that
    lies on the paths of at least `min_classes` classes. A kept node's parent is the nearest kept
    node above it on the (first) path through it; depth counts kept ancestors. `names` maps node
    ids to display names (default: the id itself; class nodes: `class_names`).
    Columns: HIERARCHY_COLUMNS, ordered by depth then first appearance.
    """
    if len(paths) != len(class_names):
        raise ValueError(f"{len(paths)} class paths for {len(class_names)} class names")
    names = dict(names or {})
    covers: dict[str, list[int]] = {}
    order: list[str] = []
    for class_id, path in enumerate(paths):
        if not path:
            raise ValueError(f"class {class_id} ({class_names[class_id]!r}) has an empty hierarchy path")
        for node in dict.fromkeys(path):
            if node not in covers:
                covers[node] = []
                order.append(node)
            covers[node].append(class_id)
    leaves = {path[-1]: class_id for class_id, path in enumerate(paths)}
    if len(leaves) != len(paths):
        raise ValueError("two classes end their hierarchy paths in the same node")
    kept = {n for n in order if n in leaves or len(covers[n]) >= min_classes}
    parent: dict[str, str | None] = {}
    depth: dict[str, int] = {}
    for path in paths:
        above: list[str] = []
        for node in path:
            if node not in kept:
                continue
            if node not in parent:
                parent[node] = above[-1] if above else None
                depth[node] = len(above)
            above.append(node)
    rows = []
    for node in order:
        if node not in kept:
            continue
        classes = sorted(covers[node])
        is_class = node in leaves
        rows.append({
            "concept": node,
            "name": class_names[leaves[node]] if is_class else names.get(node, node),
            "parent": parent[node], "depth": depth[node], "classes": classes,
            "class_names": [class_names[c] for c in classes], "n_classes": len(classes), "is_class": is_class,
        })
    frame = pd.DataFrame(rows, columns=HIERARCHY_COLUMNS)
    frame["order"] = range(len(frame))
    frame = frame.sort_values(["depth", "order"]).drop(columns="order").reset_index(drop=True)
    frame["parent"] = pd.Series([p if isinstance(p, str) else None for p in frame["parent"]], dtype=object)
    return frame


def is_wnid(name) -> bool:
    """Whether `name` is a WordNet noun id like 'n02084071' (ImageNet's class folder names)."""
    return isinstance(name, str) and len(name) == 9 and name[0] == "n" and name[1:].isdigit()


def wordnet_class_paths(wnids: Sequence[str], wordnet) -> tuple[list[list[str]], dict[str, str]]:
    """Root-to-leaf WordNet hypernym paths (synset names) of the classes' wnids ('n02084071').

    A synset with several hypernym paths (WordNet is not a tree) uses the longest one, ties
    broken by the names along it, so the result is deterministic. Returns (paths, display names:
    synset name -> first lemma with spaces).
    """
    paths, names = [], {}
    for wnid in wnids:
        if not is_wnid(wnid):
            raise ValueError(f"class folder {wnid!r} is not a WordNet noun id like n02084071; the "
                             "WordNet hierarchy needs class folders named by their wnid")
        synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
        candidates = synset.hypernym_paths()
        best = sorted(candidates, key=lambda p: (-len(p), [s.name() for s in p]))[0]
        paths.append([s.name() for s in best])
        for s in best:
            names[s.name()] = s.lemmas()[0].name().replace("_", " ")
    return paths, names


def descendant_classes(hierarchy: pd.DataFrame) -> dict[str, set[int]]:
    return {c: set(int(x) for x in cl) for c, cl in zip(hierarchy["concept"], hierarchy["classes"])}


def siblings(hierarchy: pd.DataFrame, concept: str) -> list[str]:
    parent = hierarchy.set_index("concept").loc[concept, "parent"]
    if parent is None or (isinstance(parent, float) and math.isnan(parent)):
        return []
    same = hierarchy[hierarchy["parent"] == parent]["concept"]
    return [c for c in same if c != concept]


# --------------------------------------------------------------------------------------------
# 2. responsible regions


def default_hint_layer(module: nn.Module, spatial_layer: str) -> str:
    """The hidden layer HINT reads: the registry's spatial layer, except for a ViT whose head
    reads only the class token (timm's global_pool='token') and whose spatial layer comes after
    the last attention (the final norm or the last block): there the patch tokens cannot affect
    the prediction, every gradient at them is zero, so the input of the last block (the output
    of the block before it, or timm's `norm_pre` for a single block) is used instead."""
    blocks = getattr(module, "blocks", None)
    if isinstance(blocks, nn.Sequential) and getattr(module, "global_pool", None) == "token" and len(blocks):
        last = f"blocks.{len(blocks) - 1}"
        if spatial_layer in ("norm", "fc_norm", last):
            if len(blocks) >= 2:
                return f"blocks.{len(blocks) - 2}"
            if isinstance(getattr(module, "norm_pre", None), nn.Module):
                return "norm_pre"  # a one-block ViT: the tokens that enter its only block
    return spatial_layer


def hint_layer_candidates(module: nn.Module, spatial_layer: str, layers: Sequence[str] = ()) -> list[str]:
    """Layers to try, in order: the spatial layer, the class-token ViT rule of
    `default_hint_layer`, the registry's earlier layers (nearest first), and the module
    registered just before the spatial layer under the same parent (ResNet: layer3 before layer4).
    A spatial layer followed only by global pooling and a linear head has the same gradient at
    every position, so its saliency says nothing; `choose_hint_layer` skips such layers."""
    names = dict(module.named_modules())
    earlier = list(layers[: list(layers).index(spatial_layer)])[::-1] if spatial_layer in layers else []
    parent, _, leaf = spatial_layer.rpartition(".")
    siblings = [n for n, _ in (names[parent] if parent else module).named_children()] if parent in names or not parent else []
    previous = []
    if leaf in siblings and siblings.index(leaf) > 0:
        previous = [f"{parent}.{siblings[siblings.index(leaf) - 1]}" if parent else siblings[siblings.index(leaf) - 1]]
    ordered = [spatial_layer, default_hint_layer(module, spatial_layer), *earlier, *previous]
    return [n for n in dict.fromkeys(ordered) if n in names]


def saliency_is_flat(saliency_input: Tensor, tolerance: float = 1e-5) -> bool:
    """True when, in every image, the per-position gradient norm does not vary (relative to its
    maximum): the layer's positions cannot be told apart by their gradient."""
    norm = saliency_input.float().pow(2).sum(dim=1).sqrt().flatten(1)
    spread = norm.amax(dim=1) - norm.amin(dim=1)
    return bool((spread <= tolerance * norm.amax(dim=1).clamp(min=torch.finfo(norm.dtype).tiny)).all())


def choose_hint_layer(model: nn.Module, candidates: Sequence[str], inputs: Tensor,
                      objective: Callable[[Tensor], Tensor], *, num_prefix_tokens: int = 0,
                      guided: bool = True) -> str:
    """The first candidate whose gradient saliency varies over positions on these inputs."""
    modules = dict(model.named_modules())
    for name in candidates:
        _, (gradient,) = layer_gradients(model, modules[name], inputs, objective,
                                         num_prefix_tokens=num_prefix_tokens, guided=guided)
        if gradient.ndim == 4 and gradient.shape[2] * gradient.shape[3] > 1 and not saliency_is_flat(gradient):
            return name
    raise ValueError(f"no layer among {list(candidates)} has a gradient that varies over positions; "
                     "set the HINT layer (config `layer`) to an earlier spatial layer")


class _GuidedReLUGradient(torch.autograd.Function):
    """Identity forward; backward keeps only positive gradients (guided backpropagation's rule
    on top of the ReLU's own mask, which the ReLU's backward applies)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def position_grid(output: Tensor, num_prefix_tokens: int) -> Tensor:
    """A layer output as positions (B, C, h, w): conv maps as they are, patch tokens as their grid."""
    from www_assets.methods.heatmaps import spatial_maps

    return spatial_maps(output, num_prefix_tokens if output.ndim == 3 else 0)


def layer_gradients(model: nn.Module, layer: nn.Module, inputs: Tensor, objective: Callable[[Tensor], Tensor], *,
                    num_prefix_tokens: int = 0, guided: bool = True, n_objectives: int = 1) -> tuple[Tensor, list[Tensor]]:
    """The layer's output as a grid (B, C, h, w) and the gradient of each objective with respect
    to it (a list of n_objectives grids), from one forward pass.

    objective(logits) returns a (n_objectives,) tensor: each entry a sum over the batch of
    per-image scores (images are independent in eval mode, so one backward gives every image
    its own gradient). guided=True applies guided backpropagation to every nn.ReLU module.
    """
    def guide(_m, _i, output):
        return _GuidedReLUGradient.apply(output)

    # the layer's hook goes first: when the layer is itself a ReLU, it keeps the output before the
    # guided copy replaces it, so the gradient reaching it has passed that ReLU's guided rule
    with eval_mode(model), captured_output(layer) as captured:
        handles = [m.register_forward_hook(guide) for m in model.modules() if isinstance(m, nn.ReLU)] if guided else []
        try:
            with torch.enable_grad():
                logits = model(inputs.detach().requires_grad_(True))
                if not captured:
                    raise ValueError("the HINT layer did not run during the forward pass")
                values = objective(logits)
                grads = []
                for k in range(n_objectives):
                    (g,) = torch.autograd.grad(values[k], captured[0], retain_graph=k + 1 < n_objectives)
                    grads.append(position_grid(g.detach(), num_prefix_tokens).float())
        finally:
            for h in handles:
                h.remove()
    return position_grid(captured[0].detach(), num_prefix_tokens).float(), grads


def concept_objective(level_classes: Sequence[Sequence[Sequence[int] | None]], n_classes: int):
    """Objective for `layer_gradients` with one entry per hierarchy level: level l sums, over the
    images, the log-sum-exp of the logits of the classes under the image's concept at level l
    (level_classes[l][b]; None when image b has no concept at that level, which adds 0)."""
    n_levels, batch = len(level_classes), len(level_classes[0]) if level_classes else 0
    mask = torch.zeros(n_levels, batch, n_classes, dtype=torch.bool)
    used = torch.zeros(n_levels, batch, dtype=torch.bool)
    for level, per_image in enumerate(level_classes):
        for b, classes in enumerate(per_image):
            if classes is not None:
                mask[level, b, list(classes)] = True
                used[level, b] = True
    mask[~used] = True  # keeps the log-sum-exp finite (and its gradient defined) for dropped entries

    def objective(logits: Tensor) -> Tensor:
        m, u = mask.to(logits.device), used.to(logits.device)
        lse = torch.logsumexp(logits[None].masked_fill(~m, float("-inf")), dim=2)  # (L, B)
        return torch.where(u, lse, torch.zeros_like(lse)).sum(dim=1)

    return objective


def position_saliency(gradient: Tensor, percentile: float = 99.0) -> Tensor:
    """Per-position L2 norm over channels of a gradient grid (B, C, h, w), normalised per image
    to (s - min) / (percentile - min) clipped to [0, 1] -> (B, h, w). A flat map (percentile equal
    to the minimum, e.g. an all-zero gradient) is all zero: no position is responsible."""
    norm = gradient.float().pow(2).sum(dim=1).sqrt()  # (B, h, w)
    flat = norm.flatten(1)
    low = flat.amin(dim=1)
    high = torch.quantile(flat, percentile / 100.0, dim=1)
    spread = (high - low).clamp(min=0)
    scaled = (flat - low[:, None]) / spread.clamp(min=torch.finfo(flat.dtype).tiny)[:, None]
    scaled = torch.where((spread > 0)[:, None], scaled, torch.zeros_like(scaled))
    return scaled.clamp(0, 1).view_as(norm)


def responsible_positions(saliency: Tensor | np.ndarray, threshold: float = 0.5):
    """Boolean mask of responsible positions: normalised saliency above the threshold."""
    return saliency > threshold


# --------------------------------------------------------------------------------------------
# 3. concept classifiers


def classifier_samples(own_features: np.ndarray, own_responsible: np.ndarray, sibling_features: np.ndarray,
                       sibling_responsible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training positions of one concept classifier.

    own_features: (n1, P, D) position vectors of the concept's images, own_responsible: (n1, P)
    their responsible positions for the concept; sibling_*: the same for the images of the
    sibling concepts (their responsible positions for their own concept). Positives: the concept's
    responsible positions; negatives: the siblings' responsible positions and the background
    positions of both. Returns X (n, D), y (n,) in {0, 1}.
    """
    own_responsible = np.asarray(own_responsible, bool)
    sibling_responsible = np.asarray(sibling_responsible, bool)
    X = np.concatenate([own_features[own_responsible], sibling_features[sibling_responsible],
                        own_features[~own_responsible], sibling_features[~sibling_responsible]])
    n_pos = int(own_responsible.sum())
    y = np.zeros(len(X), np.int8)
    y[:n_pos] = 1
    return X, y


def modified_huber_proba(decision: Tensor | np.ndarray):
    """Probability of the positive class of a binary modified-Huber SGDClassifier (what
    scikit-learn's predict_proba returns): (clip(decision, -1, 1) + 1) / 2."""
    if isinstance(decision, Tensor):
        return (decision.clamp(-1, 1) + 1) / 2
    return (np.clip(decision, -1, 1) + 1) / 2


@dataclass(frozen=True)
class ConceptClassifier:
    weights: np.ndarray  # (D,) over all neurons (0 for neurons left out)
    intercept: float
    train_accuracy: float
    heldout_accuracy: float
    n_positive: int
    n_negative: int

    def decision(self, X):
        return X @ self.weights + self.intercept

    def proba(self, X):
        return modified_huber_proba(self.decision(X))


def train_concept_classifier(X: np.ndarray, y: np.ndarray, *, neurons: np.ndarray | None = None,
                             alpha: float = 0.01, heldout: float = 0.25, max_samples: int = 0,
                             seed: int = 0) -> ConceptClassifier:
    """SGDClassifier(loss="modified_huber", alpha) on X (only the given neurons' columns when
    `neurons` is set), with a stratified held-out share for its accuracy; at most `max_samples`
    positions (0: all), drawn at random. Weights come back over all D neurons."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    if max_samples and len(y) > max_samples:
        keep = rng.choice(len(y), size=max_samples, replace=False)
        X, y = X[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos < 2 or n_neg < 2:
        raise ValueError(f"a concept classifier needs at least 2 positive and 2 negative positions, got {n_pos} and {n_neg}")
    columns = np.arange(X.shape[1]) if neurons is None else np.asarray(neurons, dtype=int)
    Xs = X[:, columns]
    X_tr, X_ho, y_tr, y_ho = train_test_split(Xs, y, test_size=heldout, stratify=y, random_state=seed)
    clf = SGDClassifier(loss="modified_huber", alpha=alpha, max_iter=1000, tol=1e-3, random_state=seed)
    clf.fit(X_tr, y_tr)
    weights = np.zeros(X.shape[1], np.float32)
    weights[columns] = clf.coef_[0]
    return ConceptClassifier(weights, float(clf.intercept_[0]), float(clf.score(X_tr, y_tr)),
                             float(clf.score(X_ho, y_ho)), n_pos, n_neg)


# --------------------------------------------------------------------------------------------
# 4. Shapley values of neurons for a concept classifier


def random_orders(n_samples: int, dim: int, generator: torch.Generator) -> Tensor:
    """(n_samples, dim) uniformly random orders of the neurons."""
    return torch.argsort(torch.rand(n_samples, dim, generator=generator), dim=1)


def sampled_shapley(value_fn: Callable[[Tensor], Tensor], X: Tensor, n_samples: int, *, seed: int = 0,
                    chunk: int = 1 << 24) -> tuple[Tensor, Tensor]:
    """Seed 004's estimator for any output function, batched over positions and neurons.

    value_fn maps masked position vectors (..., D) to outputs (...); X: (R, D) positions.
    For each of n_samples random orders of the neurons, the D + 1 prefix coalitions of the order
    are evaluated on every position in one call, and the difference of consecutive prefixes is
    the marginal contribution of the neuron added. Returns (phi (D,) = sum_r |sum_i delta| /
    (M R), per-position mean marginals (R, D))."""
    X = torch.as_tensor(X, dtype=torch.float32)
    R, D = X.shape
    generator = torch.Generator().manual_seed(seed)
    orders = random_orders(n_samples, D, generator)
    total = torch.zeros(R, D)
    rows = max(1, chunk // max(1, (D + 1) * D))
    for order in orders:
        # prefix masks in this order: mask[k, order[j]] = 1 for j < k
        rank = torch.empty(D, dtype=torch.long)
        rank[order] = torch.arange(D)
        masks = (torch.arange(D + 1)[:, None] > rank[None, :]).float()  # (D+1, D)
        for start in range(0, R, rows):
            x = X[start:start + rows]  # (r, D)
            values = value_fn(x[:, None, :] * masks[None])  # (r, D+1)
            deltas = values[:, 1:] - values[:, :-1]  # marginal of the neuron order[k]
            total[start:start + rows, order] += deltas
    mean = total / n_samples
    return mean.abs().mean(dim=0), mean


def linear_link_shapley(weights: Tensor, intercept: float, X: Tensor, n_samples: int, *,
                        link: Callable[[Tensor], Tensor] = modified_huber_proba, seed: int = 0,
                        chunk: int = 1 << 24) -> tuple[Tensor, Tensor]:
    """The same estimator (same random orders as `sampled_shapley` for the same seed) for an
    output link(w.x_S + b): along an order, the prefix values are link(b + cumulative sums of
    w_j x_j), so every coalition of every order costs one addition. Returns (phi (D,),
    per-position mean marginals (R, D))."""
    X = torch.as_tensor(X, dtype=torch.float32)
    w = torch.as_tensor(weights, dtype=torch.float32)
    R, D = X.shape
    generator = torch.Generator().manual_seed(seed)
    orders = random_orders(n_samples, D, generator)  # (M, D)
    contrib = X * w  # (R, D)
    total = torch.zeros(R, D)
    per = max(1, chunk // max(1, R * D))
    base = torch.full((R, 1), float(intercept))
    for start in range(0, n_samples, per):
        o = orders[start:start + per]  # (m, D)
        ordered = contrib[:, o].permute(1, 0, 2)  # (m, R, D) contributions in each order
        prefix = torch.cat([base.expand(len(o), R, 1), intercept + ordered.cumsum(dim=2)], dim=2)
        values = link(prefix)  # (m, R, D+1)
        deltas = values[..., 1:] - values[..., :-1]  # (m, R, D), neuron o[k] at column k
        scatter = torch.zeros(len(o), R, D)
        scatter.scatter_(2, o[:, None, :].expand(-1, R, -1), deltas)
        total += scatter.sum(dim=0)
    mean = total / n_samples
    return mean.abs().mean(dim=0), mean


def linear_shapley_closed_form(weights, X) -> np.ndarray:
    """phi_d = mean_r |w_d x_d(r)|: the estimator's exact value for an output linear in the
    neurons (every marginal is w_d x_d(r), whatever the coalition)."""
    return np.abs(np.asarray(X, np.float64) * np.asarray(weights, np.float64)[None]).mean(axis=0)


def top_neurons_by_share(phi: np.ndarray, share: float) -> np.ndarray:
    """The ceil(share * D) neurons with the largest Shapley values (ties: lower id first)."""
    phi = np.asarray(phi)
    k = max(1, int(math.ceil(share * len(phi) - 1e-9)))
    return np.lexsort((np.arange(len(phi)), -phi))[:k]


# --------------------------------------------------------------------------------------------
# 5. boxes and localisation


def box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the largest 4-connected component of a 2-D mask
    (ties: the component met first in row-major order); None for an empty mask."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    ys, xs = np.nonzero(labels == largest)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1) with exclusive ends; 0 when either
    is None or empty."""
    if a is None or b is None:
        return 0.0
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: max(0, r[2] - r[0]) * max(0, r[3] - r[1])
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def upsample_maps(maps: np.ndarray | Tensor, size: int) -> np.ndarray:
    """(N, h, w) maps -> (N, size, size), bilinear (align_corners=False)."""
    t = torch.as_tensor(np.asarray(maps), dtype=torch.float32)[:, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def map_box_to_input(box, width: int, height: int, size: int, resize: int | None = None) -> tuple[int, int, int, int]:
    """A box in original image pixels -> the model input's pixels, following the probe loader
    (shorter side resized to `resize`, centre crop `size`), clipped to the crop."""
    target = resize or size
    scale = target / min(width, height)
    w, h = max(size, round(width * scale)), max(size, round(height * scale))
    sx, sy = w / width, h / height
    left, top = (w - size) // 2, (h - size) // 2
    x0, y0, x1, y1 = box
    clip = lambda v: int(min(size, max(0, round(v))))
    return clip(x0 * sx - left), clip(y0 * sy - top), clip(x1 * sx - left), clip(y1 * sy - top)


BOX_FILE_COLUMNS = ("image_id", "x0", "y0", "x1", "y1")


def read_box_file(path) -> pd.DataFrame:
    """A box file for real probe sets: CSV with columns image_id, x0, y0, x1, y1 in the original
    image's pixels (x1, y1 exclusive); several rows per image are several objects (a hit needs
    IoU >= 0.5 with any of them). image_id is the probe set's id (for image folders:
    '<class folder>/<file name>')."""
    frame = pd.read_csv(path)
    if missing := [c for c in BOX_FILE_COLUMNS if c not in frame.columns]:
        raise ValueError(f"box file {path}: missing column(s) {missing}; expected {list(BOX_FILE_COLUMNS)}")
    return frame[list(BOX_FILE_COLUMNS)]


# --------------------------------------------------------------------------------------------
# 6. agreement with the other explanations


def concept_words(hierarchy: pd.DataFrame, class_synonyms: dict[int, list[str]]) -> dict[str, set[str]]:
    """Words that name a concept or anything under it: its own name and the names of its
    descendant concepts, and every synonym of its classes (lower case)."""
    by_concept = hierarchy.set_index("concept")
    children: dict[str, list[str]] = {}
    for c, p in zip(hierarchy["concept"], hierarchy["parent"]):
        if isinstance(p, str):
            children.setdefault(p, []).append(c)
    words = {}
    for concept in hierarchy["concept"]:
        stack, found = [concept], set()
        while stack:
            node = stack.pop()
            found.add(str(by_concept.loc[node, "name"]).lower())
            stack += children.get(node, [])
        for class_id in by_concept.loc[concept, "classes"]:
            found |= {s.lower() for s in class_synonyms.get(int(class_id), [])}
        words[concept] = found
    return words


def agreement_rows(hierarchy: pd.DataFrame, shapley: pd.DataFrame, top_k: int, *,
                   www_concepts: dict[int, str] | None, class_of_neuron: dict[int, int] | None,
                   words: dict[str, set[str]]) -> pd.DataFrame:
    """For each concept node and its top_k neurons by Shapley value: the share whose WWW concept
    is one of the concept's words (source 'www'), and the share whose strongest class by class
    Shapley value lies under the concept (source 'class_shapley'); `chance` is the same share
    over every neuron that has an answer."""
    rows = []
    classes = descendant_classes(hierarchy)
    for concept, depth in zip(hierarchy["concept"], hierarchy["depth"]):
        ranked = shapley[shapley["concept"] == concept].sort_values("rank")
        top = [int(n) for n in ranked["neuron"].head(top_k)]
        sources = []
        if www_concepts:
            sources.append(("www", lambda n: www_concepts[n].lower() in words[concept], www_concepts))
        if class_of_neuron:
            sources.append(("class_shapley", lambda n: class_of_neuron[n] in classes[concept], class_of_neuron))
        for source, agrees, answers in sources:
            answered = [n for n in top if n in answers]
            everyone = list(answers)
            rows.append({
                "concept": concept, "depth": int(depth), "source": source, "top_k": int(top_k),
                "n_neurons": len(answered),
                "share": float(np.mean([agrees(n) for n in answered])) if answered else float("nan"),
                "chance": float(np.mean([agrees(n) for n in everyone])) if everyone else float("nan"),
                "agreeing": [n for n in answered if agrees(n)],
            })
    return pd.DataFrame(rows, columns=["concept", "depth", "source", "top_k", "n_neurons", "share", "chance", "agreeing"])


# --------------------------------------------------------------------------------------------
# results for the README

LADDER_LABELS = {0.1: "10 %", 0.2: "20 %", 0.4: "40 %", 0.8: "80 %", 1.0: "all"}
# seed 004's tables 1 and 2, ResNet-50 (CAM: table 1 ResNet-50 on CUB; table 2 has no ResNet-50 CAM)
SEED_TABLES = {
    "seed 004, ResNet-50, ImageNet": {"10 %": "59.7%", "20 %": "66.6%", "40 %": "69.4%", "80 %": "70.7%"},
    "seed 004, ResNet-50, CUB": {"10 %": "60.2%", "20 %": "67.1%", "40 %": "77.3%", "80 %": "80.2%", "CAM": "42.7%"},
}


def localization_by_level(localization: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model, depth and method/share, weighted by each concept's images."""
    frame = localization.copy()
    frame["hits"] = frame["accuracy"] * frame["n_images"]
    frame["column"] = [("CAM" if m == "cam" else LADDER_LABELS.get(round(s, 2), f"{s:.0%}"))
                       for m, s in zip(frame["method"], frame["neuron_share"])]
    keys = ["model", "depth", "column"] if "model" in frame else ["depth", "column"]
    grouped = frame.groupby(keys, as_index=False).agg(hits=("hits", "sum"), n=("n_images", "sum"))
    grouped["accuracy"] = grouped["hits"] / grouped["n"]
    return grouped


def results_markdown(localization: pd.DataFrame | None, agreement: pd.DataFrame | None,
                     classifiers: pd.DataFrame | None, hierarchy: pd.DataFrame | None = None,
                     heading_level: int = 3) -> str:
    """The README's HINT section: localisation accuracy per hierarchy level with the neuron
    ladder and the CAM baseline, beside seed 004's tables 1-2; classifier accuracies; the
    agreement of the top neurons with WWW concepts and class Shapley rows. Frames carry a
    `model` column (catalog views); None or empty leaves its part out."""
    if localization is None or not len(localization):
        return ""
    head = "#" * heading_level
    out = [f"{head} Hierarchical concepts (HINT): localisation with concept classifiers", "",
           "Share of test images whose box from the concept classifier's map (threshold 0.5, largest "
           "component) has IoU >= 0.5 with the object box, per hierarchy level (depth 0 = the root), "
           "using classifiers retrained on the top 10 / 20 / 40 / 80 % of neurons by Shapley value or "
           "on all of them, against the Grad-CAM box of the true class on the same images; seed 004's "
           "ResNet-50 rows (tables 1-2, class level, real photographs) for comparison.", ""]
    levels = localization_by_level(localization)
    names = {}
    if hierarchy is not None and len(hierarchy):
        for (model, depth), rows in hierarchy.groupby(["model", "depth"]):
            shown = list(rows["name"])
            names[(model, int(depth))] = ", ".join(shown[:3]) + (f", ... ({len(shown)})" if len(shown) > 3 else "")
    columns = [c for c in ["10 %", "20 %", "40 %", "80 %", "all", "CAM"] if c in set(levels["column"])]
    out += ["| Model | Level | Concepts | Images | " + " | ".join(columns) + " |",
            "|:--|--:|:--|--:|" + "--:|" * len(columns)]
    for (model, depth), rows in levels.groupby(["model", "depth"]):
        acc = dict(zip(rows["column"], rows["accuracy"]))
        best = max((acc[c] for c in columns if c in acc), default=float("nan"))
        n = int(rows["n"].max())
        cells = [(f"**{acc[c]:.1%}**" if acc[c] == best else f"{acc[c]:.1%}") if c in acc else "–" for c in columns]
        out.append(f"| `{model}` | {int(depth)} | {names.get((model, int(depth)), '')} | {n} | " + " | ".join(cells) + " |")
    for label, values in SEED_TABLES.items():
        cells = [values.get(c, "–") for c in columns]
        out.append(f"| {label} | classes | | | " + " | ".join(cells) + " |")
    out.append("")
    for model, rows in levels.groupby("model"):
        by = rows.pivot(index="depth", columns="column", values="accuracy")
        ladder = [c for c in ["10 %", "20 %", "40 %", "80 %", "all"] if c in by]
        if "CAM" in by and ladder:
            wins = int(sum(by.loc[d, ladder].max() > by.loc[d, "CAM"] for d in by.index))
            out.append(f"- `{model}`: the best rung of the ladder beats the CAM box at {wins} of {len(by)} levels "
                       f"(root to classes: ladder best {', '.join(f'{by.loc[d, ladder].max():.1%}' for d in by.index)}; "
                       f"CAM {', '.join(f'{cam:.1%}' for cam in by['CAM'])}).")
    if classifiers is not None and len(classifiers):
        for model, rows in classifiers.groupby("model"):
            parts = [f"depth {int(d)}: {r['train_accuracy'].mean():.3f} / {r['heldout_accuracy'].mean():.3f}"
                     for d, r in rows.groupby("depth")]
            out.append(f"- `{model}` concept classifiers, mean training / held-out accuracy: " + "; ".join(parts) + ".")
    if agreement is not None and len(agreement):
        out.append("")
        out.append("Agreement with the other explanations: the share of each concept's top neurons by Shapley value "
                   "whose WWW concept names the concept or something under it, and whose strongest class by class "
                   "Shapley value lies under it (mean over concepts, against the same share over all neurons).")
        out.append("")
        for model, rows in agreement.groupby("model"):
            bits = []
            for source, label in (("www", "WWW concept"), ("class_shapley", "class Shapley")):
                r = rows[rows["source"] == source].dropna(subset=["share"])
                if len(r):
                    bits.append(f"{label} {r['share'].mean():.1%} (chance {r['chance'].mean():.1%})")
            example = rows[(rows["source"] == "www") & (rows["depth"] == 2)].dropna(subset=["share"]).head(1)
            ex = (f"; e.g. `{example['concept'].iloc[0]}`: {example['share'].iloc[0]:.0%} of its top "
                  f"{int(example['top_k'].iloc[0])} neurons carry a WWW concept under it") if len(example) else ""
            out.append(f"- `{model}`: " + ", ".join(bits) + ex + ".")
    out.append("")
    return "\n".join(out)


def results_from_warehouse(models=None, heading_level: int = 3, warehouse=None) -> str:
    """`results_markdown` over the warehouse's HINT tables (restricted to `models` when given)."""
    from www_resources.storage import default_warehouse

    warehouse = warehouse or default_warehouse()

    def table(name):
        try:
            frame = warehouse.read(name)
        except Exception:  # noqa: BLE001 - a table not materialised yet leaves its part out
            return None
        return frame[frame["model"].isin(set(models))] if models is not None and "model" in frame else frame

    return results_markdown(table("concept_localization"), table("hint_agreement"), table("concept_classifiers"),
                            table("concept_hierarchy"), heading_level=heading_level)
