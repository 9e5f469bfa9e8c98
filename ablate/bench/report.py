"""Readable tables of one job's rows (what ``python -m ablate.bench`` prints at the end)."""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

STATUS_CELL = {"over_budget": ">budget", "oom": "oom", "skipped": "skip"}


def _num(value: Any, spec: str) -> str:
    """format(value, spec), or '-' padded to the spec's width for a missing value."""
    if value is None or pd.isna(value):
        width = spec.split(".")[0]
        return format("-", ">" + width) if width.isdigit() else "-"
    return format(value, spec)


def _label(row: pd.Series) -> str:
    mode = row["mode"] if row["mode"] != "auto" else f"auto->{row['resolved_mode']}"
    return f"{row['name']}{' (peer)' if row['peer'] else ''} [{mode}]"


def order_of(exponent: Any) -> str:
    """A rough complexity class for a fitted exponent of time against length (a reading aid:
    over 256..16384, L log L fits a slope of about 1.1; below 0.8 fixed overheads dominate)."""
    if exponent is None or pd.isna(exponent):
        return "-"
    for upper, label in ((0.8, "<O(L)"), (1.07, "O(L)"), (1.3, "O(L log L)"), (1.75, "O(L^1.5)"), (2.3, "O(L^2)")):
        if exponent < upper:
            return label
    return ">O(L^2)"


def header(frame: pd.DataFrame) -> str:
    """Device, threads, versions and method, from the job's first row."""
    sweep = frame[frame["kind"] == "sweep"]
    r = (sweep if len(sweep) else frame).iloc[0]
    installed = (("mamba-ssm", r["version_mamba_ssm"]), ("s5-pytorch", r["version_s5_pytorch"]))
    peers = ", ".join(f"{k} {v}" for k, v in installed if v)
    return (f"ablate.bench job {r['job_id']}: {r['device']} ({r['device_name']}), {r['threads']} threads; "
            f"torch {r['version_torch']}{', CUDA ' + r['version_cuda'] if r['version_cuda'] else ''}; "
            f"peers: {peers or 'none installed'}\n"
            f"float32, torch.randn inputs; median of {_num(r['repeats'], 'd')} "
            f"timed calls after warm-up; budget {r['budget_s']:g} s per measurement; "
            f"copy bandwidth {r['copy_bandwidth_gbs']:.1f} GB/s; memory: {_memory_kind(frame)}\n"
            f"1-min load average during the job: {frame['load_average'].min():.2f} .. {frame['load_average'].max():.2f} "
            f"on {os.cpu_count()} CPUs (above the CPU count, other processes distort CPU timings)")


def _memory_kind(frame: pd.DataFrame) -> str:
    kinds = frame["peak_memory_kind"].dropna().unique()
    return ", ".join(map(str, kinds)) if len(kinds) else "not measured"


def sweep_table(frame: pd.DataFrame, column: str = "fwdbwd_ms", with_floor: bool = False) -> str:
    """Series x length table of ``column`` (ms), with the fitted exponents and the peak memory
    (of that pass) at the series' longest ok length."""
    sweep = frame[(frame["kind"] == "sweep") & frame["length"].notna()]
    if sweep.empty:
        return "(no length sweep rows)"
    exponent_col = "scaling_exponent" if column == "fwdbwd_ms" else "scaling_exponent_fwd"
    lengths = sorted(int(v) for v in sweep["length"].unique())
    lines = []
    for batch, rows in sweep.groupby("batch", sort=True):
        title = {"fwdbwd_ms": "forward+backward", "fwd_ms": "forward (no_grad)"}[column]
        lines.append(f"\n== {title} ms, batch {int(batch)}" + (" (memory-bandwidth floor ms)" if with_floor else "")
                     + "; exp = fitted slope of log time vs log L (tail: last 3 lengths)")
        head = f"{'series':48}" + "".join(f"{'L=' + str(L):>{16 if with_floor else 9}}" for L in lengths)
        lines.append(head + f"{'exp':>6}" + (f"{'tail':>6}  {'order (tail)':12}" if column == "fwdbwd_ms" else "")
                     + f"{'peak MB':>9}")
        for _, series in rows.groupby("series_id", sort=False):
            first = series.iloc[0]
            cells = []
            for L in lengths:
                at = series[series["length"] == L]
                if at.empty:
                    cell = ""
                elif at.iloc[0]["status"] != "ok":
                    cell = STATUS_CELL.get(at.iloc[0]["status"], at.iloc[0]["status"])
                else:
                    cell = _num(at.iloc[0][column], ".2f")
                    if with_floor:
                        floor = at.iloc[0]["floor_fwdbwd_ms" if column == "fwdbwd_ms" else "floor_ms"]
                        cell += f" ({_num(floor, '.3f')})"
                cells.append(f"{cell:>{16 if with_floor else 9}}")
            ok = series[series["status"] == "ok"]
            peak_col = "peak_memory_mb" if column == "fwdbwd_ms" else "peak_memory_fwd_mb"
            peak = ok[peak_col].iloc[-1] if len(ok) else math.nan
            tail = (_num(first["scaling_exponent_tail"], "6.2f") + f"  {order_of(first['scaling_exponent_tail']):12}"
                    if column == "fwdbwd_ms" else "")
            lines.append(f"{_label(first)[:48]:48}" + "".join(cells) + _num(first[exponent_col], "6.2f") + tail
                         + _num(peak, "9.1f"))
    return "\n".join(lines)


def peer_table(frame: pd.DataFrame) -> str:
    """ours / peer fwd+bwd time per length for each peer series (below 1: ours faster)."""
    peers = frame[(frame["kind"] == "sweep") & frame["peer"] & (frame["status"] == "ok")
                  & frame["ours_over_peer"].notna()]
    if peers.empty:
        return "\n== ours / peer: no comparable ok rows"
    lengths = sorted(int(v) for v in peers["length"].unique())
    lines = ["\n== ours (fastest mode) / peer, forward+backward time: below 1 = ours faster",
             f"{'peer':48}{'vs ours':24}" + "".join(f"{'L=' + str(L):>9}" for L in lengths)]
    for _, series in peers.groupby("series_id", sort=False):
        first = series.iloc[0]
        cells = []
        for L in lengths:
            at = series[series["length"] == L]
            cells.append(f"{_num(at.iloc[0]['ours_over_peer'], '.3f') if len(at) else '':>9}")
        lines.append(f"{_label(first)[:48]:48}{str(first['compare_to'])[:24]:24}" + "".join(cells))
    modes = peers.groupby("series_id")["ours_best_mode"].agg(lambda s: ",".join(dict.fromkeys(s.dropna())))
    lines.append("ours' fastest mode per peer series: "
                 + "; ".join(f"{k.split(' | ')[0]}: {v}" for k, v in modes.items()))
    return "\n".join(lines)


def step_table(frame: pd.DataFrame) -> str:
    """Recurrent inference: step latency, tokens/s and state size per subject and batch."""
    steps = frame[frame["kind"] == "step"]
    if steps.empty:
        return ""
    lines = ["\n== recurrent inference (step, eval, no_grad)",
             f"{'name':48}{'batch':>6}{'step ms':>10}{'tokens/s':>11}{'state B':>10}{'ours/peer':>10}  status"]
    for _, r in steps.iterrows():
        lines.append(f"{_label(r)[:48]:48}{int(r['batch']):>6}{_num(r['step_ms'], '10.3f')}"
                     f"{_num(r['step_tokens_per_s'], '11.0f')}{_num(r['state_bytes'], '10.0f')}"
                     f"{_num(r['ours_over_peer'], '10.3f')}  {r['status']}" + (f" ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)


def notes(frame: pd.DataFrame) -> str:
    """Why series stopped or were skipped (one line each)."""
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return ""
    lines = ["\n== stopped / skipped"]
    for _, r in bad.iterrows():
        at = f" at L={int(r['length'])}" if not pd.isna(r["length"]) else ""
        lines.append(f"{_label(r)} batch {int(r['batch'])}{at}: {r['status']}: {r['note']}")
    return "\n".join(lines)


def render(frame: pd.DataFrame) -> str:
    """Every table of a job."""
    gpu = bool((frame["device"] == "cuda").any())
    parts = [header(frame), sweep_table(frame, "fwdbwd_ms", with_floor=gpu), sweep_table(frame, "fwd_ms"),
             peer_table(frame), step_table(frame), notes(frame)]
    return "\n".join(p for p in parts if p)
