"""Which configurations differ from a baseline row by more than seed noise.

For each task, one configuration is the **baseline**: the one named by ``--baseline`` (a
configuration label such as ``"siso, glu"``, or ``key=value`` pairs such as
``"gate=glu,structure=siso"``), else the first row in table order. Every other configuration's
test metric over seeds is compared with the baseline's by a two-sided Welch's t-test
(``scipy.stats.ttest_ind(equal_var=False)``, unequal variances, no correction for multiple
comparisons); p < 0.05 is marked with † in the tables. A comparison needs at least
:data:`analysis.stats.MIN_SEEDS_FOR_TEST` successful seeds in both cells; with fewer there is no
test and no mark.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .axes import format_value, short_name
from .errors import AnalysisError
from .stats import MIN_SEEDS_FOR_TEST, SIGNIFICANCE_LEVEL, ok_runs, welch_test

log = logging.getLogger(__name__)

MARK = "†"
TEST_NAME = "two-sided Welch's t-test (scipy.stats.ttest_ind, equal_var=False)"


@dataclass
class Baseline:
    """The baseline configuration of one task: its label and how it was chosen."""

    label: str
    reason: str  # 'first row' | '--baseline <spec>' | 'first row; --baseline <spec> is not in this task'


def _norm(text: object) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def _same_value(value: object, wanted: str) -> bool:
    text = format_value(value)
    if _norm(text) == _norm(wanted):
        return True
    try:
        return np.isclose(float(text), float(wanted), rtol=1e-9, atol=0.0)
    except ValueError:
        return False


def _resolve_key(key: str, columns: Sequence[str], axes: Sequence[str]) -> str:
    if key in columns:
        return key
    for names in ([short_name(a, axes) for a in axes], [a.split(".")[-1] for a in axes]):
        hits = [a for a, name in zip(axes, names) if name == key]
        if len(hits) == 1:
            return hits[0]
    dotted = [c for c in columns if c.endswith("." + key)]
    if len(dotted) == 1:
        return dotted[0]
    raise AnalysisError(f"--baseline: {key!r} is not a configuration column"
                        + (f" (swept: {', '.join(axes)})" if axes else ""))


def match_baseline(spec: str, configs: pd.DataFrame, axes: Sequence[str]) -> str | None:
    """The configuration label that ``spec`` names among ``configs`` (one row per configuration,
    indexed by label, with the run columns); None when it names none of them.

    spec: a label (compared case- and space-insensitively), or comma-separated ``key=value``
        pairs where key is a column (``model.ssm.gate``) or a swept axis' short name (``gate``).
    Raises AnalysisError for an unknown key or a spec that fits several configurations.
    """
    by_label = [c for c in configs.index if _norm(c) == _norm(spec)]
    if by_label:
        return by_label[0]
    if "=" not in spec:
        return None
    pairs = []
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise AnalysisError(f"--baseline: {part.strip()!r} is not key=value")
        key, value = (x.strip() for x in part.split("=", 1))
        pairs.append((_resolve_key(key, list(configs.columns), axes), value))
    hits = [c for c in configs.index if all(_same_value(configs.loc[c, k], v) for k, v in pairs)]
    if len(hits) > 1:
        raise AnalysisError(f"--baseline {spec!r} fits {len(hits)} configurations ({'; '.join(hits)}); "
                            "name more keys")
    return hits[0] if hits else None


def resolve_baselines(runs: pd.DataFrame, order: Mapping[str, Sequence[str]], axes: Sequence[str],
                      spec: str | None) -> dict[str, Baseline]:
    """task -> :class:`Baseline`. Without ``spec``: the first row of each task. With ``spec``:
    the configuration it names in each task (first row, with a warning, in a task without it);
    AnalysisError when it names a configuration in no task."""
    out: dict[str, Baseline] = {}
    if not spec or not spec.strip():
        return {task: Baseline(labels[0], "first row") for task, labels in order.items() if labels}
    for task, labels in order.items():
        if not labels:
            continue
        configs = runs[runs["task"] == task].drop_duplicates("config").set_index("config").loc[list(labels)]
        hit = match_baseline(spec, configs, axes)
        out[task] = Baseline(hit, f"--baseline {spec}") if hit is not None else None
    if all(b is None for b in out.values()):
        names = sorted({c for labels in order.values() for c in labels})
        raise AnalysisError(f"--baseline {spec!r} names no configuration (have: {'; '.join(names)})")
    for task, baseline in out.items():
        if baseline is None:
            log.warning("--baseline %r is not a configuration of %s; its first row is the baseline there", spec, task)
            out[task] = Baseline(order[task][0], f"first row; --baseline {spec} is not in this task")
    return out


def significance(runs: pd.DataFrame, column: str, order: Sequence[str], baseline: str) -> pd.DataFrame:
    """Per configuration (index: ``order``) against ``baseline`` on ``column`` over seeds.

    runs: the runs of one task with ``config`` (non-ok runs are dropped here).
    Columns: n (ok values), baseline (bool), tested (both cells have >= 3 values), p (Welch's
    t-test p-value; NaN when not tested), diff (mean - baseline mean), significant (p < 0.05),
    mark ('†' or '').
    """
    ok = ok_runs(runs)
    values = {c: pd.to_numeric(ok.loc[ok["config"] == c, column], errors="coerce").dropna().to_numpy(float)
              if column in ok.columns else np.array([]) for c in order}
    base = values.get(baseline, np.array([]))
    rows = []
    for config in order:
        mine = values[config]
        is_base = config == baseline
        tested = (not is_base) and len(mine) >= MIN_SEEDS_FOR_TEST and len(base) >= MIN_SEEDS_FOR_TEST
        p = welch_test(mine, base) if tested else float("nan")
        diff = float(mine.mean() - base.mean()) if len(mine) and len(base) and not is_base else float("nan")
        significant = bool(tested and np.isfinite(p) and p < SIGNIFICANCE_LEVEL)
        rows.append({"n": len(mine), "baseline": is_base, "tested": tested, "p": p, "diff": diff,
                     "significant": significant, "mark": MARK if significant else ""})
    return pd.DataFrame(rows, index=list(order))


def p_text(row: pd.Series) -> str:
    """The 'p vs baseline' cell: 'baseline', '0.0031', 'n/a' (tested, no p), '—' (not tested)."""
    if row["baseline"]:
        return "baseline"
    if not row["tested"]:
        return "—"
    return p_format(row["p"]) if np.isfinite(row["p"]) else "n/a"


def p_format(p: float) -> str:
    """A p-value to two significant digits, or more where two would round it across the
    significance level (0.0497 stays 0.0497, not 0.05 beside a † for p < 0.05)."""
    for digits in range(2, 17):
        text = f"{p:.{digits}g}"
        if (float(text) < SIGNIFICANCE_LEVEL) == (p < SIGNIFICANCE_LEVEL):
            return text
    return repr(p)


def significance_phrase(sig: pd.DataFrame, baseline: Baseline) -> str:
    """The caption sentence: which test, which baseline, what † means, the ≥ 3 seeds rule."""
    if len(sig) < 2:
        return ""
    where = f"the baseline row ({baseline.label}; {baseline.reason})"
    rule = f"significance needs ≥ {MIN_SEEDS_FOR_TEST} seeds per cell"
    if not sig["tested"].any():
        return f"No significance marks: {rule} (baseline: {baseline.label}; {baseline.reason})."
    text = (f"{MARK} p < {SIGNIFICANCE_LEVEL:g} against {where}, {TEST_NAME} over seeds, "
            "no correction for multiple comparisons; p in the 'p vs baseline' column.")
    untested = sig[~sig["baseline"] & ~sig["tested"]]
    if len(untested):
        text += f" Not tested ({rule}): {'; '.join(untested.index)}."
    return text
