"""Markdown tables, the generated results section and the evaluation figures on a hand-made summary."""

import numpy as np
import pandas as pd
import pytest

from www_assets.figures.evaluation import alpha_ablation_figure, k_ablation_figure, metric_bars_figure
from www_assets.methods.tables import (
    GRADCAM_TVMF_ABLATION,
    TEMPLATE_ACS_ABLATION,
    markdown_ablation_table,
    markdown_main_table,
    results_markdown,
)

NAN = float("nan")


def summary_row(concept_set, method, metric, mean, stderr=0.01, n=10, vs_clip=NAN, vs_www=NAN, model="m"):
    return dict(
        model=model, concept_set=concept_set, method=method, metric=metric, mean=mean, stderr=stderr, n=n,
        p_value_vs_clip_dissect=vs_clip, p_value_vs_www=vs_www,
    )


@pytest.fixture
def summary():
    rows = [
        # concept set A: WWW wins F1 (significant vs CLIP-Dissect), CLIP-Dissect wins CLIP cos
        # (not significant), WWW and CLIP-Dissect tie on hit rate
        summary_row("A", "www", "f1", 0.42, vs_clip=0.001),
        summary_row("A", "clip_dissect", "f1", 0.36, vs_www=0.001),
        summary_row("A", "cosine", "f1", 0.33, vs_clip=0.2, vs_www=0.0001),
        summary_row("A", "www", "clip_cos", 0.88, vs_clip=0.3),
        summary_row("A", "clip_dissect", "clip_cos", 0.89, vs_www=0.3),
        summary_row("A", "cosine", "clip_cos", 0.85),
        summary_row("A", "www", "hit", 0.5, stderr=NAN),
        summary_row("A", "clip_dissect", "hit", 0.5, stderr=NAN),
        summary_row("A", "cosine", "hit", 0.1, stderr=NAN),
        # concept set B: Cosine beats L1 (no test between them), WWW last
        summary_row("B", "cosine", "f1", 0.30),
        summary_row("B", "l1", "f1", 0.29),
        summary_row("B", "www", "f1", 0.20),
        # another model whose numbers must not leak in
        summary_row("A", "clip_dissect", "f1", 0.99, model="other"),
    ]
    return pd.DataFrame(rows)


def parse_table(markdown):
    """{(concept set, method label): {header: cell}} from a markdown table with a concept-set column."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    table, current_set = {}, None
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        current_set = cells[0] or current_set
        table[(current_set, cells[header.index("Method")])] = dict(zip(header, cells))
    return table


def test_main_table_bolds_the_winner_per_concept_set(summary):
    table = parse_table(markdown_main_table(summary, "m"))
    assert table[("`A`", "WWW")]["F1"] == "**0.4200 ± 0.010**"
    assert table[("`A`", "CLIP-Dissect")]["F1"] == "0.3600 ± 0.010"
    assert table[("`A`", "CLIP-Dissect")]["CLIP cos"] == "**0.8900 ± 0.010**"
    assert table[("`A`", "WWW")]["CLIP cos"] == "0.8800 ± 0.010"
    # a tie bolds both; a missing stderr prints the mean alone
    assert table[("`A`", "WWW")]["Hit rate"] == "**0.5000**"
    assert table[("`A`", "CLIP-Dissect")]["Hit rate"] == "**0.5000**"
    assert table[("`A`", "Cosine")]["Hit rate"] == "0.1000"
    # concept set B is judged on its own: Cosine wins there although WWW wins in A
    assert table[("`B`", "Cosine")]["F1"] == "**0.3000 ± 0.010**"
    assert table[("`B`", "WWW")]["F1"] == "0.2000 ± 0.010"
    # metrics not computed for B show a dash; the other model never appears
    assert table[("`B`", "L1")]["CLIP cos"] == "–"
    assert table[("`A`", "CLIP-Dissect")]["Neurons"] == "10"
    assert "0.99" not in markdown_main_table(summary, "m")


def test_main_table_column_and_row_order(summary):
    markdown = markdown_main_table(summary, "m")
    header = markdown.splitlines()[0]
    assert header == "| Concept set | Method | CLIP cos | F1 | Hit rate | Neurons |"
    methods_in_a = [key[1] for key in parse_table(markdown) if key[0] == "`A`"]
    assert methods_in_a == ["CLIP-Dissect", "Cosine", "WWW"]


def test_main_table_rejects_bad_summaries(summary):
    with pytest.raises(ValueError, match="model 'nope' is not in the summary"):
        markdown_main_table(summary, "nope")
    with pytest.raises(ValueError, match="lacks the columns \\['stderr'\\]"):
        markdown_main_table(summary.drop(columns="stderr"), "m")
    with pytest.raises(ValueError, match="several rows"):
        markdown_main_table(pd.concat([summary, summary.iloc[[0]]]), "m")


def test_ablation_table_switches_and_bold():
    summary = pd.DataFrame(
        [
            summary_row("W", "no_template", "f1", 0.3265),
            summary_row("W", "template_only", "f1", 0.3361),
            summary_row("W", "www", "f1", 0.4197),
            summary_row("W", "no_template", "clip_cos", 0.8499),
            summary_row("W", "template_only", "clip_cos", 0.8547),
            summary_row("W", "www", "clip_cos", 0.8858),
        ]
    )
    markdown = markdown_ablation_table(summary, "m", TEMPLATE_ACS_ABLATION, "Table 5", concept_set="W", metrics=("clip_cos", "f1"))
    assert markdown.startswith("**Table 5**\n\n| Template | ACS | Method | CLIP cos | F1 |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()[4:]]
    assert rows == [
        ["✗", "✗", "WWW, no template", "0.8499 ± 0.010", "0.3265 ± 0.010"],
        ["✓", "✗", "WWW, template, no ACS", "0.8547 ± 0.010", "0.3361 ± 0.010"],
        ["✓", "✓", "WWW", "**0.8858 ± 0.010**", "**0.4197 ± 0.010**"],
    ]


def test_ablation_table_keeps_missing_methods_as_dashes():
    summary = pd.DataFrame([summary_row("W", "www", "f1", 0.40), summary_row("W", "www_gradcam", "f1", 0.45)])
    markdown = markdown_ablation_table(summary, "m", GRADCAM_TVMF_ABLATION, "Seed 002 table 2", metrics=("f1",))
    table = parse_table(markdown)
    assert table[("`W`", "WWW + Grad-CAM")]["F1"] == "**0.4500 ± 0.010**"
    assert table[("`W`", "WWW + t-vMF")]["F1"] == "–"
    assert table[("`W`", "WWW + t-vMF")]["t-vMF"] == "✓"
    assert table[("`W`", "WWW + t-vMF")]["Grad-CAM"] == "✗"
    with pytest.raises(ValueError, match="none of the ablation methods"):
        markdown_ablation_table(summary, "m", {"no_template": {"Template": "✗"}, "l2": {"Template": "✓"}}, "x")


def test_results_markdown_sentences(summary):
    text = results_markdown(summary)
    lines = text.splitlines()
    assert lines[0] == "## Results"
    assert "### `m`" in lines and "### `other`" in lines
    f1_line = next(line for line in lines if line.startswith("- **F1**"))
    assert "on `A` WWW wins (0.4200 vs 0.3600 for the runner-up CLIP-Dissect; the difference is significant" in f1_line
    assert "p = 0.001" in f1_line
    assert "on `B` Cosine wins (0.3000 vs 0.2900 for the runner-up L1; the difference was not tested)" in f1_line
    clip_line = next(line for line in lines if line.startswith("- **CLIP cos**"))
    assert "on `A` CLIP-Dissect wins (0.8900 vs 0.8800 for the runner-up WWW; the difference is not significant" in clip_line
    assert "on `B` no method has a score" in clip_line
    hit_line = next(line for line in lines if line.startswith("- **Hit rate**"))
    assert "on `A` CLIP-Dissect and WWW tie (0.5000)" in hit_line
    # no ablation table: fewer than two methods of any ablation besides the selection one
    assert "Template and ACS" not in text
    assert "Concept selection rule" in text  # cosine, l1 and www are present
    assert text.endswith("\n")


def test_untested_winner_reports_its_test_against_www(summary):
    rows = pd.concat([summary, pd.DataFrame([
        summary_row("C", "www_tvmf", "f1", 0.50, vs_www=0.0123),
        summary_row("C", "l2", "f1", 0.40),
        summary_row("C", "www", "f1", 0.30),
    ])], ignore_index=True)
    f1_line = next(line for line in results_markdown(rows).splitlines() if line.startswith("- **F1**"))
    assert ("on `C` WWW + t-vMF wins (0.5000 vs 0.4000 for the runner-up L2; the difference was not tested; "
            "against WWW, paired t-test p = 0.0123)") in f1_line
    # no p-value against WWW on record: nothing added
    assert "on `B` Cosine wins (0.3000 vs 0.2900 for the runner-up L1; the difference was not tested)" in f1_line


def test_results_markdown_empty_summary():
    text = results_markdown(pd.DataFrame(columns=["model", "concept_set", "method", "metric", "mean", "stderr", "n"]))
    assert "No evaluation has been computed yet." in text


# --- figures -----------------------------------------------------------------------


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_write_png_files(tmp_path, summary):
    sweep = pd.DataFrame(
        [dict(k=k, method="www", metric="f1", mean=m, stderr=0.01) for k, m in zip([1, 5, 10, 20, 40, 80], [0.2, 0.3, 0.35, 0.4, 0.42, 0.4])]
    )
    alpha = sweep.rename(columns={"k": "alpha"}).assign(alpha=np.linspace(0.8, 0.99, 6))
    paths = [
        k_ablation_figure(sweep, tmp_path / "k.png"),
        alpha_ablation_figure(alpha, tmp_path / "sub" / "alpha.png"),
        metric_bars_figure(summary, "m", tmp_path / "bars.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 5_000


def test_figures_reject_bad_input(tmp_path, summary):
    with pytest.raises(ValueError, match="lacks the columns \\['k'\\]"):
        k_ablation_figure(pd.DataFrame({"method": ["www"], "metric": ["f1"], "mean": [0.1], "stderr": [0.0]}), tmp_path / "k.png")
    with pytest.raises(ValueError, match="no summary rows for model 'nope'"):
        metric_bars_figure(summary, "nope", tmp_path / "bars.png")
    assert not any(tmp_path.iterdir())


def test_judged_counts_and_tie_columns():
    rows = [
        {**summary_row("A", method, metric, mean), "n_candidates": 16}
        for method, means in (("www", (0.5, 0.7, 0.0)), ("clip_dissect", (0.4, 0.9, 0.75)))
        for metric, mean in zip(("hit", "hit_tie_aware", "tied_top"), means)
    ]
    table = markdown_main_table(pd.DataFrame(rows), "m")
    lines = table.splitlines()
    assert lines[0] == "| Concept set | Method | Hit rate | Hit rate, tie-aware | Tied top | Neurons |"
    # the tied-top share describes the neurons: never bold; 10 of 16 candidate neurons judged
    assert lines[2] == "| `A` | CLIP-Dissect | 0.4000 ± 0.010 | **0.9000 ± 0.010** | 0.7500 ± 0.010 | 10 of 16 |"
    text = results_markdown(pd.DataFrame(rows))
    assert "**Tied top**" not in text and "**Hit rate, tie-aware**: on `A` CLIP-Dissect wins" in text
    assert "*n of N* neurons" in text and "*Hit rate, tie-aware* counts a hit" in text


def test_results_by_role_groups_layers_by_what_they_are_to_their_model():
    from types import SimpleNamespace

    from www_assets.methods.report import LayerRoles, results_by_role

    entries = {"m": SimpleNamespace(final_layer="fc", spatial_layer="layer4", concept_sets=("B", "A"))}
    roles = LayerRoles(entries.get)
    assert [roles.role("m", layer) for layer in ("fc", "layer4", "layer3")] == ["final", "hidden", "layer layer3"]
    assert roles.role("gone", "fc") == "layer fc" and roles.first_concept_set("m", ["A", "B"]) == "B"
    rows = [{**summary_row("A", "www", "hit", 0.5), "layer": layer} for layer in ("layer4", "fc")]
    text = results_by_role(pd.DataFrame(rows), roles)
    assert text.index("### Final-layer neurons") < text.index("### Hidden neurons")
    assert "(`m` fc)" in text and "(`m` layer4)" in text
