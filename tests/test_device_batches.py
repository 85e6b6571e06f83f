"""Batch sizes of the `device` resource: forward and gradient settings, `auto`, and halving on
out-of-memory (a fake OOM stands in for a full device)."""

from __future__ import annotations

import pytest
import torch

from www_resources.dagster_resources import TorchDevice
from www_resources.device import BatchRunner, batch_runner, fitting_batch_size, is_out_of_memory


class FakeDevice:
    """A device that holds at most `capacity` items per batch and records every attempt."""

    def __init__(self, capacity: int):
        self.capacity, self.attempts, self.done = capacity, [], []

    def work(self, start: int, stop: int):
        self.attempts.append(stop - start)
        if stop - start > self.capacity:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {stop - start} items")
        self.done.append((start, stop))
        return list(range(start, stop))


def test_out_of_memory_halves_the_batch_retries_it_and_keeps_the_smaller_size():
    fake, lines = FakeDevice(capacity=20), []
    runner = BatchRunner("cpu", 64, auto=True, what="contributions", log=lines.append)
    out = list(runner(100, fake.work))
    # 64 and 32 fail on the first batch, 16 fits and is kept: 0-16, 16-32, ..., 96-100
    assert fake.attempts == [64, 32, 16, 16, 16, 16, 16, 16, 4]
    assert [(a, b) for a, b, _ in out] == [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 96), (96, 100)]
    assert sum((r for _, _, r in out), []) == list(range(100))  # every item once, in order
    assert lines == ["contributions: out of memory at batch size 64 on cpu; retrying with 32",
                     "contributions: out of memory at batch size 32 on cpu; retrying with 16"]
    assert runner.size == 16


def test_other_errors_and_an_oom_at_size_one_are_raised():
    runner = BatchRunner("cpu", 8, auto=False, what="x")

    def broken(start, stop):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        list(runner(10, broken))
    with pytest.raises(torch.OutOfMemoryError):
        list(BatchRunner("cpu", 4, auto=False, what="x")(10, FakeDevice(capacity=0).work))


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_fitting_batch_size_by_hand():
    gib = 2**30
    # 10 GiB free, 60 % usable = 6 GiB; 100 MiB per item -> 61 items -> largest power of two 32
    assert fitting_batch_size(10 * gib, 100 * 2**20, 128) == 32
    assert fitting_batch_size(10 * gib, 2**20, 128) == 128  # everything fits: the start
    assert fitting_batch_size(None, 2**20, 96) == 96 and fitting_batch_size(gib, None, 96) == 96
    assert fitting_batch_size(gib, 10 * gib, 64) == 1  # not even one fits: try one, halving has nowhere to go


def test_resource_settings_forward_and_gradient():
    device = TorchDevice(device="cpu", batch_size=96)
    assert device.batches("forward").size == 96 and device.batches("forward").auto
    assert device.batches("gradient").size == 24 and device.batches("gradient").auto  # 96 / 4
    device = TorchDevice(device="cpu", forward_batch_size=50, gradient_batch_size=7)
    assert (device.batches("forward").size, device.batches("gradient").size) == (50, 7)
    assert not device.batches("gradient").auto
    with pytest.raises(ValueError, match="not one of"):
        device.batches("backward")
    with pytest.raises(ValueError, match=">= 1"):
        batch_runner("cpu", "gradient", -2, 128)
