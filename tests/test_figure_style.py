"""Every figure is fit for a paper and for the UI's metadata dialog: drawn on small inputs of the
world's sizes (24 classes, 10 methods, 4 hierarchy levels), each is at most the house width,
names its model and layer in its title, labels every axis that has ticks, writes no text smaller
than the house minimum, keeps every text and legend inside the picture, and leaves no blank
band; heatmaps carry a colour bar, the 10-method charts a distinct colour and marker per method,
and the hierarchy tree's boxes do not overlap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from www_assets.figures import style

MODEL, LAYER = "world-cnn", "layer4"
METHODS = ("clip_dissect", "cosine", "l1", "l2", "no_template", "template_only", "www", "www_tvmf", "www_gradcam",
           "www_gradcam_tvmf")
CLASSES = ["car", "truck", "bus", "bicycle", "house", "castle", "lighthouse", "lamp", "clock", "chair", "cup", "vase",
           "dog", "cat", "rabbit", "horse", "tree", "pine", "flower", "cactus", "fish", "shark", "crab", "lobster"]
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict:
    """name -> (expected title words, PNG path, Figure) of every figure, drawn once; the Figure
    objects are caught on their way through style.save."""
    saved = []
    real_save = style.save

    def save(figure, path):
        saved.append(figure)
        return real_save(figure, path)

    style.save = save
    try:
        made = _draw_every_figure(tmp_path_factory.mktemp("figures"))
    finally:
        style.save = real_save
    assert len(saved) == len(made) == 12
    return {name: (subject, path, figure) for (name, subject, path), figure in zip(made, saved)}


def _summary() -> pd.DataFrame:
    rows = [(MODEL, cs, LAYER, m, metric, RNG.uniform(0.2, 0.9), 0.02, 64, 64, None, None)
            for cs in ("world", "world-distractors") for m in METHODS
            for metric in ("clip_cos", "text_cos", "f1", "hit", "hit_tie_aware", "tied_top")]
    return pd.DataFrame(rows, columns=["model", "concept_set", "layer", "method", "metric", "mean", "stderr", "n",
                                       "n_candidates", "p_value_vs_clip_dissect", "p_value_vs_www"])


def _sweep(parameter, values) -> pd.DataFrame:
    return pd.DataFrame([(v, m, metric, RNG.uniform(0.2, 0.9), 0.02) for v in values for m in METHODS
                         for metric in ("clip_cos", "text_cos", "f1", "hit", "hit_tie_aware", "tied_top")],
                        columns=[parameter, "method", "metric", "mean", "stderr"])


def _track(k, size=64):
    masks = np.zeros((k, size, size), bool)
    for i in range(k):
        masks[i, 8 * i: 8 * i + 20, 10:40] = True
    return {"neurons": list(range(k)), "concepts": ["wheel", "a rather long concept name of a neuron", ""][:k],
            "weights": [0.5, 0.3, 0.2][:k], "masks": masks, "heatmap": RNG.random((size, size))}


def _hierarchy() -> pd.DataFrame:
    supers = {"vehicle": CLASSES[:4], "building": CLASSES[4:7], "household item": CLASSES[7:12],
              "land animal": CLASSES[12:16], "plant": CLASSES[16:20], "sea animal": CLASSES[20:]}
    rows = [("thing", "thing", None, 0), ("artifact", "artifact", "thing", 1), ("organism", "organism", "thing", 1)]
    for sup, classes in supers.items():
        rows.append((sup, sup, "artifact" if sup in ("vehicle", "building", "household item") else "organism", 2))
        rows += [(c, c, sup, 3) for c in classes]
    return pd.DataFrame(rows, columns=["concept", "name", "parent", "depth"])


def _thumbs(n, side=64):
    return [RNG.integers(0, 255, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def _draw_every_figure(folder):
    """(name, expected title words, path) of every figure, drawn at the world's sizes."""
    from www_assets.figures import class_concepts, evaluation, explanations, hint, neurons, world

    made = []
    subject = f"{MODEL} {LAYER}"
    made.append(("metric bars", subject, evaluation.metric_bars_figure(_summary(), MODEL, folder / "bars.png",
                                                                          label=subject)))
    made.append(("k ablation", subject, evaluation.k_ablation_figure(
        _sweep("k", (1, 5, 10, 20, 40, 80)), folder / "k.png", title=f"{subject}: k ablation (concept set world)")))
    made.append(("alpha ablation", subject, evaluation.alpha_ablation_figure(
        _sweep("alpha", (0.8, 0.85, 0.9, 0.95, 0.99)), folder / "alpha.png", title=f"{subject}: alpha ablation")))
    made.append(("shapley matrix", subject, explanations.shapley_matrix_figure(
        RNG.normal(size=(24, 128)), CLASSES, folder / "shapley.png", title=subject)))
    made.append(("explanation", subject, explanations.explanation_figure(
        RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8), _track(3), _track(3),
        f"{subject} (maps at {LAYER}), probe/000884: predicted car (0.93), correct", folder / "explanation.png")))
    curve = pd.DataFrame({"share_rejected": np.linspace(0, 1, 11), "mispredictions_caught": np.linspace(0, 1, 11) ** 0.5,
                          "accuracy_of_kept": np.linspace(0.9, 1, 11)})
    made.append(("rejection curve", subject, explanations.rejection_curve_figure(
        {"heatmap_similarity": curve, "msp": curve, "track_jaccard": curve}, {"msp": 0.9, "heatmap_similarity": 0.7},
        folder / "rejection.png", title=f"{subject}: rejecting the least confident test images")))
    localization = pd.DataFrame({"map": ["class", "sample", "gradcam", "part_neuron"], "mass_in_box": [0.5, 0.4, 0.6, 0.3],
                                 "pointing": [0.6, 0.5, 0.7, 0.4], "chance": [0.2, 0.2, 0.2, 0.05]})
    made.append(("localization", subject, explanations.localization_figure(
        localization, f"{subject} (maps at {LAYER}): where the heatmaps look (world:test)", folder / "loc.png")))
    panels = [{"title": f"{subject} neuron {n}", "images": _thumbs(5), "crops": _thumbs(5, 22),
               "major": [("wheel", 0.031), ("car", 0.029)], "minor": [("window", 0.02)],
               "activations": list(RNG.random(5)), "crop_activations": list(RNG.random(5))} for n in range(6)]
    made.append(("neuron gallery", subject, neurons.neuron_gallery(
        panels, folder / "gallery.png",
        title=f"{subject}: top images and crops, concepts by www (concept set world-distractors; a = activation)")))
    scenes = pd.DataFrame({"image_id": [f"probe/{i:06d}" for i in range(24)], "label_name": CLASSES,
                           "background": ["grass"] * 24, "box_x0": 10, "box_y0": 12, "box_x1": 50, "box_y1": 40})
    parts = pd.DataFrame({"image_id": ["probe/000000"], "x0": [12], "y0": [14], "x1": [20], "y1": [22]})
    made.append(("world gallery", "the embedded world", world.scene_gallery(
        np.stack(_thumbs(24)), scenes, parts, folder / "world.png")))
    variants = [{"label": variant, "rows": [("wheel, window, cargo box", _thumbs(8, 21)) for _ in range(4)],
                 "stitched": RNG.integers(0, 255, (84, 21, 3), dtype=np.uint8), "verdict": "p(car)=0.91, predicted car"}
                for variant in ("allowing", "excluding")]
    made.append(("class concepts", subject, class_concepts.concept_grid_figure(
        f"{subject}: car over truck", variants, folder / "class_concepts.png")))
    labels = {n: ["coach, bus", "wheel", "a very long distractor noun", "snow"][n % 4] for n in range(64)}
    top = {c: [int(x) for x in RNG.choice(64, 3, replace=False)] for c in _hierarchy()["concept"]}
    made.append(("hierarchy tree", subject, hint.hierarchy_tree_figure(
        _hierarchy(), top, f"{subject}: top-3 neurons per concept by Shapley value", folder / "tree.png", labels)))
    level = lambda c: {"concept": c, "map": RNG.random((64, 64)), "pred_box": (5, 5, 40, 40), "iou": 0.6}
    rows = [{"image": _thumbs(1)[0], "caption": f"test/{i:06d}\ncar", "true_box": (8, 8, 44, 44),
             "levels": [level("thing"), level("artifact"), level("vehicle"), level("car")]} for i in range(3)]
    made.append(("level maps", subject, hint.level_maps_figure(rows, folder / "levels.png", f"{subject}: concept maps")))
    return made


def _undrawn_tick_labels(figure) -> set[int]:
    """ids of the tick labels outside their axis' view (matplotlib keeps but does not draw them)."""
    hidden = set()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not ax.axison or not ax.get_visible():
                hidden.update(id(t) for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]
                              for t in (tick.label1, tick.label2))
                continue
            low, high = sorted(axis.get_view_interval())
            span = (high - low) * 1e-6
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not low - span <= tick.get_loc() <= high + span:
                    hidden.update({id(tick.label1), id(tick.label2)})
    return hidden


def _texts(figure):
    hidden = _undrawn_tick_labels(figure)
    return [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def test_every_figure_fits_names_its_subject_and_is_readable(figures):
    for name, (subject, path, figure) in figures.items():
        width, height = Image.open(path).size
        assert 300 <= width <= style.MAX_WIDTH_IN * style.DPI + 1, (name, width)
        assert 200 <= height <= style.MAX_HEIGHT_IN * style.DPI, (name, height)
        titles = [figure.get_suptitle()] + [ax.get_title(loc) for ax in figure.axes for loc in ("left", "center")]
        assert any(subject in t for t in titles), f"{name}: no title names {subject!r}: {titles}"
        renderer = figure.canvas.get_renderer()
        canvas = figure.bbox
        for text in _texts(figure):
            assert text.get_fontsize() >= style.FONT_MIN, f"{name}: {text.get_text()!r} at {text.get_fontsize()} pt"
            box = text.get_window_extent(renderer)
            assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1, \
                f"{name}: {text.get_text()!r} is cut off ({box} outside {canvas})"
        for legend in [*figure.legends, *(ax.get_legend() for ax in figure.axes)]:
            if legend is not None:
                box = legend.get_window_extent(renderer)
                assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1, \
                    f"{name}: a legend is cut off"
        for ax in figure.axes:
            if not ax.get_visible() or not ax.axison:
                continue
            if any(t.get_text() for t in ax.get_xticklabels()):
                assert ax.get_xlabel(), f"{name}: an x axis without a label"
            if any(t.get_text() for t in ax.get_yticklabels()):
                assert ax.get_ylabel(), f"{name}: a y axis without a label"


def _blank_band(path) -> float:
    """The longest run of plain white rows or columns, as a share of the picture's side."""
    pixels = np.asarray(Image.open(path).convert("L"))
    share = 0.0
    for lines in (pixels, pixels.T):
        white = (lines >= 250).all(axis=1)
        run = best = 0
        for w in white:
            run = run + 1 if w else 0
            best = max(best, run)
        share = max(share, best / len(white))
    return share


def test_no_figure_leaves_a_blank_band(figures):
    for name, (_, path, _) in figures.items():
        assert _blank_band(path) < 0.1, f"{name}: {_blank_band(path):.0%} of the picture is a blank band"


def test_heatmaps_have_a_colour_bar(figures):
    for name in ("shapley matrix", "explanation", "level maps"):
        bars = [ax for ax in figures[name][2].axes if hasattr(ax, "_colorbar")]
        assert bars, f"{name}: no colour bar"
        assert all(ax.get_ylabel() for ax in bars), f"{name}: a colour bar without a label"


def _lab(hex_colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, by the standard formulas."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_palette_tells_ten_methods_apart():
    assert len(set(style.PALETTE)) == len(style.PALETTE) == 10 and len(set(style.MARKERS)) == 10
    distances = [np.linalg.norm(_lab(a) - _lab(b)) for i, a in enumerate(style.PALETTE) for b in style.PALETTE[i + 1:]]
    # CIE76 distance: about 2.3 is just noticeable; tab10's pink and purple are 37 apart, its
    # closest pair; every pair here is at least 20 apart and differs in its marker as well
    assert min(distances) >= 20


def test_the_ten_method_charts_use_a_colour_and_marker_per_method(figures):
    from matplotlib.colors import to_hex

    from www_assets.methods.tables import METHOD_LABELS

    for name in ("metric bars", "k ablation"):
        legend = figures[name][2].legends[0]
        handles = [h for h in legend.legend_handles if h.get_label() in {METHOD_LABELS[m] for m in METHODS}]
        assert len(handles) == 10, name
        assert len({to_hex(h.get_color()) for h in handles}) == 10, f"{name}: two methods share a colour"
        assert len({h.get_marker() for h in handles}) == 10, f"{name}: two methods share a marker"
        assert {to_hex(h.get_color()) for h in handles} <= {c.lower() for c in style.PALETTE}
        # each method keeps its colour and marker from chart to chart
        by_label = {METHOD_LABELS[m]: m for m in METHODS}
        for handle in handles:
            look = style.method_style(by_label[handle.get_label()], index=99)
            assert to_hex(handle.get_color()) == look["color"].lower() and handle.get_marker() == look["marker"]


def test_the_hierarchy_tree_boxes_do_not_overlap(figures):
    figure = figures["hierarchy tree"][2]
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in _texts(figure) if t.get_bbox_patch() is not None]
    assert len(boxes) == len(_hierarchy())
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), f"boxes {a} and {b} overlap"
