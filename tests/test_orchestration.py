"""The orchestration policy, exercised in-process on small fake assets.

The fake graph has the product's shapes (a world table, model-partitioned assets, model x
concept-set assets, a cross-model table, a partitioned check) and gets its conditions from
`with_automation` / `check_condition`, so these tests run the real policy without training a
model. `Simulation` plays the automation daemon: evaluate a tick, run what it requested (one run
per partition key, the way the sensor groups requests), repeat until a tick requests nothing.
"""


from collections import defaultdict

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from www_assets import orchestration, runner
from www_assets.checks import (
    accuracy_target_misses,
    activation_problems,
    grain_duplicates,
    non_finite_counts,
    parquet_vector_widths,
    table_checks,
)
from www_assets.orchestration import ConfiguredPartitions, check_condition, read_configured, with_automation
from www_assets.partitions import (
    clip_concepts,
    clip_key,
    clip_probes,
    clips,
    concept_sets,
    model_concepts,
    models,
    probe_key,
    probe_sets,
    shared_partitions,
)
from www_resources.registry import RegistryError, get_model
from www_resources.storage import Warehouse

ASSETS_M = ["probe_images", "activations", "class_shapley"]  # partitioned by model
ASSETS_MC = ["concept_scores", "concept_eval"]  # model x concept set
ACT_CHECK = "activations:activations_ok"

# partitioned checks and the automation tester's selection are preview/beta APIs (dagster is pinned)
pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning", "ignore::dagster.BetaWarning")


def fake_definitions(code_versions: dict[str, str] | None = None, fail_for: set[str] = frozenset(),
                     with_sources: bool = False) -> dg.Definitions:
    """world_scenes -> probe_images -> activations -> {class_shapley, concept_scores -> concept_eval}
    -> evaluation_summary, with a partitioned check on activations; `fail_for` models make
    probe_images raise; `with_sources` adds the configuration sources as in the real definitions."""
    versions = {"world_scenes": "1", "evaluation_summary": "1", **{k: "1" for k in ASSETS_M + ASSETS_MC}}
    versions.update(code_versions or {})

    @dg.asset(code_version=versions["world_scenes"])
    def world_scenes() -> None: ...

    @dg.asset(partitions_def=models, deps=[world_scenes], code_version=versions["probe_images"])
    def probe_images(context: dg.AssetExecutionContext) -> None:
        if context.partition_key in fail_for:
            raise RuntimeError(f"probe set of {context.partition_key} is unreadable")

    @dg.asset(partitions_def=models, deps=[probe_images], code_version=versions["activations"])
    def activations() -> None: ...

    @dg.asset(partitions_def=models, deps=[activations], code_version=versions["class_shapley"])
    def class_shapley() -> None: ...

    @dg.asset(partitions_def=model_concepts, deps=[activations], code_version=versions["concept_scores"])
    def concept_scores() -> None: ...

    @dg.asset(partitions_def=model_concepts, deps=[concept_scores], code_version=versions["concept_eval"])
    def concept_eval() -> None: ...

    @dg.asset(deps=[concept_eval], code_version=versions["evaluation_summary"])
    def evaluation_summary() -> None: ...

    @dg.asset_check(asset=activations, partitions_def=models, automation_condition=check_condition())
    def activations_ok() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    assets = [world_scenes, probe_images, activations, class_shapley, concept_scores, concept_eval,
              evaluation_summary]
    if with_sources:
        from www_assets.sources import SOURCE_ASSETS
        from www_assets.sources import with_sources as add_sources

        return dg.Definitions(assets=[*SOURCE_ASSETS, *with_automation(add_sources(assets))],
                              asset_checks=[activations_ok])
    return dg.Definitions(assets=with_automation(assets), asset_checks=[activations_ok])


def get_model_or_none(name: str):
    try:
        return get_model(name)
    except RegistryError:
        return None


def pair(model: str, concept_set: str) -> str:
    return str(dg.MultiPartitionKey({"model": model, "concept_set": concept_set}))


def clip_pair(clip: str, concept_set: str) -> str:
    return str(dg.MultiPartitionKey({"clip": clip, "concept_set": concept_set}))


def chain(model: str, concept_set: str, assets_m=ASSETS_M, assets_mc=ASSETS_MC, check=True) -> set:
    """The (entity, partition) pairs of one model's chain."""
    out = {(a, model) for a in assets_m} | {(a, pair(model, concept_set)) for a in assets_mc}
    return out | ({(ACT_CHECK, model)} if check else set())


class Simulation:
    """The automation daemon in miniature (see the module docstring), through the engine's own
    pieces: evaluate a tick, group its requests into runs (`runner.requested_runs`), run them
    (`runner.execute_run`)."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions):
        self.instance, self.defs, self.cursor = instance, defs, None

    def runs(self) -> list[runner.TickRun]:
        result = runner.evaluate(self.defs, self.instance, self.cursor)
        self.cursor = result.cursor
        return runner.requested_runs(result, runner.dependency_order(self.defs))

    def tick(self) -> set[tuple[str, str | None]]:
        return entities(self.runs())

    def settle(self, max_ticks: int = 8) -> list[set]:
        """Ticks (running each tick's requests) until one requests nothing; returns every tick's requests."""
        ticks = []
        for _ in range(max_ticks):
            runs = self.runs()
            if not runs:
                return ticks
            ticks.append(entities(runs))
            for run in runs:
                runner.execute_run(self.defs, run, self.instance, {})
        raise AssertionError(f"automation did not settle in {max_ticks} ticks: {ticks}")


def entities(runs) -> set[tuple[str, str | None]]:
    """(asset or "asset:check", partition key) of every entity of the runs."""
    out = set()
    for run in runs:
        out |= {(k.to_user_string(), run.partition_key) for k in run.assets}
        out |= {(f"{k.asset_key.to_user_string()}:{k.name}", run.partition_key) for k in run.checks}
    return out


def add_partitions(instance, model_keys=(), set_keys=()):
    if model_keys:
        instance.add_dynamic_partitions(models.name, list(model_keys))
        # the shared CLIP partitions of the registered ones, as the registry sync adds them
        shared = shared_partitions({m: get_model(m) for m in model_keys if get_model_or_none(m)})
        instance.add_dynamic_partitions(clips.name, sorted({c for _, c, _ in shared}))
        instance.add_dynamic_partitions(probe_sets.name, sorted({p for _, _, p in shared}))
    if set_keys:
        instance.add_dynamic_partitions(concept_sets.name, list(set_keys))


def settle_models(register_model, configured: dict[str, list[str]], set_keys=("tiny", "other"), fields=None,
                  **kwargs):
    """Register `configured` (model -> concept sets; image-folder models unless `fields` says
    otherwise), add their partitions (plus every concept set of `set_keys`) and let automation
    materialize everything."""
    for name, sets in configured.items():
        register_model(name, concept_sets=sets, **(fields or {}))
    instance = dg.DagsterInstance.ephemeral()
    add_partitions(instance, list(configured), set_keys)
    sim = Simulation(instance, fake_definitions(**kwargs))
    return sim, sim.settle()


def test_fresh_install_materializes_configured_partitions_once(register_model):
    sim, ticks = settle_models(register_model, {"m1": ["tiny"]}, fields={"probe_set": "world:probe"})
    everything = set().union(*ticks)
    # the concept set `other` is a partition too, but m1 does not list it: no (m1, other) run
    assert everything == {("world_scenes", None), ("evaluation_summary", None)} | chain("m1", "tiny")
    # parents before children (m1 lives in the world: the world first); the cross-model table last, once
    assert ticks[0] == {("world_scenes", None)}
    assert ticks[-1] == {("evaluation_summary", None)}
    # (a) nothing changed: later ticks request nothing
    assert sim.tick() == set()
    assert sim.tick() == set()


def test_registry_changes_request_only_the_changed_models_partitions(register_model, www_data_dir):
    sim, ticks = settle_models(register_model, {"m1": ["tiny"]})
    # no registered model lives in the embedded world: it is not generated (as in `www materialize`)
    assert set().union(*ticks) == chain("m1", "tiny") | {("evaluation_summary", None)}
    # (b) a new model: its own chain and the cross-model table, nothing of m1
    register_model("m2", concept_sets=["other"])
    add_partitions(sim.instance, ["m2"])
    assert set().union(*sim.settle()) == chain("m2", "other") | {("evaluation_summary", None)}
    # a partition without a registry file, and a file gone bad: nothing runs for either
    add_partitions(sim.instance, ["ghost"])
    (www_data_dir / "models" / "m1.yaml").write_text("name: m1\nlayers: [\n")
    assert sim.settle() == []


@pytest.mark.parametrize(
    "bumped, expected",
    [
        ("activations", {"activations", "class_shapley", "concept_scores", "concept_eval", "evaluation_summary"}),
        ("concept_scores", {"concept_scores", "concept_eval", "evaluation_summary"}),
    ],
)
def test_code_version_bump_requests_exactly_its_descendants(register_model, bumped, expected):
    sim, _ = settle_models(register_model, {"m1": ["tiny"], "m2": ["tiny", "other"]})
    sim.defs = fake_definitions({bumped: "2"})
    everything = set().union(*sim.settle())
    configured_keys = {
        "activations": ["m1", "m2"], "class_shapley": ["m1", "m2"],
        "concept_scores": [pair("m1", "tiny"), pair("m2", "tiny"), pair("m2", "other")],
        "concept_eval": [pair("m1", "tiny"), pair("m2", "tiny"), pair("m2", "other")],
        "evaluation_summary": [None],
    }
    assets = {(entity, key) for entity, key in everything if ":" not in entity}
    assert assets == {(a, k) for a in expected for k in configured_keys[a]}
    # the activations check re-runs exactly where activations changed
    checks = {(entity, key) for entity, key in everything if ":" in entity}
    assert checks == ({(ACT_CHECK, "m1"), (ACT_CHECK, "m2")} if bumped == "activations" else set())


def test_failed_partition_is_not_retried_every_tick_and_holds_back_the_summary(register_model):
    sim, ticks = settle_models(register_model, {"good": ["tiny"], "bad": ["tiny"]}, set_keys=["tiny"], fail_for={"bad"})
    assert chain("good", "tiny") <= set().union(*ticks)
    materialized = {
        (a, k) for a in ASSETS_M + ASSETS_MC + ["evaluation_summary"]
        for k in sim.instance.get_materialized_partitions(dg.AssetKey(a)) or [None]
        if sim.instance.get_latest_materialization_event(dg.AssetKey(a))
    }
    assert not {(a, k) for a, k in materialized if k and "bad" in k}
    # the cross-model table waits for every configured model: a summary silently missing one is worse
    assert ("evaluation_summary", None) not in materialized
    assert sim.tick() == set()  # the failure waits for a fix (or the schedule), it is not retried


def test_configured_partitions_follow_the_registry(register_model, www_data_dir):
    register_model("a", concept_sets=["s1", "s2"])
    register_model("b", concept_sets=["s2"])
    (www_data_dir / "models" / "broken.yaml").write_text("::: not yaml")
    configured = read_configured()
    clip, probe = clip_key("openclip:ViT-B-32?pretrained=openai"), probe_key(get_model("a"))
    assert configured == ConfiguredPartitions(
        frozenset({"a", "b"}), frozenset({("a", "s1"), ("a", "s2"), ("b", "s2")}), world=False,
        shared=frozenset({("a", clip, probe), ("b", clip, probe)}))
    assert not configured.includes_asset("world_scenes") and configured.includes_asset("evaluation_summary")
    register_model("w", concept_sets=["s1"], probe_set="world:probe")
    assert read_configured().includes_asset("world_scenes")
    assert configured.keys_for(models) == {"a", "b"}
    assert configured.keys_for(concept_sets) == {"s1", "s2"}
    assert configured.keys_for(model_concepts) == {pair("a", "s1"), pair("a", "s2"), pair("b", "s2")}
    # a and b share their CLIP and probe view: one partition of each shared table for both
    assert configured.keys_for(clip_concepts) == {clip_pair(clip, "s1"), clip_pair(clip, "s2")}
    assert configured.keys_for(clip_probes) == {dg.MultiPartitionKey({"clip": clip, "probe": probe})}
    assert configured.only(["b"]).keys_for(clip_concepts) == {clip_pair(clip, "s2")}
    assert configured.keys_for(None) is None


def test_with_automation_rejects_conditions_set_in_asset_modules():
    @dg.asset(automation_condition=dg.AutomationCondition.eager())
    def self_automated() -> None: ...

    with pytest.raises(ValueError, match="self_automated sets its own automation_condition"):
        with_automation([self_automated])


# --- the registry sensor ------------------------------------------------------------------------


def test_registry_sensor_adds_partitions_and_names_the_malformed_file(dagster_instance, register_model, www_data_dir):
    register_model("good", concept_sets=["tiny"])
    bad = www_data_dir / "models" / "bad.yaml"
    bad.write_text("name: bad\nmodel: torchvision:resnet18\n")  # required fields missing
    sensor = orchestration.model_registry_sensor

    result = sensor(dg.build_sensor_context(instance=dagster_instance))
    requests = {(r.partitions_def_name, tuple(r.partition_keys)) for r in result.dynamic_partitions_requests}
    entry = get_model("good")
    assert requests == {("models", ("good",)), ("concept_sets", ("tiny",)), ("clips", (clip_key(entry.clip),)),
                        ("probe_sets", (probe_key(entry),))}
    assert str(bad) in result.cursor  # the bad file is reported (once) and remembered
    for request in result.dynamic_partitions_requests:  # what the daemon does with them
        dagster_instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    # the new model's registry file and the configuration files are observed with the partitions
    observed = {(e.asset_key.to_user_string(), e.partition) for e in result.asset_events}
    assert ("registry_file", "good") in observed and ("concept_set_spec", "tiny") in observed
    assert not any(partition == "bad" for _, partition in observed)
    for event in result.asset_events:
        dagster_instance.report_runless_asset_event(event)

    again = sensor(dg.build_sensor_context(instance=dagster_instance, cursor=result.cursor))
    assert not again.dynamic_partitions_requests
    assert not again.asset_events and "registry unchanged" in again.skip_reason.skip_message
    assert str(bad) in again.skip_reason.skip_message and "missing required field" in again.skip_reason.skip_message
    assert dagster_instance.get_dynamic_partitions("models") == ["good"]


# --- the daily retry and `www materialize` ------------------------------------------------------


def test_retry_cron_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("WWW_SCHEDULE_CRON", raising=False)
    assert orchestration.schedule_cron() == "0 3 * * *"
    monkeypatch.setenv("WWW_SCHEDULE_CRON", "*/20 * * * *")
    assert orchestration.schedule_cron() == "*/20 * * * *"
    monkeypatch.setenv("WWW_SCHEDULE_CRON", "every night")
    with pytest.raises(ValueError, match="WWW_SCHEDULE_CRON='every night' is not a cron expression"):
        orchestration.schedule_cron()


def test_automation_switch(monkeypatch):
    for value, expected in (("off", False), ("0", False), ("on", True), ("", True)):
        monkeypatch.setenv("WWW_AUTOMATION", value)
        assert orchestration.automation_enabled() is expected
    monkeypatch.setenv("WWW_AUTOMATION", "sometimes")
    with pytest.raises(ValueError, match="WWW_AUTOMATION='sometimes': use on or off"):
        orchestration.automation_enabled()


def test_failed_partition_is_retried_after_the_cron_tick(register_model, monkeypatch):
    import datetime

    monkeypatch.setenv("WWW_SCHEDULE_CRON", "0 3 * * *")
    sim, _ = settle_models(register_model, {"good": ["tiny"], "bad": ["tiny"]}, set_keys=["tiny"], fail_for={"bad"})
    now = datetime.datetime.now(datetime.timezone.utc)
    assert sim.tick() == set()
    # the first evaluation after the next 03:00 UTC retries the failed partitions, and only those
    next_3am = (now + datetime.timedelta(days=1)).replace(hour=3, minute=1, second=0, microsecond=0)
    result = runner.evaluate(sim.defs, sim.instance, sim.cursor, evaluation_time=next_3am)
    retried = entities(runner.requested_runs(result, runner.dependency_order(sim.defs)))
    # (bad's model-partitioned chain ran, and failed, as one run: the retry runs it again)
    assert retried == {("probe_images", "bad"), ("activations", "bad"), ("class_shapley", "bad"), (ACT_CHECK, "bad")}


def launched(report: runner.RunReport) -> list[tuple[str, str]]:
    """(entity, partition label) of every run of a `materialize` report, repeats kept."""
    return sorted((e, label) for label, names in report.launched for e in names)


def labelled(pairs) -> set[tuple[str, str]]:
    return {(e, "-" if k is None else str(k)) for e, k in pairs}


def test_materialize_runs_the_policy_until_nothing_is_left(dagster_instance, register_model):
    register_model("m1", concept_sets=["tiny"])
    logs = []
    report = runner.materialize(defs=fake_definitions(), instance=dagster_instance, log=logs.append)
    assert report.failed == []
    assert launched(report) == sorted(labelled(chain("m1", "tiny") | {("evaluation_summary", None)}))
    assert "registry: new models ['m1'], new concept sets ['tiny']" in logs[0]
    assert any(line.startswith("tick 1: ") for line in logs) and " run(s), 0 failed" in logs[-1]
    # a second invocation launches nothing
    again = runner.materialize(defs=fake_definitions(), instance=dagster_instance, log=logs.append)
    assert again.launched == [] and again.failed == [] and again.ticks == 0
    # a code change between invocations: exactly its descendants, each once (the cursor is kept)
    bumped = runner.materialize(defs=fake_definitions({"concept_scores": "2"}), instance=dagster_instance,
                                log=logs.append)
    assert launched(bumped) == sorted(labelled({
        ("concept_scores", pair("m1", "tiny")), ("concept_eval", pair("m1", "tiny")), ("evaluation_summary", None)}))


def test_materialize_goes_on_after_a_failure_and_retries_it_once_per_invocation(dagster_instance, register_model):
    register_model("good", concept_sets=["tiny"])
    register_model("bad", concept_sets=["tiny"])
    defs = fake_definitions(fail_for={"bad"})
    report = runner.materialize(defs=defs, instance=dagster_instance, log=lambda _: None)
    # bad's model-partitioned chain is one run, which fails at probe_images
    assert [label for label, _, _ in report.failed] == ["bad"] and "probe_images" in report.failed[0][1]
    assert "probe set of bad is unreadable" in report.failed[0][2]
    assert labelled(chain("good", "tiny")) <= set(launched(report))
    assert not any("evaluation_summary" in e for e, _ in launched(report))  # waits for every model
    again = runner.materialize(defs=defs, instance=dagster_instance, log=lambda _: None)
    assert [label for label, _, _ in again.failed] == ["bad"] and not again.launched
    # fixed: the next invocation finishes the chain and the summary
    fixed = runner.materialize(defs=fake_definitions(), instance=dagster_instance, log=lambda _: None)
    assert fixed.failed == [] and labelled(chain("bad", "tiny") | {("evaluation_summary", None)}) == set(launched(fixed))


def test_force_reruns_every_configured_partition_of_a_model_once(dagster_instance, register_model):
    register_model("m1", concept_sets=["tiny"])
    register_model("m2", concept_sets=["tiny"])
    runner.materialize(defs=fake_definitions(), instance=dagster_instance, log=lambda _: None)
    forced = runner.materialize(defs=fake_definitions(), instance=dagster_instance, models=["m1"], force=True,
                                log=lambda _: None)
    runs = launched(forced)
    assert len(runs) == len(set(runs)), runs  # nothing twice
    assert set(runs) == labelled(chain("m1", "tiny") | {("evaluation_summary", None)})


# --- instance settings -------------------------------------------------------------------------


def test_every_step_that_uses_the_device_runs_in_the_gpu_pool():
    from www_assets.definitions import defs

    outside = sorted(
        a.key.to_user_string() if len(a.keys) == 1 else "/".join(k.to_user_string() for k in sorted(a.keys))
        for a in defs.assets
        if "device" in a.required_resource_keys and a.node_def.pool != "gpu"
    )
    assert outside == [], f"assets that use the `device` resource must declare pool='gpu': {outside}"


def test_project_instance_limits_the_gpu_pool_to_one_slot(dagster_instance):
    @dg.asset(pool="gpu")
    def heavy() -> None: ...

    assert dagster_instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert dagster_instance.event_log_storage.supports_global_concurrency_limits
    dg.materialize([heavy], instance=dagster_instance)
    info = dagster_instance.event_log_storage.get_concurrency_info("gpu")
    assert (info.slot_count, info.claimed_slots) == (1, [])  # one slot, given back after the step
    assert dagster_instance.run_monitoring_enabled
    assert not dagster_instance.nux_enabled  # no "join the community" dialog on a fresh UI


# --- checks -------------------------------------------------------------------------------------


def test_grain_duplicates_counts_repeated_keys():
    df = pd.DataFrame({"layer": ["a", "a", "a", "b"], "neuron": [0, 0, 1, 0], "score": [1.0, 2.0, 3.0, 4.0]})
    dup = grain_duplicates(df, ("layer", "neuron"))
    assert dup.to_dict("records") == [{"layer": "a", "neuron": 0, "rows": 2}]
    assert grain_duplicates(df, ("layer", "neuron", "score")).empty
    with pytest.raises(ValueError, match=r"grain column\(s\) \['rank'\]"):
        grain_duplicates(df, ("layer", "rank"))


def test_non_finite_counts():
    df = pd.DataFrame({"f1": [0.5, np.nan, 1.0], "clip_cos": [np.inf, 0.1, None]})
    assert non_finite_counts(df, ["f1", "clip_cos"]) == {"f1": 1, "clip_cos": 2}
    with pytest.raises(ValueError, match="'hit' is not in the table"):
        non_finite_counts(df, ["hit"])


def test_activation_problems():
    def rows(layer, ids, width, value=1.0):
        return pd.DataFrame({"layer": layer, "image_id": ids, "vector": [np.full(width, value, np.float32)] * len(ids)})

    good = pd.concat([rows("layer4", ["a", "b"], 4), rows("fc", ["a", "b"], 3)])
    assert activation_problems(good, ["layer4", "fc"]) == ([], {"fc": 3, "layer4": 4})
    problems, _ = activation_problems(good, ["layer3", "layer4", "fc"])
    assert problems == ["configured layer(s) ['layer3'] have no activations"]
    problems, _ = activation_problems(pd.concat([rows("layer4", ["a", "b"], 4), rows("fc", ["a"], 3)]), None)
    assert problems == ["layers cover different images: {'fc': 1, 'layer4': 2}"]
    problems, _ = activation_problems(pd.concat([rows("fc", ["a"], 3, np.nan)]), ["fc"])
    assert problems == ["layer 'fc': NaN or infinite activations"]


def test_accuracy_target_misses():
    targets = {"zero_shot_accuracy": 0.85, "retrieval_part": 0.80}
    assert accuracy_target_misses({"zero_shot_accuracy": 0.85, "retrieval_part": 0.9}, targets) == {}
    assert accuracy_target_misses({"zero_shot_accuracy": 0.8499, "retrieval_part": 0.9}, targets) == {
        "zero_shot_accuracy": "0.8499 < 0.85"}
    assert accuracy_target_misses({"zero_shot_accuracy": float("nan")}, targets) == {
        "zero_shot_accuracy": "nan < 0.85", "retrieval_part": "None < 0.8"}


def test_parquet_vector_widths_read_from_schema(tmp_path):
    warehouse = Warehouse(tmp_path)
    df = pd.DataFrame({"layer": ["l1", "l1", "l2"], "image_id": ["a", "b", "a"],
                       "vector": [np.zeros(5), np.zeros(5), np.zeros(2)]})
    files = warehouse.write("activations", df, {"model": "m"})
    assert parquet_vector_widths(files) == {5, 2}


def _fake_table_assets():
    @dg.asset(partitions_def=models)
    def activations() -> None: ...

    @dg.asset(partitions_def=model_concepts)
    def neuron_concepts() -> None: ...

    @dg.asset
    def evaluation_summary() -> None: ...

    @dg.asset(partitions_def=models)
    def not_a_table() -> None: ...

    @dg.asset  # declared partitioned by model in tables.py: no check rather than a wrong one
    def predictions() -> None: ...

    return [activations, neuron_concepts, evaluation_summary, not_a_table, predictions]


def test_table_checks_are_built_for_the_tables_present():
    checks = table_checks(_fake_table_assets())
    names = {(k.asset_key.to_user_string(), k.name) for c in checks for k in c.check_keys}
    assert names == {
        ("activations", "grain_unique"), ("activations", "vector_widths"),
        ("neuron_concepts", "grain_unique"), ("neuron_concepts", "no_nan_scores"),
        ("evaluation_summary", "grain_unique"), ("evaluation_summary", "all_models_present"),
    }


def test_checks_read_only_the_checked_partition(register_model, www_data_dir, monkeypatch):
    from www_resources.dagster_resources import WarehouseResource

    dagster_instance = dg.DagsterInstance.ephemeral()

    register_model("m1", concept_sets=["tiny"])
    register_model("m2", concept_sets=["tiny"])
    add_partitions(dagster_instance, ["m1", "m2"], ["tiny"])
    warehouse = Warehouse(www_data_dir / "warehouse")
    vec = lambda w: np.ones(w, np.float32)  # noqa: E731
    good = pd.DataFrame({"layer": ["layer4", "layer4", "fc", "fc"], "image_id": ["a", "b", "a", "b"],
                         "vector": [vec(4), vec(4), vec(3), vec(3)]})
    warehouse.write("activations", good, {"model": "m1"})
    warehouse.write("activations", pd.concat([good.iloc[:3], good.iloc[:1]]), {"model": "m2"})  # fc lacks b; a dup
    concepts = pd.DataFrame({"layer": "fc", "neuron": [0, 1, 2], "method": "www", "kind": "major", "rank": [1, 1, 0],
                             "concept": ["red", "blue", None], "score": np.array([0.3, np.nan, np.nan], np.float32),
                             "tie_size": np.int32(1), "tied": [["red"], ["blue"], []]})
    warehouse.write("neuron_concepts", concepts, {"model": "m1", "concept_set": "tiny"})
    warehouse.write("neuron_concepts", concepts.iloc[[0, 2]], {"model": "m2", "concept_set": "tiny"})
    summary = pd.DataFrame({"model": ["m1"], "concept_set": "tiny", "layer": "fc", "method": "www", "metric": "f1",
                            "mean": 0.5, "stderr": 0.1, "n": np.int32(3), "n_candidates": np.int32(3),
                            "p_value_vs_clip_dissect": np.nan,
                            "p_value_vs_www": np.nan})
    warehouse.write("evaluation_summary", summary)

    reads = []
    original = Warehouse.read
    monkeypatch.setattr(Warehouse, "read", lambda self, table, partition=None, columns=None: (
        reads.append((table, dict(partition or {}))), original(self, table, partition, columns))[1])
    assets = _fake_table_assets()
    defs = dg.Definitions(
        assets=assets, asset_checks=table_checks(assets), resources={"warehouse": WarehouseResource()})
    def run_checks(table: str, key: str | None) -> dict[str, dg.AssetCheckEvaluation]:
        check_keys = {k for k in runner.check_specs(defs) if k.asset_key.path[-1] == table}
        result = runner.execute_run(defs, runner.TickRun(key, checks=check_keys), dagster_instance, {})
        return {e.check_name: e for e in result.get_asset_check_evaluations()}

    m1 = run_checks("activations", "m1")
    assert m1["grain_unique"].passed and m1["vector_widths"].passed
    assert reads == [("activations", {"model": "m1"})]
    m2 = run_checks("activations", "m2")
    assert not m2["grain_unique"].passed and m2["grain_unique"].metadata["duplicated_keys"].value == 1
    assert not m2["vector_widths"].passed  # layer4 has one image more than fc
    assert "different images" in m2["vector_widths"].metadata["problems"].value
    # the NULL-concept placeholder row has no score by design; a selected concept must have one
    assert not run_checks("neuron_concepts", pair("m1", "tiny"))["no_nan_scores"].passed
    assert run_checks("neuron_concepts", pair("m2", "tiny"))["no_nan_scores"].passed
    assert reads[-1] == ("neuron_concepts", {"model": "m2", "concept_set": "tiny"})
    summary_checks = run_checks("evaluation_summary", None)
    assert summary_checks["grain_unique"].passed
    assert not summary_checks["all_models_present"].passed
    assert summary_checks["all_models_present"].severity == dg.AssetCheckSeverity.WARN
    assert "m2" in summary_checks["all_models_present"].metadata["missing"].value


# --- the real definitions -----------------------------------------------------------------------


def test_real_definitions_carry_the_policy_and_a_new_model_starts_its_own_chain(register_model):
    """The first tick for a new image-folder model with two concept sets: its model-partitioned
    chain (one run), the text embeddings of its CLIP x each concept set and the image embeddings of its
    CLIP x probe view (one run per partition), each run carrying the
    checks of the tables it writes; nothing of the world, nothing that waits on those."""
    from www_assets.definitions import defs
    from www_assets.sources import SOURCE_KEYS

    specs = runner.asset_specs(defs)
    assert {s.automation_condition.get_label() for k, s in specs.items() if k not in SOURCE_KEYS} == {"www_eager"}
    assert {s.automation_condition.get_label() for s in runner.check_specs(defs).values()} == {"www_check"}
    sensors = {s.name: s.default_status for s in defs.sensors}
    running = dg.DefaultSensorStatus.RUNNING
    automation = running if orchestration.automation_enabled() else dg.DefaultSensorStatus.STOPPED
    assert sensors == {"model_registry": running, "www_automation": automation}
    assert not defs.schedules  # the daily retry is a clause of the policy

    register_model("tiny", concept_sets=["tiny", "other"])
    instance = dg.DagsterInstance.ephemeral()
    add_partitions(instance, ["tiny"], ["tiny", "other"])
    runs = Simulation(instance, defs).runs()
    requested = entities(runs)
    assets = {(a, k) for a, k in requested if ":" not in a}
    assert {("model_training", "tiny"), ("probe_images", "tiny"), ("activations", "tiny")} <= assets
    clip, probe = clip_key("openclip:ViT-B-32?pretrained=openai"), probe_key(get_model("tiny"))
    images = str(dg.MultiPartitionKey({"clip": clip, "probe": probe}))
    assert {k for _, k in assets} <= {"tiny", images, clip_pair(clip, "tiny"), clip_pair(clip, "other")}
    assert not {a for a, _ in assets} & {*orchestration.WORLD_ONLY_ASSETS, "evaluation_summary", "neuron_concepts"}
    text_runs = {r.partition_key for r in runs if dg.AssetKey("clip_text_embeddings") in r.assets}
    assert text_runs == {clip_pair(clip, "tiny"), clip_pair(clip, "other")}
    assert {r.partition_key for r in runs if dg.AssetKey("clip_image_embeddings") in r.assets} == {images}
    checks_of = defaultdict(set)
    for key in runner.check_specs(defs):
        checks_of[key.asset_key].add(key)
    for run in runs:
        assert {k.asset_key for k in run.checks} <= run.assets, "a check runs apart from its asset"
        for asset in run.assets:
            assert checks_of[asset] <= run.checks, f"{asset.to_user_string()} [{run.label}] runs without its checks"


def test_sync_moves_warehouse_folders_of_the_old_per_model_clip_layout_aside(register_model, www_data_dir):
    """Before the CLIP tables were shared they were partitioned by model (and concept set); the
    sync moves those folders under data/retired/ and leaves the new layout and other tables alone."""
    from www_assets.registry_sync import sync_partitions

    register_model("m1", concept_sets=["tiny"])
    warehouse = Warehouse(www_data_dir / "warehouse")
    texts = pd.DataFrame({"clip_model": "c", "concept_id": np.int32([0]), "concept": ["red"], "form": ["raw"],
                          "text": ["red"], "vector": [np.ones(4, np.float32)]})
    old = warehouse.root / "clip_text_embeddings" / "model=m1" / "concept_set=tiny"
    old.mkdir(parents=True)
    (old / "data.parquet").write_bytes(b"old layout")
    warehouse.write("clip_text_embeddings", texts, {"clip": "c-1", "concept_set": "tiny"})
    warehouse.write("activations", pd.DataFrame({"layer": ["l"], "image_id": ["a"], "vector": [np.ones(2)]}),
                    {"model": "m1"})
    result = sync_partitions(dg.DagsterInstance.ephemeral())
    assert result.moved_aside == ["clip_text_embeddings/model=m1"]
    assert not old.exists() and list((www_data_dir / "retired").glob("*/clip_text_embeddings/model=m1/concept_set=tiny"))
    assert warehouse.read("clip_text_embeddings")["clip"].tolist() == ["c-1"]
    assert warehouse.has_partition("activations", {"model": "m1"})
    assert sync_partitions(dg.DagsterInstance.ephemeral()).moved_aside == []
