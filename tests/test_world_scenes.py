"""The synthetic world: determinism, metadata validity, class table, vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from www_resources.world import (
    BACKGROUNDS,
    COLOUR_NAMES,
    KINDS,
    WorldConfig,
    class_table,
    concept_list,
    generate_split,
    make_gallery,
    read_distractor_file,
    vocabulary,
)
from www_resources.world.scenes import (
    BACKGROUND_PHRASES,
    BACKGROUND_RGB,
    COLOURS,
    MIN_CONTRAST,
    _Layout,
    _mask_box,
)

TINY = {"seed": 3, "image_size": 32, "n_train": 48, "n_probe": 24, "n_test": 24, "num_classes": 6}


@pytest.fixture(scope="module")
def tiny():
    config = WorldConfig.from_dict(TINY)
    return config, generate_split(config, "train")


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_bytes(tiny):
    config, first = tiny
    again = generate_split(WorldConfig.from_dict(TINY), "train")
    assert first.images.tobytes() == again.images.tobytes()
    pd.testing.assert_frame_equal(first.scenes, again.scenes)
    pd.testing.assert_frame_equal(first.parts, again.parts)


def test_other_seed_and_other_split_differ(tiny):
    config, first = tiny
    other_seed = generate_split(WorldConfig.from_dict({**TINY, "seed": 4}), "train")
    assert first.images.shape == other_seed.images.shape
    assert first.images.tobytes() != other_seed.images.tobytes()
    probe = generate_split(config, "probe")
    assert probe.images.tobytes() != first.images[: len(probe.images)].tobytes()
    assert probe.scenes["image_id"].str.startswith("probe/").all()


def test_images_shape_and_dtype(tiny):
    config, split = tiny
    assert split.images.shape == (48, 32, 32, 3)
    assert split.images.dtype == np.uint8
    assert split.images.std() > 20  # not blank


# ------------------------------------------------------------------ metadata


def test_scene_rows_and_labels_match_class_table(tiny):
    config, split = tiny
    table = class_table(config).set_index("class_id")
    s = split.scenes
    assert list(s["index"]) == list(range(len(s)))
    assert list(s["image_id"]) == [f"train/{i:06d}" for i in range(len(s))]
    assert (s["split"] == "train").all()
    assert s["label"].between(0, len(table) - 1).all()
    for row in s.itertuples():
        assert row.label_name == table.loc[row.label, "name"]
        assert row.superclass == table.loc[row.label, "superclass"]
        assert list(row.path) == list(table.loc[row.label, "path"])
        assert row.path[0] == "thing" and row.path[-1] == row.label_name and row.path[-2] == row.superclass
        assert set(row.part_names) <= set(table.loc[row.label, "parts"])
        assert row.background in BACKGROUNDS and row.colour in COLOUR_NAMES
    # balanced labels: counts differ by at most one
    counts = s["label"].value_counts()
    assert counts.max() - counts.min() <= 1 and len(counts) == len(table)


def test_boxes_inside_image_and_parts_inside_object(tiny):
    config, split = tiny
    size = config.image_size
    s, p = split.scenes, split.parts
    for prefix, frame in (("box_", s), ("", p)):
        x0, y0, x1, y1 = (frame[prefix + k].to_numpy() for k in ("x0", "y0", "x1", "y1"))
        assert (0 <= x0).all() and (x0 < x1).all() and (x1 <= size).all()
        assert (0 <= y0).all() and (y0 < y1).all() and (y1 <= size).all()
    joined = p.merge(s[["image_id", "box_x0", "box_y0", "box_x1", "box_y1"]], on="image_id", validate="many_to_one")
    assert len(joined) == len(p)
    assert (joined["x0"] >= joined["box_x0"]).all() and (joined["x1"] <= joined["box_x1"]).all()
    assert (joined["y0"] >= joined["box_y0"]).all() and (joined["y1"] <= joined["box_y1"]).all()
    # the object box is exactly the union of its part boxes
    union = p.groupby("image_id").agg(x0=("x0", "min"), y0=("y0", "min"), x1=("x1", "max"), y1=("y1", "max"))
    union = union.loc[s["image_id"]]
    for k in ("x0", "y0", "x1", "y1"):
        assert (union[k].to_numpy() == s[f"box_{k}"].to_numpy()).all(), k
    assert (p["area"] > 0).all()
    assert set(p["colour"]) <= set(COLOUR_NAMES)


def test_part_names_column_matches_parts_table(tiny):
    _, split = tiny
    from_parts = split.parts.groupby("index")["part"].agg(lambda x: sorted(set(x)))
    for i, names in enumerate(split.scenes["part_names"]):
        assert sorted(names) == from_parts.loc[i]


def test_caption_mentions_class_colour_and_background(tiny):
    _, split = tiny
    for row in split.scenes.itertuples():
        assert row.caption.startswith(f"a {row.colour} ")
        assert f" {row.label_name}" in row.caption
        assert row.caption.endswith(BACKGROUND_PHRASES[row.background])


def test_main_colour_contrasts_with_background(tiny):
    _, split = tiny
    for row in split.scenes.itertuples():
        distance = np.linalg.norm(np.subtract(COLOURS[row.colour], BACKGROUND_RGB[row.background]))
        assert distance >= MIN_CONTRAST


def test_distractor_metadata_is_consistent(tiny):
    _, split = tiny
    s = split.scenes
    assert s["n_distractors"].between(0, 3).all()
    for row in s.itertuples():
        assert len(row.distractor_shapes) == len(row.distractor_colours) == len(row.distractor_boxes) == row.n_distractors
        for x0, y0, x1, y1 in row.distractor_boxes:
            assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32


def test_object_pixels_differ_from_background_outside_box():
    # without noise and distractors, rows/columns outside the object box are pure background:
    # painting the object's main colour there never happens
    config = WorldConfig.from_dict({**TINY, "noise_std": 0.0, "max_distractors": 0, "n_train": 12})
    split = generate_split(config, "train")
    for row in split.scenes.itertuples():
        main = np.array(COLOURS[row.colour], dtype=float) * row.shade
        img = split.images[row.index].astype(float)
        close = np.abs(img - main).max(axis=-1) <= 1.0
        ys, xs = np.nonzero(close)
        if len(xs):
            assert xs.min() >= row.box_x0 and xs.max() < row.box_x1
            assert ys.min() >= row.box_y0 and ys.max() < row.box_y1


def test_spurious_background_share_in_train_not_in_test():
    config = WorldConfig.from_dict(
        {"image_size": 16, "n_train": 800, "n_test": 800, "num_classes": 4, "spurious_class": "car", "spurious_share": 0.9}
    )
    table = class_table(config)
    car = table.loc[table["name"] == "car"].iloc[0]
    assert car["spurious_background"] == "snow" and car["spurious_share"] == 0.9
    train = generate_split(config, "train").scenes
    test = generate_split(config, "test").scenes
    share_train = (train.loc[train["label_name"] == "car", "background"] == "snow").mean()
    share_test = (test.loc[test["label_name"] == "car", "background"] == "snow").mean()
    share_other = (train.loc[train["label_name"] != "car", "background"] == "snow").mean()
    # 200 cars per split: binomial(200, 0.9) lies in [0.83, 0.96] with overwhelming probability
    assert 0.83 <= share_train <= 0.96
    assert share_test < 0.3 and share_other < 0.3


def test_empty_split():
    config = WorldConfig.from_dict({**TINY, "n_probe": 0})
    split = generate_split(config, "probe")
    assert split.images.shape == (0, 32, 32, 3)
    assert len(split.scenes) == 0 and len(split.parts) == 0


# ------------------------------------------------------------------ drawing primitives


def test_primitive_masks_hand_computed():
    lay = _Layout(np.array([8.0]), np.array([8.0]), np.array([16.0]), np.array([16.0]), np.array([False]), 32)
    rect = lay.mask(("R", 0.25, 0.25, 0.75, 0.75))[0]  # pixel centres in [12, 20) -> columns 12..19
    assert np.array_equal(np.argwhere(rect.any(0)).ravel(), np.arange(12, 20))
    assert rect.sum() == 64
    circle = lay.mask(("C", 0.5, 0.5, 0.25))[0]  # centre (16, 16), radius 4
    ys, xs = np.nonzero(circle)
    assert xs.min() == 12 and xs.max() == 19 and ys.min() == 12 and ys.max() == 19
    assert circle[15, 15] and not circle[12, 12]
    # a mirrored layout mirrors the shape inside the layout box
    flipped = _Layout(np.array([8.0]), np.array([8.0]), np.array([16.0]), np.array([16.0]), np.array([True]), 32)
    left = lay.mask(("R", 0.0, 0.0, 0.25, 1.0))[0]
    right = flipped.mask(("R", 0.0, 0.0, 0.25, 1.0))[0]
    assert np.array_equal(np.argwhere(left.any(0)).ravel(), np.arange(8, 12))
    assert np.array_equal(np.argwhere(right.any(0)).ravel(), np.arange(20, 24))
    tri = lay.mask(("P", (0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))[0]
    tri_flipped = flipped.mask(("P", (0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))[0]
    assert tri.sum() == tri_flipped.sum() > 100
    assert np.array_equal(tri[:, ::-1], tri_flipped)


def test_mask_box_matches_nonzero():
    rng = np.random.default_rng(0)
    masks = rng.random((20, 16, 16)) < 0.02
    masks[0] = False
    x0, y0, x1, y1, area = _mask_box(masks)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            assert area[i] == 0 and x1[i] == 0
        else:
            assert (x0[i], y0[i], x1[i], y1[i], area[i]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, len(xs))


# ------------------------------------------------------------------ class table, config


def test_full_class_table_structure():
    table = class_table(WorldConfig())
    assert len(table) >= 24 and table["superclass"].nunique() >= 5
    assert list(table["class_id"]) == list(range(len(table)))
    assert table["name"].is_unique
    assert all(len(p) >= 3 and p[0] == "thing" for p in table["path"])
    for row in table.itertuples():
        assert row.synonyms[0] == row.name
        assert row.path[-1] == row.name and row.path[-2] == row.superclass
        if row.confusable_with is not None:
            other = table.loc[table["name"] == row.confusable_with].iloc[0]
            assert other["confusable_with"] == row.name
            assert len(set(row.parts) ^ set(other["parts"])) == 1
    assert table["confusable_with"].notna().sum() >= 2
    spurious = table.loc[table["spurious_background"].notna()]
    assert list(spurious["name"]) == ["rabbit"] and spurious["spurious_share"].iloc[0] == 0.9


def test_subset_spreads_over_superclasses():
    table = class_table(WorldConfig(num_classes=6))
    assert len(table) == 6 and table["superclass"].nunique() == 6
    assert table["confusable_with"].isna().all()  # partners are not in the subset


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"colour": 1}, "unknown WorldConfig keys"),
        ({"num_classes": 1}, "num_classes"),
        ({"image_size": 8}, "image_size"),
        ({"n_train": -1}, "n_train"),
        ({"spurious_class": "unicorn"}, "spurious_class"),
        ({"spurious_background": "lava"}, "spurious_background"),
        ({"min_scale": 0.9, "max_scale": 0.5}, "min_scale"),
    ],
)
def test_bad_config_raises(bad, words):
    with pytest.raises(ValueError, match=words):
        WorldConfig.from_dict(bad)


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split must be one of"):
        generate_split(WorldConfig.from_dict(TINY), "validation")


def test_config_round_trip():
    config = WorldConfig.from_dict(TINY)
    assert WorldConfig.from_dict(config.to_dict()) == config


# ------------------------------------------------------------------ vocabulary


def test_vocabulary_rows():
    config = WorldConfig()
    vocab = vocabulary(config)
    assert set(vocab["kind"]) == set(KINDS)
    assert vocab["concept"].is_unique
    assert (vocab["concept"] == vocab["concept"].str.lower()).all()
    table = class_table(config)
    classes = vocab[vocab["kind"] == "class"]
    assert list(classes["concept"]) == list(table["name"])
    synonyms = vocab[vocab["kind"] == "synonym"]
    for row in synonyms.itertuples():
        assert row.concept in table.loc[table["name"] == row.refers_to, "synonyms"].iloc[0]
    parts = set(vocab.loc[vocab["kind"] == "part", "concept"])
    assert parts == {p for ps in table["parts"] for p in ps}
    assert {"wheel", "window", "roof", "trunk", "petal", "eye", "fin"} <= parts
    assert set(vocab.loc[vocab["kind"] == "background", "concept"]) == set(BACKGROUNDS)
    superclasses = set(vocab.loc[vocab["kind"] == "superclass", "concept"])
    assert superclasses == {n for path in table["path"] for n in path[1:-1]}


def test_concept_list_with_distractors():
    config = WorldConfig()
    plain = concept_list(config, distractors=False)
    full = concept_list(config, distractors=True)
    assert plain == list(dict.fromkeys(vocabulary(config)["concept"]))
    assert full[: len(plain)] == plain
    extra = full[len(plain):]
    assert len(extra) >= 300 and len(set(extra)) == len(extra)
    assert not set(extra) & set(plain)


def test_world_distractors_do_not_depend_on_an_installed_wordnet(monkeypatch):
    """The world's concept set is the same on every machine: installing WordNet (as the tests and
    `wordnet:` concept sets need) must not change its distractors."""
    import importlib

    # the package re-exports a function named `vocabulary`, so import the module by its path
    vocabulary_module = importlib.import_module("www_resources.world.vocabulary")

    config = WorldConfig()
    pool = [f"noun{i}" for i in range(2000)]  # a stand-in for WordNet's nouns, none a world word
    monkeypatch.setattr(vocabulary_module, "wordnet_nouns", lambda: pool)
    with_wordnet = concept_list(config, distractors=True)
    monkeypatch.setattr(vocabulary_module, "wordnet_nouns", lambda: None)
    without = concept_list(config, distractors=True)
    assert with_wordnet == without
    plain = concept_list(config, distractors=False)
    # the top of the shipped list, world words left out, as many as the world config asks for
    expected = [w for w in read_distractor_file() if w not in set(plain)][:config.n_distractor_concepts]
    assert len(expected) == config.n_distractor_concepts
    assert without[len(plain):] == expected
    # WordNet distractors stay available on request, sampled from the seed
    monkeypatch.setattr(vocabulary_module, "wordnet_nouns", lambda: pool)
    sampled = vocabulary_module.distractor_nouns(config, "wordnet")
    assert set(sampled) <= set(pool) and sampled == vocabulary_module.distractor_nouns(config, "wordnet")


def test_shipped_distractor_file():
    words = read_distractor_file()
    assert len(words) >= 400 and len(set(words)) == len(words)
    assert not set(words) & set(vocabulary(WorldConfig())["concept"])
    assert all(w == w.strip().lower() and w for w in words)


def test_gallery_shape():
    images = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    out = make_gallery(images, n_cols=2, scale=2, boxes=np.array([[0, 0, 4, 4]] * 5))
    assert out.shape == (3 * 34, 2 * 34, 3)
    assert (out[1, 1] == (255, 255, 0)).all()
    with pytest.raises(ValueError, match="images must be"):
        make_gallery(np.zeros((2, 16, 16)), n_cols=2)
