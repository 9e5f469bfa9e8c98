"""One run, end to end: skip if finished, build, train, evaluate, write the row."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import torch

import models

from .config import ResolvedRun
from .preemption import Preempted
from .results import CHECKPOINTS, environment, finished_status, identity_columns, path_of, run_id, write_run
from .trainer import Trainer

log = logging.getLogger(__name__)


def describe(run: ResolvedRun) -> str:
    ssm = run.model.ssm
    return (f"{run.preset} {ssm.structure} sel={','.join(ssm.selective) or 'none'} gate={ssm.gate} "
            f"N={ssm.d_state} H={ssm.d_model} on {run.task.spec.name} seed={run.seed}")


def execute(run: ResolvedRun, overrides: list[str]) -> dict[str, Any] | None:
    """Train and record one run; returns its row, or None when it was skipped."""
    rid = run_id(run.identity)
    label = describe(run)
    previous = finished_status(run.results_dir, rid)
    if previous == "ok" and not run.rerun:
        log.info("skip %s (%s): already finished with status ok; +rerun=true forces it", rid, label)
        return None
    torch.manual_seed(run.seed)
    model = models.build(run.model, run.task.spec.io)
    trainer = Trainer(run.trainer, run.seed, path_of(run.results_dir, CHECKPOINTS, rid))
    spec = run.task.spec
    row: dict[str, Any] = {
        "run_id": rid, "experiment": run.experiment, "seed": run.seed, "preset": run.preset,
        "task": spec.name, "metric": spec.metric, "higher_is_better": spec.higher_is_better,
        "overrides": " ".join(overrides), "schema_version": 1,
        "param_count": sum(p.numel() for p in model.parameters()),
        "state_size": models.state_size(run.model),
        "flops_per_token": models.flops_per_token(run.model, spec.io, length=spec.length),
        "device": str(trainer.device), **run.match, **run.budget, "tuned": ",".join(run.tuned) or "none",
    }
    started = time.time()
    try:
        result = trainer.fit(model, run.task, label=label)
    except Preempted as stop:
        log.warning("run %s (%s) %s; checkpoint saved, a resubmitted run resumes from it", rid, label, stop)
        stop.watcher.hand_over()
        raise SystemExit(128 + stop.signum) from None
    except Exception as err:  # the sweep goes on; the row says what went wrong
        log.error("run %s (%s) failed: %s", rid, label, err)
        row.update(status="failed", stopped_by="error", error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc(limit=5), steps=0)
        curve = []
    else:
        row.update(status=result.status, stopped_by=result.stopped_by, steps=result.steps, error="", **result.metrics)
        row.update({f"params_{group}": ",".join(names) for group, names in result.param_groups.items()})
        curve = result.curve
    row["wall_time_s"] = time.time() - started
    config = identity_columns(run.identity)
    row.update({k: v for k, v in config.items() if k not in row})
    row.update(environment())
    write_run(run.results_dir, row, curve)
    trainer.remove_checkpoint()
    metric = spec.metric
    log.info("done %s (%s): status=%s test_%s=%s steps=%d %.0f tok/s", rid, label, row["status"], metric,
             _fmt(row.get(f"test_{metric}")), row["steps"], row.get("tokens_per_s") or 0.0)
    return row


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


