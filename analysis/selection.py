"""Per-configuration tuning: keep, for each (task, configuration, seed), the run with the best
validation score.

An experiment may sweep some config keys only to *tune* each configuration (the runner records
them per run in ``tuned``, comma-separated, e.g. ``trainer.lr,trainer.ssm_lr``; ``none`` when
nothing is tuned). Those keys are not configuration axes: the runs of one configuration and seed
that differ only in them are candidates, and exactly one of them represents that configuration
and seed in every table, plot and summary.

Rules (the test metric is never read here):

- the candidates of a (task, configuration, seed) are its runs; only runs with status ``ok``
  compete, on ``final_val_<metric>``: the validation score of the final weights, which are the
  weights the runner measures the test metric on (``best_val_<metric>``, the best over the
  run's evaluations, may come from earlier weights; it is used only where the final is missing);
- the direction comes from the recorded ``higher_is_better`` column, else from the metric name
  (accuracy: higher is better; mse, loss: lower);
- ties (equal validation scores) go to the smaller tuned values, in the order the keys are
  listed (e.g. the smaller learning rate), then to the smaller run id;
- when no candidate is ok, the (configuration, seed) is represented by one of its runs with
  status ``diverged`` (all candidates diverged) or ``failed`` (otherwise): it is counted, never
  averaged in.

Selected rows get three hidden columns: ``_candidates`` (runs of the group), ``_competed``
(ok runs that competed) and ``_val`` (the validation score the choice used).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .axes import _hashable, axis_values, format_value, short_name, sort_key
from .stats import OK, metric_direction

log = logging.getLogger(__name__)

TUNED = "tuned"
_NOTHING = {"", "none", "nan", "null", "[]"}


def tuned_keys(runs: pd.DataFrame) -> list[str]:
    """The config keys any run says it was tuned over (``tuned`` column), in first-seen order.

    Keys that are not run columns are left out with a warning (nothing to select over)."""
    if runs.empty or TUNED not in runs.columns:
        return []
    keys: list[str] = []
    for value in runs[TUNED].dropna():
        for key in str(value).split(","):
            key = key.strip()
            if key.lower() not in _NOTHING and key not in keys:
                keys.append(key)
    missing = [k for k in keys if k not in runs.columns]
    if missing:
        log.warning("tuned key(s) %s are not columns of the runs; left out of the tuning grid", ", ".join(missing))
    return [k for k in keys if k in runs.columns]


def tuning_recorded(runs: pd.DataFrame) -> bool:
    """True when the runs say whether they were tuned (a runner that writes ``tuned``)."""
    return TUNED in runs.columns and runs[TUNED].notna().any()


def _as_bool(value: Any) -> bool | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def higher_is_better(runs: pd.DataFrame, metric: str) -> bool:
    """Whether a higher ``metric`` is better for these runs: the recorded ``higher_is_better``
    (the most common value, with a warning when runs disagree), else from the metric name."""
    if "higher_is_better" in runs.columns:
        recorded = runs["higher_is_better"].map(_as_bool).dropna()
        if len(recorded):
            counts = Counter(bool(v) for v in recorded)
            if len(counts) > 1:
                log.warning("runs disagree on higher_is_better for %s; using the most common value", metric)
            return counts.most_common(1)[0][0]
    return metric_direction(metric)


def validation_score(runs: pd.DataFrame, metric: str) -> pd.Series:
    """``final_val_<metric>`` per run (the tested weights), ``best_val_<metric>`` where the final
    is missing (NaN when neither)."""
    score = pd.Series(float("nan"), index=runs.index, dtype=float)
    for col in (f"final_val_{metric}", f"best_val_{metric}"):
        if col in runs.columns:
            score = score.fillna(pd.to_numeric(runs[col], errors="coerce"))
    return score


def _tie_key(row: pd.Series, tuned: Sequence[str]) -> tuple:
    return tuple(sort_key(row[k]) for k in tuned if k in row.index) + (str(row.get("run_id", "")),)


def select_runs(runs: pd.DataFrame, axes: Sequence[str], tuned: Sequence[str], task_col: str = "task") -> pd.DataFrame:
    """One run per (task, configuration, seed): the ok run with the best validation score.

    runs: every run (all statuses), with ``metric`` and ``seed``.
    axes: the configuration axes (swept columns that are not tuned keys).
    tuned: the tuned keys (see :func:`tuned_keys`); with none, every run is kept as it is.
    Returns the selected rows (index reset) with ``_candidates``, ``_competed`` and ``_val``
    columns; see the module docstring for the rules. Test metrics are never read.
    """
    out = runs.copy()
    if runs.empty or not tuned:
        out["_candidates"] = 1
        out["_competed"] = (out["status"] == OK).astype(int) if "status" in out.columns else 1
        out["_val"] = float("nan")
        return out
    keys = [c for c in [task_col, *axes, "seed"] if c in runs.columns]
    group_of = pd.Series(list(zip(*[runs[c].map(_hashable) for c in keys])), index=runs.index)
    direction = {task: higher_is_better(g, str(g["metric"].mode().iloc[0]))
                 for task, g in runs.groupby(task_col, sort=False)}
    chosen: list[tuple[Any, int, int, float, str | None]] = []
    for _, index in group_of.groupby(group_of, sort=False).groups.items():
        group = runs.loc[index]
        first = group.iloc[0]
        metric = str(first["metric"])
        higher = direction[first[task_col]]
        ok = group[group["status"] == OK]
        if len(ok):
            score = validation_score(ok, metric)
            pool = ok[score.notna()]
            if pool.empty:
                pool = ok
                if len(ok) > 1:
                    log.warning("%s, seed %s: no validation score among %d ok candidates; picked by the tie rule "
                                "(smallest tuned values), not on a metric", first[task_col],
                                format_value(first.get("seed")), len(ok))
            scores = validation_score(pool, metric)
            best = min(pool.index, key=lambda i: (
                0 if np.isfinite(scores[i]) else 1,
                (-scores[i] if higher else scores[i]) if np.isfinite(scores[i]) else 0.0,
                _tie_key(pool.loc[i], tuned)))
            chosen.append((best, len(group), len(ok), float(scores[best]), None))
        else:
            statuses = set(group["status"].astype(str))
            status = statuses.pop() if len(statuses) == 1 else "failed"
            best = min(group.index, key=lambda i: _tie_key(group.loc[i], tuned))
            chosen.append((best, len(group), 0, float("nan"), status))
    picked = out.loc[[c[0] for c in chosen]].copy()
    picked["_candidates"] = [c[1] for c in chosen]
    picked["_competed"] = [c[2] for c in chosen]
    picked["_val"] = [c[3] for c in chosen]
    picked["status"] = [c[4] or s for c, s in zip(chosen, picked["status"])]
    picked = picked.sort_index()
    log.info("selection on validation: %d runs -> %d (configuration, seed) pairs, tuned over %s",
             len(runs), len(picked), ", ".join(tuned))
    return picked.reset_index(drop=True)


def tuning_grid(runs: pd.DataFrame, tuned: Sequence[str]) -> dict[str, list[str]]:
    """The values each tuned key took across ``runs`` (formatted, natural order)."""
    return axis_values(runs, [k for k in tuned if k in runs.columns])


def grid_points(runs: pd.DataFrame, tuned: Sequence[str]) -> list[tuple[str, ...]]:
    """The distinct (formatted) points of the tuning grid the runs tried, in natural order."""
    if runs.empty or not tuned:
        return []
    points = {tuple(format_value(v) for v in row) for row in runs[list(tuned)].itertuples(index=False)}
    return sorted(points, key=lambda p: tuple(sort_key(v) for v in p))


def grid_notes(runs: pd.DataFrame, tuned: Sequence[str], config_col: str = "config") -> list[str]:
    """Warnings about an uneven grid: configurations tried over different grids, or
    (configuration, seed) pairs with fewer candidates than the full grid."""
    tuned = [k for k in tuned if k in runs.columns]
    if runs.empty or not tuned or config_col not in runs.columns:
        return []
    point = runs[tuned].apply(lambda r: tuple(_hashable(v) for v in r), axis=1)
    frame = pd.DataFrame({"config": runs[config_col], "seed": runs["seed"].map(_hashable), "point": point})
    per_config = frame.groupby("config", sort=False)["point"].agg(lambda p: frozenset(p))
    notes = []
    if per_config.nunique() > 1:
        full = frozenset().union(*per_config)
        fewer = [c for c, p in per_config.items() if p != full]
        notes.append("grids differ across configurations (" + "; ".join(fewer) + " tried a subset)")
    counts = frame.groupby(["config", "seed"], sort=False)["point"].nunique()
    most = per_config.map(len)
    short = [(c, s) for (c, s), n in counts.items() if n < most[c]]
    if short:
        notes.append(f"{len(short)} (configuration, seed) pair(s) have fewer runs than their configuration's grid")
    return notes


def tuning_phrase(runs: pd.DataFrame, tuned: Sequence[str], metric: str) -> str:
    """One sentence for a caption: what was tuned, over which grid, on which split.

    runs: every run of one task (candidates included), with ``config``.
    '' when the runs do not record tuning (older runner)."""
    if not tuned:
        return "Hyperparameters not tuned: the same for every configuration." if tuning_recorded(runs) else ""
    grid = tuning_grid(runs, tuned)
    keys = [k for k in tuned if k in grid]
    points = grid_points(runs, keys)
    if len(points) == 1:
        fixed = ", ".join(f"{k} = {v}" for k, v in zip(keys, points[0]))
        return f"Not tuned: a one-point grid ({fixed}) for every configuration."
    if len(keys) > 1 and len(points) < math.prod(len(grid[k]) for k in keys):  # tied keys: list the points
        over = f"({', '.join(keys)}) ∈ {{{', '.join('(' + ', '.join(p) + ')' for p in points)}}}"
    else:
        over = ", ".join(f"{k} ∈ {{{', '.join(grid[k])}}}" for k in keys)
    text = (f"Tuned over {over} on validation (final validation {metric}, of the weights tested), per "
            "configuration and seed; test metric of the selected run.")
    notes = grid_notes(runs, tuned)
    return text + (" Note: " + "; ".join(notes) + "." if notes else "")


def selected_values(selected: pd.DataFrame, tuned: Sequence[str], order: Sequence[str],
                    config_col: str = "config") -> dict[str, list[str]]:
    """For each tuned key, per configuration in ``order``: the value most often selected among its
    ok runs ('0.003', or '0.003 (2/3)' when the seeds disagree; '—' without ok runs).

    Ties between values go to the smaller one."""
    ok = selected[selected["status"] == OK] if "status" in selected.columns else selected
    out: dict[str, list[str]] = {}
    for key in tuned:
        if key not in ok.columns:
            continue
        texts = []
        for config in order:
            values = ok.loc[ok[config_col] == config, key]
            if values.empty:
                texts.append("—")
                continue
            counts = Counter(format_value(v) for v in values)
            top = sorted(counts.items(), key=lambda kv: (-kv[1], sort_key(kv[0])))[0]
            texts.append(top[0] if top[1] == len(values) else f"{top[0]} ({top[1]}/{len(values)})")
        out[key] = texts
    return out


def selected_headers(tuned: Sequence[str]) -> dict[str, str]:
    """Table header of each tuned key's selected-value column: 'Sel. lr', 'Sel. ssm_lr'."""
    return {k: f"Sel. {short_name(k, tuned)}" for k in tuned}


def selection_lines(all_runs: pd.DataFrame, selected: pd.DataFrame, tuned: Sequence[str],
                    metric_by_task: Mapping[str, str]) -> list[str]:
    """Bullets for the summary: what was tuned, over which grid, how many runs were candidates."""
    if not tuned:
        return ["- Hyperparameters not tuned: one run per configuration and seed, the same settings for all."] \
            if tuning_recorded(all_runs) else []
    lines = []
    for task, metric in metric_by_task.items():
        runs = all_runs[all_runs["task"] == task]
        chosen = selected[selected["task"] == task]
        lost = runs[(runs["status"] != OK) & ~runs["run_id"].isin(set(chosen["run_id"]))] \
            if "run_id" in runs.columns else runs.iloc[0:0]
        lines.append(f"- {task}: {tuning_phrase(runs, tuned, metric)} {len(runs)} runs → {len(chosen)} "
                     f"(configuration, seed) pairs; {int((chosen['status'] == OK).sum())} with an ok run selected"
                     + (f"; {len(lost)} grid run(s) diverged or failed and could not be selected" if len(lost) else "")
                     + ".")
    return lines
