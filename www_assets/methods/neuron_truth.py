"""Ground truth for hidden neurons on the synthetic world.

Final-layer neurons have a natural ground truth (their class name). Hidden neurons do
not, but on the synthetic world every image comes with the full list of what it
contains: its class, superclass, colour, texture, background and parts. That turns
"what does this neuron respond to" into a measurable question.

**Definition.** For neuron u and attribute a, let x_1..x_N be the neuron's (spatially
pooled) activations on the N probe images and let a be present in the images P and
absent from the rest. The attribute's score is the AUROC of the activation as a
detector of the attribute's presence,

    AUROC(u, a) = Pr[x_i > x_j] + ½·Pr[x_i = x_j],  i drawn from P, j from its complement,

computed exactly from ranks (Mann–Whitney): with r_i the rank of x_i among all N
activations (ties get their average rank), n⁺ = |P| and n⁻ = N − n⁺,

    AUROC(u, a) = (Σ_{i∈P} r_i − n⁺(n⁺+1)/2) / (n⁺ n⁻).

The neuron's ground-truth attribute is the attribute with the highest AUROC (first in
attribute order on ties). 1.0 means the neuron fires more on every image with the
attribute than on any image without it; 0.5 means no relation. Attributes present in
all images or in none cannot be scored and are skipped. Only positive association
counts: a neuron that is *suppressed* by an attribute (AUROC near 0) is not explained
by it. A neuron with constant activation scores 0.5 everywhere; its row is kept, and
the score says it has no ground truth worth the name.

Activations are ranked once per neuron; the rank sums of all attributes for all neurons
then come from one matrix product ``presence.T @ ranks``.

**Truth words.** A class attribute is named like the final layer's truth: the class name and
its synonyms (a ``car`` neuron that selects ``automobile`` hits). Other attributes are their
one word.

**Which neurons are judged.** A neuron whose best attribute barely predicts it has no truth
worth the name: judging a method's words against it measures noise. Only neurons whose best
AUROC reaches :data:`TRUTH_AUROC_FLOOR` (0.9: an image with the attribute outranks one without
it in nine pairs of ten) are judged; :func:`hidden_neuron_truth` keeps the others' rows with
``judged = False`` so that their number can be reported.

**A second view of the same truth.** The AUROC looks at all probe images; the methods look at
a neuron's top-k images. ``truth_precision`` is the share of the neuron's top-k images (k = 40,
WWW's examples; ties: the earlier image) that show its best attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from www_assets.methods.metrics import normalise_concept

#: Scene columns whose values become attributes by default.
DEFAULT_SCENE_COLUMNS = ("label_name", "superclass", "colour", "texture", "background")

#: Hidden neurons are judged only when their best attribute's AUROC reaches this floor.
TRUTH_AUROC_FLOOR = 0.9

#: Top images per neuron for ``truth_precision`` (WWW's number of examples).
TRUTH_PRECISION_K = 40


def presence_matrix(
    scenes: pd.DataFrame,
    parts: pd.DataFrame,
    columns: Sequence[str] = DEFAULT_SCENE_COLUMNS,
    part_column: str = "part",
    qualify: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Binary presence of every attribute value in every image.

    Each distinct value of each scene column (class name, superclass, colour, texture,
    background) and each distinct part becomes one attribute. Names are normalised with
    :func:`~www_assets.methods.metrics.normalise_concept` so they compare directly with
    concept words. With ``qualify=False`` (default) the same word in two columns (a
    colour "orange" and a class "orange") is one attribute, present where either is:
    the ground truth is a word, and a concept word cannot tell the two apart. With
    ``qualify=True`` names are ``"column=value"`` and nothing is merged.

    Missing values (NaN/None/empty) mean "absent" for that column.

    Args:
        scenes: one row per image: ``image_id`` plus the ``columns``. Row order defines
            the row order of the result.
        parts: one row per (image, part): ``image_id`` and ``part_column``; may list an
            image several times and may be empty.
        columns: scene columns to turn into attributes.
        part_column: the column of ``parts`` holding the part name.
        qualify: prefix names with their column (see above).

    Returns:
        ``(presence, names)``: (n_images, n_attributes) bool array aligned with the rows
        of ``scenes``, and the attribute names in column order (each column's values
        sorted, parts last).

    Raises:
        ValueError: on missing columns, duplicated image ids in ``scenes`` or parts of
            images that ``scenes`` does not list.
    """
    missing = [c for c in ("image_id", *columns) if c not in scenes.columns]
    if missing:
        raise ValueError(f"scenes lacks the columns {missing}; it has {list(scenes.columns)}")
    missing_parts = [c for c in ("image_id", part_column) if c not in parts.columns]
    if missing_parts:
        raise ValueError(f"parts lacks the columns {missing_parts}; it has {list(parts.columns)}")
    image_index = pd.Index(scenes["image_id"])
    if not image_index.is_unique:
        duplicated = image_index[image_index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"scenes must have one row per image; duplicated image_id values: {duplicated}")

    name_to_column: dict[str, int] = {}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []

    def add(column_name: str, row_positions: np.ndarray, values: pd.Series) -> None:
        present = values.notna().to_numpy()
        words = values[present].astype(str).map(normalise_concept).to_numpy()
        positions = row_positions[present]
        keep = words != ""
        words, positions = words[keep], positions[keep]
        names = [f"{column_name}={w}" if qualify else w for w in words]
        for name in sorted(set(names)):
            name_to_column.setdefault(name, len(name_to_column))
        rows.append(positions)
        cols.append(np.fromiter((name_to_column[n] for n in names), dtype=np.int64, count=len(names)))

    all_rows = np.arange(len(scenes))
    for column in columns:
        add(column, all_rows, scenes[column].reset_index(drop=True))

    part_rows = image_index.get_indexer(parts["image_id"])
    if np.any(part_rows < 0):
        unknown = parts["image_id"][part_rows < 0].unique().tolist()[:5]
        raise ValueError(f"parts lists images that scenes does not have: {unknown}")
    add(part_column, part_rows, parts[part_column].reset_index(drop=True))

    presence = np.zeros((len(scenes), len(name_to_column)), dtype=bool)
    if rows:
        presence[np.concatenate(rows), np.concatenate(cols)] = True
    return presence, list(name_to_column)


def _check_inputs(activations: np.ndarray, presence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    activations = np.asarray(activations, dtype=np.float64)
    presence = np.asarray(presence)
    if activations.ndim != 2:
        raise ValueError(f"activations must be (n_images, n_neurons), got shape {activations.shape}")
    if presence.ndim != 2:
        raise ValueError(f"presence must be (n_images, n_attributes), got shape {presence.shape}")
    if presence.dtype != bool:
        raise ValueError(f"presence must be a bool array, got dtype {presence.dtype}")
    if activations.shape[0] != presence.shape[0]:
        raise ValueError(
            f"activations has {activations.shape[0]} images but presence has {presence.shape[0]}: rows must be the same images"
        )
    if not np.all(np.isfinite(activations)):
        raise ValueError("activations contain NaN or infinity")
    return activations, presence


def attribute_auroc(activations: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """AUROC of every neuron's activation as a detector of every attribute.

    Args:
        activations: (n_images, n_neurons) pooled activations.
        presence: (n_images, n_attributes) bool, True where the attribute is present.

    Returns:
        (n_attributes, n_neurons) float64 AUROC in [0, 1]; NaN rows for attributes
        present in all images or in none.
    """
    activations, presence = _check_inputs(activations, presence)
    n_images = activations.shape[0]
    ranks = rankdata(activations, axis=0, method="average")  # (n_images, n_neurons)
    positives = presence.sum(axis=0).astype(np.float64)  # (n_attributes,)
    negatives = n_images - positives
    rank_sums = presence.T.astype(np.float64) @ ranks  # (n_attributes, n_neurons)
    scorable = (positives > 0) & (negatives > 0)
    denominator = np.where(scorable, positives * negatives, 1.0)
    auroc = (rank_sums - (positives * (positives + 1) / 2)[:, None]) / denominator[:, None]
    auroc[~scorable] = np.nan
    return auroc


def best_matching_attribute(
    activations: np.ndarray,
    presence: np.ndarray,
    attribute_names: Sequence[str],
    method: str = "auroc",
) -> pd.DataFrame:
    """For each neuron, the attribute whose presence best predicts its activation.

    See the module docstring for the definition (AUROC of present vs absent images,
    highest wins, first attribute on ties; all-present / never-present attributes skipped).

    Args:
        activations: (n_images, n_neurons) pooled activations on the probe images.
        presence: (n_images, n_attributes) bool, e.g. from :func:`presence_matrix`.
        attribute_names: n_attributes names, in the column order of ``presence``.
        method: ``"auroc"`` (the only scoring so far).

    Returns:
        DataFrame with one row per neuron: ``neuron`` (int, column index in
        ``activations``), ``attribute`` (str), ``score`` (float, the AUROC).

    Raises:
        ValueError: on an unknown method, shape mismatches, or when no attribute can be
            scored (each is present in all images or in none).
    """
    if method != "auroc":
        raise ValueError(f"unknown method {method!r}; supported: 'auroc'")
    activations, presence = _check_inputs(activations, presence)
    names = list(attribute_names)
    if len(names) != presence.shape[1]:
        raise ValueError(f"attribute_names has {len(names)} names but presence has {presence.shape[1]} attribute columns")
    auroc = attribute_auroc(activations, presence)
    scorable = ~np.isnan(auroc[:, 0]) if auroc.shape[1] else np.zeros(auroc.shape[0], dtype=bool)
    if auroc.shape[1] and not scorable.any():
        raise ValueError("no attribute can be scored: each is present in all images or in none")
    filled = np.where(np.isnan(auroc), -np.inf, auroc)
    best = np.argmax(filled, axis=0) if auroc.shape[1] else np.zeros(0, dtype=np.int64)
    neurons = np.arange(activations.shape[1])
    return pd.DataFrame(
        {
            "neuron": neurons,
            "attribute": pd.Series([names[i] for i in best], dtype=object),
            "score": auroc[best, neurons],
        }
    )


def truth_words(attribute: str, synonyms: Mapping[str, Sequence[str]]) -> list[str]:
    """The words that name an attribute: a class's name and synonyms (``synonyms`` maps a
    normalised class name to all its names, name first), else the attribute itself."""
    names = synonyms.get(normalise_concept(attribute))
    return [normalise_concept(w) for w in names] if names else [attribute]


def top_k_precision(activations: np.ndarray, presence: np.ndarray, attribute_index: np.ndarray, k: int) -> np.ndarray:
    """Per neuron, the share of its top-k images (by activation; ties: the earlier image) in
    which the attribute `attribute_index[neuron]` (a column of `presence`) is present.

    Returns (n_neurons,) float64; k larger than the number of images uses all images."""
    import torch

    from www_assets.methods.examples import top_k_examples

    activations, presence = _check_inputs(activations, presence)
    attribute_index = np.asarray(attribute_index, dtype=np.int64)
    if attribute_index.shape != (activations.shape[1],):
        raise ValueError(f"attribute_index must have one entry per neuron ({activations.shape[1]}), got {attribute_index.shape}")
    if activations.shape[1] == 0:
        return np.zeros(0)
    top, _ = top_k_examples(torch.from_numpy(activations), k)  # (n_neurons, k')
    top = top.numpy()
    return presence[top, attribute_index[:, None]].mean(axis=1)


def hidden_neuron_truth(
    activations: np.ndarray,
    presence: np.ndarray,
    attribute_names: Sequence[str],
    synonyms: Mapping[str, Sequence[str]] | None = None,
    floor: float = TRUTH_AUROC_FLOOR,
    k: int = TRUTH_PRECISION_K,
) -> pd.DataFrame:
    """Each hidden neuron's truth: its best attribute, the words that name it, the AUROC that
    made it the best, the attribute's precision among the neuron's top-k images, and whether
    the neuron is judged (AUROC >= floor). See the module docstring.

    Returns one row per neuron: ``neuron``, ``attribute``, ``truth`` (list of words),
    ``truth_auroc``, ``truth_precision``, ``judged``.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be an AUROC in [0, 1], got {floor}")
    best = best_matching_attribute(activations, presence, attribute_names)
    column = {name: i for i, name in enumerate(attribute_names)}
    attribute_index = np.array([column[a] for a in best["attribute"]], dtype=np.int64)
    precision = top_k_precision(activations, presence, attribute_index, k)
    return pd.DataFrame({
        "neuron": best["neuron"].to_numpy(),
        "attribute": best["attribute"],
        "truth": [truth_words(a, synonyms or {}) for a in best["attribute"]],
        "truth_auroc": best["score"].to_numpy(float),
        "truth_precision": precision,
        "judged": best["score"].to_numpy(float) >= floor,
    })
