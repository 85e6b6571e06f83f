"""Untrusted checkpoints: every torch.load reads weights only, and a file that pickles code is
refused before that code runs."""

import ast
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def torch_load_calls(source: str):
    """(line, keywords) of every call of `torch.load` / `load` imported from torch in `source`."""
    tree = ast.parse(source)
    aliases = {"load"} if any(
        isinstance(n, ast.ImportFrom) and n.module == "torch" and any(a.name == "load" for a in n.names)
        for n in ast.walk(tree)
    ) else set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_torch_load = (
            isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
            and f.value.id == "torch"
        ) or (isinstance(f, ast.Name) and f.id in aliases)
        if is_torch_load:
            yield node.lineno, {k.arg: k.value for k in node.keywords}


def other_unpickling(source: str):
    """(line, what) of the other ways to run a file's pickled code: pickle/joblib/dill loads,
    numpy's allow_pickle=True, and weights_only=False anywhere."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr in ("load", "loads") and isinstance(f.value, ast.Name)
                and f.value.id in ("pickle", "cPickle", "joblib", "dill", "cloudpickle")):
            yield node.lineno, f"{f.value.id}.{f.attr}"
        for k in node.keywords:
            if isinstance(k.value, ast.Constant) and (k.arg, k.value.value) in (("weights_only", False), ("allow_pickle", True)):
                yield node.lineno, f"{k.arg}={k.value.value}"


def project_sources():
    for folder in ("www_assets", "www_resources", "tests", "benchmarks"):
        yield from sorted((REPO / folder).rglob("*.py"))


def test_every_torch_load_reads_weights_only():
    calls, unsafe = 0, []
    for path in project_sources():
        source = path.read_text()
        for line, keywords in torch_load_calls(source):
            calls += 1
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                unsafe.append(f"{path.relative_to(REPO)}:{line}")
        unsafe += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in other_unpickling(source)]
    assert calls >= 4, "the scan found too few torch.load calls: is it still looking in the right place?"
    assert unsafe == []


def test_the_scan_sees_an_unsafe_call():
    bad = "import torch\nx = torch.load('m.pt')\ny = torch.load('m.pt', weights_only=True)\n"
    found = list(torch_load_calls(bad))
    assert [line for line, _ in found] == [2, 3] and "weights_only" not in found[0][1]
    assert list(torch_load_calls("from torch import load\nload('m.pt', weights_only=False)\n"))[0][0] == 2
    other = "import pickle, numpy as np\npickle.load(f)\nnp.load(p, allow_pickle=True)\nf(weights_only=False)\n"
    assert list(other_unpickling(other)) == [(2, "pickle.load"), (3, "allow_pickle=True"), (4, "weights_only=False")]


class RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def hostile_checkpoint(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "hostile.pt"
    torch.save({"state_dict": {"weight": torch.zeros(2, 2)}, "extra": RunsCode(f"touch {marker}")}, path)
    return path, marker


def test_a_checkpoint_that_pickles_code_is_refused_by_the_model_zoo(hostile_checkpoint):
    from www_resources.zoo import ModelUnavailableError, load_model

    path, marker = hostile_checkpoint
    with pytest.raises(ModelUnavailableError) as err:
        load_model(f"checkpoint:{path}", architecture="torchvision:resnet18?num_classes=2")
    message = str(err.value)
    assert f"checkpoint {path} is refused" in message and "'posix.system'" in message
    assert "weights_only=False" not in message and "\n" not in message
    assert not marker.exists()


def test_a_checkpoint_that_pickles_a_class_is_refused_by_the_clip_loaders(tmp_path, hostile_checkpoint):
    from www_resources.clip import load_clip
    from www_resources.world.clip_checkpoint import load_clip_checkpoint
    from www_resources.zoo import ModelUnavailableError

    path, marker = hostile_checkpoint
    with pytest.raises(ModelUnavailableError, match="is refused: it pickles the Python object 'posix.system'"):
        load_clip(f"checkpoint:{path}")
    with pytest.raises(ValueError, match="is refused: it pickles the Python object 'posix.system'"):
        load_clip_checkpoint(path)
    # an arbitrary class, not a function
    torch.save({"format": "x", "obj": Path("/etc")}, tmp_path / "object.pt")
    with pytest.raises(ValueError, match=r"pickles the Python object 'pathlib\.\w*Path'"):
        load_clip_checkpoint(tmp_path / "object.pt")
    assert not marker.exists()


def test_a_plain_state_dict_still_loads(tmp_path):
    import torchvision

    from www_resources.zoo import load_model

    model = torchvision.models.resnet18(num_classes=2)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    loaded = load_model(f"checkpoint:{tmp_path / 'plain.pt'}", architecture="torchvision:resnet18?num_classes=2")
    assert torch.equal(loaded.fc.weight, model.fc.weight)
