"""The compute device: `auto | cpu | cuda[:n] | mps`, dtype, batch size, loader workers."""

from __future__ import annotations

import re

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(name: str):
    """A `torch.device` for a device name; `auto` picks CUDA, then MPS, then the CPU."""
    import torch

    if not _DEVICE.match(name or ""):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, cuda:<n>, mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but MPS is not available on this machine")
    return torch.device(name)


def resolve_dtype(name: str):
    import torch

    if name not in _DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {_DTYPES}")
    return getattr(torch, name)


# -- batch sizes that fit the device ----------------------------------------------------------

#: `auto` starts forward-only steps at the resource's `batch_size` and gradient steps (Grad-CAM,
#: Taylor contributions) at 1 / GRADIENT_SHARE of it: they keep every layer's activations of the
#: whole batch for the backward pass.
GRADIENT_SHARE = 4
BATCH_KINDS = ("forward", "gradient")
#: Share of the device's free memory a batch may plan to use (the rest: allocator slack, other steps).
FREE_MEMORY_SHARE = 0.6


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and for a CPU allocation that failed."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory_bytes(device) -> int | None:
    """Free memory of a CUDA device in bytes (None elsewhere: CPU and MPS report none we can trust)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def fitting_batch_size(free_bytes: int | None, bytes_per_item: int | None, start: int) -> int:
    """The largest power of two <= `start` whose batch plans to use at most FREE_MEMORY_SHARE of
    `free_bytes`, given `bytes_per_item` (at least 1); `start` when either is unknown."""
    if start < 1:
        raise ValueError(f"start must be >= 1, got {start}")
    if not free_bytes or not bytes_per_item:
        return start
    fit = int(free_bytes * FREE_MEMORY_SHARE // max(1, bytes_per_item))
    if fit >= start:
        return start
    size = 1
    while size * 2 <= min(start, fit):
        size *= 2
    return size


class BatchRunner:
    """Runs `work(start, stop)` over `total` items in batches, halving the batch on out-of-memory.

    On an out-of-memory error the failed batch is retried at half the size (the device's cache is
    emptied first) and the smaller size is kept for the rest of the run; a failure at size 1 is
    raised. With `auto`, on CUDA the first batch's peak memory per item sets the size of the
    following batches to what fits the free memory (never above the starting size).
    `log(message)` receives one line per change of size."""

    def __init__(self, device, size: int, *, auto: bool, what: str, log=None):
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.device, self.size, self.auto, self.what = device, int(size), auto, what
        self.log = log or (lambda message: None)

    def _empty_cache(self) -> None:
        import torch

        kind = getattr(self.device, "type", str(self.device))
        if kind.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif kind == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()

    def __call__(self, total: int, work):
        """Yields (start, stop, work(start, stop)) in order, covering [0, total) once."""
        import torch

        start, measured = 0, not self.auto
        cuda = getattr(self.device, "type", str(self.device)).startswith("cuda") and torch.cuda.is_available()
        while start < total:
            stop = min(total, start + self.size)
            try:
                if cuda and not measured:
                    torch.cuda.reset_peak_memory_stats(self.device)
                    before = torch.cuda.memory_allocated(self.device)
                result = work(start, stop)
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                if self.size == 1:
                    raise
                del err
                self._empty_cache()
                smaller = max(1, self.size // 2)
                self.log(f"{self.what}: out of memory at batch size {self.size} on {self.device}; "
                         f"retrying with {smaller}")
                self.size = smaller
                continue
            if cuda and not measured:
                measured = True
                per_item = max(1, (torch.cuda.max_memory_allocated(self.device) - before) // (stop - start))
                fit = fitting_batch_size(free_memory_bytes(self.device), per_item, self.size)
                if fit != self.size:
                    self.log(f"{self.what}: {per_item / 2**20:.1f} MiB per item; batch size {self.size} -> {fit} "
                             f"to fit the free memory of {self.device}")
                    self.size = fit
            yield start, stop, result
            start = stop


def batch_runner(device, kind: str, configured: int, base: int, *, what: str = "", log=None) -> BatchRunner:
    """The BatchRunner of a `kind` step ("forward" or "gradient"): `configured` items per batch, or
    with 0 (`auto`) `base` for forward steps and `base // GRADIENT_SHARE` for gradient steps, fitted
    to the free memory on CUDA; every size halves on out-of-memory."""
    if kind not in BATCH_KINDS:
        raise ValueError(f"batch kind {kind!r} is not one of {BATCH_KINDS}")
    if configured < 0 or base < 1:
        raise ValueError(f"batch sizes must be >= 1 (0: auto); got {kind} {configured}, base {base}")
    if configured:
        return BatchRunner(device, configured, auto=False, what=what or kind, log=log)
    start = base if kind == "forward" else max(1, base // GRADIENT_SHARE)
    return BatchRunner(device, start, auto=True, what=what or kind, log=log)
