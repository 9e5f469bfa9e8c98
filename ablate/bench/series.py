"""Measure one series over increasing lengths, and one recurrent-inference point.

A series stops cleanly, with one row that says why, at the first length that

* is predicted to take longer than the time budget: the last measurement's wall time scaled by
  (L / L_last)^e, e the slope of wall time against length over the last two points, clamped
  to [1, 3] (status ``over_budget``, note "predicted ...");
* does run past the budget: checked after every call, so a measurement stops at the first
  call that ends past the deadline (status ``over_budget``, note "stopped after ...");
* is predicted not to fit: the last measured peak scaled linearly in L (x1.25), or before any
  measurement a rough size of the states, above ``max_memory_fraction`` of the memory still
  available on the device (status ``oom``, note "predicted ...");
* runs out of memory (status ``oom``, note with the error's first line).

A series that cannot run at all (peer not installed, mode not valid here, the job's own time
budget ``scale.job_budget_s`` used up) is one row with status ``skipped`` and the reason in
``note``. Any other error is logged with its traceback
and recorded as ``skipped`` with the error in ``note``; the sweep goes on.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .measure import (Clock, Deadline, OverBudget, Workload, available_memory, floor_seconds, io_bytes,
                      is_out_of_memory, median_seconds, parameter_bytes, peak_memory)
from .settings import Scale
from .subjects import StepSubject, Subject

log = logging.getLogger(__name__)

MB = 2**20
MEMORY_SAFETY = 1.25
EXPONENT_RANGE = (1.0, 3.0)


@dataclass
class Context:
    """What every measurement of a job shares.

    base: columns of every row (job id, device, versions, ...); bandwidth: measured copy
    bandwidth in bytes/s (None: no floor); on_row: sees each row as soon as it exists.
    """

    clock: Clock
    scale: Scale
    memory: bool
    seed: int
    base: dict[str, Any]
    bandwidth: float | None
    on_row: Callable[[dict[str, Any]], None] = lambda row: None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _release(device: torch.device) -> None:
    """Free what a failed measurement left behind."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- rows
def subject_row(subject: Subject | StepSubject, ctx: Context, kind: str, batch: int, **values: Any) -> dict[str, Any]:
    """A row with the job's columns, the subject's columns and ``values``."""
    row = dict(ctx.base)
    row.update(kind=kind, name=subject.name, peer=subject.peer, preset=subject.preset, compare_to=subject.compare_to,
               includes=subject.includes, batch=batch, d_model=subject.d_model, d_state=subject.d_state,
               peer_version=subject.version if subject.peer else "", status="ok", note="",
               repeats=ctx.scale.repeats, warmup=ctx.scale.warmup, load_average=os.getloadavg()[0])
    if isinstance(subject, Subject):
        row.update(mode=subject.mode, resolved_mode=subject.mode, d_inner=subject.d_inner,
                   series_id=f"{subject.name} | {subject.mode} | batch {batch}")
    else:
        row.update(mode="step", resolved_mode="step", series_id=f"{subject.name} | step | batch {batch}",
                   repeats=ctx.scale.step_tokens, warmup=ctx.scale.step_warmup)
    row.update(values)
    ctx.on_row(row)
    return row


def _param_count(subject: Subject | StepSubject, module: nn.Module) -> int:
    """The subject's parameter count, else the module's in real numbers (a complex parameter,
    such as s5-pytorch's Λ and C̃, counts twice, as our layers store it as two real ones)."""
    if subject.param_count is not None:
        return subject.param_count
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


def predict_wall(history: list[tuple[int, float, float | None]], length: int) -> float:
    """Seconds a measurement at ``length`` should take, from (length, wall_s, peak) of the last points."""
    if not history:
        return 0.0
    last_length, last_wall, _ = history[-1]
    exponent = EXPONENT_RANGE[0]
    if len(history) >= 2:
        prev_length, prev_wall, _ = history[-2]
        if prev_wall > 0 and last_wall > 0 and last_length != prev_length:
            slope = math.log(last_wall / prev_wall) / math.log(last_length / prev_length)
            exponent = min(max(slope, EXPONENT_RANGE[0]), EXPONENT_RANGE[1])
    return last_wall * (length / last_length) ** exponent


def predict_bytes(history: list[tuple[int, float, float | None]], subject: Subject, batch: int, length: int) -> float:
    """Peak bytes expected at ``length``: the last measured peak scaled linearly, else the subject's estimate."""
    for last_length, _, peak in reversed(history):
        if peak is not None:
            return MEMORY_SAFETY * peak * length / last_length
    return float(subject.estimate_bytes(batch, length))


# ---------------------------------------------------------------------------- one length
def measure_point(subject: Subject, module: nn.Module, batch: int, length: int, ctx: Context) -> dict[str, Any]:
    """Time forward and forward+backward at (batch, length) and measure their peak memory.

    Returns the row values (times in ms, tokens/s, memory in MB, floors). Raises OverBudget.
    """
    scale, clock = ctx.scale, ctx.clock
    deadline = Deadline.starting_now(scale.budget_s)
    deadline.plan(2 * (scale.warmup + scale.repeats) + (2 if ctx.memory else 0))
    torch.manual_seed(ctx.seed + length)
    workload = Workload(module, subject.inputs(batch, length, clock.device))
    fwd = median_seconds(workload.forward, clock, scale.repeats, scale.warmup, deadline)
    fwdbwd = median_seconds(workload.forward_backward, clock, scale.repeats, scale.warmup, deadline)
    tokens = batch * length
    values: dict[str, Any] = dict(
        length=length, fwd_ms=1e3 * fwd, fwdbwd_ms=1e3 * fwdbwd, tokens_per_s=tokens / fwdbwd,
        tokens_per_s_fwd=tokens / fwd, repeats=scale.repeats, warmup=scale.warmup,
        param_count=_param_count(subject, module),
        flops_per_token=subject.flops(length))
    if subject.resolve_mode is not None:
        values["resolved_mode"] = subject.resolve_mode(module, clock.device, length)
    if ctx.memory:
        peak_fwd, kind = peak_memory(workload.forward, clock, workload, grad=False)
        deadline.tick(more_to_come=True)
        workload.clear_grads()
        peak, kind = peak_memory(workload.train_step, clock, workload)
        deadline.tick(more_to_come=False)
        workload.clear_grads()
        values.update(peak_memory_mb=peak / MB, peak_memory_fwd_mb=peak_fwd / MB, peak_memory_kind=kind)
    if ctx.bandwidth:
        forward_bytes, training_bytes = io_bytes(workload.input_bytes, workload.output_bytes, parameter_bytes(module))
        values.update(floor_ms=1e3 * floor_seconds(forward_bytes, ctx.bandwidth),
                      floor_fwdbwd_ms=1e3 * floor_seconds(training_bytes, ctx.bandwidth), io_bytes=training_bytes)
    values["wall_s"] = deadline.elapsed_s
    return values


# ---------------------------------------------------------------------------- one series
def skipped_row(subject: Subject | StepSubject, batch: int, ctx: Context, note: str) -> dict[str, Any]:
    """The one row of a series or step measurement that does not run."""
    return subject_row(subject, ctx, "sweep" if isinstance(subject, Subject) else "step", batch, status="skipped",
                       note=note)


def run_series(subject: Subject, batch: int, ctx: Context) -> list[dict[str, Any]]:
    """Rows of one series over ``ctx.scale.lengths`` (stopping early as the module doc says)."""
    device = ctx.clock.device
    if subject.skip_reason:
        return [skipped_row(subject, batch, ctx, subject.skip_reason)]
    try:
        torch.manual_seed(ctx.seed)
        module = subject.build().to(device)
    except Exception as err:  # a peer whose version does not fit, ...
        log.warning("%s [%s]: could not be built: %s", subject.name, subject.mode, err, exc_info=True)
        return [subject_row(subject, ctx, "sweep", batch, status="skipped", note=f"build failed: {_first_line(err)}")]
    rows: list[dict[str, Any]] = []
    history: list[tuple[int, float, float | None]] = []
    for length in ctx.scale.lengths:
        row = _measure_or_stop(subject, module, batch, length, history, ctx)
        rows.append(row)
        if row["status"] != "ok":
            break
        peak = row.get("peak_memory_mb")
        history.append((length, row["wall_s"], None if peak is None else peak * MB))
    if device.type == "cuda":
        del module
        torch.cuda.empty_cache()
    return rows


def _measure_or_stop(subject: Subject, module: nn.Module, batch: int, length: int,
                     history: list[tuple[int, float, float | None]], ctx: Context) -> dict[str, Any]:
    """The row at one length: measured, or why the series stops here."""
    budget = ctx.scale.budget_s
    predicted = predict_wall(history, length)
    if predicted > budget:
        last_length, last_wall, _ = history[-1]
        return subject_row(subject, ctx, "sweep", batch, length=length, status="over_budget",
                           note=f"predicted {predicted:.1f} s > budget {budget:g} s "
                                f"(L={last_length} took {last_wall:.1f} s)")
    need, free = predict_bytes(history, subject, batch, length), available_memory(ctx.clock.device)
    if free is not None and need > ctx.scale.max_memory_fraction * free:
        return subject_row(subject, ctx, "sweep", batch, length=length, status="oom",
                           note=f"predicted peak {need / MB:.0f} MB > {ctx.scale.max_memory_fraction:g} x "
                                f"{free / MB:.0f} MB available")
    try:
        values = measure_point(subject, module, batch, length, ctx)
    except OverBudget as err:
        _release(ctx.clock.device)
        return subject_row(subject, ctx, "sweep", batch, length=length, status="over_budget", note=str(err),
                           wall_s=err.elapsed_s)
    except Exception as err:
        _release(ctx.clock.device)
        if is_out_of_memory(err):
            return subject_row(subject, ctx, "sweep", batch, length=length, status="oom", note=_first_line(err))
        log.warning("%s [%s] at L=%d failed", subject.name, subject.mode, length, exc_info=True)
        return subject_row(subject, ctx, "sweep", batch, length=length, status="skipped",
                           note=f"error: {_first_line(err)}")
    return subject_row(subject, ctx, "sweep", batch, **values)


# ---------------------------------------------------------------------------- recurrent inference
def run_step(subject: StepSubject, batch: int, ctx: Context) -> dict[str, Any]:
    """Median latency of one ``step`` (batch ``batch``, eval, no_grad) over ``step_tokens`` tokens
    after ``step_warmup``; each step's input is standard normal, the state starts at zero."""
    scale, clock = ctx.scale, ctx.clock
    if subject.skip_reason:
        return skipped_row(subject, batch, ctx, subject.skip_reason)
    deadline = Deadline.starting_now(scale.budget_s)
    try:
        torch.manual_seed(ctx.seed)
        module = subject.build().to(clock.device).eval()
        xs = torch.randn(scale.step_warmup + scale.step_tokens, batch, subject.d_input, device=clock.device)
        with torch.no_grad():
            holder = [subject.init_state(module, batch)]
            samples = _time_steps(subject, module, xs, holder, ctx, deadline)
    except OverBudget as err:
        return subject_row(subject, ctx, "step", batch, status="over_budget", note=str(err), wall_s=err.elapsed_s)
    except Exception as err:
        if is_out_of_memory(err):
            return subject_row(subject, ctx, "step", batch, status="oom", note=_first_line(err))
        log.warning("%s: step failed", subject.name, exc_info=True)
        return subject_row(subject, ctx, "step", batch, status="skipped", note=f"error: {_first_line(err)}")
    median = statistics.median(samples)
    count = _param_count(subject, module)
    return subject_row(subject, ctx, "step", batch, step_ms=1e3 * median, steps_per_s=1.0 / median,
                       step_tokens_per_s=batch / median, state_bytes=subject.state_bytes(holder[0]),
                       param_count=count, flops_per_token=subject.flops, repeats=len(samples),
                       warmup=scale.step_warmup, wall_s=deadline.elapsed_s)


def _time_steps(subject: StepSubject, module: nn.Module, xs: torch.Tensor, holder: list, ctx: Context,
                deadline: Deadline) -> list[float]:
    """Seconds of each timed step; the state lives in ``holder[0]``."""
    warmup = ctx.scale.step_warmup
    deadline.plan(len(xs))
    samples = []
    for t, x_t in enumerate(xs):
        def one(x_t=x_t) -> None:
            holder[0] = subject.step(module, x_t, holder[0])
        if t < warmup:
            one()
            ctx.clock.sync()
        else:
            samples.append(ctx.clock.seconds(one))
        deadline.tick(more_to_come=t + 1 < len(xs))
    return samples
