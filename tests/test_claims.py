"""Run claims and shared files: one owner per run, stale claims taken over exactly once,
temporary files never shared between writers, results readable under the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from ablate.claims import ClaimTiming, RunClaim
from ablate.config import TrainerConfig
from ablate.files import atomic_write, create_exclusive, temporaries_of, temporary_name
from ablate.results import write_run
from ablate.trainer import Trainer

FAST = ClaimTiming(heartbeat_s=0.05, stale_after_s=1.0, poll_s=0.05)


def write_foreign_claim(path, host: str, pid: int, age_s: float) -> None:
    """A claim file as another process (``host``, ``pid``) left it, last touched ``age_s`` ago."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"host": host, "pid": pid, "token": "foreign", "claimed_at": "2026-01-01T00:00:00+00:00"}, handle)
    then = time.time() - age_s
    os.utime(path, (then, then))


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_claim_is_not_taken_and_a_released_one_is(tmp_path) -> None:
    path = str(tmp_path / "claims" / "run.claim")
    first, second = RunClaim(path, FAST), RunClaim(path, FAST)
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    time.sleep(3 * FAST.stale_after_s)  # the heartbeat keeps a live owner's claim fresh
    assert not second.try_acquire()
    first.release()
    assert not os.path.exists(path)
    assert second.try_acquire() and second.held
    second.release()


@pytest.mark.parametrize("host, age_s, stale", [
    ("other-node", 5.0, True),     # silent for longer than stale_after_s
    ("other-node", 0.0, False),    # a live owner elsewhere: its heartbeat is fresh
])
def test_a_claim_from_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path, host, age_s, stale) -> None:
    path = str(tmp_path / "run.claim")
    write_foreign_claim(path, host, pid=os.getpid(), age_s=age_s)
    claim = RunClaim(path, FAST)
    assert claim.try_acquire() is stale
    with open(path) as handle:
        assert (json.load(handle)["token"] == claim.owner["token"]) is stale
    claim.release()


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path) -> None:
    path = str(tmp_path / "run.claim")
    checkpoint = str(tmp_path / "checkpoints" / "run.pt")
    os.makedirs(os.path.dirname(checkpoint))
    leftover = temporary_name(checkpoint)
    open(leftover, "w").close()
    claim = RunClaim(path, ClaimTiming(stale_after_s=3600), related=(checkpoint,))
    write_foreign_claim(path, claim.owner["host"], pid=dead_pid(), age_s=0.0)
    assert claim.try_acquire() and claim.held
    assert not temporaries_of(checkpoint)  # the dead writer's temporary is gone
    claim.release()


RACE = """
import sys, time
from ablate.claims import ClaimTiming, RunClaim
claim = RunClaim(sys.argv[1], ClaimTiming(heartbeat_s=60, stale_after_s=10))
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(claim.try_acquire(), flush=True)
time.sleep(1.0)  # hold it while the others try
"""


@pytest.mark.parametrize("existing", ["none", "stale"])
def test_exactly_one_of_many_concurrent_claimants_wins(tmp_path, existing: str) -> None:
    path = str(tmp_path / "run.claim")
    if existing == "stale":
        write_foreign_claim(path, "other-node", pid=1, age_s=100.0)
    start_at = str(time.time() + 2.0)  # every process is imported and waiting by then
    procs = [subprocess.Popen([sys.executable, "-c", RACE, path, start_at], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) for _ in range(6)]
    outcomes = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(outcomes) == ["False"] * 5 + ["True"]


def test_wait_returns_when_the_run_is_done_elsewhere(tmp_path) -> None:
    path = str(tmp_path / "run.claim")
    owner = RunClaim(path, FAST)
    assert owner.try_acquire()
    deadline = time.time() + 0.3
    start = time.time()
    assert RunClaim(path, FAST).wait(lambda: time.time() > deadline) is False
    assert time.time() - start < 5
    owner.release()


def test_create_exclusive_never_replaces_an_existing_file(tmp_path) -> None:
    path = str(tmp_path / "f")
    assert create_exclusive(path, "first")
    assert not create_exclusive(path, "second")
    assert open(path).read() == "first"
    assert os.listdir(tmp_path) == ["f"]  # no temporary left behind


def test_every_writer_uses_its_own_temporary_name(tmp_path) -> None:
    names = {temporary_name(str(tmp_path / "x.pt")) for _ in range(100)}
    assert len(names) == 100 and all(os.path.basename(n).startswith(".x.pt.") for n in names)


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path) -> None:
    def fail(tmp: str) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(str(tmp_path / "row.parquet"), fail)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_results_and_checkpoints_take_the_umask_permissions(tmp_path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_run(str(tmp_path), {"run_id": "abc", "status": "ok"}, [{"step": 1, "val_loss": 0.5}])
        trainer = Trainer(TrainerConfig(), seed=0, checkpoint_path=str(tmp_path / "checkpoints" / "abc.pt"))
        trainer._save({"weights": torch.zeros(2)})
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for name in ("runs/abc.parquet", "curves/abc.parquet", "checkpoints/abc.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name
    assert pd.read_parquet(tmp_path / "runs" / "abc.parquet")["status"].iloc[0] == "ok"


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "\udcff"])
def test_an_unreadable_claim_is_stale_once_its_file_is_old(tmp_path, content: str) -> None:
    """A claim file that is not this suite's record (empty after a crash, foreign, damaged) must
    not make every later process wait for it forever: it goes stale like a silent owner's."""
    path = str(tmp_path / "run.claim")
    with open(path, "w", errors="surrogateescape") as handle:
        handle.write(content)
    assert not RunClaim(path, FAST).try_acquire()  # fresh: it may still be someone's
    then = time.time() - 5 * FAST.stale_after_s
    os.utime(path, (then, then))
    claim = RunClaim(path, FAST)
    assert claim.try_acquire() and claim.held
    claim.release()
    assert not os.path.exists(path)
