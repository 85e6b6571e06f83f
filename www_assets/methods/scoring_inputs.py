"""From the catalog's tables to the tensors of concept scoring (`ConceptInputs`).

`scoring_inputs` turns the CLIP tables (`clip_image_embeddings`, `clip_text_embeddings`) into
the tensors every method shares, with an index from (image_id, view) to a row of the view
features; `example_index` points each neuron's ranked examples at those rows, and
`full_view_activations` lays a layer's activations over the same rows (CLIP-Dissect ranks
the whole images itself). Back the other way, `score_frame` and `selection_frame` turn a
`ConceptResult` into rows of `concept_scores` and `neuron_concepts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from www_assets.methods.concept_scoring import ConceptResult
from www_assets.methods.examples import FULL_VIEW

__all__ = [
    "SharedInputs", "example_index", "example_views", "full_view_activations", "score_frame", "scoring_inputs", "selection_frame",
]


@dataclass(frozen=True)
class SharedInputs:
    """The tensors every scoring method of one model x concept set shares.

    index: (image_id, view) -> row of `view_features`; views: the embeddings table in that
    row order; concepts: the concept words in the order of the text features' rows.
    """

    index: dict
    views: pd.DataFrame
    view_features: Tensor
    concepts: list
    concept_features: Tensor
    raw_concept_features: Tensor
    template_feature: Tensor


def scoring_inputs(embeddings: pd.DataFrame, texts: pd.DataFrame) -> SharedInputs:
    """View features with their (image_id, view) index, and the text features: templated
    prompts (form = prompt), raw words (form = raw) in the same concept order, and the bare
    template (form = template)."""
    views = embeddings.reset_index(drop=True)
    index = {key: i for i, key in enumerate(zip(views["image_id"], views["view"]))}
    view_features = torch.from_numpy(np.stack(views["vector"].to_numpy()).astype(np.float32))
    t = texts.sort_values(["form", "concept_id"])
    prompt = t[t["form"] == "prompt"]
    raw = t[t["form"] == "raw"]
    if prompt["concept"].tolist() != raw["concept"].tolist():
        raise ValueError("the prompt and raw-word rows of the text embeddings name different concepts")
    template = t[t["form"] == "template"]
    if len(template) != 1:
        raise ValueError(f"the text embeddings need exactly one bare-template row, found {len(template)}")
    return SharedInputs(
        index=index,
        views=views,
        view_features=view_features,
        concepts=prompt["concept"].tolist(),
        concept_features=torch.from_numpy(np.stack(prompt["vector"].to_numpy())),
        raw_concept_features=torch.from_numpy(np.stack(raw["vector"].to_numpy())),
        template_feature=torch.from_numpy(np.array(template["vector"].iloc[0], dtype=np.float32)),
    )


def example_views(embeddings: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """The rows of a CLIP views table that scoring looks at: every full image (CLIP-Dissect ranks
    them all) and every view that is some neuron's example, in the table's order.

    The shared image embeddings hold every grid crop of every image; keeping only the example
    views gives the methods the same candidate set whichever other models share the table.

    Raises:
        ValueError: when an example's view has no embedding (e.g. crop_examples ran with another
            grid than clip_image_embeddings).
    """
    keys = pd.MultiIndex.from_arrays([embeddings["image_id"], embeddings["view"]])
    wanted = pd.MultiIndex.from_arrays([examples["image_id"], examples["view"]]).unique()
    missing = wanted.difference(keys)
    if len(missing):
        first = missing[0]
        raise ValueError(f"{len(missing)} example view(s) have no CLIP embedding, e.g. image {first[0]!r} view "
                         f"{first[1]!r}: run clip_image_embeddings with the grid of crop_examples")
    keep = (embeddings["view"] == FULL_VIEW).to_numpy() | keys.isin(wanted)
    return embeddings[keep].reset_index(drop=True)


def example_index(examples: pd.DataFrame, layer: str, kind: str, k: int, index: dict) -> Tensor:
    """(N, k) view indices of the top-k examples of every neuron of one layer and kind."""
    rows = examples[(examples["layer"] == layer) & (examples["kind"] == kind) & (examples["rank"] <= k)]
    rows = rows.sort_values(["neuron", "rank"])
    n = int(rows["neuron"].max()) + 1
    flat = [index[(i, v)] for i, v in zip(rows["image_id"], rows["view"])]
    return torch.tensor(flat, dtype=torch.long).view(n, -1)


def full_view_activations(image_ids, matrix: np.ndarray, index: dict) -> Tensor:
    """(V, N) activations on the full-image views, rows aligned with the view index; other
    views get -inf, so they never rank among a neuron's top views.

    image_ids: the images of the rows of `matrix` (images, neurons), one layer."""
    out = torch.full((len(index), matrix.shape[1]), float("-inf"))
    rows = [index[(i, FULL_VIEW)] for i in image_ids]
    out[rows] = torch.from_numpy(np.asarray(matrix, dtype=np.float32))
    return out


def score_frame(layer: str, method: str, kind: str, result: ConceptResult, concepts: list) -> pd.DataFrame:
    """Rows of `concept_scores`: each neuron's top-n concepts with their scores, rank 1 first."""
    n, top = result.top_index.shape
    return pd.DataFrame({
        "layer": layer, "neuron": np.repeat(np.arange(n), top).astype(np.int32), "method": method, "kind": kind,
        "rank": np.tile(np.arange(1, top + 1), n).astype(np.int32),
        "concept": np.asarray(concepts, dtype=object)[result.top_index.numpy().reshape(-1)],
        "score": result.top_scores.numpy().reshape(-1).astype(np.float32),
    })


def selection_frame(layer: str, method: str, kind: str, result: ConceptResult, concepts: list) -> pd.DataFrame:
    """Rows of `neuron_concepts`: each neuron's selected concepts (rank 1, 2, ...; one row with
    rank 0 and concept NULL when nothing was selected), each row with the size and the members of
    the neuron's tied top set."""
    rows = []
    sizes = result.tie_size.tolist() if len(result.tie_size) else [1] * len(result.selected)
    for neuron, chosen in enumerate(result.selected):
        tied = [concepts[i] for i in result.tied[neuron]] if result.tied else []
        if not chosen:
            rows.append((layer, neuron, method, kind, 0, None, np.nan, sizes[neuron], tied))
        for rank, (ci, score) in enumerate(chosen, start=1):
            rows.append((layer, neuron, method, kind, rank, concepts[ci], float(score), sizes[neuron], tied))
    df = pd.DataFrame(rows, columns=["layer", "neuron", "method", "kind", "rank", "concept", "score", "tie_size", "tied"])
    return df.astype({"neuron": np.int32, "rank": np.int32, "score": np.float32, "tie_size": np.int32})
