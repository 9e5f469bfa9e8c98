"""Which configuration columns a sweep varied, and short readable labels for its configurations.

A run row carries its whole flattened config as dotted columns (``model.ssm.gate``,
``trainer.lr``, ...) plus ``match_by`` (what a comparison held equal). The **swept axes** are
the config columns that take more than one value across the runs, excluding identity, timing,
version and host columns, and excluding columns fixed by the task (``task.length`` differs
between two tasks but is not an ablation axis: the task is already part of every grouping key).

Many swept columns move together: switching ``model.preset`` from s4d to s5 also changes
structure, gate and init. The **label axes** are a smallest subset of the swept axes, chosen in
a readable priority order, that still tells every configuration apart; the other swept axes are
determined by them. Grouping by (task, label axes) is the same partition as grouping by
(task, all swept axes).

A value that is NaN only because an older runner did not write the column (listed in the
row's ``_absent``, see :mod:`analysis.load`) does not count as a different setting.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

# Readable order for labels: the comparison axes first, training details last.
PRIORITY = (
    "model.preset", "match_by", "model.ssm.structure", "model.ssm.groups", "model.ssm.selective",
    "model.ssm.gate", "model.ssm.conv", "model.ssm.expand", "model.ssm.d_state", "model.ssm.init",
    "model.ssm.discretization", "model.ssm.complex", "model.ssm.conj_sym", "model.ssm.bidirectional",
    "model.ssm.d_model", "model.n_layers",
)
# Config columns that say where or how fast a run went, never what was compared.
EXCLUDED = {"trainer.device", "trainer.progress", "trainer.checkpoint", "trainer.compile", "trainer.precision",
            "model.ssm.mode", "task.data_dir", "results_dir"}
EXTRA_CANDIDATES = ("match_by",)  # non-dotted columns that are configuration
SHORT_NAMES = {"match_by": "matched", "model.preset": "preset", "model.n_layers": "layers"}
_FIRST_VALUES = ("none", "false", "0", "off")  # listed first: the baseline of an ablation


def config_columns(runs: pd.DataFrame) -> list[str]:
    """Columns that describe configuration: dotted names plus ``match_by``, minus :data:`EXCLUDED`."""
    return [c for c in runs.columns
            if (("." in c and not c.startswith("_")) or c in EXTRA_CANDIDATES) and c not in EXCLUDED]


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "<nan>"
    if value is None or value is pd.NA:
        return "<nan>"
    if isinstance(value, (list, tuple, set, dict)):
        return repr(value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _values(runs: pd.DataFrame, col: str) -> pd.Series:
    """The column as hashable values; NaN where the row's file did not have the column."""
    values = runs[col].map(_hashable)
    if "_absent" in runs.columns:
        absent = runs["_absent"].map(lambda a: col in a if isinstance(a, (tuple, list, set, frozenset)) else False)
        values = values.where(~absent, None)
    return values


def _n_groups(runs: pd.DataFrame, cols: Sequence[str], keys: Sequence[str]) -> int:
    if not cols and not keys:
        return 1 if len(runs) else 0
    frame = pd.DataFrame({c: runs[c].map(_hashable) for c in [*keys, *cols]})
    return len(frame.drop_duplicates())


def _priority(col: str, order: Sequence[str]) -> tuple[int, int, str]:
    if col in PRIORITY:
        return (0, PRIORITY.index(col), col)
    group = 1 if col.startswith("model.") else 2 if col.startswith("task.") else 3 if col.startswith("trainer.") else 4
    return (group, order.index(col) if col in order else 0, col)


def budget_derived(runs: pd.DataFrame) -> set[str]:
    """Config columns the runner set from the budget rather than from the sweep: under one tokens
    or flops budget per task, ``trainer.max_steps`` is that budget converted per run (it follows
    the model, the task and the batch size), so it is not an axis of its own. Several budgets on
    a task (a sweep over budget.value, or tokens beside flops) keep it: it tells those runs apart."""
    if "budget_kind" not in runs.columns or "budget_value" not in runs.columns:
        return set()
    value = pd.to_numeric(runs["budget_value"], errors="coerce")
    if not runs["budget_kind"].isin(("tokens", "flops")).all() or value.isna().any():
        return set()
    budget = runs["budget_kind"].astype(str) + "=" + value.astype(str)
    per_task = budget.groupby(runs["task"]).nunique() if "task" in runs.columns else pd.Series([budget.nunique()])
    return {"trainer.max_steps"} if per_task.max() == 1 else set()


def swept_axes(runs: pd.DataFrame, task_col: str = "task") -> list[str]:
    """Config columns that vary across ``runs`` and are not fixed by the task, in priority order.

    runs: run rows of any status (a configuration whose runs all failed is still a configuration
        of the sweep, and must be counted, so it has to keep its own label).
    Returns column names; empty when every run has the same configuration.
    """
    if runs.empty:
        return []
    derived = budget_derived(runs)
    columns = [c for c in config_columns(runs) if c not in derived]
    varying = []
    for col in columns:
        values = _values(runs, col).dropna()
        if values.nunique() <= 1:
            continue
        if task_col in runs.columns:
            per_task = pd.DataFrame({"t": runs.loc[values.index, task_col], "v": values})
            if per_task.groupby("t")["v"].nunique().max() <= 1:
                continue  # fixed by the task
        varying.append(col)
    return sorted(varying, key=lambda c: _priority(c, columns))


def label_axes(runs: pd.DataFrame, axes: Sequence[str], task_col: str = "task") -> list[str]:
    """A smallest subset of ``axes`` (dropping the lowest priority first) that tells every
    (task, configuration) apart; returns it in priority order. A swept ``model.preset`` is
    always kept: it is the name a reader looks for, even when another axis implies it."""
    keys = [task_col] if task_col in runs.columns else []
    if "_absent" in runs.columns:  # decide on the rows that recorded every axis
        complete = runs["_absent"].map(lambda a: not (set(a) & set(axes)) if isinstance(a, tuple) else True)
        if complete.any():
            runs = runs[complete]
    target = _n_groups(runs, axes, keys)
    kept = list(axes)
    for col in reversed(list(axes)):
        if col == "model.preset":
            continue
        trial = [c for c in kept if c != col]
        if _n_groups(runs, trial, keys) == target:
            kept = trial
    return kept


def short_name(col: str, others: Sequence[str] = ()) -> str:
    """``model.ssm.gate`` -> ``gate``; keeps more of the dotted path when two names would clash."""
    if col in SHORT_NAMES:
        return SHORT_NAMES[col]
    parts = col.split(".")
    for k in range(1, len(parts) + 1):
        name = ".".join(parts[-k:])
        clashes = [o for o in others if o != col and ".".join(o.split(".")[-k:]) == name]
        if not clashes:
            return name
    return col


def format_value(value: Any) -> str:
    """A config value as a short string: 3.0 -> '3', 0.001 -> '0.001', NaN/None -> 'n/a'."""
    if value is None or value is pd.NA:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:g}"
    return str(value)


def sort_key(value: Any) -> tuple:
    """Natural order of axis values: baselines ('none', False, 0) first, numbers by size."""
    text = format_value(value)
    if text.lower() in _FIRST_VALUES:
        return (0, 0.0, text)
    try:
        return (1, float(text), text)
    except ValueError:
        return (2, 0.0, text.lower())


def config_labels(runs: pd.DataFrame, axes: Sequence[str], fallback: str = "preset") -> pd.Series:
    """One readable label per run from its values on ``axes`` (joined with ', ').

    With no axes (a single configuration), the label is the ``fallback`` column's value, or
    'all runs'.
    """
    if not axes:
        if fallback in runs.columns:
            return runs[fallback].map(format_value)
        return pd.Series("all runs", index=runs.index)
    return runs[list(axes)].apply(lambda row: ", ".join(format_value(v) for v in row), axis=1).astype(str)


def ordered_labels(runs: pd.DataFrame, axes: Sequence[str], labels: pd.Series) -> list[str]:
    """The distinct labels in natural order of their axis values (see :func:`sort_key`)."""
    if not axes:
        return sorted(labels.unique(), key=sort_key)
    frame = runs[list(axes)].assign(_label=labels).drop_duplicates("_label")
    rows = sorted(frame.to_dict("records"), key=lambda r: tuple(sort_key(r[a]) for a in axes))
    return [r["_label"] for r in rows]


def axis_values(runs: pd.DataFrame, axes: Sequence[str]) -> dict[str, list[str]]:
    """For each axis, its distinct values (formatted) in natural order."""
    return {a: [format_value(v) for v in sorted(runs[a].dropna().unique(), key=sort_key)]
            + (["n/a"] if runs[a].isna().any() else []) for a in axes}


def constant_config(runs: pd.DataFrame, columns: Sequence[str]) -> dict[str, str]:
    """Of ``columns``, those with a single value across ``runs``: {column: formatted value}."""
    out = {}
    for col in columns:
        if col in runs.columns:
            values = _values(runs, col).dropna()
            if len(values) and values.nunique() == 1:
                out[col] = format_value(runs.loc[values.index[0], col])
    return out


def add_config_column(runs: pd.DataFrame, axes: Sequence[str], column: str = "config") -> pd.DataFrame:
    """A copy of ``runs`` with a ``config`` column of labels (see :func:`config_labels`)."""
    out = runs.copy()
    out[column] = config_labels(runs, axes)
    return out
