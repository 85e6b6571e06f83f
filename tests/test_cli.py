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


# --- `www sql`, `www image` and the help, in a subprocess against a real catalog ---------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture_data() -> Path:
    """Every declared table, small (tests/fixture_warehouse.py), with its catalog; read only."""
    from tests.fixture_warehouse import shared_fixture_data

    return shared_fixture_data()


def www(data: Path, *args: str, pipe_to: list[str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m www_assets.cli ARGS` on `data` (stdout through `pipe_to`, e.g. head, if given)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WWW_DATA_DIR": str(data)}
    command = [sys.executable, "-m", "www_assets.cli", *args]
    if pipe_to is None:
        return subprocess.run(command, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=120)
    producer = subprocess.Popen(command, cwd=cwd or REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.run(pipe_to, stdin=producer.stdout, capture_output=True, timeout=120)
    producer.stdout.close()  # the reader has exited: the producer's next write meets a closed pipe
    stderr = producer.stderr.read().decode()
    producer.stderr.close()
    return subprocess.CompletedProcess(command, producer.wait(timeout=120), reader.stdout.decode(), stderr)


@pytest.mark.parametrize("query", ["", "-- hi"])
def test_an_empty_query_gets_one_line(fixture_data, query):
    result = www(fixture_data, "sql", query)
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "the query is empty" in result.stderr


@pytest.mark.parametrize("query", ["   ", "/* nothing */ ;", "-- one\n-- two\n"])
def test_blanks_and_comments_alone_are_empty_too(fixture_data, monkeypatch, capsys, query):
    from www_assets.cli import main

    monkeypatch.setenv("WWW_DATA_DIR", str(fixture_data))
    assert main(["sql", query]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "the query is empty" in captured.err


def test_a_syntax_error_is_one_line(fixture_data):
    result = www(fixture_data, "sql", "selec 1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("www sql: Parser Error")


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_piping_into_head_exits_quietly(fixture_data, fmt):
    # concept_scores holds 30,720 rows here (2 models x 2 concept sets x 7,680): far more than
    # the pipe's buffer (64 KiB), so the writer meets the closed pipe
    result = www(fixture_data, "sql", "select * from concept_scores", "--format", fmt, "--limit", "0",
                 pipe_to=["head", "-n", "2"])
    assert result.stdout.count("\n") == 2
    assert result.stderr == ""  # no BrokenPipeError, no "Exception ignored" line
    assert result.returncode == 141  # as a shell reports a process ended by SIGPIPE


def test_json_ends_with_a_newline(fixture_data):
    result = www(fixture_data, "sql", "select model, count(*) as n from predictions group by model order by model",
                 "--format", "json")
    assert result.returncode == 0 and result.stdout.endswith("]\n")
    # 13 probe images per model in the fixture
    assert json.loads(result.stdout) == [{"model": "world-cnn", "n": 13}, {"model": "world-vit", "n": 13}]


def test_the_table_format_prints_a_page_and_says_what_it_left_out(fixture_data):
    from www_assets.cli import PAGE_ROWS

    result = www(fixture_data, "sql", "select neuron from class_shapley where model = 'world-cnn' order by class_id, neuron")
    lines = result.stdout.splitlines()
    # 24 classes x 64 neurons = 1,536 rows; a header, PAGE_ROWS rows, the line on the rest
    assert len(lines) == 1 + PAGE_ROWS + 1
    assert lines[-1].startswith(f"({1536 - PAGE_ROWS:,} more row(s) not shown, 1,536 in all")
    limited = www(fixture_data, "sql", "select neuron from class_shapley where model = 'world-cnn'", "--limit", "3")
    assert len(limited.stdout.splitlines()) == 1 + 3 + 1
    everything = www(fixture_data, "sql", "select neuron from class_shapley where model = 'world-cnn'", "--limit", "0")
    assert len(everything.stdout.splitlines()) == 1 + 1536
    # csv and json print every row unless --limit is given
    csv = www(fixture_data, "sql", "select neuron from class_shapley where model = 'world-cnn'", "--format", "csv")
    assert len(csv.stdout.splitlines()) == 1 + 1536


def test_long_lists_are_cut_in_the_table_format_only(fixture_data):
    query = "select 7 as id, range(100) as xs, repeat('w', 200) as text"
    table = www(fixture_data, "sql", query)
    row = table.stdout.splitlines()[1]
    assert "[0, 1, 2," in row and "… +" in row and len(row) < 130  # the full list alone is 390 characters
    cut = int(row.split("… +")[1].split("]")[0])
    shown = row.split("[")[1].split(", …")[0].split(", ")
    assert len(shown) + cut == 100 and shown[-1] == str(len(shown) - 1)
    assert "w" * 47 + "…" in row and "w" * 48 not in row
    full = json.loads(www(fixture_data, "sql", query, "--format", "json").stdout)
    assert full == [{"id": 7, "xs": list(range(100)), "text": "w" * 200}]


def _subcommand_paths(parser, prefix=()):
    """Every (sub)command path of the parser, discovered from its subparsers."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield (*prefix, name), child, helps.get(name)
                yield from _subcommand_paths(child, (*prefix, name))


def test_every_subcommand_has_help_and_prints_its_own(capsys):
    import argparse

    from www_assets.cli import build_parser, main

    paths = list(_subcommand_paths(build_parser()))
    assert {("sql",), ("catalog", "tables"), ("image",), ("models", "prune")} <= {p for p, _, _ in paths}
    for path, parser, help_line in paths:
        assert help_line, f"`www {' '.join(path)}` has no help line in its parent's list"
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: www {' '.join(path)} "), f"`www {' '.join(path)} --help` printed another usage"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"`www {' '.join(path)}`: {action.dest} has no help"
            for choice in action.choices or ():
                assert str(choice) in action.help, f"`www {' '.join(path)}`: choice {choice!r} of {action.dest} is not described"


def test_sql_help_describes_the_language_and_the_sandbox(capsys):
    from www_assets.cli import main

    with pytest.raises(SystemExit):
        main(["sql", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("DuckDB's SQL", "SELECT", "`www catalog tables`", "`www tables`", "read-only",
                   "data/warehouse/", "refused"):
        assert needle in text


def test_image_writes_the_probe_pixels(fixture_data, tmp_path):
    import numpy as np
    from PIL import Image

    out = tmp_path / "pixels.png"
    result = www(fixture_data, "image", "probe/000884", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out} (16 x 16 px; world:probe#884")
    pixels = np.asarray(Image.open(out))
    # the fixture's image i has red = i mod 256 (884 mod 256 = 116) and a blue top half
    assert pixels.shape == (16, 16, 3)
    assert (pixels[..., 0] == 116).all() and (pixels[:8, :, 2] == 200).all() and (pixels[8:, :, 2] == 0).all()
    scaled = www(fixture_data, "image", "probe/000884", "--scale", "3", cwd=tmp_path)
    assert scaled.returncode == 0 and np.asarray(Image.open(tmp_path / "probe_000884.png")).shape == (48, 48, 3)


@pytest.mark.parametrize("image_id", ["probe/000885", "test/000001", "../../etc/passwd", "x' or '1'='1"])
def test_image_refuses_ids_outside_the_probe_sets(fixture_data, tmp_path, monkeypatch, capsys, image_id):
    from www_assets.cli import main

    monkeypatch.setenv("WWW_DATA_DIR", str(fixture_data))
    assert main(["image", image_id, "--out", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "x.png").exists()
    assert captured.err.count("\n") == 1 and "is not in any model's probe set" in captured.err


def test_image_of_an_image_folder(www_data_dir, register_model, tmp_path):
    import numpy as np
    from PIL import Image

    from tests.fixture_warehouse import table_frame
    from www_resources.storage import Catalog, Warehouse

    data = www_data_dir
    (data / "images" / "boat").mkdir(parents=True)
    register_model("m", probe_set="imagefolder:images")  # input 32 x 32, shorter side resized to 32
    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[:, :20] = (10, 200, 30)
    Image.fromarray(pixels).save(data / "images" / "boat" / "b 1.png")
    frame = table_frame("probe_images", "m").head(1).assign(
        probe_set="imagefolder:images", image_id="boat/b 1.png", path=str(data / "images" / "boat" / "b 1.png"),
        label_name="boat")
    warehouse = Warehouse(data / "warehouse")
    warehouse.write("probe_images", frame, {"model": "m"})
    Catalog(data / "www.duckdb", warehouse).rebuild()
    result = www(data, "image", "boat/b 1.png", "--out", str(tmp_path / "b.png"))
    assert result.returncode == 0, result.stderr
    assert (np.asarray(Image.open(tmp_path / "b.png")) == pixels).all()  # the file's own pixels, 40 x 30
    framed = www(data, "image", "boat/b 1.png", "--framed", "--out", str(tmp_path / "f.png"))
    assert framed.returncode == 0, framed.stderr
    seen = np.asarray(Image.open(tmp_path / "f.png"))
    # 40 x 30 -> shorter side to 32: 43 x 32 (40 * 32 / 30 = 42.7); centre crop 32 from x = (43 - 32) // 2 = 5:
    # the green left half (x < 20, i.e. < 21.3 resized) ends near x = 16 of the crop
    assert seen.shape == (32, 32, 3)
    assert (seen[:, :14] == (10, 200, 30)).all() and (seen[:, 19:] == 0).all()
