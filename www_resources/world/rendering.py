"""Painting scenes: primitive masks, textures, backgrounds and noise, vectorised over batches of
images (`generate_split`), the scene and part tables, captions and the gallery picture."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .catalogue import (
    _COLOUR_RGB,
    BACKGROUND_PHRASES,
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOUR_NAMES,
    DISTRACTOR_SHAPES,
    MAX_DISTRACTORS,
    MAX_PARTS,
    TEXTURES,
    WorldConfig,
    _check_split,
    class_path,
    world_classes,
)
from .sampling import _CHUNK, WorldSplit, _rng, _sample_scene_params

# --------------------------------------------------------------------------------------
# primitive masks (vectorised over a batch of instances)


class _Layout:
    """Maps layout-box units to pixels for a batch of B instances (arrays of shape (B, 1, 1))."""

    def __init__(self, x0, y0, w, h, flip, size: int):
        shape = (-1, 1, 1)
        self.x0, self.y0 = x0.reshape(shape), y0.reshape(shape)
        self.w, self.h = w.reshape(shape), h.reshape(shape)
        self.flip = flip.reshape(shape)
        self.X = (np.arange(size, dtype=np.float32) + 0.5).reshape(1, 1, size)
        self.Y = (np.arange(size, dtype=np.float32) + 0.5).reshape(1, size, 1)

    def x(self, u: float) -> np.ndarray:
        return (self.x0 + np.where(self.flip, 1.0 - u, u) * self.w).astype(np.float32)

    def y(self, v: float) -> np.ndarray:
        return (self.y0 + v * self.h).astype(np.float32)

    def mask(self, prim: tuple) -> np.ndarray:
        kind = prim[0]
        X, Y = self.X, self.Y
        if kind in ("E", "C", "H"):
            if kind == "C":
                cu, cv, r = prim[1:]
                rx = ry = (r * self.h).astype(np.float32)
            else:
                cu, cv, ru, rv = prim[1:]
                rx, ry = (ru * self.w).astype(np.float32), (rv * self.h).astype(np.float32)
            cx, cy = self.x(cu), self.y(cv)
            inside = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0
            if kind == "H":
                inside &= Y <= cy
            return inside
        if kind == "R":
            u0, v0, u1, v1 = prim[1:]
            xa, xb = self.x(u0), self.x(u1)
            xl, xr = np.minimum(xa, xb), np.maximum(xa, xb)
            return ((X >= xl) & (X < xr)) & ((Y >= self.y(v0)) & (Y < self.y(v1)))
        if kind == "P":
            pts = prim[1:]
            xs = [self.x(u) for u, _ in pts]
            ys = [self.y(v) for _, v in pts]
            # orientation of the polygon per instance (a mirror reverses it)
            area = sum(xs[i] * ys[(i + 1) % len(pts)] - xs[(i + 1) % len(pts)] * ys[i] for i in range(len(pts)))
            sign = np.where(area >= 0, 1.0, -1.0).astype(np.float32)
            inside = None
            for i in range(len(pts)):
                j = (i + 1) % len(pts)
                dx, dy = xs[j] - xs[i], ys[j] - ys[i]
                edge = (dx * sign) * (Y - ys[i]) - (dy * sign) * (X - xs[i]) >= 0
                inside = edge if inside is None else inside & edge
            return inside
        if kind == "L":
            u0, v0, u1, v1, t = prim[1:]
            ax, ay, bx, by = self.x(u0), self.y(v0), self.x(u1), self.y(v1)
            dx, dy = bx - ax, by - ay
            length2 = np.maximum(dx * dx + dy * dy, 1e-6)
            s = np.clip(((X - ax) * dx + (Y - ay) * dy) / length2, 0.0, 1.0)
            px, py = X - ax - s * dx, Y - ay - s * dy
            half = np.maximum(t * self.h, 0.5).astype(np.float32)
            return px * px + py * py <= half * half
        raise ValueError(f"unknown primitive kind {kind!r}")


def _mask_box(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Boxes of boolean masks (B, S, S): x0, y0, x1, y1 (exclusive), area; zeros when empty."""
    size = mask.shape[-1]
    rows = mask.any(axis=2)
    cols = mask.any(axis=1)
    nonempty = rows.any(axis=1)
    y0 = np.argmax(rows, axis=1)
    y1 = size - np.argmax(rows[:, ::-1], axis=1)
    x0 = np.argmax(cols, axis=1)
    x1 = size - np.argmax(cols[:, ::-1], axis=1)
    area = mask.sum(axis=(1, 2))
    z = lambda a: np.where(nonempty, a, 0)  # noqa: E731
    return z(x0), z(y0), z(x1), z(y1), area


def _texture_mask(texture: np.ndarray, lay: _Layout) -> np.ndarray:
    """Pattern pixels (B, S, S) of each instance's texture, in object-local units."""
    size = lay.X.shape[-1]
    out = np.zeros((len(texture), size, size), dtype=bool)
    for t in (1, 2, 3):
        sel = texture == t
        if not sel.any():
            continue
        u = (lay.X - lay.x0[sel]) / lay.h[sel]
        v = (lay.Y - lay.y0[sel]) / lay.h[sel]
        if t == 1:  # diagonal stripes
            out[sel] = (np.floor((u + v) * 4.0) % 2) == 1
        elif t == 2:  # spots on a square grid
            fu, fv = (u * 5.0) % 1.0 - 0.5, (v * 5.0) % 1.0 - 0.5
            out[sel] = fu * fu + fv * fv < 0.07
        else:  # checkerboard
            out[sel] = (np.floor(u * 4.0) + np.floor(v * 4.0)) % 2 == 1
    return out


class _NoiseBank:
    """A long stream of standard normals; an image's noise is a window at a random offset.

    Drawing fresh normals for every pixel dominated generation time; windows of one bank are
    as good for pixel noise and cost one memory copy."""

    def __init__(self, rng: np.random.Generator, length: int = 1 << 21):
        self.bank = rng.standard_normal(length, dtype=np.float32)

    def take(self, rng: np.random.Generator, batch: int, shape: tuple[int, ...]) -> np.ndarray:
        width = int(np.prod(shape))
        if width > len(self.bank):
            return rng.standard_normal((batch, *shape), dtype=np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(self.bank, width)
        offsets = rng.integers(0, len(self.bank) - width + 1, size=batch)
        return windows[offsets].reshape(batch, *shape)


# palette slots of the per-image index map
_SLOT_BG = 0
_SLOT_DISTRACTOR = 1  # 1..MAX_DISTRACTORS
_SLOT_TEXTURE = 1 + MAX_DISTRACTORS
_SLOT_PART = 2 + MAX_DISTRACTORS  # + part position in the class's part list
_N_SLOTS = _SLOT_PART + MAX_PARTS


def _texture_rgb(main_rgb: np.ndarray) -> np.ndarray:
    luminance = main_rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    dark = luminance[:, None] < 90
    return np.where(dark, main_rgb * 0.5 + 110, main_rgb * 0.5)


# --------------------------------------------------------------------------------------
# backgrounds


def _smooth_noise(rng: np.random.Generator, batch: int, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid in [-1, 1]: (B, S, S) float32 low-frequency noise."""
    grid = rng.uniform(-1, 1, size=(batch, cells + 1, cells + 1)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    lo = np.minimum(pos.astype(np.int64), cells - 1)
    frac = pos - lo
    interp = np.zeros((size, cells + 1), dtype=np.float32)
    interp[np.arange(size), lo] = 1 - frac
    interp[np.arange(size), lo + 1] += frac
    return np.einsum("ia,bac,jc->bij", interp, grid, interp, optimize=True)


def _draw_backgrounds(
    kind: str, params: np.ndarray, size: int, rng: np.random.Generator, bank: _NoiseBank
) -> np.ndarray:
    """Backgrounds of one kind for B images: float32 (B, S, S, 3) in 0..255.

    params: (B, 8) uniforms in [0, 1) that place each image's features (line, moon, ...)."""
    b = params.shape[0]
    ys = ((np.arange(size, dtype=np.float32) + 0.5) / size).reshape(1, size, 1)
    xs = ((np.arange(size, dtype=np.float32) + 0.5) / size).reshape(1, 1, size)
    p = [params[:, i].reshape(b, 1, 1).astype(np.float32) for i in range(params.shape[1])]
    base = np.array(BACKGROUND_RGB[kind], dtype=np.float32)
    img = np.broadcast_to(base, (b, size, size, 3)).copy()
    fine = bank.take(rng, b, (size, size))
    fine2 = bank.take(rng, b, (size, size))  # thresholded for speckles, flakes, stars
    if kind == "grass":
        blades = (np.sin(2 * np.pi * (xs * (9 + 6 * p[0]) + p[1]) + 3 * _smooth_noise(rng, b, size, 3)) > 0.3)
        img += (22 * _smooth_noise(rng, b, size, 4) + 10 * fine)[..., None]
        img[..., 1] += 18 * blades
        img[..., 0] -= 8 * blades
    elif kind == "sky":
        top = np.array([80, 140, 225], dtype=np.float32)
        bottom = np.array([175, 210, 245], dtype=np.float32)
        img = top + (bottom - top) * ys[..., None]
        img = np.broadcast_to(img, (b, size, size, 3)).copy()
        cloud = np.clip((_smooth_noise(rng, b, size, 3) - 0.35) * 3, 0, 1)
        img += (250 - img) * cloud[..., None]
    elif kind == "water":
        waves = np.sin(2 * np.pi * (ys * (6 + 5 * p[0]) + 0.12 * np.sin(2 * np.pi * (xs * 2 + p[1])) + p[2]))
        crest = (waves > 0.75)[..., None]
        img = np.where(crest, np.array([110, 170, 225], dtype=np.float32), img)
        img += (12 * _smooth_noise(rng, b, size, 4) + 5 * fine)[..., None]
    elif kind == "road":
        img += (12 * fine)[..., None]
        centre = 0.2 + 0.6 * p[0]
        dash = ((xs * 4 + p[1]) % 1.0) < 0.55
        line = (np.abs(ys - centre) < 0.03) & dash
        # white or yellow lane marks
        line_rgb = np.where(p[2][..., None] < 0.5, np.array([235, 235, 235], np.float32), np.array([235, 205, 40], np.float32))
        img = np.where(line[..., None], line_rgb, img)
    elif kind == "sand":
        img += (20 * _smooth_noise(rng, b, size, 3) + 6 * fine)[..., None]
        speck = fine2 > 1.55  # about 6% of pixels
        img -= (45 * speck)[..., None]
    elif kind == "snow":
        img -= (28 * ys * np.array([1.0, 0.7, 0.2], dtype=np.float32)).reshape(1, size, 1, 3)
        img += (8 * _smooth_noise(rng, b, size, 4) + 4 * fine)[..., None]
        flake = fine2 > 1.88  # about 3%
        img -= (40 * flake)[..., None] * np.array([1.0, 0.8, 0.3], dtype=np.float32)
    elif kind == "night":
        img += (10 * ys)[..., None] * np.array([0.5, 0.5, 1.0], dtype=np.float32)
        star = fine2 > 2.05  # about 2%
        img = np.where(star[..., None], np.array([235, 235, 200], dtype=np.float32), img)
        moon = (xs - (0.15 + 0.7 * p[0])) ** 2 + (ys - (0.1 + 0.3 * p[1])) ** 2 < 0.08**2
        moon &= p[2] < 0.6
        img = np.where(moon[..., None], np.array([240, 235, 180], dtype=np.float32), img)
    elif kind == "brick":
        rows = 6 + np.floor(4 * p[0])
        row_pos = ys * rows + p[1]
        row_index = np.floor(row_pos)
        col_pos = xs * rows / 2 + 0.5 * (row_index % 2) + p[2]
        mortar = ((row_pos % 1.0) < 0.14) | ((col_pos % 1.0) < 0.07)
        shade = 1 + 0.12 * np.sin(row_index * 12.9898 + np.floor(col_pos) * 78.233)
        img = img * shade[..., None]
        img = np.where(mortar[..., None], np.array([205, 200, 190], dtype=np.float32), img)
        img += (8 * fine)[..., None]
    else:  # pragma: no cover - BACKGROUNDS is closed
        raise ValueError(f"unknown background {kind!r}")
    brightness = (0.88 + 0.22 * p[7])[..., None]
    return img * brightness


# --------------------------------------------------------------------------------------
# generation


def generate_split(config: WorldConfig, split: str) -> WorldSplit:
    """Draw one split of the world: deterministic in (config, split).

    Returns a `WorldSplit` with
    - images: uint8 (N, S, S, 3), S = config.image_size;
    - scenes: one row per image: image_id ("<split>/<index:06d>"), split, index, label,
      label_name, superclass, path (list[str]), box_x0, box_y0, box_x1, box_y1 (object box,
      int pixels, x1 / y1 exclusive), background, colour (main colour), texture, caption,
      part_names (list[str] of distinct drawn parts), flipped, scale (longer layout side /
      S), shade, noise_std, n_distractors, distractor_shapes, distractor_colours (list[str]),
      distractor_boxes (list of [x0, y0, x1, y1]);
    - parts: one row per drawn part instance: image_id, index, part, instance, x0, y0, x1,
      y1 (int pixels, exclusive ends; inside the object box), colour, area (pixels of the
      instance's full mask).
    """
    _check_split(split)
    n = config.split_size(split)
    size = config.image_size
    classes = world_classes(config)
    prm = _sample_scene_params(config, split)
    labels = prm["labels"]

    index_map = np.zeros((n, size, size), dtype=np.uint8)
    palette = np.zeros((n, _N_SLOTS, 3), dtype=np.float32)
    main_rgb = _COLOUR_RGB[prm["colour"]] * prm["shade"][:, None].astype(np.float32)
    palette[:, _SLOT_TEXTURE] = _texture_rgb(main_rgb)

    # distractor shapes, behind the object
    d_boxes = np.zeros((n, MAX_DISTRACTORS, 4), dtype=np.int64)
    d_active = np.arange(MAX_DISTRACTORS)[None, :] < prm["n_distractors"][:, None]
    for k in range(MAX_DISTRACTORS):
        palette[:, _SLOT_DISTRACTOR + k] = _COLOUR_RGB[prm["d_colour"][:, k]]
        for start in range(0, n, _CHUNK):
            sl = slice(start, min(n, start + _CHUNK))
            r = prm["d_size"][sl, k]
            lay = _Layout(prm["d_cx"][sl, k] - r, prm["d_cy"][sl, k] - r, 2 * r, 2 * r, np.zeros_like(r, bool), size)
            shapes = prm["d_shape"][sl, k]
            mask = np.zeros((len(r), size, size), dtype=bool)
            for s, prim in enumerate(
                [("C", 0.5, 0.5, 0.5), ("R", 0.1, 0.1, 0.9, 0.9),
                 ("P", (0.5, 0.0), (1.0, 1.0), (0.0, 1.0)), ("R", 0.0, 0.35, 1.0, 0.65)]
            ):
                sel = (shapes == s) & d_active[sl, k]
                if sel.any():
                    sub = _Layout(lay.x0[sel], lay.y0[sel], lay.w[sel], lay.h[sel], lay.flip[sel], size)
                    mask[sel] = sub.mask(prim)
            x0, y0, x1, y1, _ = _mask_box(mask)
            d_boxes[sl, k] = np.stack([x0, y0, x1, y1], axis=1)
            index_map[sl][mask] = _SLOT_DISTRACTOR + k
    d_active &= d_boxes[:, :, 2] > d_boxes[:, :, 0]

    # objects, class by class
    part_rows: list[dict[str, np.ndarray]] = []
    part_colour_idx = np.zeros((n, MAX_PARTS), dtype=np.int64)
    for k, spec in enumerate(classes):
        idx_all = np.flatnonzero(labels == k)
        # colours of this class's parts (per image): main colour or a choice != main colour
        for p, part in enumerate(spec.parts):
            if part.colours is None:
                part_colour_idx[idx_all, p] = prm["colour"][idx_all]
                palette[idx_all, _SLOT_PART + p] = main_rgb[idx_all]
                continue
            options = np.array([COLOUR_NAMES.index(c) for c in part.colours])
            pick = (prm["u_parts"][idx_all, p] * len(options)).astype(np.int64)
            if len(options) > 1:
                clash = options[pick] == prm["colour"][idx_all]
                pick = np.where(clash, (pick + 1) % len(options), pick)
            part_colour_idx[idx_all, p] = options[pick]
            palette[idx_all, _SLOT_PART + p] = _COLOUR_RGB[options[pick]] * prm["shade"][idx_all, None]
        main_slot = _SLOT_PART + spec.part_names.index(spec.main_part)
        for start in range(0, len(idx_all), _CHUNK):
            idx = idx_all[start : start + _CHUNK]
            lay = _Layout(prm["x0"][idx], prm["y0"][idx], prm["w"][idx], prm["h"][idx], prm["flip"][idx], size)
            local = index_map[idx]
            texture = _texture_mask(prm["texture"][idx], lay)
            for p, part in enumerate(spec.parts):
                slot = _SLOT_PART + p
                for i, instance in enumerate(part.instances):
                    mask = lay.mask(instance[0])
                    for prim in instance[1:]:
                        mask |= lay.mask(prim)
                    local[mask] = slot
                    if slot == main_slot:
                        local[mask & texture] = _SLOT_TEXTURE
                    x0, y0, x1, y1, area = _mask_box(mask)
                    part_rows.append(
                        dict(index=idx, part_pos=np.full(len(idx), p), part=np.full(len(idx), part.name, object),
                             instance=np.full(len(idx), i), x0=x0, y0=y0, x1=x1, y1=y1, area=area)
                    )
            index_map[idx] = local

    parts = _parts_frame(part_rows, part_colour_idx, split)
    obj = parts.groupby("index").agg(box_x0=("x0", "min"), box_y0=("y0", "min"), box_x1=("x1", "max"), box_y1=("y1", "max"))
    obj = obj.reindex(np.arange(n), fill_value=0)

    # compose: backgrounds by kind, palette colours, noise
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    bank = _NoiseBank(_rng(config, split, 999))
    for chunk_no, start in enumerate(range(0, n, _CHUNK)):
        sl = np.arange(start, min(n, start + _CHUNK))
        rng = _rng(config, split, 1000 + chunk_no)
        canvas = np.zeros((len(sl), size, size, 3), dtype=np.float32)
        bg_of = prm["background"][sl]
        for b, kind in enumerate(BACKGROUNDS):
            sel = bg_of == b
            if sel.any():
                canvas[sel] = _draw_backgrounds(kind, prm["bg_params"][sl[sel]], size, rng, bank)
        local = index_map[sl]
        flat_index = local.astype(np.int64) + (np.arange(len(sl)) * _N_SLOTS)[:, None, None]
        fg = np.take(palette[sl].reshape(-1, 3), flat_index, axis=0)
        canvas = np.where((local > 0)[..., None], fg, canvas)
        noise = bank.take(rng, len(sl), (size, size, 3))
        canvas += noise * prm["noise_std"][sl, None, None, None].astype(np.float32)
        np.clip(np.rint(canvas, out=canvas), 0, 255, out=canvas)
        images[sl] = canvas.astype(np.uint8)

    scenes = _scenes_frame(config, split, classes, prm, obj, parts, d_boxes, d_active)
    return WorldSplit(images=images, scenes=scenes, parts=parts)


def _parts_frame(part_rows, part_colour_idx, split: str) -> pd.DataFrame:
    cols = ["image_id", "index", "part", "instance", "x0", "y0", "x1", "y1", "colour", "area"]
    if not part_rows:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("image_id", "part", "colour") else np.int64) for c in cols})
    cat = {key: np.concatenate([r[key] for r in part_rows]) for key in part_rows[0]}
    keep = cat["area"] > 0
    cat = {key: v[keep] for key, v in cat.items()}
    order = np.lexsort((cat["instance"], cat["part_pos"], cat["index"]))
    cat = {key: v[order] for key, v in cat.items()}
    colour = np.array(COLOUR_NAMES, dtype=object)[part_colour_idx[cat["index"], cat["part_pos"]]]
    frame = pd.DataFrame(
        {
            "image_id": [f"{split}/{i:06d}" for i in cat["index"]],
            "index": cat["index"].astype(np.int64),
            "part": cat["part"].astype(object),
            "instance": cat["instance"].astype(np.int64),
            "x0": cat["x0"].astype(np.int64),
            "y0": cat["y0"].astype(np.int64),
            "x1": cat["x1"].astype(np.int64),
            "y1": cat["y1"].astype(np.int64),
            "colour": colour,
            "area": cat["area"].astype(np.int64),
        }
    )
    return frame.reset_index(drop=True)


def _join_words(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def caption_for(name: str, colour: str, texture: str, parts: list[str], background: str, main_part: str | None = None) -> str:
    """The canonical caption of a scene, e.g. "a red striped car with roof, window and wheel on a road".

    Part names are listed in the singular, in drawing order, without the main (body) part."""
    texture_word = "" if texture == "plain" else f"{texture} "
    listed = [p for p in parts if p != main_part]
    with_parts = f" with {_join_words(listed)}" if listed else ""
    return f"a {colour} {texture_word}{name}{with_parts} {BACKGROUND_PHRASES[background]}"


def _scenes_frame(config, split, classes, prm, obj, parts, d_boxes, d_active) -> pd.DataFrame:
    n = config.split_size(split)
    labels = prm["labels"]
    part_names = parts.groupby("index", sort=True)["part"].agg(lambda s: list(dict.fromkeys(s)))
    part_names = part_names.reindex(np.arange(n))
    names = [c.name for c in classes]
    rows_caption, rows_path, rows_parts = [], [], []
    d_shapes, d_colours, d_box_lists = [], [], []
    for i in range(n):
        spec = classes[labels[i]]
        plist = part_names.iloc[i] if isinstance(part_names.iloc[i], list) else []
        rows_parts.append(plist)
        rows_path.append(class_path(spec.name))
        rows_caption.append(
            caption_for(spec.name, COLOUR_NAMES[prm["colour"][i]], TEXTURES[prm["texture"][i]], plist,
                        BACKGROUNDS[prm["background"][i]], spec.main_part)
        )
        act = np.flatnonzero(d_active[i])
        d_shapes.append([DISTRACTOR_SHAPES[s] for s in prm["d_shape"][i, act]])
        d_colours.append([COLOUR_NAMES[c] for c in prm["d_colour"][i, act]])
        d_box_lists.append([[int(v) for v in d_boxes[i, k]] for k in act])
    return pd.DataFrame(
        {
            "image_id": [f"{split}/{i:06d}" for i in range(n)],
            "split": split,
            "index": np.arange(n, dtype=np.int64),
            "label": labels.astype(np.int64),
            "label_name": [names[k] for k in labels],
            "superclass": [classes[k].superclass for k in labels],
            "path": rows_path,
            "box_x0": obj["box_x0"].to_numpy(np.int64),
            "box_y0": obj["box_y0"].to_numpy(np.int64),
            "box_x1": obj["box_x1"].to_numpy(np.int64),
            "box_y1": obj["box_y1"].to_numpy(np.int64),
            "background": [BACKGROUNDS[b] for b in prm["background"]],
            "colour": [COLOUR_NAMES[c] for c in prm["colour"]],
            "texture": [TEXTURES[t] for t in prm["texture"]],
            "caption": rows_caption,
            "part_names": rows_parts,
            "flipped": prm["flip"].astype(bool),
            "scale": np.maximum(prm["w"], prm["h"]) / config.image_size,
            "shade": prm["shade"],
            "noise_std": prm["noise_std"],
            "n_distractors": np.array([len(s) for s in d_shapes], dtype=np.int64),
            "distractor_shapes": d_shapes,
            "distractor_colours": d_colours,
            "distractor_boxes": d_box_lists,
        }
    )


def make_gallery(images: np.ndarray, n_cols: int = 8, scale: int = 2, boxes: np.ndarray | None = None) -> np.ndarray:
    """Tile images (N, S, S, 3) uint8 into one uint8 picture, each image upscaled by `scale`.

    boxes: optional (N, 4) int [x0, y0, x1, y1] drawn as 1-pixel yellow frames."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, S, S, 3), got {images.shape}")
    n, s = images.shape[0], images.shape[1]
    pics = images.copy()
    if boxes is not None:
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.int64)):
            if x1 <= x0 or y1 <= y0:
                continue
            pics[i, y0, x0:x1] = pics[i, y1 - 1, x0:x1] = (255, 255, 0)
            pics[i, y0:y1, x0] = pics[i, y0:y1, x1 - 1] = (255, 255, 0)
    pics = pics.repeat(scale, axis=1).repeat(scale, axis=2)
    n_rows = -(-n // n_cols)
    side = s * scale + 2
    out = np.full((n_rows * side, n_cols * side, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, n_cols)
        out[r * side + 1 : r * side + 1 + s * scale, c * side + 1 : c * side + 1 + s * scale] = pics[i]
    return out
