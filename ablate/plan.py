"""``+plan=true``: what a sweep would do, without training.

One line per run (:func:`plan_line`): its id; what the sweep would do with it (``to run``;
``done (skip)`` when a row with status ok exists; ``done, rerun`` under ``+rerun=true``; a
failed or diverged row is trained again); the configuration, with the tuned values and the
match mode that tell apart the runs of one configuration; its size; and an estimate of its
cost: forward+backward FLOPs ≈ 3 × forward FLOPs per token × tokens to train on
(max_steps × batch × length, at each curriculum stage's length for its steps). With a time
budget (``budget.kind=time`` or ``trainer.time_budget_s``) training stops at the time limit,
so both are upper bounds (``≤``).

At the end of a sweep, :class:`PlanTotals` (a Hydra callback, see conf/config.yaml) prints the
totals: jobs, distinct runs (two jobs that resolve to the same run id train one run: the line
``plan same run`` says which), runs skipped, FLOPs, and core-hours: each run's FLOPs at the rate
of its preset's committed CPU runs on its task (:func:`reference_rates`), on every task where
the preset has none on this one (rates per FLOP differ by task: Mamba-3 ran 0.6 GFLOP/s per core
on parity and 5.3 on sequential digits), or at :data:`GFLOPS_PER_CORE` for a preset with none. A
run that a CPU computes in the chunked dual form (a head layer, :mod:`models.ssd`) is priced only
by runs that ran in that form, and a run in any other form only by runs that did not: the two
differ by 3x to 20x per FLOP at the same point (:func:`rate_subject`).
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any, Optional

import pyarrow.parquet as pq

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

import models

from .config import ResolvedRun, cost_per_token, resolve, training_cost
from .results import finished_status, flatten, run_id
from .run import describe

# Forward+backward training rate assumed for core-hours of a preset without committed CPU runs
# (3 × FLOPs per token × tokens/s per thread): the CPU reference runs in results/reference span
# 0.2 to 28 GFLOP/s, their median 5.1, by preset medians Mamba-2 0.31 (14 in the chunked dual
# form), Mamba 4.0, Mamba-3 4.6 (17 in the chunked dual form), S4D 6.5, S5 13.
GFLOPS_PER_CORE = 6.0
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
RATE_COLUMNS = ("preset", "status", "device", "flops_per_token", "tokens_per_s", "threads", "task.name", "resolved_mode")
Rates = dict[tuple[str, Optional[str]], float]

log = logging.getLogger(__name__)


def rate_subject(preset: str, dual: bool, rank: int = 1) -> str:
    """What a rate is kept under: the preset, or ``<preset> (dual form)`` for runs in the chunked
    dual form (:attr:`models.SSMConfig.chunked_is_dual`, mode chunked or auto on a CPU), with
    ``, R=<rank>`` at a MIMO rank above 1, whose chunks are shorter (on sequential digits, one
    thread, mimo_vs_siso's runs: rank 2 9.2 to 13.6 and rank 4 9.7 to 11.1 GFLOP/s per core,
    where rank 1's committed runs ran 15 on parity and 23 on MQAR)."""
    if not dual:
        return preset
    return f"{preset} (dual form)" if rank == 1 else f"{preset} (dual form, R={rank})"


def mimo_rank(row: dict[str, Any]) -> int:
    """The MIMO rank of a committed row (1 where none is recorded: rows from before the axis)."""
    rank = row.get("model.ssm.mimo_rank")
    return 1 if rank is None or rank != rank else int(rank)


def ran_dual(row: dict[str, Any]) -> bool:
    """Whether a committed row's run computed its layers in the chunked dual form: it resolved to
    mode chunked, and its layer config (the row's ``model.ssm.*`` columns) has a dual form."""
    if row.get("resolved_mode") != "chunked":
        return False
    fields = {key.removeprefix("model.ssm."): value for key, value in row.items()
              if key.startswith("model.ssm.") and value is not None}
    try:
        return models.SSMConfig(**fields).chunked_is_dual
    except (TypeError, ValueError):  # a row from a version with other fields: not this form
        return False


def reference_rates(folder: Path = REFERENCE) -> Rates:
    """Median forward+backward GFLOP/s per CPU thread (3 × FLOPs per token × tokens/s / threads)
    of the committed run rows under ``folder`` (``*/runs/*.parquet``) with status ok on a CPU:
    ``{(preset, task): rate}`` over the preset's rows on that task and ``{(preset, None): rate}``
    over all its rows, the preset named by :func:`rate_subject` (rows that ran in the dual form
    apart). Presets without such rows are absent; an unreadable file is skipped."""
    samples: dict[tuple[str, Optional[str]], list[float]] = {}
    for path in sorted(Path(folder).glob("*/runs/*.parquet")):
        try:
            names = pq.read_schema(path).names
            columns = [c for c in names if c in RATE_COLUMNS or c.startswith("model.ssm.")]
            rows = pq.read_table(path, columns=columns).to_pylist()
        except Exception as error:  # noqa: BLE001 - a damaged file only loses its rate
            log.warning("plan: skipped %s for the CPU rate (%s)", path, error)
            continue
        for row in rows:
            if not set(RATE_COLUMNS[:5]) <= set(row):
                continue
            threads = row.get("threads") or 1
            if row["status"] == "ok" and str(row["device"]).startswith("cpu") and (row["tokens_per_s"] or 0) > 0:
                rate = 3 * row["flops_per_token"] * row["tokens_per_s"] / threads / 1e9
                preset = rate_subject(str(row["preset"]), ran_dual(row), mimo_rank(row))
                for task in {None, row.get("task.name")}:
                    samples.setdefault((preset, task), []).append(rate)
    return {key: statistics.median(values) for key, values in sorted(samples.items(), key=str)}


def rate_of(rates: Rates, preset: str | None, task: str | None) -> tuple[float, str]:
    """(GFLOP/s per core, what it is) for a run of ``preset`` on ``task``: the rate of the preset's
    committed runs on the task, else on every task, else :data:`GFLOPS_PER_CORE`."""
    if (preset, task) in rates:
        return rates[preset, task], "task"
    if (preset, None) in rates:
        return rates[preset, None], "preset"
    return GFLOPS_PER_CORE, "assumed"


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
    steps, batch = trainer.max_steps, trainer.batch_size
    tokens, flops = (training_cost(run.task, steps, batch, cost_per_token(kind, run.model, spec, batch))
                     for kind in ("tokens", "flops"))
    ssm = run.model.ssm
    dual = ssm.chunked_is_dual and ssm.mode in ("auto", "chunked")
    return {"run_id": rid, "state": state, "trains": trains, "preset": run.preset, "dual": dual,
            "rank": ssm.mimo_rank, "task": run.task.name,
            "label": " ".join(filter(None, [describe(run), settings(run)])),
            "params": models.param_count(run.model, spec.io), "tokens": round(tokens), "flops": flops,
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


def rate_text(used: list[tuple[str | None, str | None, float, str]]) -> str:
    """What the core-hours assume, from the (preset, task, rate, basis) of the runs to train
    (:func:`rate_of`; None: not recorded)."""
    def listed(basis: str) -> str:
        return ", ".join(dict.fromkeys(f"{p} on {t} {r:.2g}" for p, t, r, b in used if b == basis))
    parts = []
    if listed("task"):
        parts.append(f"of its preset's committed CPU runs on its task ({listed('task')})")
    if listed("preset"):
        parts.append(f"of its preset's committed CPU runs on every task, where none is on its task ({listed('preset')})")
    assumed = ", ".join(dict.fromkeys(str(p) for p, _, _, b in used if b == "assumed"))
    text = "each run at the median GFLOP/s per core " + ", or ".join(parts) if parts else "each run"
    if assumed:
        text += f"{', or' if parts else ''} at an assumed {GFLOPS_PER_CORE:g} GFLOP/s per core where its preset has " \
                f"no committed CPU runs in its form ({assumed})"
    return text


def totals_lines(entries: list[dict[str, Any]], rates: Rates | None = None) -> list[str]:
    """The totals of a sweep's plan entries (each with its Hydra job number ``job``): one
    ``plan same run`` line per job whose run an earlier job already plans, then the sums.
    rates: :func:`reference_rates` for core-hours (default none: :data:`GFLOPS_PER_CORE`)."""
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
    subjects = [rate_subject(entry.get("preset"), entry.get("dual", False), entry.get("rank", 1)) for entry in to_train]
    used = [(subject, entry.get("task"), *rate_of(rates, subject, entry.get("task")))
            for subject, entry in zip(subjects, to_train)]
    core_hours = sum(entry["flops"] / (rate * 1e9) / 3600 for entry, (_, _, rate, _) in zip(to_train, used))
    lines.append(f"plan totals: {len(entries)} jobs, {len(runs)} runs, {len(runs) - len(to_train)} done (skip), "
                 f"{len(to_train)} to train: {bound}~{flops / 1e9:.3g} GFLOP, {bound}{hours_text(core_hours)} core-hours, "
                 f"{rate_text(used)}")
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
