"""A small synthetic results directory for the analysis tests (deterministic, no training).

The columns follow what ``python -m ablate`` writes (see ablate/run.py): one parquet row per
run under runs/, one curve per run under curves/, and benchmark rows under bench/.

Contents of :func:`make_results` (experiment "synthetic", preset s4d throughout):

- 2 structures (siso, mimo) x 2 gates (glu, silu) x seeds 0, 1, 2 on three tasks: sdigits
  (accuracy), induction_heads (accuracy, with test_len_<L>_accuracy extrapolation columns) and
  adding (mse); ``model.ssm.init`` and ``model.ssm.d_state`` change with the structure;
  every run matched by total state size to s4d;
- on sdigits, seed 3: one diverged run (mimo, silu) and one failed run (siso, glu), both with a
  bogus test_accuracy of 0.0 that must never be averaged in;
- the sdigits (siso, glu, seed 2) run written by an "older runner": no status, metric,
  best_val_accuracy, final_val_accuracy, tokens_per_s, peak_memory_mb, model.ssm.conv,
  match_by, match_reference, match_target columns;
- a truncated run file (runs/truncated0000000.parquet) and a truncated curve file;
- bench/: S4D (fft, scan), S5 (scan), Mamba (scan, chunked) at lengths 256..4096, Mamba scan
  over budget and chunked out of memory at 4096, plus a per-step latency row without length.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

STRUCTURES = ("siso", "mimo")
GATES = ("glu", "silu")
SEEDS = (0, 1, 2)
TASKS = {"sdigits": "accuracy", "induction_heads": "accuracy", "adding": "mse"}
TEST_LENGTHS = (256, 512, 1024)
OLD_RUN = ("sdigits", "siso", "glu", 2)
OLD_MISSING = ("status", "metric", "best_val_accuracy", "final_val_accuracy", "tokens_per_s", "peak_memory_mb",
               "model.ssm.conv", "match_by", "match_reference", "match_target", "tuned", "budget_kind",
               "budget_value", "higher_is_better", "schema_version", "params_ssm", "params_no_decay", "params_decay",
               "trainer.weight_decay")
TRUNCATED = "truncated0000000"


def _rid(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _score(task: str, structure: str, gate: str, seed: int) -> float:
    """A deterministic test score: silu > glu, siso > mimo on accuracy tasks; mse the mirror."""
    rng = np.random.default_rng(int(hashlib.md5(f"{task}{structure}{gate}{seed}".encode()).hexdigest()[:8], 16))
    base = 0.55 + 0.2 * (gate == "silu") + 0.1 * (structure == "siso")
    if TASKS[task] == "mse":
        return float(0.05 - 0.03 * (gate == "silu") - 0.01 * (structure == "siso") + rng.normal(0, 0.004))
    return float(np.clip(base + rng.normal(0, 0.03), 0, 1))


def run_row(task: str, structure: str, gate: str, seed: int, status: str = "ok") -> dict:
    """One run row with the runner's columns (metrics filled per status)."""
    metric = TASKS[task]
    score = _score(task, structure, gate, seed)
    d_state = 16 if structure == "siso" else 64
    row = {
        "run_id": _rid(task, structure, gate, seed, status), "experiment": "synthetic", "seed": seed,
        "preset": "s4d", "task": task, "metric": metric,
        "overrides": f"model.ssm.structure={structure} model.ssm.gate={gate} seed={seed}",
        "param_count": 20000 + (4000 if structure == "mimo" else 0) + (1000 if gate == "silu" else 0),
        "state_size": 2048, "flops_per_token": 40000.0 + 1000 * (gate == "silu"), "device": "cpu",
        "match_by": "state_size", "match_reference": "s4d", "match_target": 2048,
        "higher_is_better": metric == "accuracy", "schema_version": 1, "tuned": "none",
        "budget_kind": "steps", "budget_value": 50,
        "status": status, "stopped_by": {"ok": "max_steps", "diverged": "nan", "failed": "error"}[status],
        "steps": 50 if status == "ok" else 20 if status == "diverged" else 0,
        "error": "RuntimeError: synthetic failure" if status == "failed" else "",
        "train_time_s": 10.0 + seed, "tokens_seen": 50 * 16 * 64,
        "tokens_per_s": 5000.0 + 100 * seed + (500 if structure == "siso" else 0),
        f"final_val_{metric}": score - 0.01 if metric == "accuracy" else score + 0.002,
        "final_val_loss": 1.0 - score, f"best_val_{metric}": score if metric == "accuracy" else score + 0.001,
        f"test_{metric}": score, "test_loss": 1.0 - score if metric == "accuracy" else score,
        "peak_memory_mb": 500.0 + 10 * seed, "peak_memory_kind": "process_max_rss",
        "wall_time_s": 12.0,
        "model.preset": "s4d", "model.ssm.d_model": 32, "model.ssm.d_state": d_state,
        "model.ssm.structure": structure, "model.ssm.groups": None, "model.ssm.selective": "none",
        "model.ssm.gate": gate, "model.ssm.conv": 0, "model.ssm.expand": 1,
        "model.ssm.init": "s4d_lin" if structure == "siso" else "hippo", "model.ssm.discretization": "zoh",
        "model.ssm.complex": True, "model.ssm.mode": "auto", "model.n_layers": 2,
        "task.name": task, "task.length": 64 if task == "induction_heads" else 128,
        "trainer.max_steps": 50, "trainer.batch_size": 16, "trainer.lr": 0.003, "trainer.ssm_lr": 0.001,
        "trainer.weight_decay": 0.01,
        "trainer.time_budget_s": None, "trainer.device": "auto",
        "version_torch": "2.13.0+cpu", "version_python": "3.11.7", "version_ssm_ablate": "0.1.0",
        "hostname": f"node{seed}", "gpu": "none", "finished_at": f"2026-01-0{seed + 1}T00:00:00+00:00",
    }
    if status != "failed":  # the runner records the AdamW groups of a run that trained
        row.update({"params_ssm": "layers.0.ssm.A_log,layers.0.ssm.dt_log,layers.1.ssm.A_log,layers.1.ssm.dt_log",
                    "params_no_decay": "encoder.bias,layers.0.norm.weight,layers.1.norm.weight",
                    "params_decay": "encoder.weight,layers.0.ssm.B,layers.0.ssm.C,layers.1.ssm.B,layers.1.ssm.C"})
    if task == "induction_heads":
        for i, length in enumerate(TEST_LENGTHS):
            decay = 0.05 * (i + 1) * (1 if gate == "silu" else 3)
            row[f"test_len_{length}_accuracy"] = max(score - decay, 0.0)
    if status == "diverged":  # what a buggy writer might leave behind: it must not be averaged in
        row.update({f"test_{metric}": 0.0, f"best_val_{metric}": 0.0, "test_loss": float("nan")})
    if status == "failed":
        row.update({f"test_{metric}": 0.0, f"best_val_{metric}": float("nan"), "tokens_per_s": float("nan")})
    return row


def curve_rows(row: dict) -> pd.DataFrame:
    """Evaluations every 10 steps up to the run's step count, converging to its final score."""
    metric = row["metric"]
    final = row[f"final_val_{metric}"]
    steps = list(range(10, int(row["steps"]) + 1, 10))
    out = []
    for k, step in enumerate(steps):
        frac = (k + 1) / max(len(steps), 1)
        value = (0.1 + (final - 0.1) * frac) if metric == "accuracy" else final * (2 - frac)
        out.append({"run_id": row["run_id"], "step": step, "train_time_s": 0.2 * step, "tokens": step * 16 * 64,
                    "train_loss": 2.5 * (1 - 0.6 * frac) + 0.01 * row["seed"], "val_loss": 2.4 * (1 - 0.5 * frac),
                    f"val_{metric}": value})
    return pd.DataFrame(out)


def bench_rows() -> pd.DataFrame:
    """Benchmark rows: time and memory grow with length; two Mamba points not measured."""
    rows = []
    series = [("S4D", "fft", 0.004), ("S4D", "scan", 0.010), ("S5", "scan", 0.012),
              ("Mamba", "scan", 0.020), ("Mamba", "chunked", 0.008)]
    for name, mode, per_token in series:
        for length in (256, 512, 1024, 2048, 4096):
            status = "ok"
            if (name, mode, length) == ("Mamba", "scan", 4096):
                status = "over_budget"
            if (name, mode, length) == ("Mamba", "chunked", 4096):
                status = "oom"
            fwd = per_token * length * (1.1 if mode == "scan" else 1.0)
            ok = status == "ok"
            rows.append({"name": name, "peer": False, "preset": name.lower(), "mode": mode, "batch": 8,
                         "length": length, "fwd_ms": fwd if ok else np.nan, "fwdbwd_ms": 3 * fwd if ok else np.nan,
                         "tokens_per_s": 8 * length / (3 * fwd / 1000) if ok else np.nan,
                         "peak_memory_mb": 20 + 0.05 * length * (2 if mode == "scan" else 1) if ok else np.nan,
                         "status": status, "device": "cpu"})
    rows.append({"name": "S5", "peer": False, "preset": "s5", "mode": "recurrent", "batch": 1, "length": np.nan,
                 "fwd_ms": 0.3, "fwdbwd_ms": np.nan, "tokens_per_s": np.nan, "peak_memory_mb": np.nan,
                 "status": "ok", "device": "cpu"})
    return pd.DataFrame(rows)


def _truncate(frame: pd.DataFrame, path: Path) -> None:
    frame.to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def all_rows(seeds: tuple[int, ...] = SEEDS, tasks: tuple[str, ...] = tuple(TASKS), damaged: bool = True) -> list[dict]:
    """Every run row of the fixture; with ``damaged``, plus the diverged and failed runs and with
    the 'older runner' row stripped of :data:`OLD_MISSING`."""
    rows = [run_row(t, s, g, seed) for t in tasks for s in STRUCTURES for g in GATES for seed in seeds]
    if damaged:
        rows.append(run_row("sdigits", "mimo", "silu", 3, status="diverged"))
        rows.append(run_row("sdigits", "siso", "glu", 3, status="failed"))
        for row in rows:
            if (row["task"], row["model.ssm.structure"], row["model.ssm.gate"], row["seed"]) == OLD_RUN \
                    and row["status"] == "ok":
                for col in OLD_MISSING:
                    row.pop(col)
    return rows


def write_runs(root: Path, rows: list[dict]) -> None:
    """Write run rows (and the curves of those that trained) the way the runner does."""
    (root / "runs").mkdir(parents=True, exist_ok=True)
    (root / "curves").mkdir(parents=True, exist_ok=True)
    for row in rows:
        pd.DataFrame([row]).to_parquet(root / "runs" / f"{row['run_id']}.parquet", index=False)
        if row.get("status", "ok") != "failed":
            curve_rows({**row, "metric": row.get("metric", "accuracy"),
                        "final_val_accuracy": row.get("final_val_accuracy", row.get("test_accuracy"))}
                       ).to_parquet(root / "curves" / f"{row['run_id']}.parquet", index=False)


def make_results(root: Path, bench: bool = True, damaged: bool = True, seeds: tuple[int, ...] = SEEDS,
                 tasks: tuple[str, ...] = tuple(TASKS)) -> Path:
    """Write the synthetic results directory at ``root`` (see the module docstring); returns it.

    bench: also write bench/; damaged: add the diverged, failed, truncated and old-format files.
    """
    root = Path(root)
    write_runs(root, all_rows(seeds, tasks, damaged))
    if damaged:
        sample = run_row("sdigits", "siso", "silu", 7)
        _truncate(pd.DataFrame([sample]), root / "runs" / f"{TRUNCATED}.parquet")
        _truncate(curve_rows(sample), root / "curves" / f"{TRUNCATED}.parquet")
    if bench:
        (root / "bench").mkdir(exist_ok=True)
        bench_rows().to_parquet(root / "bench" / "cpu.parquet", index=False)
    return root


def make_csv(path: Path) -> Path:
    """A 'published numbers' CSV: accuracies in percent for two of our configurations plus one
    the paper has and we do not."""
    pd.DataFrame({
        "configuration": ["siso, silu", "mimo, glu", "mimo, none"],
        "task": ["sdigits", "sdigits", "sdigits"],
        "metric": ["accuracy", "accuracy", "accuracy"],
        "value": [88.0, 61.5, 40.0],
        "std": [0.5, 1.0, float("nan")],
    }).to_csv(path, index=False)
    return path


# --- a tuned experiment -------------------------------------------------------------------------

LRS = (0.001, 0.003)
SSM_LRS = (0.0003, 0.001)
TUNED_KEYS = "trainer.lr,trainer.ssm_lr"
PLANTED = ("mimo", "silu", 0.003, 0.001)  # (structure, gate, lr, ssm_lr): test best, validation worst, every seed
DIVERGED_TRAP = ("siso", "glu", 1, 0.003, 0.001)  # (structure, gate, seed, lr, ssm_lr): diverged, best val recorded
ALL_FAILED = ("siso", "silu", 3)  # (structure, gate, seed): every grid point failed


def tuned_row(task: str, structure: str, gate: str, seed: int, lr: float, ssm_lr: float, status: str = "ok",
              budget: tuple[str, float] = ("steps", 50)) -> dict:
    """One run of a tuning grid: validation and test scores depend on the configuration, the seed
    and the grid point, and are correlated but not equal (selecting on test would pick differently,
    and so would selecting on the best evaluation instead of the final weights' validation score)."""
    row = run_row(task, structure, gate, seed, status=status)
    metric = TASKS[task]
    rng = np.random.default_rng(int(hashlib.md5(f"{task}{structure}{gate}{seed}{lr}{ssm_lr}".encode()).hexdigest()[:8],
                                    16))
    quality = _score(task, structure, gate, seed) + (0.04 if lr == 0.001 else 0.0) + rng.normal(0, 0.02)
    val, test = quality + rng.normal(0, 0.015), quality + rng.normal(0, 0.015)
    if metric == "mse":
        val, test = abs(0.1 - val) / 10, abs(0.1 - test) / 10
    row.update({"run_id": _rid(task, structure, gate, seed, lr, ssm_lr, status), "trainer.lr": lr,
                "trainer.ssm_lr": ssm_lr, "tuned": TUNED_KEYS, "budget_kind": budget[0], "budget_value": budget[1],
                "overrides": row["overrides"] + f" trainer.lr={lr} trainer.ssm_lr={ssm_lr}"})
    if status == "ok":  # the best evaluation is ahead of the final one by a gap of its own per run
        gap = abs(rng.normal(0, 0.03))
        best = val + gap if metric == "accuracy" else max(val - gap / 10, 0.0)
        row.update({f"best_val_{metric}": best, f"final_val_{metric}": val,
                    f"test_{metric}": test, "test_loss": 1.0 - test if metric == "accuracy" else test})
    if (structure, gate, lr, ssm_lr) == PLANTED[:4] and status == "ok":
        best, worst = (0.999, 0.01) if metric == "accuracy" else (1e-5, 0.5)
        row.update({f"best_val_{metric}": worst, f"final_val_{metric}": worst, f"test_{metric}": best,
                    "test_loss": 1.0 - best if metric == "accuracy" else best})
    return row


def tuned_rows(tasks: tuple[str, ...] = ("sdigits",), seeds: tuple[int, ...] = SEEDS, traps: bool = True,
               budget: tuple[str, float] = ("steps", 50)) -> list[dict]:
    """Every (structure, gate, seed) trained at every (lr, ssm_lr) of the grid, tuned over both.

    traps: the planted grid point (:data:`PLANTED`, best on test, worst on validation), a diverged
    run with the best validation score on record (:data:`DIVERGED_TRAP`), and a (configuration,
    seed) whose every run failed (:data:`ALL_FAILED`)."""
    rows = []
    for task in tasks:
        for structure in STRUCTURES:
            for gate in GATES:
                for seed in seeds:
                    for lr in LRS:
                        for ssm_lr in SSM_LRS:
                            status = "ok"
                            if traps and (structure, gate, seed, lr, ssm_lr) == DIVERGED_TRAP:
                                status = "diverged"
                            row = tuned_row(task, structure, gate, seed, lr, ssm_lr, status, budget)
                            if status == "diverged":
                                metric = TASKS[task]
                                row[f"best_val_{metric}"] = 0.999 if metric == "accuracy" else 1e-6
                            rows.append(row)
        if traps:
            structure, gate, seed = ALL_FAILED
            rows += [tuned_row(task, structure, gate, seed, lr, ssm_lr, "failed", budget)
                     for lr in LRS for ssm_lr in SSM_LRS]
    return rows
