"""One benchmark job: every series and step measurement, written as one parquet file.

``<results_dir>/bench/<job_id>.parquet`` holds one row per measurement (columns:
:data:`COLUMNS`), rewritten atomically after each series so an interrupted job keeps what it
measured. Every row carries the device, threads and versions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pandas as pd
import torch

from ablate.files import create_exclusive
from ablate.results import atomic_write_parquet, environment

from .measure import Clock, copy_bandwidth
from .scaling import add_exponents, add_peer_ratios
from .series import Context, run_series, run_step, skipped_row
from .settings import BenchSettings
from .subjects import step_subjects, sweep_subjects, version_of

log = logging.getLogger(__name__)

BENCH = "bench"
COLUMNS = (
    # what was measured
    "job_id", "kind", "series_id", "name", "peer", "compare_to", "preset", "mode", "resolved_mode", "includes",
    "batch", "length", "d_model", "d_state", "d_inner", "dtype",
    # length sweep
    "fwd_ms", "fwdbwd_ms", "tokens_per_s", "tokens_per_s_fwd", "peak_memory_mb", "peak_memory_fwd_mb",
    "peak_memory_kind", "param_count", "flops_per_token", "floor_ms", "floor_fwdbwd_ms", "io_bytes",
    "copy_bandwidth_gbs", "scaling_exponent", "scaling_exponent_fwd", "scaling_exponent_tail",
    "ours_over_peer", "ours_over_peer_fwd", "ours_best_mode",
    # recurrent inference
    "step_ms", "steps_per_s", "step_tokens_per_s", "state_bytes",
    # how
    "status", "note", "repeats", "warmup", "budget_s", "wall_s", "load_average", "seed", "config_hash",
    # where
    "device", "device_name", "threads", "interop_threads", "omp_num_threads", "glibc_tunables", "hostname", "cpu",
    "version_torch", "version_cuda", "version_python", "version_ssm_ablate", "version_mamba_ssm",
    "version_s5_pytorch", "peer_version", "started_at", "finished_at",
)


def bench_path(results_dir: str, job_id: str) -> str:
    return os.path.join(results_dir, BENCH, f"{job_id}.parquet")


def claim_path(results_dir: str, job_id: str) -> str:
    """The hidden file that holds a job id while its job runs (no ``*.parquet`` glob sees it)."""
    return os.path.join(results_dir, BENCH, f".{job_id}.claim")


def claim_job_id(results_dir: str, job_id: str) -> str:
    """``job_id``, or where it is taken (a job of the same configuration started in the same
    second: in parallel, or on another machine sharing results_dir) ``job_id`` + '_2', '_3', ...:
    the first with no parquet whose claim file this call creates, exclusively, so that no job
    overwrites another's results. The job removes its claim once its parquet is whole."""
    for attempt in range(1, 1000):
        candidate = job_id if attempt == 1 else f"{job_id}_{attempt}"
        taken = os.path.exists(bench_path(results_dir, candidate))
        if taken or not create_exclusive(claim_path(results_dir, candidate), ""):
            continue
        if os.path.exists(bench_path(results_dir, candidate)):  # finished between the look and the claim
            os.remove(claim_path(results_dir, candidate))
            continue
        return candidate
    raise FileExistsError(f"{bench_path(results_dir, job_id)} and 998 more ids are taken")


def make_job_id(settings: BenchSettings, job_num: int | None = None) -> str:
    """'<UTC time>-<config hash>[-<sweep job number>]', e.g. 20250101T120000-1a2b3c4d-3."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{settings.config_hash()}" + (f"-{job_num}" if job_num is not None else "")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def job_columns(settings: BenchSettings, device: torch.device, job_id: str) -> dict[str, Any]:
    """Columns shared by every row of the job: identity, device, threads, versions."""
    env = environment()
    env.pop("gpu", None)
    cuda = device.type == "cuda"
    return {
        **env,
        "job_id": job_id, "config_hash": settings.config_hash(), "seed": settings.seed,
        "budget_s": settings.scale.budget_s, "dtype": "float32",
        "device": device.type, "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "interop_threads": torch.get_num_interop_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "version_cuda": torch.version.cuda or "",
        "version_mamba_ssm": version_of("mamba_ssm") or version_of("mamba-ssm"),
        "version_s5_pytorch": version_of("s5-pytorch"),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished_at": None,  # set when the job ends: the rows an interrupted job wrote have none
    }


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a frame with exactly :data:`COLUMNS` (missing values NaN / None), summaries added."""
    frame = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    frame = add_peer_ratios(add_exponents(frame))
    integers = ["batch", "length", "d_model", "d_state", "d_inner", "param_count", "io_bytes", "state_bytes",
                "repeats", "warmup"]
    floats = ["fwd_ms", "fwdbwd_ms", "tokens_per_s", "tokens_per_s_fwd", "peak_memory_mb", "peak_memory_fwd_mb",
              "flops_per_token", "floor_ms", "floor_fwdbwd_ms", "copy_bandwidth_gbs", "step_ms", "steps_per_s",
              "step_tokens_per_s", "wall_s", "ours_over_peer", "ours_over_peer_fwd", "budget_s", "load_average"]
    for col in integers:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
    for col in floats:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["peer"] = frame["peer"].fillna(False).astype(bool)
    for col in ("note", "peak_memory_kind", "compare_to", "ours_best_mode", "includes", "peer_version"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame[list(COLUMNS)]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` intra-op threads inside the block (None: leave PyTorch's setting)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def describe_row(row: dict[str, Any]) -> str:
    """One progress line for a row."""
    where = f"{row['name']} [{row['mode']}] B={row['batch']}" + (f" L={row['length']}" if row.get("length") else "")
    if row["status"] != "ok":
        return f"{where}: {row['status']} ({row['note']})"
    if row["kind"] == "step":
        return f"{where}: step {row['step_ms']:.3f} ms, state {row['state_bytes']} B"
    memory = f", peak {row['peak_memory_mb']:.1f} MB" if row.get("peak_memory_mb") is not None else ""
    return f"{where}: fwd {row['fwd_ms']:.2f} ms, fwd+bwd {row['fwdbwd_ms']:.2f} ms{memory}"


def run_bench(settings: BenchSettings, job_id: str,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> tuple[pd.DataFrame, str]:
    """Run every measurement of the job; returns (frame, parquet path). The id is claimed first
    (:func:`claim_job_id`): an existing parquet is never overwritten."""
    device = torch.device(settings.device)
    job_id = claim_job_id(settings.results_dir, job_id)
    path = bench_path(settings.results_dir, job_id)
    try:
        return _run(settings, job_id, device, path, [], on_row)
    finally:
        os.remove(claim_path(settings.results_dir, job_id))


def _run(settings: BenchSettings, job_id: str, device: torch.device, path: str, rows: list[dict[str, Any]],
         on_row: Callable[[dict[str, Any]], None] | None) -> tuple[pd.DataFrame, str]:

    def report(row: dict[str, Any]) -> None:
        log.info(describe_row(row))
        if on_row is not None:
            on_row(row)

    with torch_threads(settings.threads):
        clock = Clock(device)
        base = job_columns(settings, device, job_id)
        bandwidth = copy_bandwidth(clock, settings.scale.bandwidth_mb)
        base["copy_bandwidth_gbs"] = bandwidth / 1e9
        log.info("job %s on %s (%s), %d threads; copy bandwidth %.1f GB/s", job_id, device, base["device_name"],
                 torch.get_num_threads(), bandwidth / 1e9)
        load = os.getloadavg()[0]
        if device.type == "cpu" and load > (os.cpu_count() or 1) - 0.5:
            log.warning("load average %.2f on %d CPUs: other processes compete for the cores, so CPU timings "
                        "will be noisy (PyTorch threads wait for descheduled peers); consider threads=1", load,
                        os.cpu_count() or 1)
        ctx = Context(clock=clock, scale=settings.scale, memory=settings.memory, seed=settings.seed, base=base,
                      bandwidth=bandwidth, on_row=report)
        job_budget = settings.scale.job_budget_s
        start = time.perf_counter()

        def out_of_time() -> str | None:
            used = time.perf_counter() - start
            return f"job budget {job_budget:g} s used up ({used:.0f} s)" if job_budget and used > job_budget else None

        if settings.step:  # first: cheap, and never crowded out by the job budget
            for batch in settings.scale.step_batch:
                for subject in step_subjects(settings, device):
                    rows.append(run_step(subject, batch, ctx))
        for batch in settings.scale.batch:
            for subject in sweep_subjects(settings, device):
                reason = out_of_time()
                rows += [skipped_row(subject, batch, ctx, reason)] if reason else run_series(subject, batch, ctx)
                atomic_write_parquet(to_frame(rows), path)
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for row in rows:
            row["finished_at"] = finished
        frame = to_frame(rows)
        atomic_write_parquet(frame, path)
    return frame, path
