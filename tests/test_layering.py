"""The house rules that a reader cannot see at a glance: Dagster's public API only, layers that
only point down (import-linter contracts in pyproject.toml), the lint rules (ruff), one data root."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ["www_assets", "www_resources", "tests", "benchmarks"]


def _python_files():
    for folder in CODE:
        yield from sorted((ROOT / folder).rglob("*.py"))


def private_dagster_imports(source: str) -> list[str]:
    """`dagster._...` modules, or underscore names from dagster, that a source file imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dagster._")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("dagster._"):
                found.append(node.module)
            elif node.module == "dagster":
                found += [f"dagster.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_the_detector_finds_private_imports():
    assert private_dagster_imports("import dagster._core.x\nfrom dagster._utils import y\nfrom dagster import _z") == [
        "dagster._core.x", "dagster._utils", "dagster._z"]
    assert private_dagster_imports("import dagster as dg\nfrom dagster import asset\nimport dagster_shared") == []


def test_no_module_uses_dagsters_private_api():
    offenders = {}
    for path in _python_files():
        if path.name == "test_layering.py":
            continue
        text = path.read_text()
        found = private_dagster_imports(text)
        if path.relative_to(ROOT).parts[0] in ("www_assets", "www_resources"):
            # the product's code must not even name a private path (`grep -rn "dagster\._"` finds nothing)
            found += [line.strip() for line in text.splitlines() if "dagster._" in line]
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, f"Dagster's private API in use: {offenders}"


def _tool(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[test]'")
    return path


def test_import_contracts_hold():
    """www_resources never imports www_assets; methods and figures stay plain; www_assets layers
    point down (pyproject.toml, [tool.importlinter]); lazy imports count too."""
    result = subprocess.run([str(_tool("lint-imports"))], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_import_contracts_catch_upward_imports(tmp_path):
    """The contracts are not vacuous: a copy of the code with a lazy import of the runner in an
    asset module, and of www_assets in www_resources, breaks two of them."""
    import shutil

    for package in ("www_assets", "www_resources"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "www_assets" / "world.py", "a") as f:
        f.write("\n\ndef _sneaky():\n    from www_assets import runner  # noqa\n")
    with open(tmp_path / "www_resources" / "paths.py", "a") as f:
        f.write("\n\ndef _sneaky():\n    import www_assets.common  # noqa\n")
    result = subprocess.run([str(_tool("lint-imports"))], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    # each sneaky import breaks its own contract (the second may break more, through the modules
    # that import www_resources.paths), and the report names the upward import
    assert "never imports www_assets BROKEN" in result.stdout, result.stdout[-3000:]
    assert "www_resources.paths -> www_assets.common" in result.stdout
    assert "www_assets.world -> www_assets.runner" in result.stdout


def test_ruff_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_one_data_root(tmp_path, monkeypatch):
    """The resources and the `www` command resolve every folder from `$WWW_DATA_DIR` alone."""
    from www_resources import paths
    from www_resources.dagster_resources import ParquetIOManager, WarehouseResource

    monkeypatch.setenv("WWW_DATA_DIR", str(tmp_path / "elsewhere"))
    resource = WarehouseResource()
    assert "data_dir" not in WarehouseResource.model_fields and "data_dir" not in ParquetIOManager.model_fields
    assert resource.warehouse.root == tmp_path / "elsewhere" / "warehouse" == paths.warehouse_dir()
    assert resource.catalog.path == tmp_path / "elsewhere" / "www.duckdb"
    assert resource.artifacts == tmp_path / "elsewhere" / "artifacts"
    assert paths.models_dir() == tmp_path / "elsewhere" / "models"
