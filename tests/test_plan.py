"""``+plan=true``: the line of each run (state, tuned values, match mode, size, cost), the totals
of a sweep, one run for the match reference, and FLOPs of the FFT mode that grow with d_state."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import models
from ablate.config import register, resolve
from ablate.plan import GFLOPS_PER_CORE, hours_text, plan_entry, plan_line, reference_rates, totals_lines
from ablate.results import flatten, identity_columns, run_id, write_run
from analysis.load import load_results
from analysis.report import analyse
from models.sizing import _kernel_flops

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
ROOT = os.path.dirname(CONF)


def resolved(results_dir, *overrides: str):
    """The validated run of conf/ composed with ``overrides`` (what one job of the CLI resolves)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"results_dir={results_dir}"])
    return resolve(cfg)


def finished_row(run, score: float = 0.9) -> dict:
    """A run row as the runner writes it (status ok, made-up scores), enough for the analysis."""
    spec = run.task.spec
    return {"run_id": run_id(run.identity), "experiment": run.experiment, "seed": run.seed, "preset": run.preset,
            "task": spec.name, "metric": spec.metric, "higher_is_better": True, "status": "ok",
            "steps": run.trainer.max_steps, "param_count": models.param_count(run.model, spec.io),
            "state_size": models.state_size(run.model), "tuned": ",".join(run.tuned) or "none", **run.match,
            **run.budget, "best_val_accuracy": score, "final_val_accuracy": score, "test_accuracy": score,
            "test_loss": 1 - score, **identity_columns(run.identity)}


def test_rerun_plan_says_finished_runs_are_retrained(tmp_path) -> None:
    run = resolved(tmp_path, "+experiment=smoke")
    assert "[to run]" in plan_line(run)
    write_run(str(tmp_path), finished_row(run), [])
    assert "[done (skip)]" in plan_line(run)
    rerun = resolved(tmp_path, "+experiment=smoke", "+rerun=true")
    assert "[done, rerun (+rerun=true)]" in plan_line(rerun)


def gflop(line: str) -> float:
    """The ``~X GFLOP`` of a plan line."""
    return float(line.rsplit("~", 1)[1].split()[0])


def test_plan_cost_of_the_fft_mode_grows_with_d_state(tmp_path) -> None:
    costs = [gflop(plan_line(resolved(tmp_path, f"model.ssm.d_state={n}"))) for n in (64, 4096, 100_000_000)]
    assert costs[0] < costs[1] < costs[2]
    assert resolved(tmp_path).model.ssm.mode == "auto"  # the S4D preset: fft on a CPU


def test_fft_kernel_flops_by_hand_and_shared_by_the_batch() -> None:
    """S4D H=4, N=4 (2 complex modes per channel, 8 states), L=8: per state the powers Ā^l from
    two tables of ⌈√8⌉ = 3 entries (7 FLOPs each, torch.polar) and one complex product per lag
    (6), and per (state, lag) 8 for the multiply-add into K; a real FFT of K at 16 per channel:
    2.5 · 16 · 4."""
    cfg = models.preset("s4d", d_model=4, d_state=4, mode="fft")
    assert _kernel_flops(cfg, 8) == 8 * (6 * 7 + 8 * 6 + 8 * 8) + 4 * 2.5 * 16 * 4
    one, many = (models.flops_per_token(cfg, length=8, batch=b) for b in (1, 4))
    assert one - many == pytest.approx(_kernel_flops(cfg, 8) * (1 - 1 / 4) / 8)
    scan = cfg.with_(mode="scan")
    assert models.flops_per_token(scan, length=8, batch=1) == models.flops_per_token(scan, length=8, batch=4)
    wide = [models.flops_per_token(cfg.with_(d_state=n), length=8) for n in (4, 8, 16)]
    assert wide[2] - wide[1] == pytest.approx(2 * (wide[1] - wide[0]))  # linear in d_state


def test_fft_states_of_a_mimo_layer_are_counted_as_ffts_by_hand() -> None:
    """S5 H=4, P=4 (2 complex states, conjugate pairs) in mode fft: its states come from an FFT
    convolution at 2L = 16, not the recurrence. Per state and sequence: two complex FFTs (5 · 16
    · 4 each) and the product of 16 bins (6 each); per state and call: Ā^l for 8 lags (two
    tables of 3 entries, 7 each, and a complex product per lag, 6) and one FFT."""
    cfg = models.preset("s5", d_model=4, d_state=4, mode="fft")
    scan = cfg.with_(mode="scan")
    step = 2 * (6 + 2)  # a*h + b per complex state
    fft = 5 * 16 * 4
    per_token = 2 * ((2 * fft + 6 * 16) / 8 + (6 * 7 + 8 * 6 + fft) / (2 * 8))
    assert models.flops_per_token(cfg, length=8, batch=2) == pytest.approx(
        models.flops_per_token(scan, length=8) - step + per_token)
    assert models.flops_per_token(scan, length=8) == models.flops_per_token(scan, length=64)  # the scan: per token


def test_time_budget_bounds_the_tokens(tmp_path) -> None:
    line = plan_line(resolved(tmp_path, "budget.kind=time", "budget.value=60"))
    assert "≤ 614,400 train tokens (time budget 60 s)" in line
    assert "≤ ~" in line


def test_tuned_runs_show_their_values_and_match_mode(tmp_path) -> None:
    cells = ["+experiment=mimo_vs_siso", "model=s5", "task=sdigits"]
    lines = [plan_line(resolved(tmp_path, *cells, f"model.match.by={by}", f"trainer.lr={lr}"))
             for by in ("state_size", "param_count") for lr in (0.003, 0.01)]
    assert [line.split(" seed=0 ")[1].split(":")[0] for line in lines] == [
        "trainer.lr=0.003 match.by=state_size", "trainer.lr=0.01 match.by=state_size",
        "trainer.lr=0.003 match.by=param_count", "trainer.lr=0.01 match.by=param_count"]


def test_the_match_reference_is_one_run_and_one_row(tmp_path) -> None:
    """model=s4d matched to s4d is the unmatched s4d run: both match modes give one run id,
    and the analysis shows one s4d row (and two s5 rows)."""
    base = ["+experiment=mimo_vs_siso", "task=sdigits", "trainer.lr=0.003"]
    runs = [resolved(tmp_path, *base, f"model={model}", f"model.match.by={by}", f"seed={seed}")
            for model in ("s4d", "s5") for by in ("state_size", "param_count") for seed in (0, 1)]
    reference = [r for r in runs if r.preset == "s4d"]
    assert {r.match["match_by"] for r in reference} == {"none"}
    assert len({run_id(r.identity) for r in reference}) == 2  # one per seed
    assert len({run_id(r.identity) for r in runs}) == 6
    for run in runs:
        write_run(str(tmp_path), finished_row(run, score=0.8 + 0.1 * (run.preset == "s5")), [])
    analysis = analyse(load_results([str(tmp_path)]))
    assert len(analysis.labels_frame("sdigits")) == 3
    presets = analysis.runs.groupby("config")["model.preset"].agg(lambda p: ",".join(sorted(set(p))))
    assert sorted(presets) == ["s4d", "s5", "s5"]


def entry(job: int, rid: str, trains: bool = True, time_budget_s: float | None = None) -> dict:
    return {"job": job, "run_id": rid, "trains": trains, "flops": 3.6e12, "time_budget_s": time_budget_s}


def test_totals_count_runs_once_and_skip_finished_ones() -> None:
    lines = totals_lines([entry(2, "b", trains=False), entry(0, "a"), entry(1, "a"), entry(3, "c")])
    assert lines[0] == "plan same run: job 1 is job 0 (a), trained once"
    assert lines[1].startswith("plan totals: 4 jobs, 3 runs, 1 done (skip), 2 to train: ~7.2e+03 GFLOP, "
                               "~0.33 core-hours, each run at an assumed 6 GFLOP/s per core")
    assert "≤ ~" in totals_lines([entry(0, "a", time_budget_s=60.0)])[0]
    assert [hours_text(h) for h in (1432.6, 2.46, 0.0151, 1e-5)] == ["~1,433", "~2.5", "~0.015", "< 0.01"]


def test_core_hours_use_each_presets_committed_rate_on_its_task() -> None:
    """Core-hours price each run at the median rate of its preset's committed CPU runs on its
    task; where the preset has none on that task, on all its tasks; a preset with none at the
    assumed rate; and the line says which is which."""
    rates = reference_rates()
    assert {("s4d", None), ("s5", None), ("mamba", None), ("mamba3", "mqar")} <= set(rates)
    assert rates["s5", None] > GFLOPS_PER_CORE > rates["mamba", None] > 1  # S5's dense MIMO runs fastest per FLOP
    assert rates["mamba3", "parity"] < rates["mamba3", None] / 3  # why the task matters
    assert ("s5", "no_committed_task") not in rates
    runs = [{**entry(0, "a"), "preset": "s5", "task": "sdigits"},
            {**entry(1, "b"), "preset": "s5", "task": "no_committed_task"},
            {**entry(2, "c"), "preset": "no_committed_runs", "task": "sdigits"}]
    line = totals_lines(runs, rates)[0]
    hours = sum(3.6e12 / (rate * 1e9) / 3600
                for rate in (rates["s5", "sdigits"], rates["s5", None], GFLOPS_PER_CORE))
    assert (f"{hours_text(hours)} core-hours, each run at the median GFLOP/s per core of its preset's committed CPU "
            f"runs on its task (s5 on sdigits {rates['s5', 'sdigits']:.2g}), or of its preset's committed CPU runs "
            f"on every task, where none is on its task (s5 on no_committed_task {rates['s5', None]:.2g}), or at an "
            "assumed 6 GFLOP/s per core where its preset has no committed CPU runs in its form (no_committed_runs)") in line


def test_reference_rates_are_medians_per_preset_and_task(tmp_path) -> None:
    """Rates from hand-made rows: the median over a preset's ok CPU rows on a task and over all
    its tasks; GPU rows, failed rows and damaged files are left out."""
    rows = [("s5", "sdigits", 1.0), ("s5", "sdigits", 3.0), ("s5", "sdigits", 5.0), ("s5", "mqar", 10.0)]
    folder = tmp_path / "exp" / "runs"
    folder.mkdir(parents=True)
    for i, (preset, task, gflops) in enumerate(rows):
        pd.DataFrame([{"preset": preset, "task.name": task, "status": "ok", "device": "cpu", "threads": 2,
                       "flops_per_token": 1e6, "tokens_per_s": gflops * 1e9 * 2 / 3 / 1e6}]).to_parquet(folder / f"{i}.parquet")
    pd.DataFrame([{"preset": "s5", "task.name": "mqar", "status": "ok", "device": "cuda", "threads": 1,
                   "flops_per_token": 1e6, "tokens_per_s": 1e9}]).to_parquet(folder / "gpu.parquet")
    pd.DataFrame([{"preset": "s5", "task.name": "mqar", "status": "diverged", "device": "cpu", "threads": 1,
                   "flops_per_token": 1e6, "tokens_per_s": 1e9}]).to_parquet(folder / "diverged.parquet")
    (folder / "damaged.parquet").write_bytes(b"PAR1 not a parquet file")
    rates = reference_rates(tmp_path)
    assert set(rates) == {("s5", "sdigits"), ("s5", "mqar"), ("s5", None)}
    assert rates["s5", "sdigits"] == pytest.approx(3.0)
    assert rates["s5", "mqar"] == pytest.approx(10.0)
    assert rates["s5", None] == pytest.approx(4.0)  # median of 1, 3, 5, 10


def test_runs_in_the_dual_form_are_priced_only_by_runs_in_that_form(tmp_path) -> None:
    """A Mamba-3 run that a CPU computes in the chunked dual form is priced by committed rows that
    ran in it (resolved mode chunked, a layer config with a dual form), not by the rows of the same
    preset in the recurrence, which ran 3x to 20x slower per FLOP; with none, at the assumed rate."""
    folder = tmp_path / "exp" / "runs"
    folder.mkdir(parents=True)
    ssm = flatten({"model": {"ssm": models.preset("mamba3", d_model=8, d_state=16).identity()}})
    for i, (mode, gflops) in enumerate([("recurrent", 1.0), ("recurrent", 2.0), ("chunked", 9.0)]):
        pd.DataFrame([{"preset": "mamba3", "task.name": "mqar", "status": "ok", "device": "cpu", "threads": 1,
                       "resolved_mode": mode, "flops_per_token": 1e6, "tokens_per_s": gflops * 1e9 / 3 / 1e6,
                       **ssm}]).to_parquet(folder / f"{i}.parquet")
    rank4 = flatten({"model": {"ssm": models.preset("mamba3", d_model=8, d_state=16, mimo_rank=4).identity()}})
    pd.DataFrame([{"preset": "mamba3", "task.name": "mqar", "status": "ok", "device": "cpu", "threads": 1,
                   "resolved_mode": "chunked", "flops_per_token": 1e6, "tokens_per_s": 4e9 / 3 / 1e6,
                   **rank4}]).to_parquet(folder / "3.parquet")
    rates = reference_rates(tmp_path)
    assert rates["mamba3", "mqar"] == pytest.approx(1.5)
    assert rates["mamba3 (dual form)", "mqar"] == pytest.approx(9.0)
    assert rates["mamba3 (dual form, R=4)", "mqar"] == pytest.approx(4.0)
    run = resolved(tmp_path, "model=mamba3", "task=mqar")
    assert run.model.ssm.chunked_is_dual and plan_entry(run)["dual"]
    assert not plan_entry(resolved(tmp_path, "model=mamba3", "task=mqar", "model.ssm.mode=recurrent"))["dual"]
    assert plan_entry(resolved(tmp_path, "model=mamba3", "task=mqar", "model.ssm.mimo_rank=4"))["rank"] == 4
    dual = {**entry(0, "a"), "preset": "mamba3", "dual": True, "task": "mqar", "flops": 9e9 * 3600}
    assert "~1 core-hours" in totals_lines([dual], rates)[0]
    assert "(mamba3 (dual form) on mqar 9)" in totals_lines([dual], rates)[0]
    assert "(mamba3 (dual form, R=4) on mqar 4)" in totals_lines([{**dual, "rank": 4}], rates)[0]
    del rates["mamba3 (dual form, R=4)", "mqar"], rates["mamba3 (dual form, R=4)", None]
    assert "where its preset has no committed CPU runs in its form (mamba3 (dual form, R=4))" \
        in totals_lines([{**dual, "rank": 4}], rates)[0]
    del rates["mamba3 (dual form)", "mqar"], rates["mamba3 (dual form)", None]
    assert "assumed 6 GFLOP/s per core where its preset has no committed CPU runs in its form (mamba3 (dual form))" \
        in totals_lines([dual], rates)[0]


def sweep_cells(tmp_path, experiment: str, *fixed: str) -> list:
    """Every cell of the experiment's sweep (``fixed`` overrides replace swept keys)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}", *fixed, f"results_dir={tmp_path}"],
                      return_hydra_config=True)
    keys = [k for k in cfg.hydra.sweeper.params if not any(f.startswith(f"{k}=") for f in fixed)]
    parsed = OverridesParser.create().parse_overrides([f"{k}={cfg.hydra.sweeper.params[k]}" for k in keys])
    cells = [[]]
    for key, override in zip(keys, parsed):
        cells = [cell + [f"{key}={value}"] for cell in cells for value in override.sweep_string_iterator()]
    return [resolved(tmp_path, f"+experiment={experiment}", *fixed, *cell) for cell in cells]


@pytest.mark.parametrize("experiment, fixed", [
    ("mimo_vs_siso", ("task=sdigits", "seed=0", "trainer.lr=0.003")),
    ("state_tracking", ("seed=0", "trainer.lr=0.003")),
    ("mamba3_components", ("seed=0", "trainer.lr=0.002")),
])
def test_plan_lines_tell_every_run_apart(tmp_path, experiment: str, fixed: tuple) -> None:
    """Two runs with different ids never print the same description: a plan line names each
    layer axis off its preset's default (``R=2``, ``rot=none``, ``eig=[-1,1]``, ``λ=0.5``...)
    and the task's variant options (``(brackets)``); a rank-R MIMO point is not called siso."""
    labels: dict[str, set] = {}
    for run in sweep_cells(tmp_path, experiment, *fixed):
        entry_ = plan_entry(run)
        labels.setdefault(entry_["label"], set()).add(entry_["run_id"])
        if run.model.ssm.mimo_rank > 1:
            assert f"mimo R={run.model.ssm.mimo_rank} " in entry_["label"] and " siso " not in entry_["label"]
    assert all(len(ids) == 1 for ids in labels.values()), {k: v for k, v in labels.items() if len(v) > 1}
    text = "\n".join(labels)
    expected = {"mimo_vs_siso": ["mimo R=2", "mimo R=4", "ffn=128"],
                "state_tracking": ["rot=none eig=[-1,1]", "rot=fixed", "mamba siso sel=dt,B,C gate=silu N=64 H=32 eig=[-1,1]",
                                   "on modular_arithmetic (brackets) seed=0", "on parity seed=0"],
                "mamba3_components": ["disc=zoh_euler", "λ=0.5", "no-bcbias", "no-bcnorm", "conv=4", "rot=none"]}
    for part in expected[experiment]:
        assert part in text, part


def test_sweep_plan_prints_totals_and_writes_nothing(tmp_path) -> None:
    """The real command line, on the experiment's own launcher (joblib: jobs in worker
    processes): one line per job, the S4D reference planned once, a finished run skipped.
    The sweep is cut to its S4D and S5 rows (2 models x 2 match modes)."""
    cells = ["+experiment=mimo_vs_siso", "task=sdigits", "seed=0", "trainer.lr=0.003"]
    done = resolved(tmp_path, *cells, "model=s5", "model.match.by=param_count")
    write_run(str(tmp_path), finished_row(done), [])
    before = sorted(p for p in tmp_path.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "ablate", *cells, "model=s4d,s5", f"results_dir={tmp_path}",
                             "+plan=true", "hydra.launcher.n_jobs=2", "-m"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith("plan ") and "[" in line]) == 4
    assert f"plan {run_id(done.identity)} [done (skip)]" in result.stdout
    assert any(line.startswith("plan same run: job 1 is job 0") for line in lines), result.stdout
    assert "plan totals: 4 jobs, 3 runs, 1 done (skip), 2 to train" in result.stdout
    assert sorted(p for p in tmp_path.rglob("*")) == before
