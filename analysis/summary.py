"""Words for a report: what was compared, what was held equal, the headline differences.

Every function takes frames that the report already computed and returns text (Markdown); the
report writes it to ``summary.md``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .axes import axis_values, constant_config, format_value, short_name, sort_key
from .significance import p_format
from .stats import MIN_SEEDS_FOR_TEST, describe_excluded, extrapolation_columns, ok_runs, welch_test
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


BUDGET_UNITS = {"time": " s"}


def _budget_text(kind: object, value: object) -> str:
    """'steps = 50', 'tokens = 1.6384e+06', 'time = 600 s'; 'flops = unset' without a value."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if not np.isfinite(number):
        return f"{kind} = unset"
    text = format_value(float(number)) if abs(number) < 1e7 else f"{number:.6g}"
    return f"{kind} = {text}{BUDGET_UNITS.get(str(kind), '')}"


def budget_groups(runs: pd.DataFrame, config_col: str = "config",
                  order: Sequence[str] | None = None) -> tuple[dict[str, list[str]], int]:
    """The budgets the runs record, each with the configurations that got it.

    order: configuration labels in table order (members and groups follow it; default first seen).
    Returns ({'steps = 50': [config labels]}, number of runs that recorded no budget, e.g.
    written by an older runner; they are left out of the check)."""
    if runs.empty or "budget_kind" not in runs.columns:
        return {}, len(runs)
    recorded = runs[runs["budget_kind"].notna() & (runs["budget_kind"].astype(str) != "")]
    value = recorded["budget_value"] if "budget_value" in recorded.columns else pd.Series(None, index=recorded.index)
    groups: dict[str, list[str]] = {}
    labels = recorded[config_col] if config_col in recorded.columns else pd.Series("all runs", index=recorded.index)
    for kind, val, label in zip(recorded["budget_kind"], value, labels):
        members = groups.setdefault(_budget_text(kind, val), [])
        if str(label) not in members:
            members.append(str(label))
    if order is not None:
        position = {label: i for i, label in enumerate(order)}
        rank = lambda label: position.get(label, len(position))  # noqa: E731
        groups = {k: sorted(v, key=rank) for k, v in sorted(groups.items(), key=lambda kv: min(map(rank, kv[1])))}
    return groups, len(runs) - len(recorded)


def budget_phrase(runs: pd.DataFrame, config_col: str = "config", order: Sequence[str] | None = None) -> str:
    """What the runs were given equally: 'Budget held equal: steps = 50.', or a warning naming
    the configurations when budgets differ across rows ('WARNING: budgets differ across rows:
    steps = 50 (siso, glu; mimo, glu), steps = 100 (mimo, silu).'); '' when no run records one."""
    groups, unrecorded = budget_groups(runs, config_col, order)
    if not groups:
        return ""
    missing = f" ({unrecorded} run(s) recorded no budget)" if unrecorded else ""
    if len(groups) == 1:
        text = next(iter(groups))
        if text.endswith("= unset"):
            return f"Budget: {text.split(' =')[0]} declared without a value (trainer.max_steps applies){missing}."
        return f"Budget held equal: {text}{missing}."
    parts = [f"{text} ({'; '.join(configs)})" for text, configs in groups.items()]
    return f"WARNING: budgets differ across rows: {', '.join(parts)}{missing}."


def budgets_equal(runs: pd.DataFrame) -> bool | None:
    """True when every run that records a budget has the same (kind, value); None when none records one."""
    groups, _ = budget_groups(runs)
    return None if not groups else len(groups) == 1


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


def headline(task: str, metric: str, higher: bool, ok: pd.DataFrame, agg: pd.DataFrame, order: Sequence[str],
             label_axes: Sequence[str]) -> list[str]:
    """Bullet lines for one task: the best configuration against the runner-up and the worst
    (difference of means, Welch t-test p-value with ≥ 3 seeds a side, as in the tables), and the
    main effect of each label axis. Configurations whose means are equal are named as tied.

    higher: whether a higher metric is better; ok: ok runs of this task with 'config'; agg:
    aggregate indexed by config (this task); order: the table's row order (ties keep it).
    """
    column = f"test_{metric}"
    if column not in agg.columns.get_level_values(0):
        return ["- no test metric recorded"]
    stats = agg[column].reindex([c for c in order if c in agg.index])
    stats = stats[stats["n"] > 0]
    if stats.empty:
        return ["- no successful runs"]
    ranked = stats.sort_values("mean", ascending=not higher, kind="stable")
    d = decimals_for(list(ranked["mean"]))

    def tied_with(config: str) -> list[str]:  # in table order
        return [c for c in stats.index if np.isclose(ranked.loc[c, "mean"], ranked.loc[config, "mean"],
                                                      rtol=1e-12, atol=0.0)]

    def cell(config: str) -> str:
        return _cell(*ranked.loc[config, ["mean", "std", "n"]], d)

    top = tied_with(ranked.index[0])
    if len(top) == len(ranked) > 1:
        return [f"- All {len(ranked)} configurations tie on test {metric}: "
                + "; ".join(f"{c} {cell(c)}" for c in top) + "."]
    best = top[0]
    if len(top) > 1:
        lines = [f"- Best, {len(top)} tied on test {metric}: " + "; ".join(f"**{c}** {cell(c)}" for c in top) + "."]
    else:
        lines = [f"- Best: **{best}** with test {metric} {cell(best)}."]

    def versus(others: list[str], word: str) -> str:
        other = others[0]
        diff = ranked.loc[best, "mean"] - ranked.loc[other, "mean"]
        a, b = ok.loc[ok["config"] == best, column], ok.loc[ok["config"] == other, column]
        p = welch_test(a, b)
        if np.isfinite(p):
            ptext = f"Welch t-test p = {p_format(p)}"
        elif min(a.notna().sum(), b.notna().sum()) < MIN_SEEDS_FOR_TEST:
            ptext = f"no test: fewer than {MIN_SEEDS_FOR_TEST} seeds"
        else:
            ptext = "no test: equal constant seeds"
        if len(others) == 1 and len(top) == 1:
            return f"- {word}: {other} {cell(other)}; difference {diff:+.{d}f} ({ptext})."
        tied = f", {len(others)} tied" if len(others) > 1 else ""
        return (f"- {word}{tied}: {'; '.join(f'{c} {cell(c)}' for c in others)}; difference {diff:+.{d}f} "
                f"({ptext}, {other} against {best}).")

    rest = [c for c in ranked.index if c not in top]
    if rest:
        lines.append(versus(tied_with(rest[0]), "Runner-up"))
        bottom = tied_with(rest[-1])
        if rest[0] not in bottom:
            lines.append(versus(bottom, "Worst"))
    if len(label_axes) >= 2:
        lines += [main_effect(ok, column, axis, label_axes, d) for axis in label_axes if ok[axis].nunique() >= 2]
    return lines


def main_effect(ok: pd.DataFrame, column: str, axis: str, label_axes: Sequence[str], decimals: int) -> str:
    """One bullet: the mean of ``column`` per level of ``axis``, over configurations (each one's
    seed mean). Averaging is only fair over the same settings of the other axes at every level:
    in a crossed design that is all of them; otherwise only the settings present at every level
    are averaged over (and named), and with none in common there is no main effect."""
    others = [a for a in label_axes if a != axis]
    per_config = ok.groupby(["config", *label_axes], dropna=False)[column].mean().reset_index()
    per_config["_others"] = [", ".join(f"{short_name(a, label_axes)}={format_value(v)}" for a, v in zip(others, row))
                             for row in per_config[others].itertuples(index=False)]
    settings = per_config.groupby(axis, dropna=False)["_others"].agg(set)
    common = set.intersection(*settings)
    names = ", ".join(short_name(a, label_axes) for a in others)
    if not common:
        return f"- No main effect of {short_name(axis, label_axes)}: no setting of {names} is run at every level."
    levels = per_config[per_config["_others"].isin(common)].groupby(axis, dropna=False)[column].mean()
    text = ", ".join(f"{format_value(k)} {v:.{decimals}f}" for k, v in sorted(levels.items(),
                                                                            key=lambda kv: sort_key(kv[0])))
    if all(len(s) == len(common) for s in settings):
        return f"- Main effect of {short_name(axis, label_axes)} (averaged over {names}): {text}."
    shown = "; ".join(sorted(common)) if len(common) <= 3 else f"{len(common)} settings"
    return (f"- Main effect of {short_name(axis, label_axes)}, over the settings of {names} run at every level "
            f"({shown}; the design is not crossed): {text}.")


def significance_lines(sig: pd.DataFrame, baseline, metric: str) -> list[str]:
    """One bullet: which configurations differ significantly from the baseline row.

    sig: :func:`analysis.significance.significance` of the task; baseline: its Baseline."""
    from .significance import MARK
    from .stats import MIN_SEEDS_FOR_TEST, SIGNIFICANCE_LEVEL

    if len(sig) < 2:
        return []
    head = (f"- Against the baseline **{baseline.label}** ({baseline.reason}), two-sided Welch's t-test over seeds "
            f"at p < {SIGNIFICANCE_LEVEL:g}")
    tested = sig[sig["tested"]]
    if tested.empty:
        return [f"{head}: no test, significance needs ≥ {MIN_SEEDS_FOR_TEST} seeds per cell."]
    d = decimals_for(list(sig["diff"].abs()))

    def name(config: str, row: pd.Series) -> str:
        p = f"p = {p_format(row['p'])}" if np.isfinite(row["p"]) else "p n/a"
        return f"{config} (Δ {row['diff']:+.{d}f}, {p})"

    sig_rows = tested[tested["significant"]]
    parts = [f"significantly different {MARK}: " + (", ".join(name(c, r) for c, r in sig_rows.iterrows())
                                                    if len(sig_rows) else "none")]
    rest = tested[~tested["significant"]]
    if len(rest):
        parts.append("within seed noise: " + ", ".join(name(c, r) for c, r in rest.iterrows()))
    untested = sig[~sig["baseline"] & ~sig["tested"]]
    if len(untested):
        parts.append(f"not tested (< {MIN_SEEDS_FOR_TEST} seeds): " + ", ".join(untested.index))
    return [f"{head} on test {metric}: " + "; ".join(parts) + "."]


def extrapolation_headline(task: str, metric: str, higher: bool, ok: pd.DataFrame) -> list[str]:
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
    best = means.idxmax() if higher else means.idxmin()
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
                   metric_by_task: Mapping[str, str], higher_by_task: Mapping[str, bool]) -> list[str]:
    """Bullets for 'What was compared': tasks (metric and which way is better), swept axes and
    their values, seeds."""
    tasks = ", ".join(f"{t} ({m}, {'higher' if higher_by_task[t] else 'lower'} is better)"
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
    """Bullets for 'What was held equal': size matching, the training budget (per task when the
    tasks differ) and the fixed settings (``axes``: columns never listed as fixed, e.g. the swept
    and the tuned ones)."""
    lines = [f"- {held_equal_phrase(runs)}"]
    if "task" in runs.columns and "budget_kind" in runs.columns:
        overall = budget_phrase(runs)
        if overall.startswith("Budget held equal"):  # the same budget on every task
            lines.append(f"- {overall}")
        else:  # tasks may differ in budget; within a task the rows must not
            lines += [f"- {t}: {p}" for t, p in ((t, budget_phrase(g)) for t, g in runs.groupby("task", sort=False))
                      if p]
    fixed = fixed_settings(runs, axes)
    if fixed:
        lines.append("- Fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()) + ".")
    return lines


def excluded_line(counts: pd.DataFrame) -> str:
    """'Excluded: 2 diverged, 1 failed run(s).' from per-group status counts; '' when none."""
    text = describe_excluded(counts.drop(columns=["total"], errors="ignore").sum())
    return f"Excluded: {text} run(s)." if text else ""
