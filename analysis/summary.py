"""Words for a report: what was compared, what was held equal, the headline differences.

Every function takes frames that the report already computed and returns text (Markdown); the
report writes it to ``summary.md``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .axes import axis_values, constant_config, format_value, short_name, sort_key
from .stats import describe_excluded, extrapolation_columns, metric_direction, ok_runs, welch_p_value
from .tables import decimals_for

MATCH_NAMES = {"state_size": "total state size", "param_count": "parameter count",
               "flops_per_token": "FLOPs per token", "flops": "FLOPs per token"}
FIXED_SETTINGS = (
    "model.preset", "model.ssm.structure", "model.ssm.selective", "model.ssm.gate", "model.ssm.d_model",
    "model.ssm.d_state", "model.ssm.expand", "model.ssm.conv", "model.ssm.init", "model.ssm.discretization",
    "model.n_layers", "trainer.max_steps", "trainer.batch_size", "trainer.lr", "trainer.ssm_lr",
    "trainer.weight_decay", "device", "gpu",
)


def held_equal_phrase(runs: pd.DataFrame) -> str:
    """What a set of runs held equal, from ``match_by`` (and ``match_reference``/``match_target``).

    'Held equal: total state size (matched to s4d, 128).' / 'Not size-matched.' /
    'Held equal: total state size (rows matched=state_size) or parameter count (rows
    matched=param_count), matched to s4d.'
    """
    if runs.empty or "match_by" not in runs.columns:
        return "Not size-matched."
    recorded = runs["match_by"].dropna().astype(str)
    kinds = [k for k in dict.fromkeys(recorded) if k != "none"]
    reference = ""
    if "match_reference" in runs.columns and runs["match_reference"].notna().any():
        refs = sorted(set(runs["match_reference"].dropna().astype(str)))
        reference = f"matched to {', '.join(refs)}"
    if not kinds:
        return "Not size-matched."
    if len(kinds) == 1 and (recorded == kinds[0]).all():
        target = ""
        if "match_target" in runs.columns:
            targets = pd.to_numeric(runs["match_target"], errors="coerce").dropna().unique()
            if len(targets) == 1:
                target = format_value(float(targets[0]))
        detail = ", ".join(x for x in (reference, target) if x)
        return f"Held equal: {MATCH_NAMES.get(kinds[0], kinds[0])}" + (f" ({detail})." if detail else ".")
    parts = [f"{MATCH_NAMES.get(k, k)} (rows matched={k})" for k in kinds]
    if (recorded == "none").any():
        parts.append("nothing (rows matched=none)")
    return "Held equal: " + " or ".join(parts) + (f", {reference}." if reference else ".")


def fixed_settings(runs: pd.DataFrame, axes: Sequence[str]) -> dict[str, str]:
    """The curated settings (:data:`FIXED_SETTINGS`) that were the same in every run and are not
    swept: {short name: value}."""
    constant = constant_config(runs, [c for c in FIXED_SETTINGS if c not in axes])
    names = list(constant)
    return {short_name(c, names) if c not in ("device", "gpu") else c: v for c, v in constant.items()}


def _cell(mean: float, std: float, n: int, decimals: int = 3) -> str:
    if n == 0 or not np.isfinite(mean):
        return "no successful run"
    spread = f" ± {std:.{decimals}f}" if n > 1 and np.isfinite(std) else ""
    return f"{mean:.{decimals}f}{spread} (n={int(n)})"


def headline(task: str, metric: str, ok: pd.DataFrame, agg: pd.DataFrame, order: Sequence[str],
             label_axes: Sequence[str]) -> list[str]:
    """Bullet lines for one task: the best configuration against the runner-up and the worst
    (difference of means, Welch t-test p-value), and the main effect of each label axis.

    ok: ok runs of this task with 'config'; agg: aggregate indexed by config (this task).
    """
    column = f"test_{metric}"
    if column not in agg.columns.get_level_values(0):
        return ["- no test metric recorded"]
    stats = agg[column]
    stats = stats[stats["n"] > 0]
    if stats.empty:
        return ["- no successful runs"]
    higher = metric_direction(metric)
    ranked = stats.sort_values("mean", ascending=not higher)
    best = ranked.index[0]
    d = decimals_for(list(ranked["mean"]))
    lines = [f"- Best: **{best}** with test {metric} {_cell(*ranked.loc[best, ['mean', 'std', 'n']], d)}."]

    def versus(other: str, word: str) -> str:
        diff = ranked.loc[best, "mean"] - ranked.loc[other, "mean"]
        p = welch_p_value(ok.loc[ok["config"] == best, column], ok.loc[ok["config"] == other, column])
        ptext = f"Welch t-test p = {p:.2g}" if np.isfinite(p) else "too few seeds for a test"
        return (f"- {word}: {other} {_cell(*ranked.loc[other, ['mean', 'std', 'n']], d)}; "
                f"difference {diff:+.{d}f} ({ptext}).")

    if len(ranked) >= 2:
        lines.append(versus(ranked.index[1], "Runner-up"))
    if len(ranked) >= 3:
        lines.append(versus(ranked.index[-1], "Worst"))
    if len(label_axes) >= 2:
        for axis in label_axes:
            if ok[axis].nunique() < 2:
                continue
            # main effect: mean over configurations (each configuration's seed mean) per level
            per_config = ok.groupby(["config", axis], dropna=False)[column].mean().reset_index()
            levels = per_config.groupby(axis, dropna=False)[column].mean()
            ordered = sorted(levels.items(), key=lambda kv: sort_key(kv[0]))
            text = ", ".join(f"{format_value(k)} {v:.{d}f}" for k, v in ordered)
            others = ", ".join(short_name(a, label_axes) for a in label_axes if a != axis)
            lines.append(f"- Main effect of {short_name(axis, label_axes)} (averaged over {others}): {text}.")
    return lines


def extrapolation_headline(task: str, metric: str, ok: pd.DataFrame) -> list[str]:
    """Bullet lines for a task with ``test_len_<L>`` columns: the best configuration at the
    longest test length, and at what length each configuration first falls below half its
    training-length score."""
    cols = [(L, c) for L, c in extrapolation_columns(ok.columns, metric) if ok[c].notna().any()]
    if not cols:
        return []
    longest, col = cols[-1]
    means = ok.groupby("config")[col].mean().dropna()
    if means.empty:
        return []
    best = means.idxmax() if metric_direction(metric) else means.idxmin()
    lines = [f"- At the longest test length ({longest}): best **{best}** ({metric} {means[best]:.3f}); "
             + ", ".join(f"{k} {v:.3f}" for k, v in means.drop(best).items()) + "."]
    return lines


def status_line(runs: pd.DataFrame) -> str:
    """'12 runs: 10 ok, 1 diverged, 1 failed (not averaged in).'"""
    counts = runs["status"].value_counts()
    parts = [f"{int(counts.get('ok', 0))} ok"] + [f"{int(n)} {s}" for s, n in counts.items() if s != "ok"]
    tail = " (diverged and failed runs are counted, never averaged in)" if len(counts) > 1 or "ok" not in counts else ""
    return f"{len(runs)} runs: " + ", ".join(parts) + tail + "."


def excluded_runs(runs: pd.DataFrame) -> list[str]:
    """One bullet per non-ok run: configuration, seed, status and (first line of) error."""
    if runs.empty or "status" not in runs.columns:
        return []
    bad = runs[runs["status"] != "ok"]
    lines = []
    for _, row in bad.iterrows():
        error = row.get("error")
        error = error.strip().splitlines()[0][:120] if isinstance(error, str) and error.strip() else ""
        stopped = row.get("stopped_by")
        why = error or (f"stopped by {stopped}" if isinstance(stopped, str) and stopped else "")
        lines.append(f"- {row['task']}: {row.get('config', '')}, seed {format_value(row.get('seed'))}: "
                     f"{row['status']}" + (f" ({why})" if why else ""))
    return lines


def compared_lines(runs: pd.DataFrame, axes: Sequence[str], label_axes: Sequence[str],
                   metric_by_task: Mapping[str, str]) -> list[str]:
    """Bullets for 'What was compared': tasks, swept axes and their values, seeds."""
    tasks = ", ".join(f"{t} ({m}, {'higher' if metric_direction(m) else 'lower'} is better)"
                      for t, m in metric_by_task.items())
    lines = [f"- Tasks: {tasks}."]
    if label_axes:
        values = axis_values(runs, label_axes)
        lines.append("- Swept: " + "; ".join(f"{short_name(a, label_axes)} ∈ {{{', '.join(values[a])}}}"
                                             for a in label_axes) + ".")
    else:
        lines.append("- A single configuration (nothing swept besides the seed).")
    derived = [a for a in axes if a not in label_axes]
    if derived:
        lines.append("- Changing with them: " + ", ".join(f"`{a}`" for a in derived) + ".")
    ok = ok_runs(runs)
    seeds = sorted({format_value(s) for s in ok["seed"].dropna()}, key=lambda s: (len(s), s)) if "seed" in ok else []
    per_config = ok.groupby(["task", "config"]).size() if len(ok) else pd.Series(dtype=int)
    if len(per_config):
        low, high = int(per_config.min()), int(per_config.max())
        span = f"{high}" if low == high else f"{low}–{high}"
        lines.append(f"- Seeds: {', '.join(seeds) or 'n/a'} ({span} successful per configuration).")
    return lines


def held_lines(runs: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """Bullets for 'What was held equal': size matching and the fixed settings."""
    lines = [f"- {held_equal_phrase(runs)}"]
    fixed = fixed_settings(runs, axes)
    if fixed:
        lines.append("- Fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()) + ".")
    return lines


def excluded_line(counts: pd.DataFrame) -> str:
    """'Excluded: 2 diverged, 1 failed run(s).' from per-group status counts; '' when none."""
    text = describe_excluded(counts.drop(columns=["total"], errors="ignore").sum())
    return f"Excluded: {text} run(s)." if text else ""
