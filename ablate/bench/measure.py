"""How one call is timed and its memory measured, on CPU or GPU.

Timing (:func:`median_seconds`, with :class:`models.timing.Clock`): ``warmup`` untimed calls,
then the median of ``repeats`` timed calls. On CPU each call is timed with
``time.perf_counter``; on GPU with a pair of CUDA events around the call
(``torch.cuda.Event(enable_timing=True)``, synchronised on the end event), so queued kernels
are counted and host overhead between calls is not. A measurement
has a deadline: when it passes with calls still to make, :class:`OverBudget` is raised (a
single call is never interrupted).

Peak memory (:func:`peak_memory`) of one call, as bytes *above* the level allocated when the
call starts (parameters, inputs and the fixed output gradient are not counted; parameter and
input gradients, activations saved for backward and temporaries are):

* ``cuda_allocator``: ``torch.cuda.max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, minus ``memory_allocated()`` at the start.
* ``cpu_allocator_profiler``: :func:`ablate.memory.allocator_peak`, the peak of the running sum
  of PyTorch's CPU allocator events during the call. This is per measurement, unlike the
  process's max RSS, which only grows over the process lifetime and also counts
  freed-but-cached pages and the Python heap. The profiled call is not timed.
* ``cpu_saved_tensors`` (fallback where the profiler's event tree is unavailable): bytes of
  the distinct storages saved for backward plus the output — a lower bound of the peak.

Memory-bandwidth floor (:func:`copy_bandwidth`, :func:`floor_seconds`): the time to read and
write once the bytes a layer cannot avoid touching, at the bandwidth of a large
``Tensor.copy_`` on the same device (2 × size bytes moved per copy).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from models.timing import Call, Clock, Workload, free_memory_bytes

from ..memory import allocator_peak

log = logging.getLogger(__name__)


class OverBudget(Exception):
    """A measurement ran past its deadline with calls still to make."""

    def __init__(self, elapsed_s: float, calls_done: int, calls_planned: int, budget_s: float):
        self.elapsed_s, self.calls_done = elapsed_s, calls_done
        self.calls_planned, self.budget_s = calls_planned, budget_s
        super().__init__(f"stopped after {elapsed_s:.3g} s > budget {budget_s:g} s "
                         f"({calls_done} of {calls_planned} calls made)")


@dataclass
class Deadline:
    """The end of a measurement's time budget (``time.perf_counter`` seconds) and call counting."""

    start: float
    budget_s: float
    calls_planned: int = 0
    calls_done: int = 0

    @classmethod
    def starting_now(cls, budget_s: float) -> "Deadline":
        return cls(start=time.perf_counter(), budget_s=budget_s)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def plan(self, calls: int) -> None:
        """Announce ``calls`` more calls (for the message of :class:`OverBudget`)."""
        self.calls_planned += calls

    def tick(self, more_to_come: bool) -> None:
        """Count a finished call; raise :class:`OverBudget` if past the deadline with more to come."""
        self.calls_done += 1
        if more_to_come and self.elapsed_s > self.budget_s:
            raise OverBudget(self.elapsed_s, self.calls_done, self.calls_planned, self.budget_s)


def median_seconds(fn: Call, clock: Clock, repeats: int, warmup: int, deadline: Deadline) -> float:
    """Median seconds of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones.

    Raises :class:`OverBudget` when the deadline passes before the last call (the caller
    announces the calls with :meth:`Deadline.plan`).
    """
    for _ in range(warmup):
        fn()
        clock.sync()
        deadline.tick(more_to_come=True)
    samples = []
    for index in range(repeats):
        samples.append(clock.seconds(fn))
        deadline.tick(more_to_come=index + 1 < repeats)
    return statistics.median(samples)


def parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ---------------------------------------------------------------------------- memory
def _saved_tensor_bytes(workload: Workload, grad: bool) -> int:
    """Distinct storages saved for backward by one forward (none without ``grad``: the no_grad
    forward), plus its output (bytes)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.set_grad_enabled(grad), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = workload.module(*workload.inputs)
    return sum(storages.values()) + out.numel() * out.element_size()


def peak_memory(fn: Call, clock: Clock, workload: Workload | None = None, grad: bool = True) -> tuple[int, str]:
    """(peak bytes above the level at the start of one call of ``fn``, kind); see the module doc.
    grad: whether ``fn`` builds the autograd graph (False for the no_grad forward), for the
    saved-tensor fallback."""
    if clock.cuda:
        clock.sync()
        torch.cuda.reset_peak_memory_stats(clock.device)
        base = torch.cuda.memory_allocated(clock.device)
        fn()
        clock.sync()
        return torch.cuda.max_memory_allocated(clock.device) - base, "cuda_allocator"
    try:
        return allocator_peak(fn), "cpu_allocator_profiler"
    except (ImportError, AttributeError) as err:  # the profiler's event tree is a private API
        if workload is None:
            raise
        log.warning("torch.profiler event tree unavailable (%s); memory falls back to saved tensors", err)
        return _saved_tensor_bytes(workload, grad), "cpu_saved_tensors"


def available_memory(device: torch.device) -> int | None:
    """Bytes that new tensors could still take on ``device`` (None where unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free_memory_bytes()


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA OOM or a failed CPU allocation."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        phrase in text for phrase in ("out of memory", "can't allocate memory", "not enough memory"))


# ---------------------------------------------------------------------------- bandwidth floor
def copy_bandwidth(clock: Clock, megabytes: float, repeats: int = 5) -> float:
    """Bytes/s of ``dst.copy_(src)`` for a float32 buffer of ``megabytes`` MiB (read + write counted)."""
    numel = max(int(megabytes * 2**20) // 4, 1)
    src = torch.randn(numel, device=clock.device)
    dst = torch.empty_like(src)
    deadline = Deadline.starting_now(float("inf"))
    seconds = median_seconds(lambda: dst.copy_(src), clock, repeats=repeats, warmup=1, deadline=deadline)
    return 2 * numel * 4 / seconds


def io_bytes(input_bytes: int, output_bytes: int, param_bytes: int) -> tuple[int, int]:
    """(forward, forward+backward) bytes a layer must read and write at least once.

    forward: read the inputs and parameters, write the output. backward: read the output
    gradient, the inputs and parameters, write the input and parameter gradients.
    Total forward+backward = 3·inputs + 2·output + 3·parameters.
    """
    forward = input_bytes + output_bytes + param_bytes
    return forward, forward + output_bytes + 2 * input_bytes + 2 * param_bytes


def floor_seconds(nbytes: int, bandwidth: float) -> float:
    """Seconds to move ``nbytes`` at ``bandwidth`` bytes/s."""
    return nbytes / bandwidth
