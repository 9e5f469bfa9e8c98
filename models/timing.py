"""Timing one call, on CPU or GPU: shared by ``python -m models.bench`` and ``python -m ablate.bench``.

A :class:`Clock` times one call (``time.perf_counter`` on CPU; a pair of CUDA events on GPU, so
queued kernels count and host overhead between calls does not). A :class:`Workload` is the
module and inputs as the two calls a benchmark times: a forward pass under ``no_grad`` and a
forward+backward of a fixed random output gradient. :func:`time_samples` warms up, then times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

Call = Callable[[], Any]


@dataclass(frozen=True)
class Clock:
    """Times one call on ``device``: perf_counter on CPU, CUDA events on GPU."""

    device: torch.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        """Wait for queued GPU work (no-op on CPU)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def seconds(self, fn: Call) -> float:
        """Seconds one call of ``fn`` takes (on GPU: between two CUDA events around it)."""
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3


class Workload:
    """A module and random inputs, as the calls the benchmark times.

    inputs: tensors passed positionally, e.g. u (B, L, H); floating ones get gradients in
    :meth:`forward_backward`. The output gradient is a fixed random tensor.
    """

    def __init__(self, module: nn.Module, inputs: Sequence[torch.Tensor]):
        for x in inputs:
            if x.is_floating_point() and not bool(x.detach().abs().sum() > 0):
                raise ValueError("benchmark inputs must not be all zero (fast paths would flatter the timing)")
        self.module = module
        self.inputs = tuple(x.detach().requires_grad_(x.is_floating_point()) for x in inputs)
        with torch.no_grad():
            out = module(*self.inputs)
        self.grad_out = torch.randn_like(out)
        self.output_bytes = out.numel() * out.element_size()

    @property
    def input_bytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.inputs)

    def forward(self) -> None:
        """One forward pass under ``torch.no_grad()`` (inference)."""
        with torch.no_grad():
            self.module(*self.inputs)

    def clear_grads(self) -> None:
        """Drop the gradients of the parameters and inputs (a few pointer resets; inside the timed
        :meth:`forward_backward`, for our layers and every peer alike)."""
        self.module.zero_grad(set_to_none=True)
        for x in self.inputs:
            x.grad = None

    def train_step(self) -> None:
        """Forward, then backward of the fixed output gradient into the inputs and every parameter
        (gradients are created: call :meth:`clear_grads` first)."""
        self.module(*self.inputs).backward(self.grad_out)

    def forward_backward(self) -> None:
        """:meth:`clear_grads` then :meth:`train_step` (what is timed)."""
        self.clear_grads()
        self.train_step()


def time_samples(fn: Call, clock: Clock, repeats: int, warmup: int) -> list[float]:
    """Seconds of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
        clock.sync()
    return [clock.seconds(fn) for _ in range(repeats)]


def free_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
