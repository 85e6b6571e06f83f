"""The README's examples are correct as written: every fenced `bash` block is marked runnable or
not runnable (with the reason), and the runnable ones run, as written, on a small fixture
warehouse (tests/fixture_warehouse.py): each exits 0 without a traceback, and each `www sql`
query in them answers with rows and no row twice. The README's other claims about names (the
asset groups, the partition keys of its UI links, the method table) are checked against the
code."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# importing the definitions makes dagster's own code warn (its pydantic layer, its conversion of
# observable source assets); neither is raised by this project's code
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20",
                                        "ignore:Property `OpDefinition.version` is deprecated:DeprecationWarning")
RUNNABLE = "<!-- runnable"
NOT_RUNNABLE = "<!-- not runnable: "
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\S*)\s*$")


def bash_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, marker line or "", body) of every ```bash block; the marker is the line
    right above the fence."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        if match["lang"] == "bash":
            marker = lines[i - 1].strip() if i and lines[i - 1].strip().startswith("<!--") else ""
            body = "\n".join(line[len(match["indent"]):] for line in lines[i + 1:end])
            blocks.append((i + 1, marker, body))
        i = end + 1
    return blocks


def sql_queries(block: str) -> list[str]:
    """The query of each `www sql` command of a block."""
    queries = []
    for command in block.replace("\\\n", " ").splitlines():
        words = shlex.split(command, comments=True)
        if len(words) > 2 and words[0].endswith("www") and words[1] == "sql":
            queries.append(words[2])
    return queries


BLOCKS = bash_blocks(README.read_text())
RUNNABLE_BLOCKS = [(line, body) for line, marker, body in BLOCKS if marker.startswith(RUNNABLE)]


def test_every_bash_block_says_whether_it_runs():
    assert len(BLOCKS) >= 8
    unmarked = [line for line, marker, _ in BLOCKS
                if not marker.startswith(RUNNABLE) and not (marker.startswith(NOT_RUNNABLE) and len(marker) > 30)]
    assert not unmarked, (f"README.md lines {unmarked}: put `{RUNNABLE} -->` or `{NOT_RUNNABLE}<why> -->` on the line "
                          "above the ```bash fence")
    assert len(RUNNABLE_BLOCKS) >= 3


def test_the_parser_finds_the_queries():
    block = 'www sql "select 1" --format csv  # a comment\n.venv/bin/www sql \\\n  "select \'a b\'"\nmake x'
    assert sql_queries(block) == ["select 1", "select 'a b'"]


@pytest.fixture(scope="module")
def fixture_data() -> Path:
    """Every declared table, small (tests/fixture_warehouse.py), with its catalog; read only."""
    from tests.fixture_warehouse import shared_fixture_data

    return shared_fixture_data()


@pytest.mark.parametrize("line, block", RUNNABLE_BLOCKS, ids=[f"line{line}" for line, _ in RUNNABLE_BLOCKS])
def test_runnable_block_runs_as_written(fixture_data, tmp_path, line, block):
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # the commands say .venv/bin/www
    env = {**os.environ, "PYTHONPATH": str(REPO), "WWW_DATA_DIR": str(fixture_data)}
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README.md line {line}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("query", [q for _, body in RUNNABLE_BLOCKS for q in sql_queries(body)])
def test_readme_query_answers_without_repeating_a_row(fixture_data, monkeypatch, query):
    from www_resources.storage import Catalog, Warehouse

    catalog = Catalog(fixture_data / "www.duckdb", Warehouse(fixture_data / "warehouse"))
    answer = catalog.query(query)
    assert len(answer), f"no rows on the fixture warehouse: {query}"
    hashable = answer.map(lambda v: tuple(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)
    repeated = hashable[hashable.duplicated(keep=False)]
    assert repeated.empty, f"{query}\nshows these rows more than once (a partition column left free?):\n{repeated}"


def _asset_groups() -> dict[str, str]:
    """asset key -> group name, over the definitions' assets and source assets."""
    from www_assets.definitions import defs

    groups = {}
    for definition in defs.assets:
        if hasattr(definition, "group_names_by_key"):
            groups.update({k.to_user_string(): g for k, g in definition.group_names_by_key.items()})
        else:
            groups[definition.key.to_user_string()] = definition.group_name
    return groups


def test_the_readme_names_the_asset_groups_of_the_code():
    groups = _asset_groups()
    text = " ".join(README.read_text().split())
    listed = re.search(r"see the graph \(groups: ([^)]*)\)", text)
    assert listed, "the README's UI section lists the asset groups as `(groups: a, b, ...)`"
    assert {g.strip() for g in listed[1].split(",")} == set(groups.values())
    # the group the class-concept pictures live in, as the UI shows it
    assert groups["class_concept_crops"] == "why_class" and "group `why_class`" in text


def test_the_readme_ui_links_pin_real_partitions():
    """Each UI link of the README names an asset and a key of its partitions' form (a multi key
    lists the dimensions by name, as Dagster does), with models and concept sets of data/."""
    import dagster as dg

    from www_assets.definitions import defs
    from www_resources.registry import scan_models

    links = re.findall(r"<(http://127\.0\.0\.1:3000/assets/[^>]+)>", README.read_text())
    assert len(links) >= 3
    registry = scan_models(REPO / "data" / "models").entries
    values = {"model": set(registry), "concept_set": {c for e in registry.values() for c in e.concept_sets}}
    for link in links:
        url = urlparse(link)
        asset = url.path.removeprefix("/assets/")
        query = parse_qs(url.query)
        assert query["view"] == ["partitions"], link
        key = unquote(query["partition"][0])
        partitions = defs.resolve_assets_def(asset).partitions_def
        if isinstance(partitions, dg.MultiPartitionsDefinition):
            names = [d.name for d in partitions.partitions_defs]
            parts = key.split("|")
            assert len(parts) == len(names), link
            for name, part in zip(names, parts):
                assert part in values[name], f"{link}: {part!r} is no {name}"
            assert str(dg.MultiPartitionKey(dict(zip(names, parts)))) == key
        else:
            assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "models", link
            assert key in values["model"], link


def test_the_readme_method_table_is_the_code_s():
    from www_assets.methods.concept_scoring import METHODS
    from www_assets.methods.tables import METHOD_LABELS, methods_markdown

    assert set(METHOD_LABELS) == set(METHODS), "every method needs a display label (methods/tables.py)"
    section = README.read_text().split("<!-- methods:start -->")[1].split("<!-- methods:end -->")[0].strip()
    assert section == methods_markdown(), "README's method table is stale: paste the output of `www methods`"
