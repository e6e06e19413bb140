"""What the benchmarks share: timing a step on a device and counting the bytes autograd saves for backward.

Imports nothing heavier than torch, so any benchmark can use it.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, device, warmup: int, before: Callable[[], None] | None = None) -> float:
    """Median of the seconds of ``fn()`` over ``steps`` runs after ``warmup`` warm-up runs, the
    device synchronised after the warm-ups and after each run. ``before``: called once, after the warm-ups
    are synchronised and before the first timed run (e.g. to reset CUDA's peak-memory statistics)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if before is not None:
        before()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class SavedBytes:
    """Bytes of the distinct tensor storages autograd saves for backward inside the context (``with``):
    counted when each is saved; the CPU's activation estimate."""

    def __init__(self):
        self.seen: dict[int, int] = {}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t):
        try:
            self.seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except RuntimeError:
            pass
        return t

    def __enter__(self):
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.seen.values())
