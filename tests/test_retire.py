"""Removing a model: delete its registry file, and it leaves the `models` dimension (sensor and
`www materialize`), `www models prune` moves its warehouse files aside (saying what it moves),
and the cross-model tables run again without it."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from tests.test_orchestration import fake_definitions, launched
from www_assets import orchestration, runner
from www_assets.cli import main
from www_resources.storage import Warehouse

pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning", "ignore::dagster.BetaWarning")


def test_the_sensor_retires_the_partition_of_a_deleted_file(dagster_instance, register_model, www_data_dir):
    register_model("keep", concept_sets=["tiny"])
    register_model("gone", concept_sets=["tiny"])
    dagster_instance.add_dynamic_partitions("models", ["keep", "gone"])
    (www_data_dir / "models" / "gone.yaml").unlink()
    result = orchestration.model_registry_sensor(dg.build_sensor_context(instance=dagster_instance))
    requests = [(type(r).__name__, r.partitions_def_name, tuple(r.partition_keys))
                for r in result.dynamic_partitions_requests]
    assert ("DeleteDynamicPartitionsRequest", "models", ("gone",)) in requests
    assert not any("Add" in kind and "models" == name for kind, name, _ in requests)


def test_deleting_a_model_file_retires_it_and_prune_moves_its_files(dagster_instance, register_model, www_data_dir,
                                                                     capsys):
    register_model("keep", concept_sets=["tiny"])
    register_model("gone", concept_sets=["tiny"])
    warehouse = Warehouse(www_data_dir / "warehouse")
    rows = pd.DataFrame({"layer": ["fc"], "image_id": ["a"], "vector": [np.ones(3, np.float32)]})
    for model in ("keep", "gone"):
        warehouse.write("activations", rows, {"model": model})
    defs = fake_definitions(with_sources=True)
    first = runner.materialize(defs=defs, instance=dagster_instance, log=lambda _: None)
    assert first.failed == [] and ("evaluation_summary", "-") in launched(first)

    (www_data_dir / "models" / "gone.yaml").unlink()
    logs = []
    retired = runner.materialize(defs=defs, instance=dagster_instance, log=logs.append)
    assert "retired models ['gone']" in logs[0]
    assert dagster_instance.get_dynamic_partitions("models") == ["keep"]
    assert retired.launched == []  # its files are still in the warehouse: the summary would read them

    assert main(["models", "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would move" in out and "activations/model=gone" in out and "model=keep" not in out
    assert (www_data_dir / "warehouse" / "activations" / "model=gone").is_dir()

    assert main(["models", "prune"]) == 0
    out = capsys.readouterr().out
    assert "moving " in out and "moved 1 folder(s) of ['gone']" in out
    assert not (www_data_dir / "warehouse" / "activations" / "model=gone").exists()
    moved = list((www_data_dir / "retired").glob("*/activations/model=gone/**/data.parquet"))
    assert len(moved) == 1
    assert (www_data_dir / "warehouse" / "activations" / "model=keep").is_dir()

    # the cross-model table runs again, once, without the model; nothing else runs
    after = runner.materialize(defs=defs, instance=dagster_instance, log=lambda _: None)
    assert launched(after) == [("evaluation_summary", "-")]
    assert main(["models", "prune"]) == 0 and "nothing to prune" in capsys.readouterr().out
