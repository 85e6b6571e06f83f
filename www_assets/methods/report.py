"""The results section as readers meet it: tables grouped by what a judged layer is to its
model (final layer or hidden layer), and the README's results (trained models against their
targets, the main tables, misprediction detection).

What a layer is comes from the model's registry entry; `LayerRoles` takes a lookup
`model -> entry or None` so that this module reads no files itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from www_assets.methods.localization import PART_NEURON, localization_summary
from www_assets.methods.neuron_truth import TRUTH_AUROC_FLOOR
from www_assets.methods.tables import detection_markdown, results_markdown, training_markdown

__all__ = ["ROLE_TITLES", "LayerRoles", "results_by_role", "results_report", "role_rank"]

ROLE_TITLES = {
    "final": "Final-layer neurons, judged against their class's names",
    "hidden": "Hidden neurons (the head's input), judged against the world attribute that best predicts them "
              f"where its AUROC reaches {TRUTH_AUROC_FLOOR:g}",
}


def role_rank(role: str) -> int:
    """Display order of a layer role: final layer, hidden layer, then any other layer."""
    return list(ROLE_TITLES).index(role) if role in ROLE_TITLES else len(ROLE_TITLES)


class LayerRoles:
    """What a judged layer is to its model: "final" (its neurons are the class logits),
    "hidden" (the spatial layer feeding the head) or "layer <name>"; models whose entry the
    lookup does not find keep the layer name.

    lookup: model name -> its registry entry (with `final_layer`, `spatial_layer`,
    `concept_sets`), or None; each model is looked up once."""

    def __init__(self, lookup: Callable[[str], object | None] = lambda model: None):
        self._lookup = lookup
        self._entries: dict = {}

    def entry(self, model: str):
        """The model's registry entry, or None (looked up once)."""
        if model not in self._entries:
            self._entries[model] = self._lookup(model)
        return self._entries[model]

    def role(self, model: str, layer: str) -> str:
        entry = self.entry(model)
        if entry is not None and layer == entry.final_layer:
            return "final"
        if entry is not None and layer == entry.spatial_layer:
            return "hidden"
        return f"layer {layer}"

    def order(self, model: str, layer: str) -> tuple:
        return (role_rank(self.role(model, layer)), layer)

    def first_concept_set(self, model: str, available) -> str:
        """The first of the model's registry concept sets that is `available` (else the first sorted)."""
        available = sorted(set(available))
        entry = self.entry(model)
        listed = [c for c in (entry.concept_sets if entry is not None else ()) if c in available]
        return (listed or available)[0]


def results_by_role(summary: pd.DataFrame, roles: LayerRoles, heading_level: int = 3, ablations: bool = True) -> str:
    """The results tables with one section per layer role (final-layer neurons, hidden neurons),
    every model's judged layer of that role inside it (markdown ending with a newline)."""
    if summary.empty:
        return results_markdown(summary, heading_level=heading_level)
    role = [roles.role(m, l) for m, l in zip(summary["model"], summary["layer"])]
    tagged = summary.assign(role=role)
    sections = []
    for name in sorted(set(role), key=lambda r: (role_rank(r), r)):
        rows = tagged[tagged["role"] == name]
        layers = ", ".join(f"`{m}` {l}" for m, l in sorted(set(zip(rows["model"], rows["layer"]))))
        title = f"{ROLE_TITLES.get(name, name.capitalize())} ({layers})"
        sections.append(results_markdown(rows.drop(columns=["layer", "role"]), heading_level=heading_level,
                                         title=title, ablations=ablations))
    return "\n".join(sections)


def results_report(summary: pd.DataFrame, roles: LayerRoles, training: pd.DataFrame | None = None,
                   targets: Mapping[str, float] | None = None, clip: pd.DataFrame | None = None,
                   clip_targets: Mapping[str, float] | None = None, detection: pd.DataFrame | None = None,
                   heading_level: int = 3, localization: pd.DataFrame | None = None) -> str:
    """The README's results: the trained models' accuracy against their `targets` (model ->
    target accuracy; the CLIP's against `clip_targets`), the main concept-discovery tables per
    layer role with the winner sentences (the ablation tables, which regroup the same rows,
    stay in data/artifacts/results.md and the UI), and misprediction detection. Each frame is a
    table of the catalog; None or empty leaves its part out."""
    head = "#" * heading_level
    parts = []
    if training is not None and len(training):
        parts += [f"{head} Trained models", "", training_markdown(training, dict(targets or {}), clip, clip_targets), ""]
    parts.append(results_by_role(summary, roles, heading_level=heading_level, ablations=False))
    if detection is not None and len(detection):
        parts += [f"{head} Misprediction detection (test split)", "",
                  "A misprediction is the positive class; a low score raises the alarm.", "",
                  detection_markdown(detection), ""]
        for model, rows in detection.groupby("model", sort=True):
            by_score = dict(zip(rows["score"], rows["auroc"]))
            if {"heatmap_similarity", "msp"} <= set(by_score):
                better = "heatmap similarity" if by_score["heatmap_similarity"] > by_score["msp"] else \
                    "the max softmax probability"
                parts.append(f"- `{model}`: {better} detects mispredictions better "
                             f"(AUROC {max(by_score['heatmap_similarity'], by_score['msp']):.4f} vs "
                             f"{min(by_score['heatmap_similarity'], by_score['msp']):.4f}).")
        parts += uncertainty_lines(detection)
        parts.append("")
    if localization is not None and len(localization):
        parts += localization_lines(localization, head)
    return "\n".join(parts)


def localization_lines(localization: pd.DataFrame, head: str) -> list[str]:
    """Per model, one line: where the class track's, the sample track's and Grad-CAM's heatmaps put
    their mass and their maximum against the object box, and the part neurons' regions against
    their part's boxes, each next to its chance level."""
    summary = localization_summary(localization)
    lines = [f"{head} Localisation against the world's boxes (test split)", "",
             "Share of a heatmap's positive mass inside the object box / pointing-game accuracy (chance: the "
             "box's share of the image); part neurons: share of their concept region inside their part's boxes.", ""]
    for model, rows in summary.groupby("model", sort=True):
        by_map = rows.set_index("map")
        said = [f"{label} {by_map.loc[m, 'mass_in_box']:.3f} / {by_map.loc[m, 'pointing']:.3f}"
                for m, label in (("class", "class track"), ("sample", "sample track"), ("gradcam", "Grad-CAM"))
                if m in by_map.index]
        line = f"- `{model}`: " + ", ".join(said)
        if "class" in by_map.index:
            line += f" (chance {by_map.loc['class', 'chance']:.3f})"
        if PART_NEURON in by_map.index:
            p = by_map.loc[PART_NEURON]
            line += (f"; part neurons ({int(p['rows'])} neuron-image pairs): region {p['region_in_box']:.3f}, "
                     f"mass {p['mass_in_box']:.3f} inside the part (chance {p['chance']:.3f})")
        lines.append(line + ".")
    return lines + [""]


def uncertainty_lines(detection: pd.DataFrame) -> list[str]:
    """Per model: every AUROC with its bootstrap interval, and how often the class and sample tracks
    pick the same top-k neurons on correct and on mispredicted images (older tables: nothing)."""
    if "ci_low" not in detection:
        return []
    names = {"heatmap_similarity": "heatmap similarity", "msp": "max softmax probability",
             "track_jaccard": "track Jaccard"}
    lines = []
    for model, rows in detection.groupby("model", sort=True):
        cis = "; ".join(f"{names.get(r.score, r.score)} {r.auroc:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]"
                        for r in rows.itertuples() if np.isfinite(r.auroc))
        line = f"- `{model}`: AUROC with 95 % bootstrap interval: {cis}."
        jac = rows[rows["score"] == "track_jaccard"]
        if len(jac):
            j = jac.iloc[0]
            line += (f" The class and sample tracks share top-k neurons with a mean Jaccard of "
                     f"{j['mean_correct']:.3f} on correct and {j['mean_mispredicted']:.3f} on mispredicted images.")
        lines.append(line)
    return lines
