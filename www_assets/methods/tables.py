"""Paper-style markdown tables and sentences from the evaluation summary.

Input everywhere is the ``evaluation_summary`` table: one row per
(model, concept_set, method, metric) with columns ``mean, stderr, n,
p_value_vs_clip_dissect, p_value_vs_www`` (p-values of the paired t-test of this
method against the named reference over the same neurons; NaN/None where not tested).

Layout follows seed 001 tables 2–5 and seed 002 table 2: "mean ± standard error"
cells, **bold** for the best mean within a concept set (ties, judged on the printed
4-decimal value, are all bold). Methods and metrics keep a fixed, readable order;
unknown method names are shown as they are, after the known ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

#: Metric column -> header, in table order.
METRIC_LABELS: dict[str, str] = {
    "clip_cos": "CLIP cos",
    "text_cos": "Text cos",
    "f1": "F1",
    "hit": "Hit rate",
    "hit_tie_aware": "Hit rate, tie-aware",
    "tied_top": "Tied top",
}

#: Metrics that describe the neurons (share with a tied top set) rather than rate a method:
#: no bold, no winner sentence.
DESCRIPTIVE_METRICS = frozenset({"tied_top"})

#: Method name -> label shown in tables; also fixes the row order.
METHOD_LABELS: dict[str, str] = {
    "clip_dissect": "CLIP-Dissect",
    "cosine": "Cosine",
    "l1": "L1",
    "l2": "L2",
    "no_template": "WWW, no template",
    "template_only": "WWW, template, no ACS",
    "www": "WWW",
    "www_tvmf": "WWW + t-vMF",
    "www_gradcam": "WWW + Grad-CAM",
    "www_gradcam_tvmf": "WWW + Grad-CAM + t-vMF",
}

#: Seed 001 table 5: template and adaptive cosine similarity (ACS) on/off.
TEMPLATE_ACS_ABLATION: dict[str, dict[str, str]] = {
    "no_template": {"Template": "✗", "ACS": "✗"},
    "template_only": {"Template": "✓", "ACS": "✗"},
    "www": {"Template": "✓", "ACS": "✓"},
}

#: Seed 002 table 2: Grad-CAM crops and t-vMF similarity on/off.
GRADCAM_TVMF_ABLATION: dict[str, dict[str, str]] = {
    "www": {"Grad-CAM": "✗", "t-vMF": "✗"},
    "www_tvmf": {"Grad-CAM": "✗", "t-vMF": "✓"},
    "www_gradcam": {"Grad-CAM": "✓", "t-vMF": "✗"},
    "www_gradcam_tvmf": {"Grad-CAM": "✓", "t-vMF": "✓"},
}

#: Seed 000 table S.1: concept selection rules.
SELECTION_ABLATION: dict[str, dict[str, str]] = {
    "cosine": {"Selection": "highest cosine"},
    "l1": {"Selection": "smallest L1"},
    "l2": {"Selection": "smallest L2"},
    "www": {"Selection": "ACS + adaptive threshold"},
}

#: Methods that carry a p-value column in the summary (``p_value_vs_<name>``).
REFERENCE_METHODS = ("clip_dissect", "www")

SUMMARY_COLUMNS = ("model", "concept_set", "method", "metric", "mean", "stderr", "n")

_MISSING = "–"


def method_label(method: str) -> str:
    """Display label of a method name (the name itself when unknown)."""
    return METHOD_LABELS.get(method, method)


def order_methods(methods: Sequence[str]) -> list[str]:
    """Distinct methods in display order: known ones as in METHOD_LABELS, then the rest sorted."""
    known = [m for m in METHOD_LABELS if m in set(methods)]
    unknown = sorted(set(methods) - set(METHOD_LABELS))
    return known + unknown


def order_metrics(metrics: Sequence[str]) -> list[str]:
    """Distinct metrics in display order: known ones as in METRIC_LABELS, then the rest sorted."""
    known = [m for m in METRIC_LABELS if m in set(metrics)]
    return known + sorted(set(metrics) - set(METRIC_LABELS))


def _model_rows(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the columns {missing}; it has {list(summary.columns)}")
    rows = summary[summary["model"] == model]
    if rows.empty:
        raise ValueError(f"model {model!r} is not in the summary; models there: {sorted(summary['model'].unique())}")
    duplicated = rows.duplicated(["concept_set", "method", "metric"])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise ValueError(
            f"summary has several rows for model={model!r}, concept_set={first['concept_set']!r}, "
            f"method={first['method']!r}, metric={first['metric']!r}"
        )
    return rows


def _is_number(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and not pd.isna(value)


def _cell(mean: float, stderr: float, bold: bool) -> str:
    if not _is_number(mean):
        return _MISSING
    text = f"{mean:.4f}" if not _is_number(stderr) else f"{mean:.4f} ± {stderr:.3f}"
    return f"**{text}**" if bold else text


def _lookup(rows: pd.DataFrame) -> dict[tuple[str, str, str], tuple]:
    """(concept_set, method, metric) -> the row as a named tuple (fields = summary columns)."""
    return {(r.concept_set, r.method, r.metric): r for r in rows.itertuples(index=False)}


def _winners(cells: Mapping[tuple[str, str, str], object], concept_set: str, methods: Sequence[str], metric: str) -> set[str]:
    """Methods whose printed mean equals the best printed mean of this concept set and metric."""
    if metric in DESCRIPTIVE_METRICS:
        return set()
    printed = {}
    for method in methods:
        row = cells.get((concept_set, method, metric))
        if row is not None and _is_number(row.mean):
            printed[method] = round(float(row.mean), 4)
    if not printed:
        return set()
    best = max(printed.values())
    return {m for m, v in printed.items() if v == best}


def _neuron_count(row) -> str:
    """"n", or "n of N" when only n of the layer's N candidate neurons were judged."""
    total = getattr(row, "n_candidates", None)
    if _is_number(total) and int(total) != int(row.n):
        return f"{int(row.n)} of {int(total)}"
    return str(int(row.n))


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def markdown_main_table(
    summary: pd.DataFrame,
    model: str,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> str:
    """Seed 001 table 2 for one model: methods × metrics, grouped by concept set.

    Rows are (concept set, method), concept sets in sorted order and methods in the
    order of :data:`METHOD_LABELS`; columns are the metrics ("mean ± stderr") and the
    number of neurons. The best mean per concept set and metric is bold.

    Args:
        summary: the evaluation summary (see the module docstring).
        model: which model's rows to show.
        methods: restrict to these methods (default: all in the summary for the model).
        metrics: the metric columns (default: clip_cos, text_cos, f1, hit when present).

    Returns:
        A GitHub-flavoured markdown table (no trailing newline).

    Raises:
        ValueError: if the summary lacks columns, the model is absent, or a
            (concept set, method, metric) appears twice.
    """
    rows = _model_rows(summary, model)
    if methods is not None:
        rows = rows[rows["method"].isin(list(methods))]
        if rows.empty:
            raise ValueError(f"none of the methods {list(methods)} is in the summary for model {model!r}")
    metric_names = list(metrics) if metrics is not None else order_metrics(rows["metric"].unique())
    cells = _lookup(rows)
    header = ["Concept set", "Method", *[METRIC_LABELS.get(m, m) for m in metric_names], "Neurons"]
    body = []
    for concept_set in sorted(rows["concept_set"].unique()):
        in_set = rows[rows["concept_set"] == concept_set]
        set_methods = order_methods(in_set["method"].unique())
        winners = {metric: _winners(cells, concept_set, set_methods, metric) for metric in metric_names}
        for position, method in enumerate(set_methods):
            line = [f"`{concept_set}`" if position == 0 else "", method_label(method)]
            counts = set()
            for metric in metric_names:
                row = cells.get((concept_set, method, metric))
                if row is None:
                    line.append(_MISSING)
                    continue
                line.append(_cell(row.mean, row.stderr, method in winners[metric]))
                if _is_number(row.n):
                    counts.add(_neuron_count(row))
            line.append("/".join(sorted(counts)) or _MISSING)
            body.append(line)
    align = [":--", ":--", *["--:"] * len(metric_names), "--:"]
    return _markdown(header, body, align)


def markdown_ablation_table(
    summary: pd.DataFrame,
    model: str,
    rows: Mapping[str, Mapping[str, str]],
    title: str,
    concept_set: str | None = None,
    metrics: Sequence[str] = ("clip_cos", "text_cos", "f1", "hit"),
) -> str:
    """An ablation table with switch columns (✓/✗) before the metric columns.

    ``rows`` maps a method name to its switch settings, in display order, e.g.
    :data:`TEMPLATE_ACS_ABLATION` (seed 001 table 5) or :data:`GRADCAM_TVMF_ABLATION`
    (seed 002 table 2). Switch columns are the union of the settings' keys in order of
    first appearance. A method absent from the summary keeps its row with "–" cells.
    Bold marks the best mean per metric among the listed methods, within a concept set.

    Args:
        summary: the evaluation summary.
        model: which model's rows to show.
        rows: method -> {switch column header: cell text}.
        title: shown in bold on the line above the table.
        concept_set: restrict to one concept set; by default every concept set in
            which at least one listed method was evaluated gets its block of rows,
            with a "Concept set" column.
        metrics: the metric columns.

    Returns:
        Markdown: the bold title, a blank line, the table (no trailing newline).

    Raises:
        ValueError: on an empty ``rows``, a bad summary, or when none of the listed
            methods was evaluated for the model (and concept set).
    """
    if not rows:
        raise ValueError("rows is empty: list the methods of the ablation and their switches")
    model_rows = _model_rows(summary, model)
    listed = model_rows[model_rows["method"].isin(list(rows))]
    if concept_set is not None:
        listed = listed[listed["concept_set"] == concept_set]
    if listed.empty:
        where = f"model {model!r}" + (f", concept set {concept_set!r}" if concept_set is not None else "")
        raise ValueError(f"none of the ablation methods {list(rows)} was evaluated for {where}")
    switches: list[str] = []
    for settings in rows.values():
        for key in settings:
            if key not in switches:
                switches.append(key)
    concept_sets = [concept_set] if concept_set is not None else sorted(listed["concept_set"].unique())
    show_set = concept_set is None
    cells = _lookup(listed)
    header = (["Concept set"] if show_set else []) + switches + ["Method"] + [METRIC_LABELS.get(m, m) for m in metrics]
    body = []
    for current_set in concept_sets:
        winners = {metric: _winners(cells, current_set, list(rows), metric) for metric in metrics}
        for position, (method, settings) in enumerate(rows.items()):
            line = [f"`{current_set}`" if position == 0 else ""] if show_set else []
            line += [settings.get(key, "") for key in switches]
            line.append(method_label(method))
            for metric in metrics:
                row = cells.get((current_set, method, metric))
                line.append(_MISSING if row is None else _cell(row.mean, row.stderr, method in winners[metric]))
            body.append(line)
    align = ([":--"] if show_set else []) + [":-:"] * len(switches) + [":--"] + ["--:"] * len(metrics)
    return f"**{title}**\n\n" + _markdown(header, body, align)


def _p_value(cells: Mapping[tuple[str, str, str], object], concept_set: str, metric: str, winner: str, runner_up: str) -> float | None:
    """p-value of the paired test between two methods, read from either method's row."""
    for method, other in ((winner, runner_up), (runner_up, winner)):
        if other not in REFERENCE_METHODS:
            continue
        row = cells.get((concept_set, method, metric))
        value = getattr(row, f"p_value_vs_{other}", None) if row is not None else None
        if _is_number(value):
            return float(value)
    return None


def _winner_clause(cells: Mapping, concept_set: str, methods: Sequence[str], metric: str) -> str:
    scored = []
    for method in methods:
        row = cells.get((concept_set, method, metric))
        if row is not None and _is_number(row.mean):
            scored.append((float(row.mean), method))
    if not scored:
        return f"on `{concept_set}` no method has a score"
    scored.sort(key=lambda pair: -pair[0])
    best_mean, winner = scored[0]
    if len(scored) == 1:
        return f"on `{concept_set}` only {method_label(winner)} was evaluated ({best_mean:.4f})"
    second_mean, runner_up = scored[1]
    if round(best_mean, 4) == round(second_mean, 4):
        # judged on the printed value, as the bold cells of the table are
        tied = [method_label(m) for v, m in scored if round(v, 4) == round(best_mean, 4)]
        return f"on `{concept_set}` {' and '.join(tied)} tie ({best_mean:.4f})"
    clause = (
        f"on `{concept_set}` {method_label(winner)} wins ({best_mean:.4f} vs {second_mean:.4f} "
        f"for the runner-up {method_label(runner_up)}"
    )
    if winner in REFERENCE_METHODS or runner_up in REFERENCE_METHODS:
        p = _p_value(cells, concept_set, metric, winner, runner_up)
        if p is not None:
            verdict = "significant" if p < 0.05 else "not significant"
            return clause + f"; the difference is {verdict} at p < 0.05, paired t-test p = {p:.3g})"
    clause += "; the difference was not tested"
    # the pair was not tested, but the winner's test against WWW (the method of the paper) was
    row = cells.get((concept_set, winner, metric))
    p_www = getattr(row, "p_value_vs_www", None) if row is not None and winner != "www" else None
    if _is_number(p_www):
        clause += f"; against WWW, paired t-test p = {float(p_www):.3g}"
    return clause + ")"


def results_markdown(summary: pd.DataFrame, heading_level: int = 2, title: str = "Results",
                     ablations: bool = True) -> str:
    """The "Results" section generated from the evaluation summary.

    For each model: the main table (:func:`markdown_main_table`), one sentence per
    metric naming the winner (highest mean) on each concept set and whether its lead
    over the runner-up is significant (p < 0.05 from the summary's paired-test columns,
    available when the runner-up or the winner is ``www`` or ``clip_dissect``;
    otherwise "not tested"), then (with ``ablations``) the ablation tables whose methods
    were evaluated (at least two methods of the ablation present); they regroup rows of
    the main table.

    Args:
        summary: the evaluation summary (all models).
        heading_level: markdown level of the heading; models get one deeper.
        title: the heading's text.
        ablations: whether to add the ablation tables.

    Returns:
        Markdown text ending with a newline.
    """
    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    if heading_level < 1 or heading_level > 5:
        raise ValueError(f"heading_level must be between 1 and 5, got {heading_level}")
    top = "#" * heading_level
    sub = "#" * (heading_level + 1)
    parts = [f"{top} {title}", ""]
    if summary.empty:
        return "\n".join(parts + ["No evaluation has been computed yet.", ""])
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the columns {missing}; it has {list(summary.columns)}")
    parts += [
        "Mean ± standard error over the evaluated neurons; bold marks the best mean within a "
        "concept set. p-values come from paired t-tests over the same neurons and exist only "
        "against WWW and CLIP-Dissect; other pairs are \"not tested\".",
        "",
    ]
    notes = []
    if "hit_tie_aware" in set(summary["metric"]):
        notes.append("*Hit rate* judges the concept the tie-break picked (the first-listed of the concepts "
                     "tied at the top score); *Hit rate, tie-aware* counts a hit when a truth word is anywhere "
                     "in the tied top set; *Tied top* is the share of neurons whose top score several concepts "
                     "share.")
    if "n_candidates" in summary.columns and (summary["n_candidates"] != summary["n"]).any():
        notes.append("*n of N* neurons: only the n whose truth passes the truth floor are judged.")
    if notes:
        parts += [" ".join(notes), ""]
    for model in sorted(summary["model"].unique()):
        rows = _model_rows(summary, model)
        cells = _lookup(rows)
        parts += [f"{sub} `{model}`", "", markdown_main_table(summary, model), ""]
        for metric in order_metrics(rows["metric"].unique()):
            if metric in DESCRIPTIVE_METRICS:
                continue
            clauses = []
            for concept_set in sorted(rows["concept_set"].unique()):
                in_set = rows[(rows["concept_set"] == concept_set) & (rows["metric"] == metric)]
                clauses.append(_winner_clause(cells, concept_set, order_methods(in_set["method"].unique()), metric))
            parts.append(f"- **{METRIC_LABELS.get(metric, metric)}**: " + "; ".join(clauses) + ".")
        parts.append("")
        if not ablations:
            continue
        present = set(rows["method"])
        for table_title, ablation in ABLATION_TABLES:
            if len(present & set(ablation)) >= 2:
                parts += [markdown_ablation_table(summary, model, ablation, table_title), ""]
    return "\n".join(parts)


ABLATION_TABLES = (
    ("Concept selection rule (seed 000 table S.1)", SELECTION_ABLATION),
    ("Template and ACS (seed 001 table 5)", TEMPLATE_ACS_ABLATION),
    ("Grad-CAM crops and t-vMF similarity (seed 002 table 2)", GRADCAM_TVMF_ABLATION),
)


def training_markdown(training: pd.DataFrame, targets: Mapping[str, float], clip: pd.DataFrame | None = None,
                      clip_targets: Mapping[str, float] | None = None) -> str:
    """Test-split accuracy of the trained models and of the world CLIP, with their targets.

    Args:
        training: ``model_training`` rows (model, metric, value); models without a
            ``test_accuracy`` (not trained by the pipeline) are left out.
        targets: model -> target test accuracy (models without one show "–").
        clip: ``world_clip`` rows (metric, value), or None.
        clip_targets: metric -> target for the CLIP rows.

    Returns:
        A markdown table (no trailing newline): one row per measured number.
    """
    body = []
    accuracy = training[training["metric"] == "test_accuracy"].sort_values("model")
    for model, value in zip(accuracy["model"], accuracy["value"]):
        target = targets.get(model)
        body.append([f"`{model}`", "top-1 accuracy", f"{value:.4f}", _MISSING if target is None else f"{target:.2f}"])
    if clip is not None and len(clip):
        labels = {"zero_shot_accuracy": "zero-shot class accuracy", "retrieval_part": "part retrieval (top-1)",
                  "retrieval_part_pairs": "part retrieval (all pairs)", "retrieval_colour": "colour retrieval",
                  "retrieval_background": "background retrieval", "retrieval_texture": "texture retrieval"}
        values = dict(zip(clip["metric"], clip["value"]))
        for metric, label in labels.items():
            if metric in values:
                target = (clip_targets or {}).get(metric)
                body.append(["world CLIP", label, f"{values[metric]:.4f}",
                             _MISSING if target is None else f"{target:.2f}"])
    return _markdown(["Model", "Measure (test split)", "Value", "Target"], body, [":--", ":--", "--:", "--:"])


def detection_markdown(detection: pd.DataFrame) -> str:
    """Misprediction detection: AUROC of each confidence score per model, and the counts.

    Args:
        detection: ``misprediction_detection`` rows (model, score, auroc, n, n_mispredicted).

    Returns:
        A markdown table (no trailing newline), the best AUROC of each model in bold.
    """
    scores = sorted(detection["score"].unique())
    labels = {"heatmap_similarity": "AUROC, heatmap similarity", "msp": "AUROC, max softmax probability",
              "track_jaccard": "AUROC, track Jaccard"}
    header = ["Model", *[labels.get(s, f"AUROC, {s}") for s in scores], "Test images", "Mispredicted"]
    body = []
    for model, rows in detection.groupby("model", sort=True):
        by_score = dict(zip(rows["score"], rows["auroc"]))
        best = max((v for v in by_score.values() if _is_number(v)), default=None)
        cells = []
        for score in scores:
            value = by_score.get(score)
            cells.append(_MISSING if not _is_number(value) else
                         (f"**{value:.4f}**" if value == best else f"{value:.4f}"))
        body.append([f"`{model}`", *cells, str(int(rows["n"].iloc[0])), str(int(rows["n_mispredicted"].iloc[0]))])
    return _markdown(header, body, [":--", *["--:"] * (len(scores) + 2)])


#: What each score of `concept_scoring.METHODS` computes, and its scale (higher is better for all).
#: "world": 5 to 95 % of the top-10 scores per neuron in `concept_scores` of the demo (world-cnn
#: and world-vit, both concept sets, the world CLIP; measured 2026-12-04).
SCORE_TEXT: dict[str, str] = {
    "acs": "ACS: mean cosine to the concept's prompt minus mean cosine to the bare template; "
           "small, either sign (world: 0.01 to 0.22)",
    "tvmf_acs": "t-vMF ACS: the same difference of t-vMF similarities (kappa 16); either sign, "
                "about a third of the ACS scale (world: 0.007 to 0.085)",
    "cosine": "mean cosine, -1 to 1 (world: 0.36 to 0.57)",
    "l1": "minus the mean L1 distance of unit vectors: always below 0, growing with the feature "
          "width (128-d world CLIP: -10.1 to -8.4)",
    "l2": "minus the mean L2 distance of unit vectors: -2 to 0 (world: -1.13 to -0.93)",
    "soft_wpmi": "soft-WPMI, log P(c \\| top-100 images) - log P(c): either sign, at most about "
                 "log(number of neurons) (world: -20 to 4.6; 18 % of the neurons' best below 0)",
}

#: What each selection rule keeps, and when `neuron_concepts.concept` is NULL.
SELECTION_TEXT: dict[str, tuple[str, str]] = {
    "acs_threshold": ("every concept with s > alpha * max s", "when max s <= 0 (no concept beats the bare template)"),
    "threshold": ("every concept with s > alpha * max s; the best alone when max s <= 0", "never"),
    "argmax": ("the best concept", "never"),
}

_VIEW_TEXT = {"image": "top images", "gradcam_crop": "Grad-CAM crops of the top images"}


def methods_markdown() -> str:
    """The concept-scoring methods as one markdown table, from `concept_scoring.METHODS`: key,
    display label, score and scale, texts, major-concept views, selection, when NULL."""
    from www_assets.methods.concept_scoring import METHODS

    header = ["`method`", "shown as", "score (scale)", "texts", "major concepts from", "selects",
              "concept NULL"]
    body = []
    for method in order_methods(list(METHODS)):
        spec = METHODS[method]
        selects, null = SELECTION_TEXT[spec.selection]
        views = _VIEW_TEXT[spec.views]
        if spec.score == "soft_wpmi":
            views = "top-100 images by activation (no minor concepts)"
        texts = "prompt \"a photo of a {c}\"" if spec.text == "templated" else "raw word"
        if spec.text_choice:
            texts += " (the prompt with `baseline_text: templated`)"
        body.append([f"`{method}`", METHOD_LABELS.get(method, method), SCORE_TEXT[spec.score], texts, views,
                     selects, null])
    return _markdown(header, body, [":--"] * len(header))
