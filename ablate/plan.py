"""``+plan=true``: what a sweep would do, without training.

One line per run: its id, whether a finished row already exists (it would be skipped), its
size, and an estimate of its cost: forward+backward FLOPs ≈ 3 × forward FLOPs per token ×
tokens to train on (max_steps × batch × length).
"""

from __future__ import annotations

import models

from .config import ResolvedRun
from .results import finished_status, run_id
from .run import describe


def plan_line(run: ResolvedRun) -> str:
    rid = run_id(run.identity)
    status = finished_status(run.results_dir, rid)
    spec = run.task.spec
    tokens = run.trainer.max_steps * run.trainer.batch_size * spec.length
    flops = 3 * models.flops_per_token(run.model, spec.io, length=spec.length) * tokens
    state = "done (skip)" if status == "ok" else ("rerun" if status else "to run")
    return (f"plan {rid} [{state}] {describe(run)}: {models.param_count(run.model, spec.io):,} params, "
            f"{tokens:,} train tokens, ~{flops / 1e9:.3g} GFLOP")
