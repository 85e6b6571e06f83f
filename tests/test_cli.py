"""The `www results` splice: the README section between the markers is replaced, nothing else."""

import pytest

from www_resources.cli import RESULTS_END, RESULTS_START, main, splice_results


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
    monkeypatch.setenv("WWW_DATA_DIR", str(tmp_path / "data"))
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{RESULTS_START}\n{RESULTS_END}\nb\n")
    assert main(["results", "--readme", str(readme)]) == 2  # nothing evaluated yet
    assert "materialize evaluation_summary" in capsys.readouterr().err
    (tmp_path / "data" / "artifacts").mkdir(parents=True)
    (tmp_path / "data" / "artifacts" / "results.md").write_text("## Results\n\nwww wins\n")
    assert main(["results", "--readme", str(readme)]) == 0
    assert readme.read_text() == f"a\n{RESULTS_START}\n## Results\n\nwww wins\n{RESULTS_END}\nb\n"


def test_readme_table_reference_matches_the_table_specs(capsys):
    from pathlib import Path

    assert main(["tables"]) == 0
    printed = capsys.readouterr().out.strip()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("<!-- tables:start -->")[1].split("<!-- tables:end -->")[0].strip()
    assert section == printed, "README's table reference is stale: paste the output of `www tables`"
