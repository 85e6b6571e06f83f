"""The benchmarks' shared measuring code: growth exponents and the extra peak memory."""

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks._measure import growth_exponent, measured


def test_growth_exponent_is_the_least_squares_slope_in_log_log():
    # exact powers
    assert growth_exponent([1000, 2000, 4000, 8000], [3e-6 * n**2 for n in (1000, 2000, 4000, 8000)]) == pytest.approx(2)
    assert growth_exponent([1, 10, 100], [7.0, 7.0, 7.0]) == pytest.approx(0, abs=1e-12)
    # by hand: log2 sizes 0, 1, 2; log2 values 0, 2, 3 -> slope = sum(dx dy) / sum(dx^2) = (5/3 + 4/3) / 2 = 1.5
    assert growth_exponent([1, 2, 4], [1, 4, 8]) == pytest.approx(1.5)
    # unusable points are left out; too few points give NaN
    assert growth_exponent([1, 2, 4, 8], [1, 2, 0, float("nan")]) == pytest.approx(1)
    assert math.isnan(growth_exponent([5], [1.0]))
    assert math.isnan(growth_exponent([5, 5], [1.0, 2.0]))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_measured_sees_a_freed_allocation_as_extra_peak_memory():
    with measured() as m:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page written
        del block
    assert 190 <= m.extra_peak_mib <= 260
    assert m.seconds > 0


def test_dry_run_projection_follows_the_line_through_both_sizes():
    from benchmarks.scaling import line_projection

    # 12 s for 10 images, 32 s for 30: 1 s per image after 2 s fixed -> 2 + 50,000 s
    assert line_projection(10, 12.0, 30, 32.0, 50_000) == pytest.approx((50_002.0, 1.0, 2.0))
    # no growth measured, or a line starting below zero: all of the larger run counted per unit
    assert line_projection(10, 12.0, 30, 11.0, 300) == pytest.approx((110.0, 11 / 30, 0.0))
    assert line_projection(10, 1.0, 30, 9.0, 300) == pytest.approx((90.0, 0.3, 0.0))
