"""Run claims: at most one live process trains a run, however many launchers share a results_dir.

Before training, a process *claims* its run by creating ``claims/<run_id>.claim`` (atomically:
exactly one of several concurrent creators wins, see :func:`ablate.files.create_exclusive`).
The file names its owner (host, pid, a random token, when it was claimed); while the run
trains, a heartbeat thread touches the file every ``heartbeat_s`` seconds. Another process
that finds the run claimed waits, polling every ``poll_s`` seconds, until the claim is released
(then it finds the row written and skips the run) or goes *stale*, when it takes the claim over
and resumes the run from its checkpoint. A claim is stale when

* its owner ran on this host and its pid is no longer alive (a killed process: taken over at
  the next poll), or
* its heartbeat is older than ``stale_after_s`` (an owner on another node that died or lost
  its file system; the margin allows for clock skew between nodes).

Taking over is serialised by a second lock file (``<claim>.takeover``), under which the claim
is read again, so two waiters never both take over one stale claim, and a claim that was
renewed meanwhile is never taken.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .files import create_exclusive, temporaries_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimTiming:
    """Seconds between heartbeats, of silence before a claim is stale, between polls."""

    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    poll_s: float = 2.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunClaim:
    """The claim of one run (``path``: ``<results_dir>/claims/<run_id>.claim``).

    ``related``: files of the run (its checkpoint) whose temporaries a dead owner may have
    left; they are removed when its claim is taken over.
    """

    def __init__(self, path: str, timing: ClaimTiming = ClaimTiming(), related: tuple[str, ...] = ()):
        self.path = path
        self.timing = timing
        self.related = related
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                      "claimed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------ reading
    def holder(self) -> dict[str, Any] | None:
        """The claim's owner record plus ``age_s`` (seconds since its heartbeat), or None when
        there is no claim. A claim file that holds no owner record (empty after a crash, damaged,
        foreign: :func:`create_exclusive` never shows a partial one) is an owner without host,
        pid or token, stale once its file is older than ``stale_after_s``."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
            age_s = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data)
        except ValueError:  # not JSON, not UTF-8
            record = None
        if not isinstance(record, dict):
            record = {}
        record["age_s"] = age_s
        return record

    def is_stale(self, record: dict[str, Any]) -> bool:
        if record.get("host") == self.owner["host"] and not _pid_alive(int(record.get("pid", -1))):
            return True
        return record["age_s"] > self.timing.stale_after_s

    @property
    def held(self) -> bool:
        """Whether this object owns the claim now (a stale owner can lose it to a taker)."""
        record = self.holder()
        return record is not None and record.get("token") == self.owner["token"]

    # ------------------------------------------------------------------ taking
    def try_acquire(self) -> bool:
        """Claim the run if it is free or its claim is stale; never blocks."""
        if create_exclusive(self.path, json.dumps(self.owner)):
            self._start_heartbeat()
            return True
        record = self.holder()
        if record is None or self.is_stale(record):
            return self._take_over(record)
        return False

    def _take_over(self, seen: dict[str, Any] | None) -> bool:
        lock = self.path + ".takeover"
        if not create_exclusive(lock, json.dumps(self.owner)):
            self._clear_stale_lock(lock)
            return False
        try:
            record = self.holder()
            if record is not None and (seen is None or record.get("token") != seen.get("token")
                                       or not self.is_stale(record)):
                return False  # renewed or taken by another process meanwhile
            if record is not None:
                log.warning("taking over run claim %s from %s pid %s (heartbeat %.0f s ago)",
                            os.path.basename(self.path), record.get("host"), record.get("pid"), record["age_s"])
                os.remove(self.path)
                for leftover in (tmp for related in self.related for tmp in temporaries_of(related)):
                    os.remove(leftover)
            if not create_exclusive(self.path, json.dumps(self.owner)):
                return False
            self._start_heartbeat()
            return True
        finally:
            os.remove(lock)

    def _clear_stale_lock(self, lock: str) -> None:
        """A taker that died holding the takeover lock leaves it; remove it once it is old."""
        try:
            if time.time() - os.stat(lock).st_mtime > self.timing.stale_after_s:
                os.remove(lock)
        except FileNotFoundError:
            pass

    def wait(self, done: Callable[[], bool], describe: str = "") -> bool:
        """Block until this process holds the claim (True) or ``done()`` says the run needs no
        more work (False), polling every ``poll_s`` seconds."""
        announced = False
        while not done():
            if self.try_acquire():
                return True
            if not announced:
                record = self.holder() or {}
                log.info("waiting for run %s%s: claimed by %s pid %s since %s", os.path.basename(self.path)[:-6],
                         describe, record.get("host"), record.get("pid"), record.get("claimed_at"))
                announced = True
            time.sleep(self.timing.poll_s)
        return False

    # ------------------------------------------------------------------ holding
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"claim-heartbeat-{os.path.basename(self.path)}",
                                           daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.timing.heartbeat_s):
            if not self.held:
                log.error("run claim %s was taken over by another process", self.path)
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the claim if this object still owns it."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
