"""Concept scoring: which words of a concept set describe a neuron (WWW "what").

One frozen table, `METHODS`, lists every method the pipeline reports with what it computes:
its score, the concept texts it compares with, its selection rule and the views it scores.
`score_concepts` runs any of them on the same `ConceptInputs` and returns the same
`ConceptResult`:

    result = score_concepts("www", inputs, top_n=10, alpha=MAJOR_ALPHA)

Inputs are CLIP features of the *views* (full probe images, grid crops or Grad-CAM crops)
and of the concepts, plus each neuron's representative examples (indices of its top-k
views, see `examples.top_k_examples`). Higher scores are better for every method, so
distances enter as their negatives.

Notation: for neuron n, examples v_1..v_k (unit CLIP image features), concept j with
templated text feature t_j ("a photo of a {concept}"), raw-word feature r_j, and the bare
template feature t_tem ("a photo of a"). w_j below is t_j or r_j as the method's `text` says.

Scores (`ScoringMethod.score`)
    acs        ACS, eq. 1 of WWW: s_j = mean_o [cos(v_o, t_j) - cos(v_o, t_tem)].
               Because every v_o has unit norm, mean_o cos(v_o, t) = <mean_o v_o, t>, so all
               neurons x all concepts is one matrix product with the neurons' mean example
               features.
    tvmf_acs   t-vMF ACS (seed 002, eq. 3): s_j = mean_o [phi(cos(v_o, t_j)) -
               phi(cos(v_o, t_tem))], phi(c) = (1 + c)/(1 + kappa (1 - c)) - 1. Not linear in
               v_o, so it is computed in chunks of neurons x concepts; kappa = 0 gives `acs`.
    cosine     plain mean cosine s_j = mean_o cos(v_o, w_j).
    l1, l2     s_j = -mean_o ||v_o - w_j||_1 (or _2) between unit vectors.
    soft_wpmi  CLIP-Dissect's soft-WPMI on raw words over the neuron's top-100 views by
               activation (`view_activations`), not `examples`; see `soft_wpmi_scores`.

Selection rules (`ScoringMethod.selection`)
    acs_threshold  adaptive threshold (eq. 2): s_j > alpha * max_j s_j; nothing when
                   max_j s_j <= 0. Only the ACS-type scores read "max <= 0" as "no concept
                   fits": they are differences to the bare template, and a non-positive
                   maximum means no concept matches the examples better than the empty prompt.
    threshold      s_j > alpha * max; when max <= 0 (the threshold would exceed the maximum
                   and select nothing, although a plain cosine <= 0 is no sign of a missing
                   concept) the best concept alone is selected.
    argmax         the best concept only.

The cosine / L1 / L2 baselines compare with the raw word by default: in the paper the
"Cosine" row of its selection-rule table (seed 000, table S.1) and the "no template" row of
its template ablation (seed 001, table 5) carry the same numbers, so the baselines are the
raw word with a different selection rule. `text="templated"` scores them on the prompts.

Ties. Scores that differ by at most `tie_tolerance` (default `TIE_TOLERANCE`) from a
neuron's best score are a *tied set* (soft-WPMI saturates near log N, so several concepts,
often synonyms, share the top score up to float noise). The tie is broken by the concept
set's order: the tied concept listed first comes first, then the other tied concepts in list
order, then the rest by score (equal scores: lower index first). The argmax rules thus pick
the first-listed concept of the tied set, independent of float noise. `ConceptResult` keeps
the size of the tied set and its members, so the evaluation can read a tie both ways.
Selections are sorted the same way and are not limited to `top_n`.

The Grad-CAM variants (`www_gradcam`, `www_gradcam_tvmf`) score like `www` / `www_tvmf` and
differ only in the views the asset passes (`views = "gradcam_crop"`).

Memory: no method materialises neurons x examples x concepts. Work is split into chunks
of neurons (and of concepts for the nonlinear methods) so that the working set stays
within `memory_budget_bytes`, plus the inputs themselves and a small constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from www_assets.methods.examples import top_k_examples, topk_lowest_index_first
from www_assets.methods.similarity import (
    chunk_slices,
    l1_distance_matrix,
    l2_distance_matrix,
    rows_per_chunk,
    tvmf_,
    unit_rows,
)

__all__ = [
    "ConceptInputs",
    "ConceptResult",
    "DEFAULT_KAPPA",
    "MAJOR_ALPHA",
    "MINOR_ALPHA",
    "METHODS",
    "ScoringMethod",
    "TIE_TOLERANCE",
    "break_ties",
    "score_concepts",
    "soft_wpmi_scores",
]

MAJOR_ALPHA = 0.95  # concept sensitivity for major concepts (WWW supplement A.1)
MINOR_ALPHA = 0.90  # ... and for minor concepts (crops)

# t-vMF concentration. Seed 002 does not state its kappa; the usual values are 4, 16, 64.
# For CLIP image-text cosines (about 0.1-0.4) the relative curvature phi''/phi' =
# 2 kappa / (1 + kappa (1 - c)) is at kappa = 16 already ~90% of its kappa -> inf limit
# 2 / (1 - c) (kappa = 4: ~75%), so larger kappa barely changes rankings while shrinking
# the score scale; 16 is the middle of the common values.
DEFAULT_KAPPA = 16.0

# CLIP-Dissect soft-WPMI constants (reference [20] of WWW, its public defaults).
CLIP_DISSECT_TOP_K = 100
CLIP_DISSECT_SOFTMAX_SCALE = 10.0  # a
CLIP_DISSECT_LAMBDA = 1.0
CLIP_DISSECT_P_START = 0.998
CLIP_DISSECT_P_END = 0.97
CLIP_DISSECT_MIN_PROB = 1e-7

# Scores within this distance of a neuron's best score are tied with it. CLIP features are
# float32 and the scores are means or sums of their products: differences below 1e-4 are far
# below anything a concept's text can mean, and soft-WPMI's saturated tops sit within 3e-5.
TIE_TOLERANCE = 1e-4
# How many best concepts are kept per neuron to find its tied set: a tied set is counted up
# to this size (its recorded size is then a lower bound).
TIE_LIMIT = 64

# Bytes of working memory per element of a (neurons x concepts) score block: the float32
# block, boolean masks and top-n book-keeping.
_BYTES_PER_SCORE = 16


@dataclass
class ConceptInputs:
    """Everything a concept-scoring method may use, for one layer.

    view_features: (V, d) float, L2-normalised CLIP image features of the candidate views
        (full images, or crops).
    examples: (N, k) integer, per neuron, indices into `view_features` of its top-k views,
        best first (duplicates are counted as often as they occur).
    concept_features: (M, d) float, normalised CLIP text features of the templated prompts
        ("a photo of a {concept}").
    template_feature: (d,) float, normalised CLIP text feature of the bare template.
    raw_concept_features: (M, d) float, normalised CLIP text features of the raw words.
    view_activations: optional (V, N) float, activation of each neuron on each view (needed
        by `clip_dissect`, which picks its own top-100 views). The N neurons are taken to be
        the whole layer (CLIP-Dissect's log P(c) averages over them).

    Features are re-normalised defensively, so unnormalised inputs give the same result.
    Construction raises ValueError naming the first inconsistent field.
    """

    view_features: Tensor
    examples: Tensor
    concept_features: Tensor
    template_feature: Tensor
    raw_concept_features: Tensor
    view_activations: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("view_features", "concept_features", "raw_concept_features"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.ndim != 2 or not value.is_floating_point():
                raise ValueError(f"{name} must be a 2-D float tensor, got {_describe(value)}")
        n_views, dim = self.view_features.shape
        n_concepts = self.concept_features.shape[0]
        if n_views == 0:
            raise ValueError("view_features has no rows (V = 0)")
        if n_concepts == 0:
            raise ValueError("concept_features has no rows (M = 0): the concept set is empty")
        if self.concept_features.shape[1] != dim:
            raise ValueError(
                f"concept_features has d={self.concept_features.shape[1]}, view_features d={dim}"
            )
        if tuple(self.raw_concept_features.shape) != (n_concepts, dim):
            raise ValueError(
                f"raw_concept_features must be ({n_concepts}, {dim}) like concept_features, "
                f"got {tuple(self.raw_concept_features.shape)}"
            )
        if (
            not isinstance(self.template_feature, Tensor)
            or tuple(self.template_feature.shape) != (dim,)
            or not self.template_feature.is_floating_point()
        ):
            raise ValueError(
                f"template_feature must be a float tensor of shape ({dim},), "
                f"got {_describe(self.template_feature)}"
            )
        if not isinstance(self.examples, Tensor) or self.examples.ndim != 2:
            raise ValueError(f"examples must be a 2-D (N, k) tensor, got {_describe(self.examples)}")
        if self.examples.is_floating_point() or self.examples.dtype == torch.bool:
            raise ValueError(f"examples must hold integer view indices, got {self.examples.dtype}")
        if self.examples.shape[1] == 0:
            raise ValueError("examples has k = 0 columns: every neuron needs at least one example")
        if self.examples.numel() and (
            int(self.examples.min()) < 0 or int(self.examples.max()) >= n_views
        ):
            raise ValueError(
                f"examples must index view_features rows in [0, {n_views}), "
                f"got range [{int(self.examples.min())}, {int(self.examples.max())}]"
            )
        self.examples = self.examples.long()
        for name in ("view_features", "concept_features", "raw_concept_features", "template_feature"):
            value = getattr(self, name)
            # A plain sum is ~40x cheaper than an element-wise mask on 80k x 512 and NaN/inf
            # propagate into it; only a non-finite sum (maybe an overflow) is checked exactly.
            if not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} contains NaN or infinite values")
        if self.view_activations is not None:
            acts = self.view_activations
            expected = (n_views, self.examples.shape[0])
            if not isinstance(acts, Tensor) or tuple(acts.shape) != expected:
                raise ValueError(
                    f"view_activations must have shape (V, N) = {expected}, got {_describe(acts)}"
                )

    @property
    def n_neurons(self) -> int:
        return int(self.examples.shape[0])

    @property
    def n_concepts(self) -> int:
        return int(self.concept_features.shape[0])


@dataclass
class ConceptResult:
    """What a scoring method returns for the N neurons of one layer.

    top_scores: (N, n) float32 on CPU, the n = min(top_n, M) best concept scores per
        neuron in the tie-broken order (see the module doc: the tied set first, in concept
        order; so a tied concept may come before a concept scored a hair higher).
    top_index: (N, n) long on CPU, their concept indices.
    selected: per neuron, the selected (concept index, score) pairs in the same order; may be
        empty (see the selection rules).
    tie_size: (N,) long, how many concepts are tied with the best one (1: no tie), counted
        up to TIE_LIMIT.
    tied: per neuron, the tied concepts' indices in concept order (length tie_size).
    """

    top_scores: Tensor
    top_index: Tensor
    selected: list[list[tuple[int, float]]]
    tie_size: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    tied: list[list[int]] = field(default_factory=list)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _check_options(top_n: int, alpha: float, kappa: float, memory_budget_bytes: int, tie_tolerance: float) -> None:
    if not tie_tolerance >= 0:
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha (concept sensitivity) must be in [0, 1), got {alpha}")
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    if memory_budget_bytes <= 0:
        raise ValueError(f"memory_budget_bytes must be > 0, got {memory_budget_bytes}")


# --------------------------------------------------------------------------- selection rules

_RULE_ACS_THRESHOLD = "acs_threshold"  # s > alpha * max, nothing if max <= 0
_RULE_THRESHOLD = "threshold"  # s > alpha * max, argmax alone if max <= 0
_RULE_ARGMAX = "argmax"  # the best concept only


def break_ties(scores: Tensor, index: Tensor, tolerance: float) -> tuple[Tensor, Tensor, Tensor]:
    """Put each row's tied set first, in concept order (see the module doc).

    scores, index: (R, K) best scores per row sorted descending (equal scores: lower index
    first) and their concept indices. Returns (scores, index) reordered and tie_size (R,): the
    tied set is the entries within `tolerance` of the row's best score, a prefix of the row.
    """
    if scores.shape[1] == 0:
        return scores, index, torch.zeros(scores.shape[0], dtype=torch.long)
    tied = scores >= scores[:, :1] - tolerance
    tie_size = tied.sum(dim=1)
    position = torch.arange(scores.shape[1], device=scores.device).expand_as(index)
    # tied entries sort by concept index, the rest keep their place behind them
    key = torch.where(tied, index, index.new_tensor(int(index.max()) + 1 if index.numel() else 0) + position)
    order = key.argsort(dim=1, stable=True)
    return scores.gather(1, order), index.gather(1, order), tie_size


def _select(
    block: Tensor, top_index: Tensor, top_scores: Tensor, tie_size: Tensor, rule: str, alpha: float
) -> list[list[tuple[int, float]]]:
    """Selected (concept, score) lists for a (n_c, M) block of scores (see module doc);
    top_index / top_scores in tie-broken order."""
    n_rows = block.shape[0]
    if rule == _RULE_ARGMAX:
        best = top_index[:, 0].tolist()
        score = top_scores[:, 0].tolist()
        return [[(b, s)] for b, s in zip(best, score, strict=True)]
    row_max = block.max(dim=1).values  # (n_c,)
    mask = block > (alpha * row_max).unsqueeze(1)
    non_positive = row_max <= 0
    if rule == _RULE_ACS_THRESHOLD:
        mask &= ~non_positive.unsqueeze(1)
    elif rule == _RULE_THRESHOLD:
        rows = non_positive.nonzero().squeeze(1)
        if rows.numel():
            mask[rows] = False
            mask[rows, top_index[rows.cpu(), 0].to(block.device)] = True
    else:  # pragma: no cover - internal constant
        raise ValueError(f"unknown selection rule {rule!r}")
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: columns ascending within a row
    values = block[rows, cols]
    order = torch.sort(values, descending=True, stable=True).indices
    rows, cols, values = rows[order], cols[order], values[order]
    order = torch.sort(rows, stable=True).indices  # group by row, keep score order inside
    cols, values = cols[order].tolist(), values[order].tolist()
    counts = torch.bincount(rows, minlength=n_rows).tolist()
    sizes = tie_size.tolist()
    selected: list[list[tuple[int, float]]] = []
    start = 0
    for row, count in enumerate(counts):
        chosen = list(zip(cols[start : start + count], values[start : start + count]))
        if sizes[row] > 1 and chosen:
            rank = {c: i for i, c in enumerate(top_index[row, : sizes[row]].tolist())}
            # the tied set first in concept order, the rest as ranked by score
            chosen.sort(key=lambda pair: rank.get(pair[0], len(rank)))
        selected.append(chosen)
        start += count
    return selected


class _Collector:
    """Accumulates per-chunk top-n, tied sets and selections into one ConceptResult."""

    def __init__(self, n_neurons: int, n_concepts: int, top_n: int, tie_tolerance: float) -> None:
        self.top_n = min(top_n, n_concepts)
        self.keep = min(max(top_n, TIE_LIMIT), n_concepts)
        self.tie_tolerance = tie_tolerance
        self.top_scores = torch.empty((n_neurons, self.top_n), dtype=torch.float32)
        self.top_index = torch.empty((n_neurons, self.top_n), dtype=torch.long)
        self.tie_size = torch.ones(n_neurons, dtype=torch.long)
        self.tied: list[list[int]] = [[] for _ in range(n_neurons)]
        self.selected: list[list[tuple[int, float]]] = [[] for _ in range(n_neurons)]

    def add_top(self, neurons: slice, scores: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Store the tie-broken top of these neurons from their `keep` best (sorted) scores."""
        scores, index, tie_size = break_ties(scores.float().cpu(), index.cpu(), self.tie_tolerance)
        self.top_scores[neurons], self.top_index[neurons] = scores[:, : self.top_n], index[:, : self.top_n]
        self.tie_size[neurons] = tie_size
        self.tied[neurons] = [row[:size] for row, size in zip(index.tolist(), tie_size.tolist(), strict=True)]
        return scores, index, tie_size

    def add_block(self, neurons: slice, block: Tensor, rule: str, alpha: float) -> None:
        """block: (n_c, M) scores of the neurons in `neurons` over all concepts."""
        scores, index = topk_lowest_index_first(block, self.keep)
        scores, index, tie_size = self.add_top(neurons, scores, index)
        self.selected[neurons] = _select(block, index, scores, tie_size, rule, alpha)

    def result(self) -> ConceptResult:
        return ConceptResult(self.top_scores, self.top_index, self.selected, self.tie_size, self.tied)


# --------------------------------------------------------------------------- score engines


def _mean_example_features(view_unit: Tensor, examples: Tensor) -> Tensor:
    """(n_c, d): mean of each neuron's unit example features (duplicates counted)."""
    return view_unit[examples].mean(dim=1)


def _linear_scores(
    inputs: ConceptInputs,
    texts: Tensor,
    subtract_template: bool,
    rule: str,
    top_n: int,
    alpha: float,
    memory_budget_bytes: int,
    tie_tolerance: float,
) -> ConceptResult:
    """Scores that are linear in the examples: mean cosine, optionally minus the template's.

    s[n, j] = <mean_o v_o, t_j> - [<mean_o v_o, t_tem>], a matrix product per neuron chunk.
    """
    device = inputs.view_features.device
    view_unit = unit_rows(inputs.view_features)
    text_unit = unit_rows(texts.to(device)).to(view_unit.dtype)
    template_unit = unit_rows(inputs.template_feature.to(device).unsqueeze(0))[0].to(view_unit.dtype)
    examples = inputs.examples.to(device)
    n_neurons, n_concepts = inputs.n_neurons, text_unit.shape[0]
    collector = _Collector(n_neurons, n_concepts, top_n, tie_tolerance)
    chunk = rows_per_chunk(_BYTES_PER_SCORE * n_concepts, memory_budget_bytes, max(n_neurons, 1))
    for neurons in chunk_slices(n_neurons, chunk):
        mean_features = _mean_example_features(view_unit, examples[neurons])  # (n_c, d)
        block = mean_features @ text_unit.T  # (n_c, M)
        if subtract_template:
            block -= (mean_features @ template_unit).unsqueeze(1)
        collector.add_block(neurons, block, rule, alpha)
    return collector.result()


def _pairwise_mean_scores(
    inputs: ConceptInputs,
    texts: Tensor,
    pair_score: Callable[[Tensor, Tensor], Tensor],
    template_term: bool,
    rule: str,
    top_n: int,
    alpha: float,
    memory_budget_bytes: int,
    tie_tolerance: float,
) -> ConceptResult:
    """Scores that average a nonlinear view-text score over the examples.

    s[n, j] = mean_o g(v_o, t_j) - [mean_o g(v_o, t_tem)], g = `pair_score` ((U, d), (m, d)
    -> (U, m)). Per chunk of neurons, g is evaluated once per distinct example view and
    chunk of concepts, then summed per neuron one example slot at a time: the largest
    temporaries are (U_c, m_c) and (n_c, m_c), sized to the memory budget.
    """
    device = inputs.view_features.device
    view_unit = unit_rows(inputs.view_features)
    text_unit = unit_rows(texts.to(device)).to(view_unit.dtype)
    template_unit = unit_rows(inputs.template_feature.to(device).unsqueeze(0)).to(view_unit.dtype)
    examples = inputs.examples.to(device)
    n_neurons, n_examples = examples.shape
    n_concepts = text_unit.shape[0]
    collector = _Collector(n_neurons, n_concepts, top_n, tie_tolerance)
    # Half of the budget for the (n_c, M) score block, half for the per-concept-chunk work.
    block_budget = max(1, memory_budget_bytes // 2)
    chunk = rows_per_chunk(_BYTES_PER_SCORE * n_concepts, block_budget, max(n_neurons, 1))
    for neurons in chunk_slices(n_neurons, chunk):
        views, local = torch.unique(examples[neurons], return_inverse=True)  # local: (n_c, k)
        example_unit = view_unit[views]  # (U_c, d)
        n_chunk = local.shape[0]
        block = torch.empty((n_chunk, n_concepts), dtype=view_unit.dtype, device=device)
        per_concept = 12 * example_unit.shape[0] + 4 * n_chunk
        concept_chunk = rows_per_chunk(per_concept, block_budget, n_concepts)
        for concepts in chunk_slices(n_concepts, concept_chunk):
            pair = pair_score(example_unit, text_unit[concepts])  # (U_c, m_c)
            target = block[:, concepts]  # a view into the block
            # Sum over the k example slots: k gathers of (n_c, m_c) rows, never (n_c, k, m_c).
            target.copy_(pair.index_select(0, local[:, 0]))
            for slot in range(1, n_examples):
                target.add_(pair.index_select(0, local[:, slot]))
        block /= n_examples
        if template_term:
            template_pair = pair_score(example_unit, template_unit)[:, 0]  # (U_c,)
            block -= template_pair[local].mean(dim=1).unsqueeze(1)
        collector.add_block(neurons, block, rule, alpha)
    return collector.result()



def soft_wpmi_scores(
    view_features: Tensor,
    concept_features: Tensor,
    view_activations: Tensor,
    *,
    top_k: int = CLIP_DISSECT_TOP_K,
    softmax_scale: float = CLIP_DISSECT_SOFTMAX_SCALE,
    lam: float = CLIP_DISSECT_LAMBDA,
    p_start: float = CLIP_DISSECT_P_START,
    p_end: float = CLIP_DISSECT_P_END,
    min_prob: float = CLIP_DISSECT_MIN_PROB,
    top_n: int = 10,
    memory_budget_bytes: int = 1 << 30,
) -> tuple[Tensor, Tensor]:
    """CLIP-Dissect's soft-WPMI, top-n concepts per neuron.

    view_features: (V, d) CLIP image features; concept_features: (M, d) CLIP text features
    (raw words); view_activations: (V, N) activations of the N neurons of one layer.
    Returns (top_scores (N, n), top_index (N, n)) on CPU, n = min(top_n, M), best first.

    With k' = min(top_k, V) and E_n the neuron's top-k' views by activation (ties: lower
    view index), rank i = 0..k'-1:
        P[v, c]      = softmax_c(a * cos(v, c))                       (per view, a = 10)
        p_i          = p_start - (i / k') (p_start - p_end)            (0.998 ... ~0.97)
        log P(c|E_n) = sum_i log(1 + p_i (P[E_n,i, c] - 1) + min_prob)
        log P(c)     = logsumexp_n log P(c|E_n) - log N
        soft-WPMI    = log P(c|E_n) - lam * log P(c)
    (the weight schedule p_i follows CLIP-Dissect's public code: the last weight is
    p_start - (k'-1)/k' (p_start - p_end)).

    Memory: one pass over concept chunks computes each view's softmax normaliser, a second
    computes P for the distinct top views and the layer's log P(c|E) for a chunk of
    concepts at a time (log P(c) needs all neurons of a concept), merging the running
    top-n. Nothing of size N x k' x M or V x M is held at once.
    """
    if view_activations.ndim != 2 or view_activations.shape[0] != view_features.shape[0]:
        raise ValueError(
            f"view_activations must be (V, N) with V = {view_features.shape[0]}, "
            f"got {tuple(view_activations.shape)}"
        )
    if top_k < 1 or top_n < 1:
        raise ValueError(f"top_k and top_n must be >= 1, got {top_k} and {top_n}")
    if memory_budget_bytes <= 0:
        raise ValueError(f"memory_budget_bytes must be > 0, got {memory_budget_bytes}")
    device = view_features.device
    n_neurons = view_activations.shape[1]
    n_concepts = concept_features.shape[0]
    n_kept = min(top_n, n_concepts)
    top_views, _ = top_k_examples(view_activations.to(device), top_k)  # (N, k')
    k_used = top_views.shape[1]
    views, local = torch.unique(top_views, return_inverse=True)  # local: (N, k')
    image_unit = unit_rows(view_features)[views]  # (U, d)
    text_unit = unit_rows(concept_features.to(device)).to(image_unit.dtype)
    n_unique = image_unit.shape[0]
    weights = p_start - torch.arange(k_used, dtype=image_unit.dtype, device=device) / k_used * (
        p_start - p_end
    )  # (k',)

    # per concept: logits/probabilities of the distinct views, the layer's log P(c|E),
    # soft-WPMI and the top-n merge candidates (values, indices, masks)
    concept_chunk = rows_per_chunk(12 * n_unique + 56 * max(n_neurons, 1), memory_budget_bytes, n_concepts)
    # pass 1: log of the softmax normaliser over all concepts, per distinct view
    log_normaliser = torch.full((n_unique,), -math.inf, dtype=image_unit.dtype, device=device)
    for concepts in chunk_slices(n_concepts, concept_chunk):
        logits = (image_unit @ text_unit[concepts].T).mul_(softmax_scale)
        log_normaliser = torch.logaddexp(log_normaliser, torch.logsumexp(logits, dim=1))
        del logits

    best_scores = torch.empty((n_neurons, 0), dtype=torch.float64, device=device)
    best_index = torch.empty((n_neurons, 0), dtype=torch.long, device=device)
    log_n = math.log(max(n_neurons, 1))
    for concepts in chunk_slices(n_concepts, concept_chunk):
        width = concepts.stop - concepts.start
        # P[v, c] = exp(a cos(v, c) - log Z_v), in place: one (U, m_c) buffer
        prob = (image_unit @ text_unit[concepts].T).mul_(softmax_scale)
        prob.sub_(log_normaliser.unsqueeze(1)).exp_()
        # log P(c|E) summed one example rank at a time: (N, m_c) temporaries only. The
        # sum of k' logs (about -300 for k' = 100) is accumulated in float64 so that
        # soft-WPMI, a small difference of two such sums, keeps float32 precision.
        log_p_given_e = torch.zeros((n_neurons, width), dtype=torch.float64, device=device)
        for rank in range(k_used):
            term = prob.index_select(0, local[:, rank])  # (N, m_c): P of each neuron's rank-i view
            term.sub_(1.0).mul_(weights[rank]).add_(1.0 + min_prob).log_()
            log_p_given_e += term
        log_p = torch.logsumexp(log_p_given_e, dim=0) - log_n  # (m_c,)
        wpmi = log_p_given_e - lam * log_p.unsqueeze(0)
        # Merge with the running best: earlier concepts come first, so equal scores keep
        # preferring the lower concept index.
        candidates = torch.cat([best_scores, wpmi], dim=1)
        candidate_index = torch.cat(
            [best_index, torch.arange(concepts.start, concepts.stop, device=device).expand(n_neurons, -1)],
            dim=1,
        )
        best_scores, position = topk_lowest_index_first(candidates, n_kept)
        best_index = candidate_index.gather(1, position)
    return best_scores.float().cpu(), best_index.cpu()


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class ScoringMethod:
    """One reported concept-scoring method (see the module doc for the meaning of each field).

    name: the method's name in the tables; score: acs | tvmf_acs | cosine | l1 | l2 |
    soft_wpmi; text: "templated" or "raw", the concept texts it compares with by default;
    selection: acs_threshold | threshold | argmax; views: "image" (full probe images) or
    "gradcam_crop" (crops centred on the Grad-CAM maximum) for major concepts (minor concepts
    always score grid crops); text_choice: whether `score_concepts(text=...)` may switch its
    texts (the cosine / L1 / L2 baselines).
    """

    name: str
    score: str
    text: str
    selection: str
    views: str = "image"
    text_choice: bool = False


METHODS = MappingProxyType({method.name: method for method in (
    ScoringMethod("www", "acs", "templated", _RULE_ACS_THRESHOLD),
    ScoringMethod("www_gradcam_tvmf", "tvmf_acs", "templated", _RULE_ACS_THRESHOLD, "gradcam_crop"),  # seed 002
    ScoringMethod("www_gradcam", "acs", "templated", _RULE_ACS_THRESHOLD, "gradcam_crop"),  # ablation
    ScoringMethod("www_tvmf", "tvmf_acs", "templated", _RULE_ACS_THRESHOLD),  # ablation: no Grad-CAM
    ScoringMethod("clip_dissect", "soft_wpmi", "raw", _RULE_ARGMAX),
    ScoringMethod("cosine", "cosine", "raw", _RULE_ARGMAX, text_choice=True),
    ScoringMethod("l1", "l1", "raw", _RULE_ARGMAX, text_choice=True),
    ScoringMethod("l2", "l2", "raw", _RULE_ARGMAX, text_choice=True),
    ScoringMethod("template_only", "cosine", "templated", _RULE_THRESHOLD),  # template, no ACS
    ScoringMethod("no_template", "cosine", "raw", _RULE_THRESHOLD),  # raw word, no ACS
)})

TEXTS = ("templated", "raw")


def score_concepts(
    method: str,
    inputs: ConceptInputs,
    *,
    top_n: int = 10,
    alpha: float = MAJOR_ALPHA,
    kappa: float = DEFAULT_KAPPA,
    text: str | None = None,
    tie_tolerance: float = TIE_TOLERANCE,
    memory_budget_bytes: int = 1 << 30,
) -> ConceptResult:
    """Score every concept for every neuron with `method` (a name of `METHODS`).

    The caller passes the views the method scores (METHODS[method].views) in `inputs`.
    top_n: how many best concepts to keep per neuron; alpha: concept sensitivity of the
    threshold rules (MAJOR_ALPHA for major, MINOR_ALPHA for minor concepts); kappa: t-vMF
    concentration (tvmf_acs only); text: "templated" or "raw" to override the method's texts
    (only where `text_choice`); tie_tolerance: see the module doc; memory_budget_bytes:
    working-memory target for the chunked computation.
    """
    if method not in METHODS:
        raise ValueError(f"unknown concept-scoring method {method!r}; known: {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    _check_options(top_n, alpha, kappa, memory_budget_bytes, tie_tolerance)
    if text is not None and text != spec.text:
        if not spec.text_choice:
            raise ValueError(f"method {method!r} always compares with {spec.text} texts; text={text!r} is not an option")
        if text not in TEXTS:
            raise ValueError(f"text must be one of {TEXTS}, got {text!r}")
    texts = inputs.raw_concept_features if (text or spec.text) == "raw" else inputs.concept_features
    options = (top_n, alpha, memory_budget_bytes, tie_tolerance)
    if spec.score == "acs":
        return _linear_scores(inputs, texts, True, spec.selection, *options)
    if spec.score == "cosine":
        return _linear_scores(inputs, texts, False, spec.selection, *options)
    if spec.score == "soft_wpmi":
        return _clip_dissect(inputs, top_n, memory_budget_bytes, tie_tolerance)
    pair_scores = {
        "tvmf_acs": lambda views, words: tvmf_((views @ words.T).clamp_(-1.0, 1.0), kappa),
        "l1": lambda views, words: l1_distance_matrix(views, words).neg_(),
        # ||v - t|| = sqrt(2 - 2 cos): the mean of square roots is not linear in v_o
        "l2": lambda views, words: l2_distance_matrix(views, words).neg_(),
    }
    return _pairwise_mean_scores(
        inputs, texts, pair_scores[spec.score], spec.score == "tvmf_acs", spec.selection, *options
    )


def _clip_dissect(inputs: ConceptInputs, top_n: int, memory_budget_bytes: int, tie_tolerance: float) -> ConceptResult:
    """CLIP-Dissect: soft-WPMI on raw words over the neuron's top views by activation."""
    if inputs.view_activations is None:
        raise ValueError("clip_dissect needs inputs.view_activations (V, N); it is None")
    collector = _Collector(inputs.n_neurons, inputs.n_concepts, top_n, tie_tolerance)
    if inputs.n_neurons == 0:
        return collector.result()
    top_scores, top_index = soft_wpmi_scores(
        inputs.view_features,
        inputs.raw_concept_features,
        inputs.view_activations,
        top_n=collector.keep,
        memory_budget_bytes=memory_budget_bytes,
    )
    scores, index, _ = collector.add_top(slice(0, inputs.n_neurons), top_scores, top_index)
    collector.selected = [[(i, s)] for i, s in zip(index[:, 0].tolist(), scores[:, 0].tolist(), strict=True)]
    return collector.result()
