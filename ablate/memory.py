"""Peak memory of one call, and of one training run, never of the process's past.

:func:`allocator_peak`: every allocation and free of PyTorch's CPU allocator during one call,
recorded by ``torch.profiler`` with ``profile_memory=True`` and put in time order; the peak is
the maximum of the running sum, i.e. bytes *above* the level allocated when the call started.
It does not see memory outside PyTorch's allocator (the Python heap, scratch buffers a
library allocates itself), and the profiled call runs slower.

:class:`RunMemory`: the peak of one run, recorded in its row as ``peak_memory_mb`` with
``peak_memory_kind``:

* ``cuda_allocator``: ``torch.cuda.max_memory_allocated`` of the run's device, its peak reset
  when the run starts;
* ``cpu_allocator_profiler``: the bytes the run's tensors hold at the start of a step
  (parameters, their gradients, the optimiser's state), plus the larger of the allocator
  peaks of profiled training steps (batch, forward, backward, optimiser step) and one
  profiled evaluation batch. Every step of a curriculum stage allocates the same shapes, so
  the first step of each stage stands for all of that stage (the trainer leaves the profiled
  steps' time out of ``train_time_s``: the profiler slows them down).
  The task's data set, built before the run, is not counted.

A resumed run carries the peaks measured before (:meth:`RunMemory.state`, in the checkpoint),
so its row holds the peak of the whole run, as an uninterrupted run's does.

Neither is the process's maximum resident set (``ru_maxrss``), which only grows over a
process's life, so that in a sweep a run would inherit the peaks of the runs before it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

T = TypeVar("T")


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Silence file descriptor 2 (kineto prints a line when a profiler starts and stops)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiled_peak(fn: Callable[[], T]) -> tuple[T, int]:
    """(``fn()``, peak of the running sum of CPU allocator events during the call, bytes)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr_fd():
        prof.__enter__()
    try:
        value = fn()
    finally:
        with _quiet_stderr_fd():
            prof.__exit__(None, None, None)
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.typed[0] == _EventType.Allocation:
            events.append((node.start_time_ns, node.typed[1].alloc_size))
        stack.extend(node.children)
    events.sort()
    running = peak = 0
    for _, size in events:
        running += size
        peak = max(peak, running)
    return value, peak


def allocator_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of PyTorch's CPU allocator above its level at the start of one call of ``fn``."""
    return profiled_peak(fn)[1]


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the distinct storages of the parameters, their gradients and the optimiser state."""
    tensors = [t for p in model.parameters() for t in (p, p.grad) if t is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class RunMemory:
    """The peak memory of one training run on ``device`` (see the module doc)."""

    def __init__(self, device: torch.device, earlier: dict[str, Any] | None = None):
        """earlier: :meth:`state` of the run's process before this one (a resumed run)."""
        self.device = device
        self.peaks: dict[str, int] = dict((earlier or {}).get("peaks", {}))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def state(self) -> dict[str, Any]:
        """The peaks so far, for a checkpoint (the CUDA peak as kind 'cuda')."""
        if self.device.type == "cuda":
            return {"peaks": {**self.peaks, "cuda": max(self.peaks.get("cuda", 0),
                                                        torch.cuda.max_memory_allocated(self.device))}}
        return {"peaks": dict(self.peaks)}

    def will_profile(self, kind: str) -> bool:
        """Whether the next :meth:`measure` of ``kind`` runs under the profiler."""
        return self.device.type != "cuda" and kind not in self.peaks

    def measure(self, kind: str, fn: Callable[[], T], held: Callable[[], int]) -> T:
        """Run ``fn`` (kind: a training step of a stage, 'eval' a batch); the first call of
        each kind on a CPU is profiled, its peak added to ``held()`` (bytes the run holds when
        the call starts)."""
        if not self.will_profile(kind):
            return fn()
        base = held()
        value, peak = profiled_peak(fn)
        self.peaks[kind] = base + peak
        return value

    def record(self) -> dict[str, Any]:
        """The row's ``peak_memory_mb`` and ``peak_memory_kind``."""
        if self.device.type == "cuda":
            return {"peak_memory_mb": self.state()["peaks"]["cuda"] / 2**20, "peak_memory_kind": "cuda_allocator"}
        peak = max(self.peaks.values()) if self.peaks else float("nan")
        return {"peak_memory_mb": peak / 2**20, "peak_memory_kind": "cpu_allocator_profiler"}
