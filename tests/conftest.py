"""Shared fixtures: a throw-away data folder and registry, and a throw-away Dagster instance.

    www_data_dir      tmp data folder; WWW_DATA_DIR points to it
    register_model    writes a registry file there (and concept_sets.yaml entries)
    dagster_home      tmp DAGSTER_HOME holding a copy of the project's dagster.yaml
    dagster_instance  the persistent DagsterInstance of that home (sqlite; sensors need one)
"""

import shutil
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def www_data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data folder with an empty registry folder `models/`, used through the env."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    monkeypatch.setenv("WWW_DATA_DIR", str(data))
    return data


@pytest.fixture
def register_model(www_data_dir):
    """`register_model(name, concept_sets=("tiny",), **fields)` writes `models/<name>.yaml`.

    The defaults describe a small torchvision model on an image folder; every concept set named
    is added to `concept_sets.yaml` as `file:concepts-<set>.txt` unless it is there already.
    Returns the registry file's path.
    """

    def write(name: str, concept_sets=("tiny",), **fields) -> Path:
        entry = {
            "name": name,
            "model": "torchvision:resnet18?weights=none&num_classes=3",
            "layers": ["layer4", "fc"],
            "head": "fc",
            "spatial_layer": "layer4",
            "final_layer": "fc",
            "preprocessing": {"size": 32, "resize": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
            "probe_set": "imagefolder:probe",
            "concept_sets": list(concept_sets),
            "clip": "openclip:ViT-B-32?pretrained=openai",
            **fields,
        }
        if entry["probe_set"] == "imagefolder:probe":
            (www_data_dir / "probe").mkdir(exist_ok=True)  # the registry checks that it exists
        path = www_data_dir / "models" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(entry, sort_keys=False))
        sets_file = www_data_dir / "concept_sets.yaml"
        sets = yaml.safe_load(sets_file.read_text()) if sets_file.exists() else {}
        for concept_set in concept_sets:
            sets.setdefault(concept_set, f"file:concepts-{concept_set}.txt")
        sets_file.write_text(yaml.safe_dump(sets, sort_keys=True))
        return path

    return write


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A fresh DAGSTER_HOME with the project's instance settings (pools, run monitoring)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def dagster_instance(dagster_home):
    """The persistent (sqlite) instance of `dagster_home`, disposed after the test."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()
