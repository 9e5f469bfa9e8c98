"""Results on disk: one parquet file per run (the final row) and one per run (its curve).

Layout under an experiment's ``results_dir``::

    runs/<run_id>.parquet      one row: config, metrics, status, versions, hardware
    curves/<run_id>.parquet    one row per evaluation: step, time, train/val loss and metric
    checkpoints/<run_id>.pt    while a run is in progress (removed once its row is written)
    claims/<run_id>.claim      while a process trains the run (see ablate.claims)

Every file is written to a temporary name of its writer's own and renamed into place (see
ablate.files), so a reader or a parallel launcher never sees a torn file, and a killed run
leaves at most a ``.tmp`` file that no glob of ``*.parquet`` picks up.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pandas as pd
import torch

from . import allocator
from .files import atomic_write

RUNS, CURVES, CHECKPOINTS, CLAIMS = "runs", "curves", "checkpoints", "claims"
SUFFIXES = {CHECKPOINTS: ".pt", CLAIMS: ".claim"}


def run_id(identity: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of the resolved configuration and seed."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'ssm': {'d_state': 8}}} -> {'model.ssm.d_state': 8}; lists become strings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(map(str, value)) if value else "none"
        else:
            out[name] = value
    return out


def identity_columns(identity: dict[str, Any]) -> dict[str, Any]:
    """The run-row columns of a run's config identity: model.*, task.*, trainer.* (seed and
    match are recorded as their own columns)."""
    return flatten({k: v for k, v in identity.items() if k not in ("seed", "match")})


def path_of(results_dir: str, kind: str, rid: str) -> str:
    return os.path.join(results_dir, kind, rid + SUFFIXES.get(kind, ".parquet"))


def atomic_write_parquet(frame: pd.DataFrame, path: str) -> None:
    """Write ``frame`` to ``path`` through a temporary file and an atomic rename."""
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_run(results_dir: str, row: dict[str, Any], curve: list[dict[str, Any]]) -> str:
    """Write the curve, then the run row (the row's presence marks the run as finished). A run
    without a curve (failed, or diverged before its first evaluation) removes the curve an
    earlier attempt of the same run left, so that no curve outlives its row."""
    rid = row["run_id"]
    curve_path = path_of(results_dir, CURVES, rid)
    if curve:
        frame = pd.DataFrame(curve)
        frame.insert(0, "run_id", rid)
        atomic_write_parquet(frame, curve_path)
    elif os.path.exists(curve_path):
        os.remove(curve_path)
    path = path_of(results_dir, RUNS, rid)
    atomic_write_parquet(pd.DataFrame([row]), path)
    return path


def finished_status(results_dir: str, rid: str) -> str | None:
    """The status of a run already written, or None (absent or unreadable)."""
    path = path_of(results_dir, RUNS, rid)
    if not os.path.exists(path):
        return None
    try:
        return str(pd.read_parquet(path, columns=["status"])["status"].iloc[0])
    except Exception:
        return None


def status_since(results_dir: str, rid: str, since: float) -> str | None:
    """The status of the run's row if it was written at or after time ``since``; None if there
    is no such row (none, an older one, or an unreadable one)."""
    try:
        written = os.path.getmtime(path_of(results_dir, RUNS, rid))
    except FileNotFoundError:
        return None
    return finished_status(results_dir, rid) if written >= since else None


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded in every row."""
    try:
        ours = version("ssm-ablate")
    except PackageNotFoundError:
        ours = "unknown"
    cuda = torch.cuda.is_available()
    return {
        "version_torch": torch.__version__,
        "version_python": platform.python_version(),
        "version_ssm_ablate": ours,
        "hostname": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "glibc_tunables": allocator.current(),
        "gpu": torch.cuda.get_device_name(0) if cuda else "none",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
