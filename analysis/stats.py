"""Aggregation over seeds, and which direction is better for each metric.

Only runs with status ``ok`` enter a mean. Diverged and failed runs are counted per group
(:func:`status_counts`) so that tables and captions can show them; they are never averaged in.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

OK = "ok"
STATS = ("mean", "std", "n", "ci95")
EXTRAPOLATION = re.compile(r"^test_len_(\d+)_(\w+)$")


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows whose status is ``ok`` (the only ones any mean uses)."""
    return runs[runs["status"] == OK] if "status" in runs.columns else runs


def higher_is_better(column: str) -> bool | None:
    """True for accuracy and throughput, False for error, loss, time and memory, None otherwise
    (sizes such as param_count have no better direction)."""
    name = column.lower()
    if "accuracy" in name or name.startswith("tokens_per_s") or name.endswith("per_s") or name == "ratio":
        return True
    if any(k in name for k in ("mse", "loss", "_ms", "time", "memory", "error", "latency")):
        return False
    return None


UNIT_INTERVAL = ("accuracy",)
NON_NEGATIVE = ("mse", "loss", "error", "_ms", "time", "memory", "param_count", "state_size", "per_s", "flops")


def value_range(column: str) -> tuple[float, float]:
    """The values a metric column can take: [0, 1] for accuracies ([-1, 1] scaled), [0, inf) for losses, mse,
    errors, times, memory, sizes and throughput, (-inf, inf) otherwise."""
    name = column.lower()
    if "scaled_accuracy" in name:  # (accuracy - 1/C) / (1 - 1/C): -1/(C-1) at worst, -1 for C = 2
        return (-1.0, 1.0)
    if any(k in name for k in UNIT_INTERVAL):
        return (0.0, 1.0)
    if any(k in name for k in NON_NEGATIVE):
        return (0.0, math.inf)
    return (-math.inf, math.inf)


def clip_interval(low: float, high: float, column: str) -> tuple[float, float]:
    """``(low, high)`` clipped to :func:`value_range` of ``column`` (NaNs stay NaN)."""
    floor, ceiling = value_range(column)
    return (float(np.clip(low, floor, ceiling)), float(np.clip(high, floor, ceiling)))


def range_text(column: str) -> str:
    """'[0, 1]', '[0, ∞)' or '' (unbounded): the range an interval of ``column`` is clipped to."""
    floor, ceiling = value_range(column)
    if not np.isfinite(floor):
        return ""
    return f"[{floor:g}, {ceiling:g}]" if np.isfinite(ceiling) else f"[{floor:g}, ∞)"


def metric_direction(metric: str) -> bool:
    """Whether a higher task metric is better (accuracy: yes; mse and anything else: no)."""
    return bool(higher_is_better(metric)) if higher_is_better(metric) is not None else False


def ci95_half_width(std: float, n: int) -> float:
    """Half-width of the Student-t 95% confidence interval of a mean: t_{0.975, n-1} std / sqrt(n)."""
    if n is None or n < 2 or std is None or not np.isfinite(std):
        return float("nan")
    return float(scipy_stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def aggregate(runs: pd.DataFrame, keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std (ddof=1), count and 95% CI half-width of ``columns`` over the ok runs.

    runs: run rows (all statuses; non-ok rows are dropped here).
    keys: grouping columns, e.g. ['task', 'config'].
    columns: numeric columns to aggregate (absent ones are skipped).
    Returns a frame indexed by ``keys`` with MultiIndex columns (column, stat), stat in
    mean/std/n/ci95; every group of ``runs`` appears, a group without ok runs with n = 0.
    """
    keys = list(keys)
    columns = [c for c in columns if c in runs.columns]
    index = runs.groupby(keys, sort=False, dropna=False).size().index
    ok = ok_runs(runs)
    pieces = {}
    for col in columns:
        values = pd.to_numeric(ok[col], errors="coerce")
        grouped = values.groupby([ok[k] for k in keys], sort=False, dropna=False)
        table = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})
        table = table.reindex(index)
        table["n"] = table["n"].fillna(0).astype(int)
        table["ci95"] = [ci95_half_width(s, n) for s, n in zip(table["std"], table["n"])]
        pieces[col] = table
    if not pieces:
        return pd.DataFrame(index=index)
    return pd.concat(pieces, axis=1)


def status_counts(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Runs per status for each group: columns ok, diverged, failed (always), any other status
    seen, and total; indexed by ``keys``."""
    counts = runs.groupby(list(keys), sort=False, dropna=False)["status"].value_counts().unstack(fill_value=0)
    for status in ("ok", "diverged", "failed"):
        if status not in counts.columns:
            counts[status] = 0
    ordered = ["ok", "diverged", "failed"] + sorted(c for c in counts.columns if c not in ("ok", "diverged", "failed"))
    counts = counts[ordered].astype(int)
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = None
    return counts


def describe_excluded(counts: pd.Series | dict) -> str:
    """'2 diverged, 1 failed' from status counts (ok and total ignored); '' when nothing was excluded."""
    parts = [f"{int(n)} {status}" for status, n in dict(counts).items() if status not in ("ok", "total") and n]
    return ", ".join(parts)


def extrapolation_columns(columns: Sequence[str], metric: str | None = None) -> list[tuple[int, str]]:
    """[(length, column)] for the ``test_len_<L>_<metric>`` columns, sorted by length."""
    found = []
    for col in columns:
        match = EXTRAPOLATION.match(col)
        if match and (metric is None or match.group(2) == metric):
            found.append((int(match.group(1)), col))
    return sorted(found)


MIN_SEEDS_FOR_TEST = 3  # fewer seeds in either cell: no significance test, no mark
SIGNIFICANCE_LEVEL = 0.05


def welch_test(a: Sequence[float], b: Sequence[float], min_n: int = MIN_SEEDS_FOR_TEST) -> float:
    """Two-sided Welch t-test p-value (``scipy.stats.ttest_ind(a, b, equal_var=False)``) on the
    finite values of ``a`` and ``b``; NaN with fewer than ``min_n`` values on either side (and
    whatever scipy gives otherwise, e.g. NaN for two constant, equal samples)."""
    a = np.asarray([x for x in a if np.isfinite(x)], dtype=float)
    b = np.asarray([x for x in b if np.isfinite(x)], dtype=float)
    if len(a) < max(min_n, 2) or len(b) < max(min_n, 2):
        return float("nan")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def t_interval(mean: float, std: float, n: int, column: str | None = None) -> tuple[float, float]:
    """The Student-t 95% confidence interval of a mean from (mean, sample std, n); NaNs for n < 2.
    The same as ``scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=std / sqrt(n))``, clipped to
    the valid range of ``column`` when it is given (see :func:`clip_interval`)."""
    half = ci95_half_width(std, n)
    if not (np.isfinite(half) and np.isfinite(mean)):
        return (float("nan"), float("nan"))
    return clip_interval(mean - half, mean + half, column) if column else (mean - half, mean + half)
