"""The world's catalogue: its settings (`WorldConfig`), colours, textures and backgrounds, and the
24 classes drawn from named parts with their hierarchy (`class_table`). What the world is made of;
`sampling` draws scene parameters from it and `rendering` paints them (see `scenes` for the whole)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

SPLITS = ("train", "probe", "test")
ROOT = "thing"

# --------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a world; build from a dict with `WorldConfig.from_dict`.

    Sizes: `n_train`, `n_probe`, `n_test` images per split, `image_size` pixels square.
    `num_classes`: None for all 24 classes, or a smaller number k, which keeps the first k
    classes of `SUBSET_ORDER` (round-robin over the superclasses) for tiny tests.
    `spurious_class` is drawn on `spurious_background` with probability `spurious_share` in
    train and probe (test: uniform). `min_scale` / `max_scale`: the longer side of the object's
    layout box as a share of the image side. `noise_std`: maximum per-image standard deviation
    of the Gaussian pixel noise (0-255 scale; each image draws its own in [noise_std/4, noise_std]).
    `n_distractor_concepts`: distractor nouns added by `concept_list(..., distractors=True)`.
    """

    seed: int = 0
    image_size: int = 64
    n_train: int = 16000
    n_probe: int = 4000
    n_test: int = 4000
    num_classes: int | None = None
    spurious_class: str = "rabbit"
    spurious_background: str = "snow"
    spurious_share: float = 0.9
    max_distractors: int = 3
    min_scale: float = 0.5
    max_scale: float = 0.95
    noise_std: float = 8.0
    n_distractor_concepts: int = 400

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"image_size must be an int >= 16, got {self.image_size!r}")
        for name in ("n_train", "n_probe", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.num_classes is not None and not (2 <= self.num_classes <= len(CLASS_SPECS)):
            raise ValueError(
                f"num_classes must be None or between 2 and {len(CLASS_SPECS)}, got {self.num_classes!r}"
            )
        if self.spurious_class not in CLASS_BY_NAME:
            raise ValueError(f"spurious_class {self.spurious_class!r} is not a world class")
        if self.spurious_background not in BACKGROUNDS:
            raise ValueError(
                f"spurious_background {self.spurious_background!r} is not one of {BACKGROUNDS}"
            )
        if not 0.0 <= self.spurious_share <= 1.0:
            raise ValueError(f"spurious_share must be in [0, 1], got {self.spurious_share!r}")
        if not 0 <= self.max_distractors <= MAX_DISTRACTORS:
            raise ValueError(f"max_distractors must be in [0, {MAX_DISTRACTORS}], got {self.max_distractors!r}")
        if not 0.1 <= self.min_scale <= self.max_scale <= 1.0:
            raise ValueError(
                f"need 0.1 <= min_scale <= max_scale <= 1, got {self.min_scale!r}, {self.max_scale!r}"
            )
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "WorldConfig":
        """Build from a plain dict of primitives (e.g. Dagster run config); unknown keys raise."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown WorldConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    def split_size(self, split: str) -> int:
        """Number of images in `split`."""
        _check_split(split)
        return int(getattr(self, f"n_{split}"))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --------------------------------------------------------------------------------------
# colours, textures, backgrounds

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (245, 215, 40),
    "green": (40, 165, 60),
    "blue": (35, 85, 215),
    "purple": (135, 55, 185),
    "pink": (245, 135, 190),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
    "gray": (135, 135, 135),
    "black": (25, 25, 25),
}
COLOUR_NAMES = tuple(COLOURS)
_COLOUR_RGB = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)

TEXTURES = ("plain", "striped", "spotted", "checkered")

BACKGROUNDS = ("grass", "sky", "water", "road", "sand", "snow", "night", "brick")
# mean colour of each background, used to keep main colours visible on it
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "grass": (70, 145, 55),
    "sky": (130, 180, 235),
    "water": (35, 95, 165),
    "road": (95, 95, 100),
    "sand": (220, 195, 140),
    "snow": (235, 240, 248),
    "night": (15, 20, 50),
    "brick": (160, 75, 55),
}
BACKGROUND_PHRASES = {
    "grass": "on grass",
    "sky": "in the sky",
    "water": "on water",
    "road": "on a road",
    "sand": "on sand",
    "snow": "on snow",
    "night": "at night",
    "brick": "by a brick wall",
}
# a main colour closer than this (RGB Euclidean) to a background's mean is not used on it
MIN_CONTRAST = 100.0

DISTRACTOR_SHAPES = ("circle", "square", "triangle", "bar")
MAX_DISTRACTORS = 3

# --------------------------------------------------------------------------------------
# classes and parts
#
# Primitives, in layout-box units (u right, v down, both in [0, 1]; the layout box is
# aspect * h wide and h high):
#   ("E", cu, cv, ru, rv)          ellipse, radii as shares of width / height
#   ("C", cu, cv, r)               circle, radius as a share of the height
#   ("R", u0, v0, u1, v1)          rectangle
#   ("P", (u, v), (u, v), ...)     convex polygon
#   ("L", u0, v0, u1, v1, t)       segment with half-thickness t (share of the height)
#   ("H", cu, cv, ru, rv)          upper half of an ellipse (v <= cv)


@dataclass(frozen=True)
class PartSpec:
    """One named part: its instances (each a tuple of primitives) and its colour choices.

    `colours` None means "the object's main colour" (e.g. a cat's head and legs)."""

    name: str
    instances: tuple[tuple[tuple, ...], ...]
    colours: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ClassSpec:
    """One class: names, place in the hierarchy, layout aspect, parts in drawing order,
    the part that carries the main colour and texture, and the allowed main colours."""

    name: str
    superclass: str
    synonyms: tuple[str, ...]
    aspect: float
    parts: tuple[PartSpec, ...]
    main_part: str
    palette: tuple[str, ...]
    confusable_with: str | None = None

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]


SUPERCLASS_PARENT = {
    "vehicle": "artifact",
    "building": "artifact",
    "household item": "artifact",
    "land animal": "organism",
    "plant": "organism",
    "sea animal": "organism",
}


def _P(*name_instances_colours) -> PartSpec:
    name, instances, colours = name_instances_colours
    return PartSpec(name, tuple(tuple(inst) for inst in instances), colours)


def _lighthouse_band(v0: float, v1: float) -> tuple:
    # a band across the lighthouse's trapezoid tower (bottom 0.98 wide 0.2..0.8, top 0.25 wide 0.35..0.65)
    def left(v: float) -> float:
        return 0.35 - 0.15 * (v - 0.25) / 0.73

    return ("P", (left(v0), v0), (1 - left(v0), v0), (1 - left(v1), v1), (left(v1), v1))


_CAR_BODY = ("R", 0.02, 0.42, 0.98, 0.78)
_CAR_PARTS = (
    _P("roof", [[("P", (0.16, 0.44), (0.28, 0.10), (0.64, 0.10), (0.76, 0.44))]], None),
    _P("body", [[_CAR_BODY]], None),
    _P("window", [[("P", (0.27, 0.42), (0.34, 0.17), (0.44, 0.17), (0.44, 0.42))],
                  [("R", 0.49, 0.17, 0.62, 0.42)]], ("white", "blue", "gray", "black")),
    _P("wheel", [[("C", 0.24, 0.79, 0.19)], [("C", 0.76, 0.79, 0.19)]], ("black", "gray")),
)
_VEHICLE_PALETTE = ("red", "orange", "yellow", "green", "blue", "purple", "white", "gray", "black", "pink")
_FISH_PARTS = (
    _P("tail", [[("P", (0.16, 0.50), (0.0, 0.14), (0.0, 0.86))]], None),
    _P("body", [[("E", 0.47, 0.52, 0.38, 0.30)]], None),
    _P("fin", [[("P", (0.38, 0.62), (0.56, 0.62), (0.44, 0.90))]], ("orange", "yellow", "gray", "white", "blue")),
    _P("eye", [[("C", 0.72, 0.44, 0.07)]], ("black",)),
)
_SEA_PALETTE = ("orange", "yellow", "blue", "gray", "red", "purple", "pink", "white")
_PET_BODY = _P("body", [[("E", 0.42, 0.62, 0.33, 0.22)]], None)
_PET_LEGS = _P("leg", [[("R", 0.17, 0.70, 0.24, 0.98)], [("R", 0.30, 0.72, 0.37, 0.98)],
                       [("R", 0.48, 0.72, 0.55, 0.98)], [("R", 0.60, 0.70, 0.67, 0.98)]], None)
_PET_PALETTE = ("brown", "gray", "black", "white", "orange", "yellow")

CLASS_SPECS: tuple[ClassSpec, ...] = (
    # ---------------------------------------------------------------- vehicles
    ClassSpec("car", "vehicle", ("automobile",), 1.8, _CAR_PARTS, "body", _VEHICLE_PALETTE, "truck"),
    ClassSpec("truck", "vehicle", ("lorry",), 1.8,
              _CAR_PARTS[:2] + (_P("cargo box", [[("R", 0.52, 0.02, 0.98, 0.56)]],
                                   ("brown", "gray", "white", "orange", "yellow")),) + _CAR_PARTS[2:],
              "body", _VEHICLE_PALETTE, "car"),
    ClassSpec("bus", "vehicle", ("coach",), 2.2, (
        _P("body", [[("R", 0.02, 0.08, 0.98, 0.84)]], None),
        _P("window", [[("R", 0.26 + 0.18 * i, 0.20, 0.38 + 0.18 * i, 0.44)] for i in range(4)],
           ("white", "blue", "gray", "black")),
        _P("door", [[("R", 0.07, 0.24, 0.19, 0.80)]], ("black", "gray", "white", "brown")),
        _P("wheel", [[("C", 0.22, 0.82, 0.17)], [("C", 0.80, 0.82, 0.17)]], ("black", "gray")),
    ), "body", _VEHICLE_PALETTE),
    ClassSpec("airplane", "vehicle", ("plane", "aeroplane", "jet"), 2.0, (
        _P("tail", [[("P", (0.04, 0.58), (0.04, 0.08), (0.12, 0.08), (0.24, 0.50))]], None),
        _P("fuselage", [[("E", 0.50, 0.56, 0.47, 0.17)]], None),
        _P("wing", [[("P", (0.36, 0.56), (0.60, 0.56), (0.46, 0.98), (0.36, 0.98))]],
           ("gray", "white", "blue", "red", "black")),
        _P("window", [[("C", 0.56 + 0.08 * i, 0.50, 0.045)] for i in range(4)], ("black", "blue", "white")),
    ), "fuselage", ("white", "gray", "red", "blue", "yellow", "orange", "green", "purple")),
    # ---------------------------------------------------------------- buildings
    ClassSpec("house", "building", ("home", "cottage"), 1.0, (
        _P("chimney", [[("R", 0.66, 0.08, 0.78, 0.40)]], ("brown", "gray", "black", "red")),
        _P("wall", [[("R", 0.12, 0.46, 0.88, 0.98)]], None),
        _P("roof", [[("P", (0.03, 0.48), (0.50, 0.05), (0.97, 0.48))]], ("red", "brown", "black", "gray", "orange")),
        _P("door", [[("R", 0.42, 0.66, 0.58, 0.98)]], ("brown", "black", "blue", "green")),
        _P("window", [[("R", 0.19, 0.56, 0.34, 0.72)], [("R", 0.66, 0.56, 0.81, 0.72)]], ("white", "blue", "yellow")),
    ), "wall", ("white", "yellow", "pink", "orange", "gray", "blue", "green", "brown", "red")),
    ClassSpec("castle", "building", ("fortress", "palace"), 1.1, (
        _P("battlement", [[("R", 0.25 + 0.18 * i, 0.25, 0.33 + 0.18 * i, 0.37)] for i in range(3)]
           + [[("R", u, 0.05, u + 0.07, 0.16)] for u in (0.02, 0.15, 0.78, 0.91)], None),
        _P("wall", [[("R", 0.15, 0.36, 0.85, 0.98)]], None),
        _P("tower", [[("R", 0.02, 0.15, 0.22, 0.98)], [("R", 0.78, 0.15, 0.98, 0.98)]], None),
        _P("gate", [[("R", 0.39, 0.70, 0.61, 0.98), ("C", 0.50, 0.70, 0.11)]], ("black", "brown")),
        _P("flag", [[("P", (0.50, 0.04), (0.50, 0.20), (0.70, 0.12))]], ("red", "blue", "yellow", "green")),
    ), "wall", ("gray", "brown", "white", "yellow", "pink", "purple", "orange")),
    ClassSpec("lighthouse", "building", ("beacon",), 0.5, (
        _P("tower", [[("P", (0.20, 0.98), (0.35, 0.25), (0.65, 0.25), (0.80, 0.98))]], None),
        _P("stripe", [[_lighthouse_band(0.40, 0.52)], [_lighthouse_band(0.64, 0.76)]], ("red", "black", "blue")),
        _P("lantern", [[("R", 0.30, 0.13, 0.70, 0.26)]], ("yellow", "orange")),
        _P("roof", [[("P", (0.24, 0.14), (0.50, 0.01), (0.76, 0.14))]], ("red", "black", "gray")),
        _P("door", [[("R", 0.43, 0.84, 0.57, 0.98)]], ("black", "brown")),
    ), "tower", ("white", "gray", "yellow", "orange", "pink")),
    ClassSpec("tent", "building", ("marquee",), 1.3, (
        _P("pole", [[("L", 0.50, 0.03, 0.50, 0.20, 0.025)]], ("black", "brown", "gray")),
        _P("flag", [[("P", (0.50, 0.02), (0.50, 0.14), (0.66, 0.08))]], ("red", "blue", "yellow", "green", "white")),
        _P("canvas", [[("P", (0.01, 0.98), (0.50, 0.15), (0.99, 0.98))]], None),
        _P("door", [[("P", (0.36, 0.98), (0.50, 0.50), (0.64, 0.98))]], ("black", "brown")),
    ), "canvas", ("orange", "green", "blue", "red", "yellow", "purple", "white", "brown")),
    # ---------------------------------------------------------------- household items
    ClassSpec("cup", "household item", ("mug",), 1.2, (
        _P("saucer", [[("E", 0.42, 0.92, 0.40, 0.07)]], ("white", "gray", "blue", "yellow")),
        _P("handle", [[("L", 0.66, 0.34, 0.90, 0.38, 0.06), ("L", 0.90, 0.38, 0.88, 0.64, 0.06),
                       ("L", 0.88, 0.64, 0.64, 0.72, 0.06)]], None),
        _P("body", [[("P", (0.10, 0.16), (0.74, 0.16), (0.66, 0.88), (0.18, 0.88))]], None),
    ), "body", ("red", "blue", "green", "yellow", "white", "pink", "purple", "orange", "black")),
    ClassSpec("lamp", "household item", ("lampshade",), 0.7, (
        _P("stand", [[("L", 0.50, 0.40, 0.50, 0.92, 0.045)]], ("black", "gray", "brown")),
        _P("base", [[("E", 0.50, 0.93, 0.34, 0.06)]], ("black", "gray", "brown")),
        _P("shade", [[("P", (0.10, 0.46), (0.32, 0.03), (0.68, 0.03), (0.90, 0.46))]], None),
    ), "shade", ("yellow", "white", "orange", "red", "green", "blue", "pink", "purple")),
    ClassSpec("clock", "household item", ("timepiece",), 1.0, (
        _P("frame", [[("C", 0.50, 0.50, 0.49)]], None),
        _P("face", [[("C", 0.50, 0.50, 0.37)]], ("white", "yellow")),
        _P("hand", [[("L", 0.50, 0.50, 0.50, 0.20, 0.035)], [("L", 0.50, 0.50, 0.74, 0.56, 0.035)]], ("black",)),
    ), "frame", ("red", "blue", "green", "brown", "black", "gray", "purple", "orange")),
    ClassSpec("umbrella", "household item", ("parasol",), 1.2, (
        _P("shaft", [[("L", 0.50, 0.02, 0.50, 0.86, 0.03)]], ("black", "gray", "brown")),
        _P("handle", [[("L", 0.50, 0.84, 0.48, 0.97, 0.04), ("L", 0.48, 0.97, 0.37, 0.93, 0.04),
                       ("L", 0.37, 0.93, 0.36, 0.84, 0.04)]], ("black", "brown", "red")),
        _P("canopy", [[("H", 0.50, 0.50, 0.49, 0.42)]], None),
    ), "canopy", ("red", "blue", "green", "yellow", "purple", "pink", "orange", "black")),
    # ---------------------------------------------------------------- land animals
    ClassSpec("cat", "land animal", ("kitten",), 1.3, (
        _P("tail", [[("L", 0.12, 0.58, 0.04, 0.18, 0.05)]], None),
        _PET_LEGS, _PET_BODY,
        _P("ear", [[("P", (0.63, 0.27), (0.66, 0.02), (0.74, 0.20))],
                   [("P", (0.80, 0.20), (0.88, 0.02), (0.91, 0.27))]], None),
        _P("head", [[("C", 0.77, 0.38, 0.21)]], None),
        _P("eye", [[("C", 0.71, 0.36, 0.045)], [("C", 0.83, 0.36, 0.045)]], ("green", "yellow", "blue")),
    ), "body", _PET_PALETTE),
    ClassSpec("dog", "land animal", ("puppy", "hound"), 1.3, (
        _P("tail", [[("L", 0.12, 0.58, 0.02, 0.40, 0.05)]], None),
        _PET_LEGS, _PET_BODY,
        _P("head", [[("C", 0.77, 0.38, 0.21)]], None),
        _P("ear", [[("E", 0.63, 0.42, 0.05, 0.19)], [("E", 0.91, 0.42, 0.05, 0.19)]], ("brown", "black", "gray", "white")),
        _P("eye", [[("C", 0.72, 0.34, 0.04)], [("C", 0.82, 0.34, 0.04)]], ("black",)),
        _P("nose", [[("C", 0.77, 0.47, 0.05)]], ("black", "pink")),
    ), "body", _PET_PALETTE),
    ClassSpec("bird", "land animal", ("sparrow",), 1.2, (
        _P("leg", [[("L", 0.42, 0.74, 0.40, 0.98, 0.025)], [("L", 0.54, 0.74, 0.56, 0.98, 0.025)]], ("orange", "black", "yellow")),
        _P("tail", [[("P", (0.20, 0.52), (0.02, 0.36), (0.02, 0.70))]], None),
        _P("body", [[("E", 0.45, 0.56, 0.30, 0.22)]], None),
        _P("wing", [[("E", 0.40, 0.52, 0.19, 0.11)]], ("black", "gray", "white", "brown", "blue")),
        _P("head", [[("C", 0.72, 0.33, 0.15)]], None),
        _P("beak", [[("P", (0.82, 0.28), (0.99, 0.36), (0.82, 0.42))]], ("orange", "yellow")),
        _P("eye", [[("C", 0.76, 0.30, 0.035)]], ("black",)),
    ), "body", ("red", "blue", "yellow", "brown", "gray", "black", "green", "orange")),
    ClassSpec("rabbit", "land animal", ("bunny", "hare"), 0.9, (
        _P("ear", [[("E", 0.52, 0.17, 0.06, 0.17)], [("E", 0.70, 0.17, 0.06, 0.17)]], None),
        _P("tail", [[("C", 0.12, 0.68, 0.09)]], ("white", "gray")),
        _P("body", [[("E", 0.42, 0.70, 0.34, 0.26)]], None),
        _P("head", [[("C", 0.62, 0.42, 0.17)]], None),
        _P("eye", [[("C", 0.67, 0.39, 0.035)]], ("black", "pink")),
        _P("leg", [[("E", 0.64, 0.93, 0.14, 0.055)], [("E", 0.26, 0.93, 0.14, 0.055)]], None),
    ), "body", _PET_PALETTE),
    # ---------------------------------------------------------------- plants
    ClassSpec("tree", "plant", ("oak",), 0.9, (
        _P("trunk", [[("R", 0.42, 0.52, 0.58, 0.98)]], ("brown", "gray", "black")),
        _P("crown", [[("C", 0.50, 0.32, 0.30), ("C", 0.27, 0.45, 0.20), ("C", 0.73, 0.45, 0.20)]], None),
    ), "crown", ("green", "orange", "yellow", "red", "pink", "brown")),
    ClassSpec("pine", "plant", ("fir", "conifer"), 0.7, (
        _P("trunk", [[("R", 0.42, 0.80, 0.58, 0.98)]], ("brown", "gray", "black")),
        _P("crown", [[("P", (0.03, 0.84), (0.50, 0.42), (0.97, 0.84)),
                      ("P", (0.12, 0.60), (0.50, 0.20), (0.88, 0.60)),
                      ("P", (0.22, 0.36), (0.50, 0.01), (0.78, 0.36))]], None),
    ), "crown", ("green", "white", "blue", "gray", "yellow", "brown")),
    ClassSpec("flower", "plant", ("blossom", "daisy"), 0.8, (
        _P("stem", [[("L", 0.50, 0.40, 0.50, 0.98, 0.03)]], ("green",)),
        _P("leaf", [[("E", 0.34, 0.72, 0.16, 0.05)], [("E", 0.66, 0.82, 0.16, 0.05)]], ("green",)),
        _P("petal", [[("C", 0.50 + 0.22 * np.cos(a) / 0.8, 0.30 + 0.22 * np.sin(a), 0.12)
                      for a in np.linspace(0, 2 * np.pi, 7)[:-1]]], None),
        _P("centre", [[("C", 0.50, 0.30, 0.11)]], ("yellow", "brown", "black", "orange")),
    ), "petal", ("red", "pink", "white", "purple", "blue", "yellow", "orange")),
    ClassSpec("cactus", "plant", ("succulent",), 0.8, (
        _P("arm", [[("L", 0.40, 0.55, 0.16, 0.55, 0.06), ("L", 0.16, 0.55, 0.16, 0.30, 0.06)],
                   [("L", 0.60, 0.45, 0.84, 0.45, 0.06), ("L", 0.84, 0.45, 0.84, 0.20, 0.06)]], None),
        _P("stem", [[("R", 0.38, 0.14, 0.62, 0.86), ("C", 0.50, 0.14, 0.12)]], None),
        _P("pot", [[("P", (0.22, 0.80), (0.78, 0.80), (0.70, 0.99), (0.30, 0.99))]], ("brown", "orange", "red", "gray")),
    ), "stem", ("green", "yellow", "blue", "gray", "purple", "brown")),
    # ---------------------------------------------------------------- sea animals
    ClassSpec("fish", "sea animal", ("goldfish",), 1.8, _FISH_PARTS, "body", _SEA_PALETTE, "shark"),
    ClassSpec("shark", "sea animal", ("dogfish",), 1.8,
              (_P("dorsal fin", [[("P", (0.33, 0.30), (0.56, 0.30), (0.40, 0.0))]], None),) + _FISH_PARTS,
              "body", _SEA_PALETTE, "fish"),
    ClassSpec("jellyfish", "sea animal", ("medusa",), 0.8, (
        _P("tentacle", [[("L", u, 0.40, u - 0.06, 0.70, 0.03), ("L", u - 0.06, 0.70, u + 0.02, 0.98, 0.03)]
                        for u in (0.22, 0.42, 0.62, 0.82)], None),
        _P("bell", [[("H", 0.50, 0.44, 0.48, 0.42)]], None),
        _P("spot", [[("C", 0.36, 0.28, 0.06)], [("C", 0.62, 0.22, 0.06)]], ("white", "yellow", "pink")),
    ), "bell", ("pink", "purple", "blue", "white", "orange", "red", "yellow")),
    ClassSpec("crab", "sea animal", ("lobster",), 1.5, (
        _P("leg", [[("L", 0.5 + s * 0.25, 0.6 + dv, 0.5 + s * 0.44, 0.72 + dv + 0.12, 0.03)]
                   for s in (-1, 1) for dv in (-0.08, 0.04, 0.14)], None),
        _P("claw", [[("L", 0.32, 0.45, 0.16, 0.26, 0.04), ("C", 0.13, 0.20, 0.10)],
                    [("L", 0.68, 0.45, 0.84, 0.26, 0.04), ("C", 0.87, 0.20, 0.10)]], None),
        _P("shell", [[("E", 0.50, 0.58, 0.30, 0.24)]], None),
        _P("eye", [[("L", 0.43, 0.40, 0.41, 0.18, 0.02), ("C", 0.41, 0.16, 0.045)],
                   [("L", 0.57, 0.40, 0.59, 0.18, 0.02), ("C", 0.59, 0.16, 0.045)]], ("black",)),
    ), "shell", ("red", "orange", "brown", "purple", "blue", "pink")),
)
CLASS_BY_NAME: dict[str, ClassSpec] = {c.name: c for c in CLASS_SPECS}
SUPERCLASSES = tuple(dict.fromkeys(c.superclass for c in CLASS_SPECS))
# classes picked by `num_classes=k`: the first k of this round-robin order over superclasses
SUBSET_ORDER = tuple(
    c.name
    for rank in range(max(sum(1 for x in CLASS_SPECS if x.superclass == s) for s in SUPERCLASSES))
    for s in SUPERCLASSES
    for c in [x for x in CLASS_SPECS if x.superclass == s][rank : rank + 1]
)
MAX_PARTS = max(len(c.parts) for c in CLASS_SPECS)


def class_path(name: str) -> list[str]:
    """Root-to-leaf path of a class, e.g. ``["thing", "artifact", "vehicle", "car"]``."""
    spec = CLASS_BY_NAME[name]
    return [ROOT, SUPERCLASS_PARENT[spec.superclass], spec.superclass, spec.name]


def world_classes(config: WorldConfig) -> list[ClassSpec]:
    """The classes of this world in label order (class_id = position in the list)."""
    if config.num_classes is None:
        return list(CLASS_SPECS)
    keep = set(SUBSET_ORDER[: config.num_classes])
    return [c for c in CLASS_SPECS if c.name in keep]


def class_table(config: WorldConfig) -> pd.DataFrame:
    """One row per class of the world, in label order.

    Columns: class_id (int, 0..C-1, the label index), name, synonyms (list[str], name first),
    superclass, path (list[str], root -> leaf), parts (list[str], drawing order),
    main_part, palette (list[str], allowed main colours), confusable_with (str or None:
    the class whose parts differ by exactly one, when it is in the world),
    spurious_background / spurious_share (str / float for the spurious class, else None).
    """
    classes = world_classes(config)
    names = {c.name for c in classes}
    rows = []
    for class_id, c in enumerate(classes):
        spurious = c.name == config.spurious_class
        rows.append(
            {
                "class_id": class_id,
                "name": c.name,
                "synonyms": [c.name, *c.synonyms],
                "superclass": c.superclass,
                "path": class_path(c.name),
                "parts": list(dict.fromkeys(c.part_names)),
                "main_part": c.main_part,
                "palette": list(c.palette),
                "confusable_with": c.confusable_with if c.confusable_with in names else None,
                "spurious_background": config.spurious_background if spurious else None,
                "spurious_share": float(config.spurious_share) if spurious else None,
            }
        )
    frame = pd.DataFrame(rows)
    # keep None (not NaN) for classes without a partner / spurious background
    for column in ("confusable_with", "spurious_background", "spurious_share"):
        frame[column] = pd.Series([r[column] for r in rows], dtype=object)
    return frame
