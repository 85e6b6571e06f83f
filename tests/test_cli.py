"""The `www results` splice: the README section between the markers is replaced, nothing else."""

import pytest

from www_assets.cli import RESULTS_END, RESULTS_START, main, splice_results


def test_splice_replaces_only_the_marked_section():
    readme = f"# T\n\nintro\n{RESULTS_START}\nold table\nold line\n{RESULTS_END}\n\n## After\ntext\n"
    out = splice_results(readme, "\n| a | b |\n|---|---|\n")
    assert out == f"# T\n\nintro\n{RESULTS_START}\n| a | b |\n|---|---|\n{RESULTS_END}\n\n## After\ntext\n"
    # splicing twice gives the same text
    assert splice_results(out, "| a | b |\n|---|---|") == out


@pytest.mark.parametrize("readme", ["no markers", f"{RESULTS_START}\nx\n", f"{RESULTS_START}{RESULTS_END}{RESULTS_START}{RESULTS_END}"])
def test_splice_needs_one_pair_of_markers(readme):
    with pytest.raises(ValueError, match="exactly one"):
        splice_results(readme, "x")


def test_results_command_writes_the_readme(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from www_resources.storage import default_catalog, default_warehouse

    monkeypatch.setenv("WWW_DATA_DIR", str(tmp_path / "data"))
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{RESULTS_START}\n{RESULTS_END}\nb\n")
    assert main(["results", "--readme", str(readme)]) == 2  # nothing evaluated yet
    assert "materialize evaluation_summary" in capsys.readouterr().err
    warehouse = default_warehouse()
    rows = [("m", "c", "fc", method, metric, mean, 0.01, 4, 4, None, None)
            for method, mean in (("www", 0.9), ("clip_dissect", 0.8)) for metric in ("clip_cos", "text_cos", "f1", "hit")]
    warehouse.write("evaluation_summary", pd.DataFrame(rows, columns=[
        "model", "concept_set", "layer", "method", "metric", "mean", "stderr", "n", "n_candidates",
        "p_value_vs_clip_dissect", "p_value_vs_www"]), {})
    warehouse.write("misprediction_detection", pd.DataFrame({
        "score": ["heatmap_similarity", "msp"], "auroc": [0.7, 0.9], "ci_low": [0.6, 0.85], "ci_high": [0.8, 0.95],
        "mean_correct": [0.9, 0.95], "mean_mispredicted": [0.8, 0.6], "n": [100, 100], "n_mispredicted": [10, 10]}),
        {"model": "m"})
    default_catalog().rebuild()
    assert main(["results", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"a\n{RESULTS_START}\n") and text.endswith(f"\n{RESULTS_END}\nb\n")
    # an unregistered model keeps its layer name as the section title
    assert "### Layer fc (`m` fc)" in text
    assert "| `c` | CLIP-Dissect | 0.8000 ± 0.010 |" in text and "| WWW | **0.9000 ± 0.010** |" in text
    assert "| `m` | 0.7000 | **0.9000** | 100 | 10 |" in text
    assert "- `m`: the max softmax probability detects mispredictions better (AUROC 0.9000 vs 0.7000)." in text
    assert ("- `m`: AUROC with 95 % bootstrap interval: heatmap similarity 0.7000 [0.6000, 0.8000]; "
            "max softmax probability 0.9000 [0.8500, 0.9500].") in text
    assert "Trained models" not in text  # no model_training table in the catalog
    assert main(["results", "--model", "other"]) == 0  # a model filter leaves the tables empty
    printed = capsys.readouterr().out
    assert "No evaluation has been computed yet." in printed and "`m`" not in printed


def test_readme_table_reference_matches_the_table_specs(capsys):
    from pathlib import Path

    assert main(["tables"]) == 0
    printed = capsys.readouterr().out.strip()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("<!-- tables:start -->")[1].split("<!-- tables:end -->")[0].strip()
    assert section == printed, "README's table reference is stale: paste the output of `www tables`"
