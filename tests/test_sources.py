"""Configuration as observable sources, on the real definitions: an edited file re-runs exactly
what reads it, through the same policy as everything else.

Each case starts from a state where every configured partition is materialized (recorded as
runless materializations, so no model is trained), edits one configuration file, syncs (which
observes the changed source partitions, as `www materialize` and the registry sensor do) and lets
automation settle, "running" each tick's requests the same way. It asserts the exact set of
(asset, partition) requested, and that nothing was requested twice.
"""

import warnings

import dagster as dg
import pytest
import yaml

from www_assets import orchestration, runner, sources
from www_assets.registry_sync import sync_partitions

pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning", "ignore::dagster.BetaWarning")
ASSETS_ONLY = dg.AssetSelection.all(include_sources=True) - dg.AssetSelection.all_asset_checks()

# per-model assets that read the concept words (through clip_text_embeddings and neuron_concepts)
WORDS_READERS = ["sample_explanations", "misprediction_detection", "rejection_curves", "localization_eval",
                 "hint_agreement", "class_concepts", "class_contrasts", "class_concept_crops", "prediction_test",
                 "shifting_test", "class_concept_comparison", "class_concept_truth"]
HINT_REGIONS = ["concept_hierarchy", "responsible_regions", "concept_classifiers", "neuron_concept_shapley",
                "concept_localization"]
MODEL_ASSETS = ["model_training", "probe_images", "predictions", "activations", "neuron_examples", "gradcam_crops",
                "crop_examples", "clip_gradcam_embeddings", "class_shapley", *WORDS_READERS, *HINT_REGIONS]
PAIR_ASSETS = ["concept_scores", "neuron_concepts", "neuron_galleries", "concept_eval", "ablation_curves"]
WORLD = ["world_scenes", "world_parts", "world_classes", "world_vocabulary"]


def pair(model, concept_set):
    return str(dg.MultiPartitionKey({"model": model, "concept_set": concept_set}))


def shared(model, concept_sets=()) -> set:
    """The shared CLIP partitions a model reads: its CLIP x probe view, its CLIP x each concept set."""
    from www_assets.partitions import shared_keys
    from www_resources.registry import get_model

    clip, probe = shared_keys(get_model(model))
    out = {("clip_image_embeddings", str(dg.MultiPartitionKey({"clip": clip, "probe": probe})))}
    return out | {("clip_text_embeddings", str(dg.MultiPartitionKey({"clip": clip, "concept_set": c})))
                  for c in concept_sets}


class Settled:
    """The real definitions on an ephemeral instance where everything configured is materialized."""

    def __init__(self):
        from www_assets.definitions import defs

        self.defs, self.instance, self.cursor = defs, dg.DagsterInstance.ephemeral(), None
        self.session = orchestration.Session()
        self.order, self.parents = runner.dependency_order(defs), runner.parents_of(defs)
        sync_partitions(self.instance)
        configured = orchestration.read_configured()
        for key in self.order:
            for entity, partition in sorted(runner.configured_entities(defs, configured), key=str):
                if entity == key:
                    self.report(key, partition)
        assert self.tick() == set()  # the first evaluation: nothing to do

    def report(self, key, partition):
        self.instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))

    def tick(self) -> set[tuple[str, str | None]]:
        """One tick of the engine: its runs (`runner.requested_runs`), each "run" by recording a
        materialization of its assets, run by run in the engine's order."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orchestration.set_session(self.session)
            try:
                result = runner.evaluate(self.defs, self.instance, self.cursor, asset_selection=ASSETS_ONLY)
            finally:
                orchestration.set_session(None)
        self.cursor = result.cursor
        requested, deferred = set(), set()
        for run in runner.requested_runs(result, self.order, self.parents, deferred):
            for key in (k for k in self.order if k in run.assets):
                self.report(key, run.partition_key)
                requested.add((key.to_user_string(), None if run.partition_key is None else str(run.partition_key)))
            self.session.forced -= {(k, run.partition_key) for k in run.assets | run.checks}
        self.session.forced |= deferred  # as the engine does: asked for again next tick
        return requested

    def after_edit(self, max_ticks: int = 12) -> set[tuple[str, str | None]]:
        """Sync (observing the edited source), then tick until nothing is requested."""
        sync_partitions(self.instance)
        seen: list = []
        for _ in range(max_ticks):
            requested = self.tick()
            if not requested:
                assert len(seen) == len(set(seen)), f"requested twice: {sorted(seen)}"
                return set(seen)
            seen += sorted(requested, key=str)
        raise AssertionError(f"did not settle: {seen}")


@pytest.fixture
def settled(register_model, www_data_dir):
    register_model("a", concept_sets=["s1", "s2"], probe_set="world:probe")
    register_model("b", concept_sets=["s1"], probe_set="world:probe")
    (www_data_dir / "world.yaml").write_text(yaml.safe_dump({"world": {"seed": 0, "n_train": 64},
                                                             "clip": {"epochs": 1}}))
    return Settled()


def model_chain(model: str, concept_sets, assets=MODEL_ASSETS, pair_assets=PAIR_ASSETS) -> set:
    return {(a, model) for a in assets} | {(a, pair(model, c)) for a in pair_assets for c in concept_sets}


def test_editing_a_registry_file_reruns_exactly_that_models_partitions(settled, www_data_dir):
    path = www_data_dir / "models" / "a.yaml"
    entry = yaml.safe_load(path.read_text())
    entry["layers"] = ["layer3", *entry["layers"]]
    path.write_text(yaml.safe_dump(entry))
    assert settled.after_edit() == model_chain("a", ["s1", "s2"]) | {("evaluation_summary", None)}
    # a comment or a reordering reads the same: nothing runs
    path.write_text("# the same model\n" + yaml.safe_dump(entry, sort_keys=False))
    assert settled.after_edit() == set()


def test_editing_world_yaml_reruns_the_world_or_its_clip_and_what_depends_on_them(settled, www_data_dir):
    path = www_data_dir / "world.yaml"
    # the clip section: the world CLIP and what reads its embeddings, not the world or the training
    path.write_text(yaml.safe_dump({"world": {"seed": 0, "n_train": 64}, "clip": {"epochs": 2}}))
    clip_readers = ["clip_gradcam_embeddings", *WORDS_READERS]
    expected = {("world_clip", None), ("evaluation_summary", None)}
    for model, sets in (("a", ["s1", "s2"]), ("b", ["s1"])):
        expected |= model_chain(model, sets, assets=clip_readers)
    # a and b share the CLIP and the probe set: their embeddings are computed once (after_edit
    # fails on a partition requested twice)
    expected |= shared("a", ["s1", "s2"]) | shared("b", ["s1"])
    assert len(shared("a", ["s1", "s2"]) | shared("b", ["s1"])) == 3
    assert settled.after_edit() == expected
    # the world section: everything of every world model
    path.write_text(yaml.safe_dump({"world": {"seed": 1, "n_train": 64}, "clip": {"epochs": 2}}))
    everything = {(a, None) for a in [*WORLD, "world_clip", "evaluation_summary"]}
    everything |= model_chain("a", ["s1", "s2"]) | model_chain("b", ["s1"]) | shared("a", ["s1", "s2"])
    assert settled.after_edit() == everything


def test_editing_a_concept_set_reruns_its_pairs(settled, www_data_dir):
    path = www_data_dir / "concept_sets.yaml"
    sets = yaml.safe_load(path.read_text())
    sets["s2"] = "file:other-concepts.txt"
    path.write_text(yaml.safe_dump(sets))
    expected = {(a, pair("a", "s2")) for a in PAIR_ASSETS}
    expected |= {(a, "a") for a in WORDS_READERS}
    expected |= shared("a", ["s2"]) - shared("a")  # the texts of s2, not the images
    assert settled.after_edit() == expected | {("evaluation_summary", None)}
    # the list file a `file:` spec names is read too
    (www_data_dir / "other-concepts.txt").write_text("red\nblue\n")
    assert settled.after_edit() == expected | {("evaluation_summary", None)}


def test_source_versions_hash_what_each_partition_reads(register_model, www_data_dir):
    register_model("a", concept_sets=["s1"])
    before = sources.registry_versions()
    (www_data_dir / "models" / "a.yaml").write_text("# note\n" + (www_data_dir / "models" / "a.yaml").read_text())
    assert sources.registry_versions() == before  # comments do not count
    (www_data_dir / "world.yaml").write_text("world: {seed: 1}\nclip: {epochs: 1}\n")
    world = sources.world_versions()
    (www_data_dir / "world.yaml").write_text("world: {seed: 1}\nclip: {epochs: 2}\n")
    changed = sources.world_versions()
    assert changed["world"] == world["world"] and changed["clip"] != world["clip"]


def test_a_models_new_clip_computes_its_shared_partitions_once_and_nothing_of_the_other_model(settled, www_data_dir):
    path = www_data_dir / "models" / "a.yaml"
    entry = yaml.safe_load(path.read_text())
    before = shared("a", ["s1", "s2"])
    entry["clip"] = "openclip:ViT-B-16?pretrained=openai"
    path.write_text(yaml.safe_dump(entry))
    after = shared("a", ["s1", "s2"])
    assert not after & before  # other keys: the old ones stay, b still reads them
    requested = settled.after_edit()  # fails on anything requested twice
    assert requested == after | model_chain("a", ["s1", "s2"]) | {("evaluation_summary", None)}
    assert not {p for _, p in requested} & {"b", pair("b", "s1")}
