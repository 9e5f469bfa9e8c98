"""One run, end to end: skip if finished, claim, build, train, evaluate, write the row."""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
import traceback
from typing import Any

import torch

import models

from . import tasks
from .config import ResolvedRun
from .claims import RunClaim
from .preemption import Preempted, exit_with_parent
from .results import CHECKPOINTS, CLAIMS, environment, identity_columns, path_of, run_id, status_since, write_run
from .trainer import Trainer

log = logging.getLogger(__name__)


# How describe() writes a layer axis that is off its preset's default (others: key=value).
SHORT_AXES = {"rotation": "rot", "eig_range": "eig", "trapezoid": "λ", "a_source": "A", "a_floor": "A_floor",
              "rope_fraction": "rope", "rotation_form": "rot_form", "expand": "E", "discretization": "disc"}
# Layer fields describe() never lists: printed anyway (d_model, d_state, structure, selective, gate,
# mimo_rank), or how the states are computed, not what (mode, chunk_size).
UNLISTED_AXES = ("d_model", "d_state", "structure", "selective", "gate", "mimo_rank", "mode", "chunk_size")


def _axis_text(name: str, value: Any) -> str:
    if name == "discretization" and value == "trapezoidal":
        return "trap"
    if isinstance(value, bool):
        return name.replace("_", "") if value else f"no-{name.replace('_', '')}"
    if isinstance(value, (tuple, list)):
        value = "[" + ",".join(str(v) for v in value) + "]"
    return f"{SHORT_AXES.get(name, name)}={value}"


def moved_axes(ssm: models.SSMConfig, preset: str) -> list[str]:
    """The layer axes of ``ssm`` off the defaults of its preset (at the same width, state size
    and expansion), compactly: ``R=2`` is in the structure, ``rot=data``, ``eig=[-1,1]``, ``trap``,
    ``headdim=32``, ``no-bcnorm``..."""
    try:
        base = models.preset(preset, d_model=ssm.d_model, d_state=ssm.d_state, expand=ssm.expand)
    except (ValueError, TypeError):
        base = models.preset(preset, d_model=ssm.d_model, d_state=ssm.d_state)
    ours, theirs = ssm.as_dict(), base.as_dict()
    return [_axis_text(k, v) for k, v in ours.items() if k not in UNLISTED_AXES and v != theirs.get(k)]


def task_text(run: ResolvedRun) -> str:
    """The task's name with the options that make it a different task when off their defaults
    (``Task.variant_options``): ``modular_arithmetic (brackets)``, ``parity (label=every)``."""
    cls = tasks.TASKS.get(run.task.spec.name)
    options = getattr(cls, "variant_options", ())
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)} if options else {}
    moved = [_axis_text(k, run.task_cfg[k]) for k in options if k in run.task_cfg and run.task_cfg[k] != defaults.get(k)]
    return run.task.spec.name + (f" ({', '.join(moved)})" if moved else "")


def describe(run: ResolvedRun) -> str:
    """One line naming the point: preset, structure (``mimo R=4`` for a rank-R Mamba-3 MIMO),
    selection, gate, state size N, width H, every other layer axis off the preset's default
    (:func:`moved_axes`), the MLP width, the task with its variant options and the seed."""
    ssm = run.model.ssm
    structure = f"mimo R={ssm.mimo_rank}" if ssm.mimo_rank > 1 else ssm.structure
    ffn = [f"ffn={run.model.ffn_hidden}"] if run.model.ffn_hidden else []
    return " ".join([run.preset, structure, f"sel={','.join(ssm.selective) or 'none'}", f"gate={ssm.gate}",
                     f"N={ssm.d_state}", f"H={ssm.d_model}", *moved_axes(ssm, run.preset), *ffn,
                     f"on {task_text(run)} seed={run.seed}"])


class BadData(ValueError):
    """The task's data cannot be read (:meth:`ablate.tasks.Task.load`): the run is refused
    before it is claimed or trained."""


def execute(run: ResolvedRun, overrides: list[str], sweep_started: float | None = None) -> dict[str, Any] | None:
    """Train and record one run; returns its row, or None when it was skipped.

    A run is skipped when its row exists with status ok (with ``+rerun=true``: when a row was
    written after this call started). Otherwise it is claimed first (see ablate.claims): if
    another live process holds the claim, this call waits until that process finishes the
    run (then skips it) or dies (then takes the run over and resumes its checkpoint). Before
    that the task's splits are read: data that cannot be read raise :class:`BadData`.
    ``sweep_started``: when the sweep of this job began (rows written since are this sweep's or a
    concurrent one's, and are not trained again); by default, now.
    """
    rid = run_id(run.identity)
    label = describe(run)
    started = time.time() if sweep_started is None else min(sweep_started, time.time())
    since = started if run.rerun else 0.0
    if status_since(run.results_dir, rid, since) == "ok":
        log.info("skip %s (%s): already finished with status ok; +rerun=true forces it", rid, label)
        return None
    try:
        run.task.load()
    except (ValueError, FileNotFoundError) as err:
        raise BadData(str(err)) from None
    exit_with_parent()
    checkpoint = path_of(run.results_dir, CHECKPOINTS, rid)
    claim = RunClaim(path_of(run.results_dir, CLAIMS, rid), related=(checkpoint,))

    def done() -> bool:
        """Finished with status ok, or finished (any status: a diverged or failed run too) by
        another process since this one started: two sweeps at once train each run once."""
        return (status_since(run.results_dir, rid, since) == "ok"
                or status_since(run.results_dir, rid, started) is not None)

    if not claim.wait(done, describe=f" ({label})"):
        log.info("skip %s (%s): finished by another process", rid, label)
        return None
    try:
        if done():  # finished between the first look and the claim
            log.info("skip %s (%s): finished by another process", rid, label)
            return None
        return _train(run, rid, label, overrides, checkpoint, claim)
    except Preempted as stop:
        claim.release()
        kept = run.trainer.checkpoint  # trainer.checkpoint=false: nothing was saved to resume from
        saved = "checkpoint saved" if kept else "no checkpoint kept (trainer.checkpoint=false)"
        if stop.signum == signal.SIGINT:
            log.warning("run %s (%s) interrupted at step %d; %s, the same command %s", rid, label, stop.step, saved,
                        "resumes it" if kept else "starts it over")
            raise SystemExit(130) from None
        log.warning("run %s (%s) %s; %s, a resubmitted run %s", rid, label, stop, saved,
                    "resumes from it" if kept else "starts over")
        stop.watcher.hand_over()
        raise SystemExit(128 + stop.signum) from None
    finally:
        claim.release()


def _train(run: ResolvedRun, rid: str, label: str, overrides: list[str], checkpoint: str,
           claim: RunClaim) -> dict[str, Any] | None:
    """Build, train and evaluate a claimed run, then write its row (None if the claim was lost)."""
    torch.manual_seed(run.seed)
    model = models.build(run.model, run.task.spec.io)
    trainer = Trainer(run.trainer, run.seed, checkpoint)
    spec = run.task.spec
    row: dict[str, Any] = {
        "run_id": rid, "experiment": run.experiment, "seed": run.seed, "preset": run.preset,
        "task": spec.name, "metric": spec.metric, "higher_is_better": spec.higher_is_better,
        "overrides": " ".join(overrides), "schema_version": 1,
        "param_count": sum(p.numel() for p in model.parameters()),
        "state_size": models.state_size(run.model),
        "flops_per_token": run.flops_per_token(),
        "device": str(trainer.device), "resolved_mode": models.resolved_mode(model, trainer.device),
        **run.match, **run.budget, "tuned": ",".join(run.tuned) or "none",
    }
    try:
        result = trainer.fit(model, run.task, label=label)
    except Preempted:
        raise
    except Exception as err:  # the sweep goes on; the row says what went wrong
        log.error("run %s (%s) failed: %s", rid, label, err)
        row.update(status="failed", stopped_by="error", error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc(limit=5), steps=trainer.steps_done)
        curve = []
    else:
        row.update(status=result.status, stopped_by=result.stopped_by, steps=result.steps, error="", **result.metrics)
        row.update({f"params_{group}": ",".join(names) for group, names in result.param_groups.items()})
        curve = result.curve
    config = identity_columns(run.identity)
    row.update({k: v for k, v in config.items() if k not in row})
    row.update(environment())
    if not claim.held:
        log.error("run %s (%s): another process took its claim over; its row is left to that process", rid, label)
        return None
    write_run(run.results_dir, row, curve)
    if row["status"] != "failed":  # a run stopped by an error resumes from its checkpoint once it is mended
        trainer.remove_checkpoint()
    metric = spec.metric
    log.info("done %s (%s): status=%s test_%s=%s steps=%d %.0f tok/s", rid, label, row["status"], metric,
             _fmt(row.get(f"test_{metric}")), row["steps"], row.get("tokens_per_s") or 0.0)
    return row


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


