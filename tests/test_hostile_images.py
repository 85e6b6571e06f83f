"""Hostile and broken probe images: each one is used correctly (pixels checked against values worked
out by hand) or recorded in `probe_images` with its reason, and the run completes. Every file is
generated here."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from www_resources.probes import ImageRefused, inspect_image, load_image, open_probe_set


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height pixels but holds one tiny compressed row: a bomb's header
    costs nothing to write, and PIL must refuse it from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 40 wide x 20 high, left half red, right half blue, with EXIF orientation 6 (the viewer
    turns it 90 degrees clockwise): shown 20 wide x 40 high, red on top, blue below."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def hostile_folder(root: Path) -> dict[str, Path]:
    """One class folder with every kind of file; returns name -> path."""
    folder = root / "things"
    folder.mkdir(parents=True)
    files = {}

    def add(name):
        files[name] = folder / name
        return folder / name

    png_header_only(add("bomb.png"), 20_000, 20_000)            # 400 Mpx: over twice PIL's limit
    png_header_only(add("bomb-warning.png"), 10_000, 10_000)    # 100 Mpx: over the limit, under twice it
    exif_rotated_jpeg(add("rotated.jpg"))
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)     # index 0 red, index 1 green
    palette.putpixel((0, 0), 1)
    palette.save(add("palette.png"), transparency=0)             # index 0 is transparent
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (255, 0, 0, 0)                                   # red stored under alpha 0
    rgba[0, 0] = (0, 0, 255, 128)                                # half-transparent blue
    Image.fromarray(rgba, "RGBA").save(add("alpha.png"))
    grey16 = np.array([[0, 257 * 100], [257 * 200, 65535]], np.uint16)
    Image.fromarray(grey16).save(add("grey16.png"))              # mode I;16, a 16-bit PNG
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(add("cmyk.jpg"), quality=95)  # red in CMYK
    Image.new("L", (8, 8), 77).save(add("grey.png"))
    Image.new("1", (8, 8), 1).save(add("bilevel.png"))
    Image.new("LA", (8, 8), (0, 0)).save(add("grey-alpha.png"))  # black, fully transparent
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(add("animated.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("RGB", (1, 1), (10, 20, 200)).save(add("one-pixel.png"))
    Image.new("RGB", (3000, 2), (0, 200, 0)).save(add("strip.png"))  # aspect ratio 1500:1
    add("page.JPEG").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    add("empty.jpg").write_bytes(b"")
    good = Image.fromarray(np.full((16, 16, 3), 128, np.uint8))
    good.save(add("truncated.png"))
    files["truncated.png"].write_bytes(files["truncated.png"].read_bytes()[:60])
    os.symlink("loop.jpg", add("loop.jpg"))                     # a link to itself
    os.symlink("gone.png", add("dangling.png"))                  # a link to nothing
    (folder / "nested").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(add("nested/inner.png"))
    os.symlink("..", folder / "nested" / "up")                   # a folder loop: nested/up -> things
    return files


USED = {  # file -> (adjustment noted, the pixel value every (or the named) pixel must have)
    "palette.png": "alpha composited",
    "alpha.png": "alpha composited",
    "grey16.png": "16-bit scaled",
    "cmyk.jpg": "cmyk converted",
    "grey.png": "greyscale converted",
    "bilevel.png": "greyscale converted",
    "grey-alpha.png": "alpha composited",
    "animated.gif": "first frame",
    "rotated.jpg": "exif rotated",
    "one-pixel.png": None,
    "strip.png": None,
    "nested/inner.png": None,
}
REFUSED = {
    "bomb.png": "decompression bomb",
    "bomb-warning.png": "decompression bomb",
    "page.JPEG": "not an image",
    "empty.jpg": "empty file",
    "truncated.png": "corrupt image",
    "loop.jpg": "symlink loop",
    "dangling.png": "missing file",
}


@pytest.fixture
def files(tmp_path):
    return hostile_folder(tmp_path / "probe")


def test_each_file_is_used_or_refused_with_its_reason(files):
    assert set(files) == set(USED) | set(REFUSED)
    for name, reason in REFUSED.items():
        check = inspect_image(str(files[name]))
        assert check.reason == reason, (name, check.error)
        with pytest.raises(ImageRefused, match=f"^{reason}: "):
            load_image(files[name], 8)
    for name, note in USED.items():
        check = inspect_image(str(files[name]))
        assert check.error is None, (name, check.error)
        assert (note in check.adjustments) if note else check.adjustments == (), (name, check.adjustments)


def test_refusal_messages_say_what_the_file_is(files):
    assert "PIL's limit" in inspect_image(str(files["bomb.png"])).error
    assert "400000000 pixels" in inspect_image(str(files["bomb.png"])).error
    assert "b'<!DOCTYPE html><html><bo'" in inspect_image(str(files["page.JPEG"])).error
    assert inspect_image(str(files["loop.jpg"])).error == f"symlink loop: {files['loop.jpg']} is a symbolic link that points back to itself"
    assert "a symbolic link to gone.png" in inspect_image(str(files["dangling.png"])).error


def test_pixels_of_the_used_files(files):
    # transparent pixels become white; a half-transparent blue over white: 255 * (1 - 128/255) = 127
    alpha = load_image(files["alpha.png"], 4)
    assert (alpha[1:, 1:] == 255).all()
    assert np.abs(alpha[0, 0].astype(int) - (127, 127, 255)).max() <= 1
    palette = load_image(files["palette.png"], 4)
    assert (palette[0, 0] == (0, 255, 0)).all() and (palette[3, 3] == 255).all()
    assert (load_image(files["grey-alpha.png"], 8) == 255).all()
    # 16 bits scaled to 8 (v / 257), not clipped to white
    grey16 = load_image(files["grey16.png"], 2)
    assert grey16[..., 0].tolist() == [[0, 100], [200, 255]] and (grey16[..., 0] == grey16[..., 2]).all()
    cmyk = load_image(files["cmyk.jpg"], 8).astype(int)
    assert (cmyk[..., 0] > 230).all() and (cmyk[..., 1:] < 25).all()  # red, up to JPEG's error
    assert (load_image(files["grey.png"], 8) == 77).all() and (load_image(files["bilevel.png"], 8) == 255).all()
    assert (load_image(files["animated.gif"], 8) == (255, 0, 0)).all()  # the first frame
    assert (load_image(files["one-pixel.png"], 8) == (10, 20, 200)).all()
    assert (load_image(files["strip.png"], 8) == (0, 200, 0)).all()  # the centre crop of a strip
    # EXIF orientation 6: shown 20 x 40, red on top; the centre 20 x 20 crop has rows 10..29
    rotated = load_image(files["rotated.jpg"], 20).astype(int)
    assert rotated.shape == (20, 20, 3)
    assert (rotated[:9, :, 0] > 200).all() and (rotated[:9, :, 2] < 60).all()
    assert (rotated[11:, :, 2] > 200).all() and (rotated[11:, :, 0] < 60).all()


def test_the_folder_walk_ends_on_a_link_loop_and_lists_each_file_once(files):
    manifest = open_probe_set(f"imagefolder:{files['bomb.png'].parents[1]}").manifest()
    ids = manifest["image_id"].tolist()
    assert sorted(ids) == sorted(f"things/{name}" for name in files) and len(ids) == len(set(ids))


def test_probe_images_records_every_refusal_and_the_run_completes(files, register_model, www_data_dir,
                                                                   dagster_instance):
    """probe_images, then the forward pass over the used files, as one run."""
    import dagster as dg

    from www_assets.definitions import defs
    from www_resources.storage import Warehouse

    os.rename(files["bomb.png"].parents[1], www_data_dir / "probe")
    register_model("hostile", preprocessing={"size": 16, "resize": 16, "mean": [0.5] * 3, "std": [0.25] * 3})
    dagster_instance.add_dynamic_partitions("models", ["hostile"])
    result = dg.materialize(
        list(defs.assets), selection=["probe_images", "predictions", "activations"], partition_key="hostile",
        instance=dagster_instance, resources=defs.resources,
    )
    assert result.success
    table = Warehouse(www_data_dir / "warehouse").read("probe_images", {"model": "hostile"}).set_index("image_id")
    assert len(table) == len(USED) + len(REFUSED)
    for name, reason in REFUSED.items():
        assert not table.loc[f"things/{name}", "readable"] and table.loc[f"things/{name}", "error"].startswith(reason)
    assert table.loc[[f"things/{n}" for n in USED], "readable"].all()
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("probe_images")]
    metadata = event.materialization.metadata
    assert metadata["unreadable"].value == len(REFUSED)
    assert metadata["refused_by_reason"].value == {
        "corrupt image": 1, "decompression bomb": 2, "empty file": 1, "missing file": 1, "not an image": 1,
        "symlink loop": 1,
    }
    assert metadata["adjusted"].value["alpha composited"] == 3
    predictions = Warehouse(www_data_dir / "warehouse").read("predictions", {"model": "hostile"})
    assert sorted(predictions["image_id"]) == sorted(f"things/{n}" for n in USED)
