"""``+plan=true``: what a sweep would do, without training.

One line per run (:func:`plan_line`): its id; what the sweep would do with it (``to run``;
``done (skip)`` when a row with status ok exists; ``done, rerun`` under ``+rerun=true``; a
failed or diverged row is trained again); the configuration, with the tuned values and the
match mode that tell apart the runs of one configuration; its size; and an estimate of its
cost: forward+backward FLOPs ≈ 3 × forward FLOPs per token × tokens to train on
(max_steps × batch × length). With a time budget (``budget.kind=time`` or
``trainer.time_budget_s``) training stops at the time limit, so both are upper bounds (``≤``).

At the end of a sweep, :class:`PlanTotals` (a Hydra callback, see conf/config.yaml) prints the
totals: jobs, distinct runs (two jobs that resolve to the same run id train one run: the line
``plan same run`` says which), runs skipped, FLOPs, and core-hours: each run's FLOPs at the rate
of its preset's committed CPU runs (:func:`reference_rates`), or at :data:`GFLOPS_PER_CORE` for
a preset with none.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

import models

from .config import ResolvedRun, resolve
from .results import finished_status, flatten, run_id
from .run import describe

# Forward+backward training rate assumed for core-hours of a preset without committed CPU runs:
# the median over all CPU reference runs in results/reference (3 × FLOPs per token × tokens/s
# per thread; they span 1 to 20 GFLOP/s, by preset medians Mamba 4.3, S4D 5.9, S5 13).
GFLOPS_PER_CORE = 6.0
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
RATE_COLUMNS = ("preset", "status", "device", "flops_per_token", "tokens_per_s", "threads")

log = logging.getLogger(__name__)


def reference_rates(folder: Path = REFERENCE) -> dict[str, float]:
    """{preset: median forward+backward GFLOP/s per CPU thread} over the committed run rows
    under ``folder`` (``*/runs/*.parquet``) with status ok on a CPU: 3 × FLOPs per token ×
    tokens/s / threads. Presets without such rows are absent; an unreadable file is skipped."""
    rates: dict[str, list[float]] = {}
    for path in sorted(Path(folder).glob("*/runs/*.parquet")):
        try:
            names = pq.read_schema(path).names
            rows = pq.read_table(path, columns=[c for c in RATE_COLUMNS if c in names]).to_pylist()
        except Exception as error:  # noqa: BLE001 - a damaged file only loses its rate
            log.warning("plan: skipped %s for the CPU rate (%s)", path, error)
            continue
        for row in rows:
            if not set(RATE_COLUMNS[:-1]) <= set(row):
                continue
            threads = row.get("threads") or 1
            if row["status"] == "ok" and str(row["device"]).startswith("cpu") and (row["tokens_per_s"] or 0) > 0:
                rates.setdefault(str(row["preset"]), []).append(
                    3 * row["flops_per_token"] * row["tokens_per_s"] / threads / 1e9)
    return {preset: statistics.median(values) for preset, values in sorted(rates.items())}


def run_state(run: ResolvedRun, status: str | None) -> tuple[str, bool]:
    """What the sweep does with the run, given the status of its finished row (None: no row);
    and whether that trains it."""
    if status is None:
        return "to run", True
    if status != "ok":
        return f"{status}, rerun", True
    if run.rerun:
        return "done, rerun (+rerun=true)", True
    return "done (skip)", False


def settings(run: ResolvedRun) -> str:
    """The tuned values and the match mode, e.g. ``trainer.lr=0.003 match.by=state_size``."""
    columns = flatten(run.identity)
    parts = [f"{key}={columns[key]}" for key in run.tuned if key in columns]
    if run.match["match_by"] != "none":
        parts.append(f"match.by={run.match['match_by']}")
    return " ".join(parts)


def plan_entry(run: ResolvedRun) -> dict[str, Any]:
    """The plan of one run as plain values (what :func:`format_line` prints and the totals sum)."""
    rid = run_id(run.identity)
    state, trains = run_state(run, finished_status(run.results_dir, rid))
    spec, trainer = run.task.spec, run.trainer
    tokens = trainer.max_steps * trainer.batch_size * spec.length
    per_token = models.flops_per_token(run.model, spec.io, length=spec.length, batch=trainer.batch_size)
    return {"run_id": rid, "state": state, "trains": trains, "preset": run.preset,
            "label": " ".join(filter(None, [describe(run), settings(run)])),
            "params": models.param_count(run.model, spec.io), "tokens": tokens, "flops": 3 * per_token * tokens,
            "time_budget_s": trainer.time_budget_s}


def format_line(entry: dict[str, Any]) -> str:
    """``plan <id> [<state>] <configuration>: <params> params, <tokens> train tokens, ~<cost> GFLOP``."""
    bound, limit = "", ""
    if entry["time_budget_s"] is not None:
        bound, limit = "≤ ", f" (time budget {entry['time_budget_s']:g} s)"
    return (f"plan {entry['run_id']} [{entry['state']}] {entry['label']}: {entry['params']:,} params, "
            f"{bound}{entry['tokens']:,} train tokens{limit}, {bound}~{entry['flops'] / 1e9:.3g} GFLOP")


def plan_line(run: ResolvedRun) -> str:
    """The plan line of one run."""
    return format_line(plan_entry(run))


def hours_text(hours: float) -> str:
    """``~1,400``, ``~2.5``, ``~0.015``, ``< 0.01``: an estimate of hours, no exponent."""
    if hours >= 10:
        return f"~{hours:,.0f}"
    return f"~{hours:.2g}" if hours >= 0.01 else "< 0.01"


def rate_text(presets: list[str | None], rates: dict[str, float]) -> str:
    """What the core-hours assume, for the presets of the runs to train (None: not recorded)."""
    known = [f"{p} {rates[p]:.2g}" for p in presets if p in rates]
    unknown = [str(p) for p in presets if p not in rates]
    if not known:
        return f"an assumed {GFLOPS_PER_CORE:g} GFLOP/s per CPU core (the median rate of the CPU reference runs)"
    text = f"the median rate of each preset's committed CPU runs ({', '.join(known)} GFLOP/s per core)"
    if unknown:
        text += (f" and an assumed {GFLOPS_PER_CORE:g} GFLOP/s per CPU core for {', '.join(unknown)} (no committed "
                 "CPU runs: the median of all of them)")
    return text


def totals_lines(entries: list[dict[str, Any]], rates: dict[str, float] | None = None) -> list[str]:
    """The totals of a sweep's plan entries (each with its Hydra job number ``job``): one
    ``plan same run`` line per job whose run an earlier job already plans, then the sums.
    rates: {preset: GFLOP/s per core} for core-hours (default none: :data:`GFLOPS_PER_CORE`)."""
    rates = rates or {}
    first_job: dict[str, int] = {}
    lines = []
    for entry in sorted(entries, key=lambda e: e["job"]):
        earlier = first_job.setdefault(entry["run_id"], entry["job"])
        if earlier != entry["job"]:
            lines.append(f"plan same run: job {entry['job']} is job {earlier} ({entry['run_id']}), trained once")
    runs = {entry["run_id"]: entry for entry in entries}.values()
    to_train = [entry for entry in runs if entry["trains"]]
    flops = sum(entry["flops"] for entry in to_train)
    bound = "≤ " if any(entry["time_budget_s"] is not None for entry in to_train) else ""
    core_hours = sum(entry["flops"] / (rates.get(entry.get("preset"), GFLOPS_PER_CORE) * 1e9) / 3600
                     for entry in to_train)
    presets = list(dict.fromkeys(entry.get("preset") for entry in to_train))
    lines.append(f"plan totals: {len(entries)} jobs, {len(runs)} runs, {len(runs) - len(to_train)} done (skip), "
                 f"{len(to_train)} to train: {bound}~{flops / 1e9:.3g} GFLOP, {bound}{hours_text(core_hours)} core-hours "
                 f"at {rate_text(presets, rates)}")
    return lines


class PlanTotals(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): the totals of a ``+plan=true`` sweep.

    A launcher may run jobs in other processes (joblib) and Hydra hands no job's return value to
    a callback's ``on_multirun_end``, so each job's ``on_job_end`` (in whichever process ran it)
    writes its plan entry to a temporary folder made at the start of the sweep; the end of the
    sweep reads them, prints the totals and removes the folder. Nothing is written under
    results_dir. Jobs on other machines (SLURM) are not counted.
    """

    def __init__(self) -> None:
        self.folder: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("plan", False):
            self.folder = tempfile.mkdtemp(prefix="ablate-plan-")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.folder is None or job_return.status != JobStatus.COMPLETED:
            return
        entry = {**plan_entry(resolve(job_return.cfg)), "job": int(config.hydra.job.num)}
        Path(self.folder, f"{entry['job']}.json").write_text(json.dumps(entry))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.folder is None:
            return
        entries = [json.loads(path.read_text()) for path in Path(self.folder).glob("*.json")]
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        print("\n".join(totals_lines(entries, reference_rates())))
