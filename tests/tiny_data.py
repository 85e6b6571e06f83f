"""The tiny image-folder data set shared by the in-process and the cluster pipeline tests."""

from pathlib import Path

import numpy as np


def write_tiny_data(data: Path, models=("tiny",)) -> None:
    """A data folder with 12 coloured images (and a broken file) in
    three class folders, a ResNet-18 checkpoint, one registry file per model name."""
    import torch
    import torchvision
    from PIL import Image

    folder = data / "images"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["apple", "boat", "cloud"]):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            pixels[..., c] = 255
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    (folder / "boat" / "broken.png").write_bytes(b"\x89PNG this is not an image")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).eval().state_dict(), data / "tiny.pt")
    (data / "models").mkdir()
    for model in models:
        (data / "models" / f"{model}.yaml").write_text(
            f"name: {model}\nmodel: checkpoint:tiny.pt\narchitecture: torchvision:resnet18?num_classes=3\n"
            "layers: [layer3, layer4, fc]\nhead: fc\nspatial_layer: layer4\nfinal_layer: fc\n"
            "preprocessing: {size: 32, resize: 32, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
            "probe_set: imagefolder:images\nconcept_sets: [tiny]\nclip: openclip:none\n"
        )
    (data / "concept_sets.yaml").write_text("tiny: file:concepts.txt\n")
    (data / "concepts.txt").write_text("apple\nboat\ncloud\n")
