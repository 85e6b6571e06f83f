"""What the benchmarks share: the extra resident memory at peak of a piece of work, and growth
exponents fitted to measured times.

Peak memory is read from Linux /proc: the peak (VmHWM) is reset to the current RSS before the
work and read after it, so the extra peak is VmHWM after minus VmRSS before. Where /proc is
missing, ru_maxrss stands in (it cannot be reset: it is then only right in a fresh process, which
is how the benchmarks run every measurement anyway).
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def rss_kib(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in KiB, None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Measured:
    seconds: float = float("nan")
    extra_peak_mib: float = float("nan")


@contextmanager
def measured():
    """`with measured() as m: work()` -> m.seconds (wall) and m.extra_peak_mib (extra RSS at peak)."""
    out = Measured()
    rss_before = rss_kib("VmRSS")
    peak_reset = reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.seconds = time.perf_counter() - start
        peak = rss_kib("VmHWM") if peak_reset else None
        if peak is not None and rss_before is not None:
            out.extra_peak_mib = (peak - rss_before) / 1024
        else:
            out.extra_peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before) / 1024


def growth_exponent(sizes, values) -> float:
    """The slope b of log(value) = a + b log(size), least squares (value ~ size^b): 1 is linear,
    0 constant. NaN with fewer than two usable points (values must be > 0)."""
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    keep = (sizes > 0) & (values > 0) & np.isfinite(values)
    if keep.sum() < 2 or np.unique(sizes[keep]).size < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(sizes[keep]), np.log(values[keep]), 1)
    return float(slope)
