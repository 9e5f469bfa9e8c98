"""End to end: sweeps sharing one results_dir, killed owners, orphaned workers, Ctrl-C, and the
per-run figures (peak memory, wall time) that must not depend on what ran before."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ablate.results import CURVES, path_of, write_run
from test_runner import ROOT, ablate, rows, start_until_checkpoint, subprocess_env

SMOKE = ["+experiment=smoke", "trainer.max_steps=120", "trainer.eval_every=20"]


def sweep(results_dir, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ablate", *SMOKE, *extra, f"results_dir={results_dir}", "-m"],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def leftovers(results_dir) -> list[str]:
    """Claims, checkpoints and temporary files that a finished sweep must not leave."""
    patterns = ["claims/*", "checkpoints/*", "checkpoints/.*", "runs/.*", "curves/.*"]
    return [f for p in patterns for f in glob.glob(os.path.join(results_dir, p))]


def test_two_concurrent_sweeps_on_one_results_dir_train_each_run_once(tmp_path) -> None:
    out = tmp_path / "shared"
    first, second = sweep(out), sweep(out)
    logs = [proc.communicate(timeout=600)[0] for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, logs
    df = rows(out)
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["run_id", "status"]]
    text = "\n".join(logs)
    trained = sorted(line.split("done ")[1][:16] for line in text.splitlines() if " - done " in line)
    assert trained == sorted(df["run_id"]), text[-3000:]  # every run trained exactly once
    assert text.count("finished by another process") + text.count("already finished") == 4
    assert "failed" not in text and not leftovers(out)


def test_a_killed_owner_s_claim_is_taken_over_and_its_run_resumed(tmp_path) -> None:
    args = ["model.ssm.d_model=16", "model.ssm.d_state=8", "trainer.max_steps=100", "trainer.eval_every=10",
            "trainer.progress=false"]
    out = tmp_path / "killed"
    proc = start_until_checkpoint(args, out, keep_output=False)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(glob.glob(os.path.join(out, "claims", "*.claim"))) == 1  # the dead owner's claim stays
    again = ablate(*args, f"results_dir={out}")
    assert again.returncode == 0, again.stderr[-2000:]
    output = again.stdout + again.stderr
    assert "taking over run claim" in output and "resumed from step" in output
    df = rows(out)
    assert len(df) == 1 and df["status"].iloc[0] == "ok" and df["steps"].iloc[0] == 100
    assert not leftovers(out)


def children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process parents from /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_joblib_workers_exit_when_their_sweep_is_killed(tmp_path, signum: int) -> None:
    out = tmp_path / "joblib"
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "+experiment=smoke", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", "trainer.threads=1", "trainer.max_steps=3000",
                             "trainer.eval_every=10", f"results_dir={out}", "-m"],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(glob.glob(os.path.join(out, "checkpoints", "*.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    workers = [pid for pid in children(proc.pid) if "loky" in open(f"/proc/{pid}/cmdline").read()
               or "joblib" in open(f"/proc/{pid}/cmdline").read()]
    assert workers, "the sweep started no workers"
    os.kill(proc.pid, signum)
    proc.wait()
    deadline = time.time() + 30
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    still = [pid for pid in workers if alive(pid)]
    for pid in still:
        os.kill(pid, signal.SIGKILL)
    assert not still, "workers outlived their sweep"
    assert not glob.glob(os.path.join(out, "claims", "*.claim"))  # each run handed its claim back
    assert not glob.glob(os.path.join(out, "checkpoints", ".*"))


def test_ctrl_c_saves_a_checkpoint_and_exits_130_in_one_line(tmp_path) -> None:
    args = ["model.ssm.d_model=16", "model.ssm.d_state=8", "trainer.max_steps=3000", "trainer.eval_every=20",
            "trainer.progress=false"]
    out = tmp_path / "interrupted"
    proc = start_until_checkpoint(args, out, keep_output=True)
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    assert "Traceback" not in output and "interrupted at step" in output
    assert glob.glob(os.path.join(out, "checkpoints", "*.pt"))
    assert not glob.glob(os.path.join(out, "checkpoints", ".*")) and not glob.glob(os.path.join(out, "claims", "*"))


def test_peak_memory_is_the_run_s_own_not_the_process_s(tmp_path) -> None:
    """The same run measures the same peak alone and after a bigger run in the same process."""
    base = ["model=s4d", "model.ssm.d_state=4", "trainer.max_steps=4", "trainer.eval_every=2", "trainer.progress=false"]
    alone, after = tmp_path / "alone", tmp_path / "after"
    assert ablate(*base, "model.ssm.d_model=8", f"results_dir={alone}").returncode == 0
    both = ablate(*base, "model.ssm.d_model=64,8", f"results_dir={after}", "-m")  # the big run first
    assert both.returncode == 0, both.stderr[-2000:]
    solo = rows(alone).iloc[0]
    swept = rows(after).set_index("model.ssm.d_model")
    assert solo["peak_memory_kind"] == "cpu_allocator_profiler"
    assert swept.loc[8, "peak_memory_mb"] == pytest.approx(solo["peak_memory_mb"], rel=1e-6)
    assert swept.loc[64, "peak_memory_mb"] > 2 * swept.loc[8, "peak_memory_mb"]


def test_wall_time_of_a_resumed_run_sums_every_process(tmp_path) -> None:
    args = ["model.ssm.d_model=16", "model.ssm.d_state=8", "trainer.max_steps=130", "trainer.eval_every=10",
            "trainer.progress=false"]
    out = tmp_path / "resumed"
    proc = start_until_checkpoint(args, out, keep_output=False)
    checkpoint = glob.glob(os.path.join(out, "checkpoints", "*.pt"))[0]
    deadline = time.time() + 120
    while time.time() < deadline:  # stop it late, so the last process trains only a few steps
        try:
            if torch.load(checkpoint, weights_only=False)["step"] >= 120:
                break
        except (OSError, RuntimeError, EOFError):
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    earlier = torch.load(checkpoint, weights_only=False)["wall_time"]
    assert ablate(*args, f"results_dir={out}").returncode == 0
    row = rows(out).iloc[0]
    assert row["wall_time_s"] > earlier > 0 and row["wall_time_s"] >= row["train_time_s"]


def test_a_row_without_a_curve_removes_the_curve_of_an_earlier_attempt(tmp_path) -> None:
    """A rerun that fails (no evaluation, no curve) must not leave the earlier attempt's curve
    beside its new row: the curve files always belong to the rows next to them."""
    row = {"run_id": "0123456789abcdef", "status": "ok"}
    write_run(str(tmp_path), row, [{"step": 10, "val_loss": 1.0}])
    curve = path_of(str(tmp_path), CURVES, row["run_id"])
    assert os.path.exists(curve)
    write_run(str(tmp_path), {**row, "status": "failed"}, [])
    assert not os.path.exists(curve)
    write_run(str(tmp_path), {**row, "status": "failed"}, [])  # and none to remove: fine


def test_a_waiter_does_not_retrain_a_run_another_process_finished_meanwhile_whatever_its_status(tmp_path) -> None:
    """Two sweeps at once train every run exactly once: a process that waited on a claim skips
    the run once its owner has written the row, also when that row says diverged or failed."""
    import pandas as pd

    from ablate.claims import RunClaim
    from ablate.results import CLAIMS, RUNS

    out = tmp_path / "shared"
    args = ["model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=3", "trainer.progress=false"]
    plan = ablate(*args, f"results_dir={out}", "+plan=true")
    rid = plan.stdout.split()[1]
    owner = RunClaim(path_of(str(out), CLAIMS, rid))
    assert owner.try_acquire()
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args, f"results_dir={out}"], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "waiting for run" in line:
            break
    write_run(str(out), {"run_id": rid, "status": "diverged", "steps": 1}, [])  # the owner's row
    owner.release()
    output = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-2000:]
    assert "finished by another process" in output and " - done " not in output, output[-2000:]
    assert pd.read_parquet(path_of(str(out), RUNS, rid))["status"].iloc[0] == "diverged"


def test_a_rerun_sweep_trains_a_run_two_of_its_jobs_share_once(tmp_path) -> None:
    """+rerun=true retrains what was finished before the sweep began, once: a second job with
    the same run id (trainer.progress is not part of it) skips the row its sweep just wrote."""
    out = tmp_path / "rerun"
    args = ["model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=3", "trainer.progress=true,false",
            "+rerun=true", f"results_dir={out}", "-m"]
    for attempt in range(2):  # into an empty results_dir, then over the row of the first
        done = ablate(*args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (done.stdout + done.stderr).count(" - done ") == 1, (done.stdout + done.stderr)[-3000:]
