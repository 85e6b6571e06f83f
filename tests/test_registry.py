"""Registry files: a strict schema, and one clear message per problem naming the file and the
field, shown by `www models`, by the registry sensor and by `www materialize`; a bad file never
affects the other models."""

from pathlib import Path

import dagster as dg
import pytest

from www_assets import cli
from www_resources.probes import ProbeSetError, open_probe_set
from www_resources.registry import (
    MODEL_FIELDS,
    RegistryError,
    check_layers,
    get_model,
    load_concept_sets,
    parse_model_file,
    scan_models,
)

GOOD = """
name: {name}
model: torchvision:resnet18?weights=none&num_classes=3
layers: [layer3, layer4, fc]
head: fc
spatial_layer: layer4
final_layer: fc
preprocessing: {{size: 32, resize: 36, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
probe_set: imagefolder:{probe}
concept_sets: [wordnet]
clip: openclip:ViT-B-32?pretrained=openai
"""
SETS = {"wordnet": "wordnet:nouns", "world": "world:vocabulary"}


@pytest.fixture
def probe(tmp_path) -> Path:
    folder = tmp_path / "val"
    (folder / "cat").mkdir(parents=True)
    return folder


def good(name: str, probe: Path) -> str:
    return GOOD.format(name=name, probe=probe)


def write(folder: Path, name: str, text: str, suffix: str = ".yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    path.write_text(text)
    return path


def test_good_file_parses_into_an_entry(tmp_path, probe):
    entry = parse_model_file(write(tmp_path / "models", "resnet", good("resnet", probe)), SETS)
    assert entry.name == "resnet"
    assert entry.layers == ("layer3", "layer4", "fc")
    assert entry.concept_sets == ("wordnet",)
    assert entry.preprocessing == {"size": 32, "resize": 36, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    assert entry.token_pooling == "cls" and entry.train is None and not entry.is_world_model
    assert entry.gradcam_layer is None and "gradcam_layer" in MODEL_FIELDS


def test_every_field_of_the_project_models_is_in_the_schema():
    """The registry files of the repository validate (world models: no folders to check)."""
    scan = scan_models(Path(__file__).resolve().parents[1] / "data" / "models")
    assert scan.errors == {} and {"world-cnn", "world-vit"} <= set(scan.entries)
    assert scan.entries["world-cnn"].train["kind"] == "cnn" and scan.entries["world-cnn"].preprocessing == "world"


@pytest.mark.parametrize(
    "edit, expected",
    [
        # the cases
        (lambda t: t.replace("layers:", "layer:"),
         ["field 'layer': unknown field (did you mean 'layers'?)", "field 'layers': missing required field"]),
        (lambda t: t.replace("concept_sets: [wordnet]", "concept_sets: [wordnet, imagenet-parts]"),
         ["field 'concept_sets': concept set(s) ['imagenet-parts'] not defined in", "defined: ['wordnet', 'world']"]),
        (lambda t: t.replace("probe_set: imagefolder:", "probe_set: imagefolder:/no/such"),
         ["field 'probe_set': probe set 'imagefolder:/no/such", "does not exist"]),
        (lambda t: t + "explain_set: csv:/no/such/manifest.csv\n",
         ["field 'explain_set': probe set 'csv:/no/such/manifest.csv': manifest /no/such/manifest.csv does not exist"]),
        (lambda t: t.replace("name: m", "name: my model!"), ["field 'name': model name 'my model!' is not a valid key"]),
        # the others
        (lambda t: t.replace("head: fc\n", ""), ["field 'head': missing required field"]),
        (lambda t: t + "colour: red\n", ["field 'colour': unknown field (known fields: name, model, layers"]),
        (lambda t: t.replace("layers: [layer3, layer4, fc]", "layers: []"), ["field 'layers': List should have at least 1 item"]),
        (lambda t: t + "token_pooling: max\n", ["field 'token_pooling': Input should be 'cls' or 'mean' (got 'max')"]),
        (lambda t: t + "train: {kind: cnn}\n", ["a model with 'train' must have model: checkpoint:"]),
        (lambda t: t + "train: {kind: mlp}\n", ["field 'train': must be a mapping with kind: cnn or kind: vit"]),
        (lambda t: t.replace("concept_sets: [wordnet]", "concept_sets: [a|b]"), ["field 'concept_sets': concept set 'a|b' is not a valid key"]),
        (lambda t: t.replace("size: 32,", "sise: 32,"),
         ["field 'preprocessing.sise': unknown field (did you mean 'size'?)", "field 'preprocessing.size': missing"]),
        (lambda t: t.replace("preprocessing: {", "preprocessing: imagenet\nx: {"),
         ["field 'preprocessing': must be 'world' or a mapping with at least 'size' (got 'imagenet')"]),
        (lambda t: t.replace("head: fc", "head: [fc]"), ["field 'head': Input should be a valid string (got ['fc'])"]),
    ],
)
def test_bad_files_name_file_and_field(tmp_path, probe, edit, expected):
    path = write(tmp_path / "models", "m", edit(good("m", probe)))
    with pytest.raises(RegistryError) as err:
        parse_model_file(path, SETS)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for part in expected:
        assert part in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    with pytest.raises(RegistryError, match="not valid YAML"):
        parse_model_file(write(tmp_path, "m", "name: [unclosed"))
    with pytest.raises(RegistryError, match="must be a YAML mapping"):
        parse_model_file(write(tmp_path, "m", "- a\n- b\n"))


def test_file_name_must_match_model_name(tmp_path, probe):
    with pytest.raises(RegistryError, match="field 'name': the file name must be the model name: rename it to other.yaml"):
        parse_model_file(write(tmp_path, "m", good("other", probe)), SETS)


def test_two_files_claiming_one_name_are_both_refused_and_the_others_kept(tmp_path, probe):
    folder = tmp_path / "models"
    first = write(folder, "twin", good("twin", probe))
    second = write(folder, "twin", good("twin", probe), suffix=".yml")
    write(folder, "other", good("other", probe))
    scan = scan_models(folder, SETS)
    assert list(scan.entries) == ["other"]
    assert scan.errors[first] == f"{first}: field 'name': 'twin' is also claimed by {second}; keep one file per model"
    assert scan.errors[second].startswith(f"{second}: field 'name': 'twin' is also claimed by {first}")
    with pytest.raises(RegistryError, match="also claimed by"):
        get_model("twin", folder)
    assert get_model("other", folder).name == "other"


def test_scan_keeps_good_entries_beside_bad_files(tmp_path, probe):
    folder = tmp_path / "models"
    write(folder, "good", good("good", probe))
    bad = write(folder, "bad", "name: bad\n")
    typo = write(folder, "typo", good("typo", probe).replace("layers:", "layer:"))
    scan = scan_models(folder, SETS)
    assert list(scan.entries) == ["good"]
    assert set(scan.errors) == {bad, typo} and "missing required field" in scan.errors[bad]


def test_layers_are_checked_against_the_loaded_model(tmp_path, probe):
    import torchvision

    entry = parse_model_file(write(tmp_path, "m", good("m", probe).replace("[layer3, layer4, fc]", "[layer3, layer5, fc]")
                                   .replace("head: fc", "head: classifier")), SETS)
    names = [n for n, _ in torchvision.models.resnet18(num_classes=3).named_modules()]
    with pytest.raises(RegistryError) as err:
        check_layers(entry, names)
    message = str(err.value)
    assert message.startswith(f"{entry.source_file}: field 'layers[1]': the model has no layer 'layer5' (did you mean 'layer4'")
    assert "field 'head': the model has no layer 'classifier'" in message
    # the layers it has: the top-level ones, and how many nested ones there are
    assert "has: conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc and 57 nested ones such as 'layer3.0.conv1'" in message
    check_layers(parse_model_file(write(tmp_path, "ok", good("ok", probe)), SETS), names)  # nothing raised


def test_a_missing_layer_fails_where_the_model_is_loaded(register_model, www_data_dir):
    from www_resources.target import TargetModel

    register_model("m", layers=["layer4", "fc"], spatial_layer="layer9")
    with pytest.raises(RegistryError, match=r"m\.yaml: field 'spatial_layer': the model has no layer 'layer9'"):
        TargetModel(get_model("m"), "cpu")


def test_www_models_shows_each_bad_file_and_lists_the_good(register_model, www_data_dir, capsys):
    register_model("good")
    typo = www_data_dir / "models" / "typo.yaml"
    typo.write_text((www_data_dir / "models" / "good.yaml").read_text().replace("name: good", "name: typo")
                    .replace("layers:", "layer:"))
    unknown_set = www_data_dir / "models" / "sets.yaml"
    unknown_set.write_text((www_data_dir / "models" / "good.yaml").read_text().replace("name: good", "name: sets")
                           .replace("- tiny", "- nowhere"))
    assert cli.main(["models"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("good: torchvision:resnet18") and out.count("\n") == 1
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"BAD {unknown_set}: field 'concept_sets': concept set(s) ['nowhere'] not defined")
    assert lines[1].startswith(f"BAD {typo}: field 'layer': unknown field (did you mean 'layers'?)")


def test_the_sensor_and_materialize_report_the_same_message(dagster_instance, register_model, www_data_dir):
    from www_assets import orchestration
    from www_assets.registry_sync import sync_partitions

    register_model("good")
    bad = www_data_dir / "models" / "bad-name.yaml"
    bad.write_text((www_data_dir / "models" / "good.yaml").read_text().replace("name: good", "name: bad name"))
    expected = f"{bad}: field 'name': model name 'bad name' is not a valid key"

    result = orchestration.model_registry_sensor(dg.build_sensor_context(instance=dagster_instance))
    # the bad file adds no model partition: the good model and its concept set only (besides the good
    # model's shared CLIP and probe-view keys)
    added = [tuple(r.partition_keys) for r in result.dynamic_partitions_requests
             if r.partitions_def_name in ("models", "concept_sets")]
    assert added == [("good",), ("tiny",)]
    assert expected in result.cursor
    # `www materialize` prints this summary before it runs anything
    summary = sync_partitions(dagster_instance).summary()
    assert expected in summary
    assert dagster_instance.get_dynamic_partitions("models") == ["good"]


def test_concept_set_registry(tmp_path):
    path = tmp_path / "concept_sets.yaml"
    path.write_text("world: world:vocabulary\nwordnet: wordnet:nouns\n")
    assert load_concept_sets(path) == {"world": "world:vocabulary", "wordnet": "wordnet:nouns"}
    path.write_text("world: [1, 2]\n")
    with pytest.raises(RegistryError, match="must map concept-set names to specs"):
        load_concept_sets(path)


def test_probe_set_errors_say_what_to_do(tmp_path):
    with pytest.raises(ProbeSetError, match="expected world:<split>"):
        open_probe_set("nonsense")
    with pytest.raises(ProbeSetError, match="splits are train, probe and test"):
        open_probe_set("world:valid")
    with pytest.raises(ProbeSetError, match="does not exist; point it at a folder"):
        open_probe_set(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(ProbeSetError, match="manifest .* does not exist"):
        open_probe_set(f"csv:{tmp_path / 'missing.csv'}")
