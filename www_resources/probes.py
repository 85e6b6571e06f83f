"""Probe sets: the images on which neurons are examined.

Specs:
    world:<split>                          the embedded world (train | probe | test)
    imagefolder:<folder>[?classes=<file>]  one sub-folder per class (ImageNet val layout); class
                                           indices follow the sorted folder names, as torchvision's
                                           ImageFolder does; the optional file gives one display
                                           name per line in that order
    csv:<file>                             a manifest with columns path, label[, label_name];
                                           relative paths resolve against the file's folder

Every probe set yields a manifest (image_id, path, label, label_name, split) and loads images as
uint8 arrays at the model's input resolution (resize the shorter side, then centre crop). Both the
target model and CLIP see exactly these pixels, so crops and boxes mean the same to both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd

from www_resources import paths

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


class ProbeSetError(ValueError):
    """A probe set spec or its files are unusable; the message says which and what to do."""


@dataclass(frozen=True)
class ProbeSet:
    spec: str
    kind: str
    location: Path | None
    options: dict

    # -- manifest -------------------------------------------------------------------------
    def manifest(self) -> pd.DataFrame:
        """image_id, path, label, label_name, split; sorted by image_id."""
        if self.kind == "world":
            scenes = _world_scenes(self.options["split"])
            return pd.DataFrame(
                {
                    "image_id": scenes["image_id"],
                    "path": [f"world:{self.options['split']}#{i}" for i in scenes["index"]],
                    "label": scenes["label"].astype(int),
                    "label_name": scenes["label_name"],
                    "split": scenes["split"],
                }
            )
        if self.kind == "imagefolder":
            return _imagefolder_manifest(self.location, self.options.get("classes"))
        return _csv_manifest(self.location)

    def class_names(self) -> list[str]:
        """Display name of each class index."""
        if self.kind == "world":
            from www_resources.storage import default_warehouse

            classes = default_warehouse().read("world_classes").sort_values("class_id")
            return classes["name"].tolist()
        m = self.manifest()
        names = m.drop_duplicates("label").set_index("label")["label_name"]
        return [names.get(i, str(i)) for i in range(int(m["label"].max()) + 1)] if len(m) else []

    # -- pixels ---------------------------------------------------------------------------
    def load(self, manifest_rows: pd.DataFrame, size: int, resize: int | None = None):
        """Images of the given manifest rows as uint8 (n, size, size, 3), and {image_id: error}.

        Rows whose file cannot be decoded are left out of the array (their error is returned);
        one bad image never fails the caller.
        """
        if self.kind == "world":
            images = _world_images(self.options["split"])
            index = [int(p.rsplit("#", 1)[1]) for p in manifest_rows["path"]]
            batch = np.asarray(images[index])
            if batch.shape[1] != size:
                batch = _resize_batch(batch, size)
            return batch, list(manifest_rows["image_id"]), {}
        out, ok, errors = [], [], {}
        for image_id, path in zip(manifest_rows["image_id"], manifest_rows["path"]):
            try:
                out.append(load_image(Path(path), size, resize))
                ok.append(image_id)
            except ImageRefused as err:
                errors[image_id] = str(err)
            except Exception as err:  # noqa: BLE001 - any decoding failure is recorded, not fatal
                errors[image_id] = f"corrupt image: {type(err).__name__}: {err}"
        array = np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
        return array, ok, errors


# -- decoding untrusted image files ---------------------------------------------------------------
#
# Probe sets come from anywhere, so every file is decoded defensively. A file is either used
# correctly or refused with a reason that starts with one of REFUSAL_REASONS:
#   - PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) refuses a file before its pixels are
#     decoded; its warning level (over the limit, under twice it) refuses too.
#   - EXIF orientation is applied, as a viewer shows the photo.
#   - transparency (RGBA, LA, palette with a transparent index) is composited over white, not left
#     as whatever colour the file stores under alpha 0.
#   - 16-bit greyscale is scaled to 8 bits (PIL's RGB conversion would clip it to white).
#   - CMYK, greyscale, bilevel and palette images are converted to RGB; animations give their
#     first frame.
#   - symlink loops, missing targets, empty files and files that are not images (HTML saved as
#     .JPEG) are refused with that reason.

REFUSAL_REASONS = (
    "symlink loop", "missing file", "not a regular file", "empty file", "decompression bomb",
    "not an image", "unsupported image", "corrupt image",
)
BACKGROUND = (255, 255, 255)  # what transparent pixels become


class ImageRefused(ValueError):
    """A probe file that is not used; str() starts with one of REFUSAL_REASONS."""


def _refuse(reason: str, detail: str) -> ImageRefused:
    return ImageRefused(f"{reason}: {detail}")


def _check_file(path: Path) -> None:
    import errno
    import stat

    try:
        info = os.stat(path)  # follows symlinks
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _refuse("symlink loop", f"{path} is a symbolic link that points back to itself") from None
        if err.errno == errno.ENOENT:
            target = f" (a symbolic link to {os.readlink(path)})" if os.path.islink(path) else ""
            raise _refuse("missing file", f"{path}{target} does not exist") from None
        raise _refuse("missing file", f"{path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse("not a regular file", f"{path} is not a file")
    if info.st_size == 0:
        raise _refuse("empty file", f"{path} has 0 bytes")


def open_rgb(path: Path) -> tuple["Image.Image", tuple[str, ...]]:  # noqa: F821
    """Decode one file as an 8-bit RGB PIL image, with the adjustments made (see above).

    Raises ImageRefused with the reason for a file that is not used.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _refuse("decompression bomb", f"{err} (PIL's limit, Image.MAX_IMAGE_PIXELS)") from None
        except UnidentifiedImageError:
            with path.open("rb") as raw:
                head = raw.read(24)
            raise _refuse("not an image", f"{path} is no image format PIL reads (it begins {head!r})") from None
        with img:
            try:
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    img.seek(0)
                    notes.append("first frame")
                img.load()
                try:
                    orientation = img.getexif().get(0x0112, 1)
                    if orientation not in (None, 1):
                        img = ImageOps.exif_transpose(img)
                        notes.append("exif rotated")
                except Exception:  # noqa: BLE001 - a broken EXIF block: use the pixels as stored
                    pass
                return _to_rgb(img, notes), tuple(notes)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise _refuse("decompression bomb", str(err)) from None
            except ImageRefused:
                raise
            except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or damaged data
                raise _refuse("corrupt image", f"{type(err).__name__}: {err}") from None


def _to_rgb(img, notes: list[str]):
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 65535 -> 255
            notes.append("16-bit scaled")
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("alpha composited")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return img.copy()  # the caller closes the file's image
    if mode not in ("1", "L", "P", "CMYK", "YCbCr", "HSV"):
        raise _refuse("unsupported image", f"pixel mode {mode!r} has no RGB conversion")
    notes.append({"CMYK": "cmyk converted", "P": "palette converted"}.get(mode, "greyscale converted"
                 if mode in ("1", "L") else f"{mode} converted"))
    return img.convert("RGB")


def load_image(path: Path, size: int, resize: int | None = None) -> np.ndarray:
    """Decode one file (`open_rgb`): shorter side resized to `resize` (default size), centre crop
    `size`; uint8 (size, size, 3). Raises ImageRefused for a file that is not used."""
    from PIL import Image

    img, _ = open_rgb(path)
    target = resize or size
    w, h = img.size
    scale = target / min(w, h)
    wide, high = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (wide - size) // 2, (high - size) // 2
    if wide * high <= 16 * target * target:
        img = img.resize((wide, high), Image.BILINEAR)
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    # an extreme aspect ratio (a 10000 x 1 strip): resample only the crop's region of the source,
    # the same filter taps (within one grey level) without a huge intermediate image
    sx, sy = w / wide, h / high
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return np.asarray(img.resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)


@dataclass(frozen=True)
class ImageCheck:
    """Whether a probe file is used (`error` None) and what was adjusted to use it."""

    error: str | None
    adjustments: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """The refusal's reason (one of REFUSAL_REASONS), None for a used file."""
        return None if self.error is None else self.error.split(":", 1)[0]


def inspect_image(path: str) -> ImageCheck:
    """Decode a probe file fully, as the forward pass will; never raises."""
    if path.startswith("world:"):
        return ImageCheck(None)
    try:
        _, notes = open_rgb(Path(path))
        return ImageCheck(None, notes)
    except ImageRefused as err:
        return ImageCheck(str(err))
    except Exception as err:  # noqa: BLE001 - whatever a decoder raises is recorded, not fatal
        return ImageCheck(f"corrupt image: {type(err).__name__}: {err}")


def check_readable(path: str) -> str | None:
    """None when the file decodes fully, else the reason it is refused."""
    return inspect_image(path).error


def _resize_batch(batch: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def open_probe_set(spec: str) -> ProbeSet:
    """Parse a probe-set spec (see the module docstring); relative paths resolve against the data folder."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ProbeSetError(
            f"probe set {spec!r}: expected world:<split>, imagefolder:<folder>[?classes=<file>] or csv:<file>"
        )
    kind, _, rest = spec.partition(":")
    location, _, query = rest.partition("?")
    options = dict(parse_qsl(query))
    if kind == "world":
        if location not in ("train", "probe", "test"):
            raise ProbeSetError(f"probe set {spec!r}: the world's splits are train, probe and test")
        return ProbeSet(spec, kind, None, {"split": location})
    if kind not in ("imagefolder", "csv"):
        raise ProbeSetError(f"probe set {spec!r}: unknown kind {kind!r} (world, imagefolder, csv)")
    path = paths.resolve(location, base=paths.data_dir())
    if kind == "imagefolder" and not path.is_dir():
        raise ProbeSetError(
            f"probe set {spec!r}: folder {path} does not exist; point it at a folder with one "
            "sub-folder of images per class (e.g. ImageNet val arranged by class)"
        )
    if kind == "csv" and not path.is_file():
        raise ProbeSetError(f"probe set {spec!r}: manifest {path} does not exist")
    if "classes" in options:
        options["classes"] = paths.resolve(options["classes"], base=paths.data_dir())
        if not options["classes"].is_file():
            raise ProbeSetError(f"probe set {spec!r}: class-names file {options['classes']} does not exist")
    return ProbeSet(spec, kind, path, options)


def _imagefolder_manifest(root: Path, classes_file: Path | None) -> pd.DataFrame:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise ProbeSetError(f"image folder {root} has no class sub-folders")
    names = [d.name for d in class_dirs]
    if classes_file:
        listed = [line.strip() for line in Path(classes_file).read_text().splitlines() if line.strip()]
        if len(listed) != len(class_dirs):
            raise ProbeSetError(
                f"class-names file {classes_file} has {len(listed)} names but {root} has "
                f"{len(class_dirs)} class folders"
            )
        names = listed
    rows = []
    for label, (folder, name) in enumerate(zip(class_dirs, names)):
        for f in _image_files(folder):
            rows.append((f"{folder.name}/{f.relative_to(folder).as_posix()}", str(f), label, name))
    if not rows:
        raise ProbeSetError(f"image folder {root} has no image files ({sorted(IMAGE_SUFFIXES)})")
    df = pd.DataFrame(rows, columns=["image_id", "path", "label", "label_name"])
    df["split"] = "probe"
    return df


def _image_files(folder: Path) -> list[Path]:
    """Files with an image suffix under `folder`, sorted. Symbolic links to folders are followed
    (as torchvision's ImageFolder does) but every real folder is walked once, so a link loop ends;
    links with an image suffix that lead nowhere (a loop, a missing target) are listed, so that
    the probe table records why they are not used."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []

    def walk(directory: Path) -> None:
        try:
            info = os.stat(directory)
            entries = list(os.scandir(directory))
        except OSError:  # a folder link into a loop, or an unreadable folder
            return
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links; False for a link loop
            except OSError:
                is_dir = False
            if is_dir:
                walk(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)

    walk(folder)
    return sorted(found)


def _csv_manifest(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    if missing := {"path", "label"} - set(df.columns):
        raise ProbeSetError(f"manifest {path}: missing column(s) {sorted(missing)} (need path, label)")
    base = path.parent
    df["path"] = [str(paths.resolve(p, base=base)) for p in df["path"]]
    if "label_name" not in df:
        df["label_name"] = df["label"].astype(str)
    if "image_id" not in df:
        df["image_id"] = [Path(p).relative_to(base).as_posix() if Path(p).is_relative_to(base) else p for p in df["path"]]
    if "split" not in df:
        df["split"] = "probe"
    df["label"] = df["label"].astype(int)
    return df[["image_id", "path", "label", "label_name", "split"]].sort_values("image_id").reset_index(drop=True)


def world_images_path(split: str) -> Path:
    return paths.artifacts_dir() / "world" / f"{split}.npy"


def _world_images(split: str) -> np.ndarray:
    path = world_images_path(split)
    if not path.exists():
        raise ProbeSetError(f"the world's {split} images are not generated yet ({path}): materialize world_scenes first")
    return np.load(path, mmap_mode="r")


def _world_scenes(split: str) -> pd.DataFrame:
    from www_resources.storage import default_warehouse

    scenes = default_warehouse().read("world_scenes")
    if scenes.empty:
        raise ProbeSetError("the world is not generated yet: materialize world_scenes first")
    return scenes[scenes["split"] == split].sort_values("index").reset_index(drop=True)
