"""Random scene parameters of a split: class, background, colour, texture, geometry and
distractors, drawn from `numpy.random.default_rng` seeded by (seed, split[, chunk])."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .catalogue import (
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    DISTRACTOR_SHAPES,
    MAX_DISTRACTORS,
    MAX_PARTS,
    MIN_CONTRAST,
    TEXTURES,
    ClassSpec,
    WorldConfig,
    world_classes,
)

# --------------------------------------------------------------------------------------
# random scene parameters


@dataclass
class WorldSplit:
    """One split of the world.

    images: uint8 (N, H, W, 3). scenes: one row per image (see `generate_split`).
    parts: one row per drawn part instance (image_id, index, part, instance, x0, y0, x1, y1,
    colour, area)."""

    images: np.ndarray
    scenes: pd.DataFrame
    parts: pd.DataFrame


_SPLIT_STREAM = {"train": 1, "probe": 2, "test": 3}
_CHUNK = 512  # images per drawing batch; fixed so results never depend on it


def _rng(config: WorldConfig, split: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([int(config.seed), _SPLIT_STREAM[split], *extra])


def _allowed_main_colours(spec: ClassSpec, background: str) -> list[int]:
    bg = np.array(BACKGROUND_RGB[background], dtype=np.float32)
    ok = [
        COLOUR_NAMES.index(c)
        for c in spec.palette
        if np.linalg.norm(np.array(COLOURS[c], dtype=np.float32) - bg) >= MIN_CONTRAST
    ]
    return ok or [COLOUR_NAMES.index(c) for c in spec.palette]


def _sample_scene_params(config: WorldConfig, split: str) -> dict[str, np.ndarray]:
    """All per-image random choices of a split, drawn in one fixed order."""
    rng = _rng(config, split)
    n = config.split_size(split)
    classes = world_classes(config)
    n_classes = len(classes)
    labels = rng.permutation(np.arange(n) % n_classes)
    # backgrounds: uniform, except the spurious class in train / probe
    background = rng.integers(0, len(BACKGROUNDS), size=n)
    spurious_bg = BACKGROUNDS.index(config.spurious_background)
    other_bg = np.array([i for i in range(len(BACKGROUNDS)) if i != spurious_bg])
    u_spur = rng.random(n)
    pick_other = other_bg[rng.integers(0, len(other_bg), size=n)]
    if split != "test":
        names = [c.name for c in classes]
        if config.spurious_class in names:
            is_spur = labels == names.index(config.spurious_class)
            background = np.where(
                is_spur, np.where(u_spur < config.spurious_share, spurious_bg, pick_other), background
            )
    # main colour: uniform over the class palette minus colours that vanish on the background
    u_colour = rng.random(n)
    colour = np.zeros(n, dtype=np.int64)
    for k, spec in enumerate(classes):
        for b, bg_name in enumerate(BACKGROUNDS):
            sel = (labels == k) & (background == b)
            allowed = np.array(_allowed_main_colours(spec, bg_name))
            colour[sel] = allowed[(u_colour[sel] * len(allowed)).astype(np.int64)]
    texture = rng.integers(0, len(TEXTURES), size=n)
    # geometry: longer layout side = scale * image side; aspect jitter; position inside image
    scale = rng.uniform(config.min_scale, config.max_scale, size=n)
    aspect_jitter = np.exp(rng.uniform(np.log(0.85), np.log(1.15), size=n))
    aspect = np.array([classes[k].aspect for k in labels]) * aspect_jitter if n else np.zeros(0)
    side = config.image_size
    w = np.where(aspect >= 1, scale * side, scale * side * aspect)
    h = np.where(aspect >= 1, scale * side / np.maximum(aspect, 1e-6), scale * side)
    x0 = rng.random(n) * (side - w)
    y0 = rng.random(n) * (side - h)
    flip = rng.random(n) < 0.5
    shade = rng.uniform(0.75, 1.15, size=n)
    # part colours: one choice per (image, part slot); uniform over the part's options
    u_parts = rng.random((n, MAX_PARTS))
    # distractors
    n_distractors = rng.integers(0, config.max_distractors + 1, size=n)
    d_shape = rng.integers(0, len(DISTRACTOR_SHAPES), size=(n, MAX_DISTRACTORS))
    d_colour = rng.integers(0, len(COLOUR_NAMES), size=(n, MAX_DISTRACTORS))
    d_size = rng.uniform(0.05, 0.10, size=(n, MAX_DISTRACTORS)) * side
    d_cx = rng.random((n, MAX_DISTRACTORS)) * side
    d_cy = rng.random((n, MAX_DISTRACTORS)) * side
    bg_params = rng.random((n, 8))
    noise_std = rng.uniform(0.25, 1.0, size=n) * config.noise_std
    return dict(
        labels=labels, background=background, colour=colour, texture=texture, x0=x0, y0=y0,
        w=w, h=h, flip=flip, shade=shade, u_parts=u_parts, n_distractors=n_distractors,
        d_shape=d_shape, d_colour=d_colour, d_size=d_size, d_cx=d_cx, d_cy=d_cy,
        bg_params=bg_params, noise_std=noise_std,
    )
