"""Localisation scores against boxes: hand-computed values, the results line, the WARN check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from www_assets.methods.localization import (
    area_share,
    boxes_mask,
    pointing_hits,
    positive_mass_inside,
    region_share_inside,
)


def test_boxes_mask_union_and_clipping():
    mask = boxes_mask([(0, 0, 2, 1), (3, 2, 9, 9)], 4, 5)  # the second box is clipped to the 4 x 5 image
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0, 0:2] = True
    expected[2:4, 3:5] = True
    assert torch.equal(mask, expected)


def test_mass_pointing_region_and_chance_by_hand():
    maps = torch.tensor([
        [[0.0, -2.0, 1.0], [3.0, 0.0, 0.0]],  # positive mass 4, 3 of it in the left column
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # flat: no mass, no peak
        [[-1.0, -1.0, -1.0], [-1.0, -0.5, -1.0]],  # no positive mass but a peak at (1, 1)
    ])
    inside = torch.zeros(3, 2, 3, dtype=torch.bool)
    inside[:, :, 0] = True  # left column
    inside[2, 1, 1] = True
    mass = positive_mass_inside(maps, inside)
    assert mass[0].item() == pytest.approx(3 / 4) and math.isnan(mass[1]) and math.isnan(mass[2])
    hits = pointing_hits(maps, inside)
    assert hits[0].item() == 1.0 and math.isnan(hits[1]) and hits[2].item() == 1.0
    moved = inside.clone()
    moved[0, 1, 0] = False  # the peak (3.0 at row 1, column 0) now lies outside
    assert pointing_hits(maps, moved)[0].item() == 0.0
    regions = torch.tensor([[[True, True, False], [False, False, False]]] * 3)
    shares = region_share_inside(regions, inside)
    assert shares.tolist() == [0.5, 0.5, 0.5]
    assert math.isnan(region_share_inside(torch.zeros_like(regions), inside)[0])
    assert area_share(inside).tolist() == pytest.approx([2 / 6, 2 / 6, 3 / 6])


def test_localization_results_line():
    from www_assets.methods.report import localization_lines

    df = pd.DataFrame({
        "model": "m", "image_id": ["a", "b", "a", "b", "a", "b", "a"],
        "map": ["class", "class", "sample", "sample", "gradcam", "gradcam", "part_neuron"],
        "mass_in_box": [0.5, 0.7, 0.4, np.nan, 0.9, 0.8, 0.3], "pointing_hit": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        "region_in_box": [np.nan] * 6 + [0.25], "box_share": [0.2, 0.4, 0.2, 0.4, 0.2, 0.4, 0.1],
    })
    text = "\n".join(localization_lines(df, "###"))
    assert ("- `m`: class track 0.600 / 0.500, sample track 0.400 / 1.000, Grad-CAM 0.850 / 1.000 (chance 0.300); "
            "part neurons (1 neuron-image pairs): region 0.250, mass 0.300 inside the part (chance 0.100).") in text


def test_uncertainty_results_line():
    from www_assets.methods.report import uncertainty_lines

    df = pd.DataFrame({"model": "m", "score": ["heatmap_similarity", "track_jaccard"], "auroc": [0.6, 0.55],
                       "ci_low": [0.5, 0.45], "ci_high": [0.7, 0.65], "mean_correct": [0.9, 0.4],
                       "mean_mispredicted": [0.8, 0.3], "n": 10, "n_mispredicted": 2})
    (line,) = uncertainty_lines(df)
    assert line == ("- `m`: AUROC with 95 % bootstrap interval: heatmap similarity 0.6000 [0.5000, 0.7000]; "
                    "track Jaccard 0.5500 [0.4500, 0.6500]. The class and sample tracks share top-k neurons with a "
                    "mean Jaccard of 0.400 on correct and 0.300 on mispredicted images.")


def test_flat_gradcam_check_warns_above_the_limit():
    from www_assets.checks import FLAT_GRADCAM_LIMIT, _flat_gradcam_result, flat_gradcam_share

    peaks = pd.array([1, None, 3, None] + [5] * 16, dtype="Int32")
    df = pd.DataFrame({"cam_peak_x": peaks})
    assert flat_gradcam_share(df) == pytest.approx(0.1) and FLAT_GRADCAM_LIMIT == 0.05
    result = _flat_gradcam_result(df)
    assert not result.passed and result.severity.name == "WARN"
    assert _flat_gradcam_result(df.iloc[2:]).passed is False
    assert _flat_gradcam_result(pd.DataFrame({"cam_peak_x": pd.array([1] * 40 + [None], dtype="Int32")})).passed


def test_localization_figure_writes_a_png(tmp_path):
    from www_assets.figures.explanations import localization_figure

    summary = pd.DataFrame({"map": ["gradcam", "class", "part_neuron"], "mass_in_box": [0.6, 0.5, 0.3],
                            "pointing": [0.8, 0.7, 0.4], "chance": [0.2, 0.2, 0.05]})
    path = localization_figure(summary, "m", tmp_path / "a" / "loc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="non-empty"):
        localization_figure(summary.iloc[:0], "m", tmp_path / "b.png")
