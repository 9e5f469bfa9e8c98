"""End to end: `python -m ablate` sweeps into parquet, skips finished runs, resumes killed
runs, and refuses bad input before training."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ["run_id", "experiment", "seed", "status", "preset", "task", "param_count", "state_size",
            "train_time_s", "tokens_per_s", "test_accuracy", "best_val_accuracy", "final_val_accuracy",
            "peak_memory_mb", "version_torch", "version_python", "device", "model.ssm.structure",
            "model.ssm.d_state", "trainer.lr"]


def subprocess_env() -> dict[str, str]:
    """One torch thread per process; Hydra's short error reports."""
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}


def ablate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_until_checkpoint(args: list[str], results_dir, keep_output: bool) -> subprocess.Popen:
    """Start ``python -m ablate`` in the background and return once its first checkpoint exists."""
    out = subprocess.PIPE if keep_output else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args, f"results_dir={results_dir}"], cwd=ROOT,
                            env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not glob.glob(os.path.join(results_dir, "checkpoints", "*.pt")) and time.time() < deadline:
        assert proc.poll() is None, "the run finished before it could be interrupted"
        time.sleep(0.05)
    return proc


def rows(results_dir) -> pd.DataFrame:
    files = sorted(glob.glob(os.path.join(results_dir, "runs", "*.parquet")))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_smoke_sweep_writes_one_row_per_run_and_skips_on_rerun(tmp_path) -> None:
    out = tmp_path / "smoke"
    first = ablate("+experiment=smoke", f"results_dir={out}", "-m")
    assert first.returncode == 0, first.stderr[-2000:]
    df = rows(out)
    assert len(df) == 4 and df["run_id"].is_unique
    assert set(df["preset"]) == {"s4d", "s5"} and set(df["seed"]) == {0, 1}
    assert (df["status"] == "ok").all()
    assert not df[REQUIRED].isna().any().any(), df[REQUIRED].isna().sum()
    assert len(glob.glob(os.path.join(out, "curves", "*.parquet"))) == 4
    assert not glob.glob(os.path.join(out, "checkpoints", "*.pt"))  # removed once finished
    mtimes = {f: os.path.getmtime(f) for f in glob.glob(os.path.join(out, "runs", "*.parquet"))}
    second = ablate("+experiment=smoke", f"results_dir={out}", "-m")
    assert second.returncode == 0
    assert second.stderr.count("already finished") + second.stdout.count("already finished") == 4
    assert {f: os.path.getmtime(f) for f in mtimes} == mtimes  # nothing retrained or rewritten


def test_same_seed_same_metrics_and_rerun_flag(tmp_path) -> None:
    args = ["model=s5", "model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=6", "trainer.eval_every=3",
            "trainer.progress=false"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert ablate(*args, f"results_dir={a}").returncode == 0
    assert ablate(*args, f"results_dir={b}").returncode == 0
    ra, rb = rows(a).iloc[0], rows(b).iloc[0]
    assert ra["run_id"] == rb["run_id"]
    for col in ("test_accuracy", "test_loss", "final_val_loss"):
        assert ra[col] == rb[col]
    forced = ablate(*args, f"results_dir={a}", "+rerun=true")
    assert forced.returncode == 0 and "already finished" not in forced.stdout + forced.stderr
    other = ablate(*args, "seed=1", f"results_dir={a}")
    assert other.returncode == 0
    df = rows(a)
    assert len(df) == 2 and df["test_loss"].nunique() == 2


def test_killed_run_resumes_from_its_checkpoint_to_the_same_row(tmp_path) -> None:
    args = ["model=s4d", "model.ssm.d_model=16", "model.ssm.d_state=8", "trainer.max_steps=400",
            "trainer.eval_every=20", "trainer.progress=false", "model.dropout=0.1"]
    killed = tmp_path / "killed"
    proc = start_until_checkpoint(args, killed, keep_output=False)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not glob.glob(os.path.join(killed, "runs", "*.parquet"))  # no row for an unfinished run
    resumed = ablate(*args, f"results_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stdout + resumed.stderr
    clean = tmp_path / "clean"
    assert ablate(*args, f"results_dir={clean}").returncode == 0
    a, b = rows(killed).iloc[0], rows(clean).iloc[0]
    assert a["steps"] == b["steps"] == 400
    for col in ("test_accuracy", "test_loss", "final_val_loss"):
        assert a[col] == pytest.approx(b[col], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("override, first_line", [
    ("trainer.lr=-0.1", "error: trainer.lr=-0.1 is not valid"),
    ("model.ssm.d_state=0", "error: model.ssm.d_state=0 is not valid"),
    ("model.ssm.structure=diagonal", "error: model.ssm.structure='diagonal' is not valid"),
    ("trainer.max_steps=0", "error: trainer.max_steps=0 is not valid"),
    ("task=lra task.data_dir=/no/such/dir", "error: LRA listops: data_dir '/no/such/dir' is not a folder"),
    ("tuned=[trainer.learning_rate]", "error: tuned entry 'trainer.learning_rate' is not a config key"),
])
def test_bad_input_is_a_one_line_error_before_training(tmp_path, override: str, first_line: str) -> None:
    result = ablate(*override.split(), f"results_dir={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[0].startswith(first_line)
    assert not os.path.exists(tmp_path / "runs")


def test_unwritable_results_dir_is_refused_before_training(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = ablate(f"results_dir={blocker}/sub")
    assert result.returncode != 0
    assert "ot a directory" in result.stderr and str(blocker) in result.stderr  # Hydra's or ours: names the path
    assert blocker.read_text() == "not a directory"


def test_results_dir_check_names_the_problem(tmp_path) -> None:
    from ablate.config import check_writable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        check_writable(str(blocker / "sub"))
    with pytest.raises(ValueError, match="MB free"):
        check_writable(str(tmp_path), min_free_mb=1e12)


def test_parallel_sweep_with_joblib_loses_no_row(tmp_path) -> None:
    result = ablate("+experiment=smoke", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    f"results_dir={tmp_path}", "-m")
    assert result.returncode == 0, result.stderr[-2000:]
    df = rows(tmp_path)
    assert len(df) == 4 and df["run_id"].is_unique and (df["status"] == "ok").all()
    assert not glob.glob(os.path.join(tmp_path, "runs", ".*.tmp"))


def test_preempted_run_checkpoints_and_resumes_to_the_same_row(tmp_path) -> None:
    """SIGTERM (what SLURM sends before a kill): the run saves a checkpoint at the current step
    and exits without a row; the resubmitted run resumes and ends with the uninterrupted row."""
    args = ["model=s5", "model.ssm.d_model=16", "model.ssm.d_state=8", "trainer.max_steps=300",
            "trainer.eval_every=100", "trainer.progress=false", "model.dropout=0.1"]
    stopped = tmp_path / "stopped"
    proc = start_until_checkpoint(args, stopped, keep_output=True)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "preempted by SIGTERM at step" in output
    assert not glob.glob(os.path.join(stopped, "runs", "*.parquet"))
    resumed = ablate(*args, f"results_dir={stopped}")
    assert resumed.returncode == 0 and "resumed from step" in resumed.stdout + resumed.stderr
    clean = tmp_path / "clean"
    assert ablate(*args, f"results_dir={clean}").returncode == 0
    a, b = rows(stopped).iloc[0], rows(clean).iloc[0]
    for col in ("test_accuracy", "test_loss", "final_val_loss", "best_val_accuracy"):
        assert a[col] == pytest.approx(b[col], rel=1e-5, abs=1e-6)


def test_four_processes_writing_one_experiment_directory(tmp_path) -> None:
    args = ["model=s4d", "model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=4", "trainer.eval_every=2",
            "trainer.progress=false", f"results_dir={tmp_path}"]
    procs = [subprocess.Popen([sys.executable, "-m", "ablate", *args, f"seed={seed}"], cwd=ROOT, env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for seed in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    df = rows(tmp_path)
    assert sorted(df["seed"]) == [0, 1, 2, 3] and df["run_id"].is_unique
    assert len(glob.glob(os.path.join(tmp_path, "curves", "*.parquet"))) == 4


def test_plan_lists_runs_and_costs_without_training(tmp_path) -> None:
    result = ablate("+experiment=smoke", f"results_dir={tmp_path}", "+plan=true", "-m")
    assert result.returncode == 0
    lines = [line for line in result.stdout.splitlines() if re.match(r"plan [0-9a-f]{16} ", line)]
    assert len(lines) == 4 and all("[to run]" in line and "GFLOP" in line for line in lines)
    assert not os.path.exists(tmp_path / "runs")
    assert ablate("+experiment=smoke", f"results_dir={tmp_path}", "-m").returncode == 0
    again = ablate("+experiment=smoke", f"results_dir={tmp_path}", "+plan=true", "-m")
    assert again.stdout.count("[done (skip)]") == 4


def test_submitit_local_launcher_runs_the_sweep(tmp_path) -> None:
    """The SLURM code path (submitit), exercised on this machine by the local executor."""
    result = ablate("+experiment=smoke", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                    f"results_dir={tmp_path}", "-m", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    df = rows(tmp_path)
    assert len(df) == 4 and (df["status"] == "ok").all()


def test_submitit_s_preemption_signal_checkpoints_the_run_before_submitit_requeues_it() -> None:
    """submitit (hydra/launcher=slurm_gpu, submitit_local) signals a time limit or preemption with
    its own signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise): the run records it,
    and hands it on to submitit's handler (which requeues) only after its checkpoint."""
    import submitit

    from ablate.preemption import PreemptionWatcher

    sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
    handed = []
    previous = signal.signal(sig, lambda signum, frame: handed.append(signum))  # submitit's, in a job
    try:
        with PreemptionWatcher() as watcher:
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
            assert watcher.requested and watcher.received == sig and not handed
            watcher.hand_over()
        assert handed == [sig]
    finally:
        signal.signal(sig, previous)
