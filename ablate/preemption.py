"""Preemption: SLURM sends SIGTERM (or the signal set with --signal: submitit asks for SIGUSR2)
before it kills a job. A run catches it, finishes the current optimiser step, saves a checkpoint
and hands the signal on to whoever handled it before (submitit's SIGUSR2 handler requeues the
job; submitit only logs SIGTERM, and the process then ends; the default handler ends the
process), so the requeued or resubmitted run resumes where it stopped. Ctrl-C
(SIGINT) is caught the same way: the run checkpoints and the process exits with status 130.

Workers of a parallel launcher (joblib's loky processes) outlive a parent that is killed;
:func:`exit_with_parent` makes them send themselves SIGTERM when it dies, so a run they hold
checkpoints and stops as above, and an idle worker ends.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

# submitit (hydra/launcher=slurm_gpu, submitit_local) signals a time limit or a preemption with
# its own signal, SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL names another (sbatch --signal=USR2@delay).
SUBMITIT_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
SIGNALS = tuple(dict.fromkeys((signal.SIGTERM, signal.SIGUSR1, SUBMITIT_SIGNAL, signal.SIGINT)))
PARENT_WATCH = "ablate-exit-with-parent"


class Preempted(Exception):
    """Raised at a step boundary after a preemption signal; the checkpoint is already saved."""

    def __init__(self, signum: int, step: int, watcher: "PreemptionWatcher"):
        super().__init__(f"preempted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.watcher = signum, step, watcher


class PreemptionWatcher:
    """Context manager: records SIGTERM/SIGUSR1/SIGINT instead of dying mid-step.

    Handlers are only installed in the main thread (Python's rule); elsewhere it watches nothing.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.frame: FrameType | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received, self.frame = signum, frame

    def __enter__(self) -> "PreemptionWatcher":
        try:
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def hand_over(self) -> None:
        """Pass the recorded signal to the handler that was installed before ours."""
        signum = self.received
        if signum is None:
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.__exit__()
        self._previous.clear()
        if callable(previous):
            previous(signum, self.frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)


def exit_with_parent(poll_s: float = 1.0) -> None:
    """In a worker process (one with a multiprocessing parent), start a daemon thread, once,
    that sends this process SIGTERM as soon as its parent has died (it is then re-parented,
    so ``os.getppid()`` changes). In a main process it does nothing."""
    if multiprocessing.parent_process() is None or any(t.name == PARENT_WATCH for t in threading.enumerate()):
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name=PARENT_WATCH, daemon=True).start()
