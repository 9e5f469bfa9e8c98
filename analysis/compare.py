"""Two result sets side by side: ours against a paper's numbers (a CSV), or two of our runs.

    python -m analysis --compare results/mimo_vs_siso paper_s5.csv --key model.preset

Each side becomes a long frame (task, label, metric, mean, std, n):

- a **results directory** (or glob): ok runs aggregated over seeds, one row per (task,
  configuration, metric), where the configuration label is the values of ``key`` columns joined
  with ', ' (default: the report's configuration labels) and the metric is the column name
  without its ``test_`` prefix (``test_accuracy`` -> ``accuracy``; ``param_count`` stays);
- a **CSV of published numbers** with columns label (or configuration, config, model, name),
  value (or mean, score), and optionally task, metric, std, n. A missing metric means the task's
  metric; accuracies written in percent (any value above 1) are divided by 100, and the
  caption says so.

Rows are matched on (task, label, metric); labels compare case- and space-insensitively. A
side that names no task stands for every task of the other side, and a missing metric is the
task's own test metric. Unmatched rows stay in the table with a dash
on the side that lacks them. Output: compare.md/.tex (Task | Configuration | Metric | A | B |
Δ = A − B), compare.csv, compare.png/.pdf (mean ± std, clipped to the metric's range); a
rerun removes the files an earlier one wrote there and no longer writes (:mod:`analysis.outputs`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .axes import format_value, ordered_labels
from .errors import AnalysisError
from .load import load_results
from .outputs import output_folder, replace_outputs
from .plots import FORMATS, PANEL_HEIGHT, add_note, check_formats, save_figure, style
from .report import aggregated_columns, analyse
from .stats import aggregate, value_range
from .tables import Cell, Table, decimals_for, to_latex, to_markdown

log = logging.getLogger(__name__)

LABEL_NAMES = ("label", "configuration", "config", "model", "name")
VALUE_NAMES = ("value", "mean", "score")
STD_NAMES = ("std", "stdev", "sd")
N_NAMES = ("n", "seeds", "count")


@dataclass
class Side:
    """One side of a comparison: a display ``name``, its long ``frame`` (task, label, metric,
    mean, std, n, order) and notes for the caption."""

    name: str
    frame: pd.DataFrame
    published: bool
    source: str
    notes: list[str]


def _pick(columns: Sequence[str], names: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def normalize_label(text: object) -> str:
    """Labels compare case-insensitively and ignoring spaces: ' S4D,  glu ' -> 's4d,glu'."""
    return re.sub(r"\s+", "", str(text)).lower()


def read_published(path: str | Path, name: str | None = None) -> Side:
    """A CSV of published numbers (see the module docstring); raises AnalysisError if it lacks
    a label or value column."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"published results {str(path)!r} do not exist")
    try:
        raw = pd.read_csv(path)
    except Exception as err:
        raise AnalysisError(f"cannot read {str(path)!r} as CSV: {err}") from None
    label, value = _pick(raw.columns, LABEL_NAMES), _pick(raw.columns, VALUE_NAMES)
    if label is None or value is None:
        raise AnalysisError(f"{str(path)!r} needs a label column ({'/'.join(LABEL_NAMES)}) and a value column "
                            f"({'/'.join(VALUE_NAMES)}); it has {list(raw.columns)}")
    task, metric = _pick(raw.columns, ("task",)), _pick(raw.columns, ("metric",))
    std, n = _pick(raw.columns, STD_NAMES), _pick(raw.columns, N_NAMES)
    frame = pd.DataFrame({
        "task": raw[task].astype(str).str.strip() if task else np.nan,
        "label": raw[label].astype(str).str.strip(),
        "metric": raw[metric].astype(str).str.strip().str.removeprefix("test_") if metric else np.nan,
        "mean": pd.to_numeric(raw[value], errors="coerce"),
        "std": pd.to_numeric(raw[std], errors="coerce") if std else np.nan,
        "n": pd.to_numeric(raw[n], errors="coerce") if n else np.nan,
    })
    frame.loc[frame["task"].isin(["", "nan"]), "task"] = np.nan
    frame["order"] = range(len(frame))
    return Side(name=name or path.stem, frame=frame, published=True, source=str(path), notes=[])


def read_ours(inputs: Sequence[str], key: Sequence[str] | None = None, name: str | None = None) -> Side:
    """Our results (directories or globs) aggregated over seeds into the long form; ``key``
    columns name the configurations (default: the report's labels)."""
    results = load_results(inputs)
    an = analyse(results)
    if an.runs.empty:
        raise AnalysisError(f"no runs in {', '.join(map(str, inputs))} to compare")
    runs = an.runs
    if key:
        missing = [k for k in key if k not in runs.columns]
        if missing:
            raise AnalysisError(f"--key {','.join(missing)} is not a column of the runs in {', '.join(map(str, inputs))}")
        runs = runs.assign(config=runs[list(key)].apply(lambda r: ", ".join(format_value(v) for v in r), axis=1))
        agg = aggregate(runs, ["task", "config"], aggregated_columns(runs, set(an.metric_by_task.values())))
        order = {t: ordered_labels(g, list(key), g["config"]) for t, g in runs.groupby("task")}
    else:
        agg, order = an.agg, an.order
    rows = []
    for (task, config), row in agg.iterrows():
        for column in agg.columns.get_level_values(0).unique():
            stats = row[column]
            if stats["n"] == 0:
                continue
            metric = column.removeprefix("test_")
            rows.append({"task": task, "label": config, "metric": metric, "mean": stats["mean"], "std": stats["std"],
                         "n": stats["n"], "order": order[task].index(config) if config in order[task] else 0,
                         "primary": metric == an.metric_by_task.get(task)})
    frame = pd.DataFrame(rows)
    excluded = int((runs["status"] != "ok").sum())
    notes = [f"{name or results.dirs[0].name}: {excluded} diverged/failed run(s) not averaged in"] if excluded else []
    return Side(name=name or results.dirs[0].name, frame=frame, published=False,
                source=", ".join(str(d) for d in results.dirs), notes=notes)


def load_side(spec: str, key: Sequence[str] | None = None, name: str | None = None) -> Side:
    """A CSV file -> published numbers; anything else -> our results directory (or glob)."""
    if spec.lower().endswith(".csv"):
        return read_published(spec, name)
    return read_ours([spec], key, name)


def _fill(frame: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """A side without tasks stands for every task of the other side (its rows repeat per task);
    a missing metric is the task's own metric on the other side (when that side is ours)."""
    frame = frame.copy()
    if frame["task"].isna().all() and other["task"].notna().any():
        tasks = pd.DataFrame({"task": other["task"].dropna().unique()})
        frame = frame.drop(columns="task").merge(tasks, how="cross")
    if frame["metric"].isna().any() and "primary" in other.columns:
        primary = other[other["primary"]].drop_duplicates("task").set_index("task")["metric"]
        frame["metric"] = frame["metric"].fillna(frame["task"].map(primary))
    return frame


def _percent_to_fraction(side: Side, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Published accuracies above 1 are percentages: divide them (and their std) by 100."""
    accuracy = frame["metric"].astype(str).str.contains("accuracy")
    if not side.published or not accuracy.any() or not (frame.loc[accuracy, "mean"] > 1).any():
        return frame, []
    frame = frame.copy()
    frame.loc[accuracy, ["mean", "std"]] = frame.loc[accuracy, ["mean", "std"]] / 100
    return frame, [f"{side.name}: accuracies given in percent, divided by 100"]


def resolve(a: Side, b: Side) -> tuple[Side, Side]:
    """Make two sides comparable: fill a published side's missing task and metric from the other
    side, turn published percentages into fractions, and keep the comparable rows (the metrics,
    and tasks when named, that a published side reports; the tasks' own test metric when both
    sides are ours). Returns new sides; resolving twice changes nothing."""
    fa, fb = _fill(a.frame, b.frame), _fill(b.frame, a.frame)
    fa, notes_a = _percent_to_fraction(a, fa)
    fb, notes_b = _percent_to_fraction(b, fb)
    if not a.published and not b.published:
        fa, fb = fa[fa["primary"]], fb[fb["primary"]]
    else:
        pub = fa if a.published else fb
        names, tasks = set(pub["metric"]), set(pub["task"].dropna())
        fa, fb = fa[fa["metric"].isin(names)], fb[fb["metric"].isin(names)]
        if tasks:
            fa, fb = fa[fa["task"].isin(tasks) | fa["task"].isna()], fb[fb["task"].isin(tasks) | fb["task"].isna()]
    return (replace(a, frame=fa.reset_index(drop=True), notes=a.notes + notes_a),
            replace(b, frame=fb.reset_index(drop=True), notes=b.notes + notes_b))


def align(a: Side, b: Side) -> pd.DataFrame:
    """Outer join of the two sides (after :func:`resolve`) on (task, label, metric); columns
    task, label, metric, mean_a, std_a, n_a, mean_b, std_b, n_b, diff (= mean_a - mean_b), matched."""
    a, b = resolve(a, b)
    fa, fb = a.frame.copy(), b.frame.copy()
    both_tasks = fa["task"].notna().any() and fb["task"].notna().any()
    for f in (fa, fb):
        f["key"] = f["label"].map(normalize_label)
    on = ["key", "metric"] + (["task"] if both_tasks else [])
    keep = ["task", "label", "order"]
    merged = fa.merge(fb, on=on, how="outer", suffixes=("_a", "_b"))
    for col in keep:
        if col in on:
            continue
        merged[col] = merged[f"{col}_a"].combine_first(merged[f"{col}_b"])
    merged["diff"] = merged["mean_a"] - merged["mean_b"]
    merged["matched"] = merged["mean_a"].notna() & merged["mean_b"].notna()
    merged = merged.sort_values(["task", "order", "label", "metric"], kind="stable", na_position="last")
    return merged[["task", "label", "metric", "mean_a", "std_a", "n_a", "mean_b", "std_b", "n_b", "diff", "matched"]
                  ].reset_index(drop=True)


def compare_table(merged: pd.DataFrame, a: Side, b: Side, key: Sequence[str] | None = None) -> Table:
    """Side-by-side table: [Task] | Configuration | [Metric] | A | B | Δ (A − B)."""
    show_task = merged["task"].nunique(dropna=True) > 1
    show_metric = merged["metric"].nunique(dropna=True) > 1
    header = (["Task"] if show_task else []) + ["Configuration"] + (["Metric"] if show_metric else [])
    n_text = len(header)
    header += [a.name, b.name, f"Δ ({a.name} − {b.name})"]
    decimals = {m: decimals_for(list(g["mean_a"]) + list(g["mean_b"])) for m, g in merged.groupby("metric")}
    body = []
    for _, r in merged.iterrows():
        d = decimals.get(r["metric"], 3)
        row = ([Cell(text=format_value(r["task"]))] if show_task else []) + [Cell(text=str(r["label"]))]
        row += [Cell(text=str(r["metric"]))] if show_metric else []
        for side in ("a", "b"):
            mean, n = r[f"mean_{side}"], r[f"n_{side}"]
            count = int(n) if np.isfinite(n) else (1 if np.isfinite(mean) else 0)
            row.append(Cell(mean=mean, std=r[f"std_{side}"], n=count, decimals=d, show_n=bool(np.isfinite(n))))
        row.append(Cell(text=f"{r['diff']:+.{d}f}") if np.isfinite(r["diff"]) else Cell(n=0))
        body.append(row)
    matched = int(merged["matched"].sum())
    how = f"by the values of {', '.join(key)}" if key else "by configuration label"
    metric_text = ", ".join(sorted(merged["metric"].dropna().unique()))
    tasks = sorted(merged["task"].dropna().astype(str).unique())
    metric_text += f" on {', '.join(tasks)}" if tasks and not show_task else ""
    caption = (f"{metric_text}: {a.name} ({a.source}) against {b.name} ({b.source}); "
               f"mean ± std (n) where known; Δ = {a.name} − {b.name}. Rows matched {how}: "
               f"{matched} of {len(merged)}.")
    notes = a.notes + b.notes
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Table(header=header, rows=body, caption=caption, label="tab:compare", n_text=n_text)


NOTE = ("Dots: mean; error bars: ± 1 std (over seeds for our runs, as published otherwise), clipped to the "
        "metric's range (accuracy [0, 1], loss and mse ≥ 0); none where no std is known.")


def std_bars(mean: np.ndarray, std: np.ndarray, metric: str) -> np.ndarray:
    """[[below], [above]] error bar lengths of mean ± std, clipped to the range of ``metric``
    (0 where the std is unknown)."""
    std = np.where(np.isfinite(std), std, 0.0)
    floor, ceiling = value_range(metric)
    low, high = np.clip(mean - std, floor, ceiling), np.clip(mean + std, floor, ceiling)
    return np.array([np.maximum(mean - low, 0.0), np.maximum(high - mean, 0.0)])


def plot_compare(merged: pd.DataFrame, a: Side, b: Side, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Dots per configuration for each side (error bar = ± 1 std, clipped to the metric's range),
    a panel per (task, metric)."""
    panels = [(t, m) for (t, m), g in merged.groupby(["task", "metric"], dropna=False, sort=False)
              if g[["mean_a", "mean_b"]].notna().any().any()]
    if not panels:
        return []
    colours = sns.color_palette("colorblind", 2)
    with style():
        cols = min(len(panels), 3)
        rows_ = int(np.ceil(len(panels) / cols))
        width = max(4.5, 0.7 * merged.groupby(["task", "metric"], dropna=False).size().max() + 2)
        fig = Figure(figsize=(width * cols, (PANEL_HEIGHT + 0.6) * rows_), layout="constrained")
        axes = fig.subplots(rows_, cols, squeeze=False)
        for ax, (task, metric) in zip(axes.flat, panels):
            group = merged[(merged["task"].fillna("") == ("" if pd.isna(task) else task)) & (merged["metric"] == metric)]
            x = np.arange(len(group))
            for offset, side, colour, who in ((-0.12, "a", colours[0], a.name), (0.12, "b", colours[1], b.name)):
                mean = group[f"mean_{side}"].to_numpy(float)
                ax.errorbar(x + offset, mean, yerr=std_bars(mean, group[f"std_{side}"].to_numpy(float), str(metric)),
                            fmt="o", capsize=3, color=colour, label=who)
            ax.set_xticks(x, group["label"].astype(str))
            if sum(len(str(l)) for l in group["label"]) > 28:
                for tick in ax.get_xticklabels():
                    tick.set_rotation(30)
                    tick.set_horizontalalignment("right")
            ax.set_ylabel(f"{metric} (mean ± std)")
            ax.set_title(format_value(task) if not pd.isna(task) else "")
            ax.legend(fontsize="small")
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        add_note(fig, NOTE)
        paths = save_figure(fig, stem, formats)
        fig.clear()
        return paths


def run_compare(spec_a: str, spec_b: str, out: str | Path | None = None, key: Sequence[str] | None = None,
                names: Sequence[str] | None = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Load both sides, align them, write compare.md/.tex/.csv and the plot; returns the files.

    out: default ``<A>/report`` when A is a results directory, else ``<B>/report``, else
    ``./compare_report``.
    """
    check_formats(formats)
    names = list(names or [None, None])
    a, b = load_side(spec_a, key, names[0]), load_side(spec_b, key, names[1])
    if a.name == b.name:
        a.name, b.name = f"A: {a.name}", f"B: {b.name}"
    a, b = resolve(a, b)
    merged = align(a, b)
    if merged.empty:
        raise AnalysisError(f"nothing to compare between {spec_a!r} and {spec_b!r} (no shared metrics)")
    if not merged["matched"].any():
        log.warning("no row of %s matched a row of %s; check --key or the labels", a.name, b.name)
    if out is None:
        base = next((Path(s) for s, side in ((spec_a, a), (spec_b, b)) if not side.published and Path(s).is_dir()), None)
        out = base / "report" if base is not None else Path("compare_report")
    out = output_folder(out)
    table = compare_table(merged, a, b, key)
    written = []
    for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
        path = out / f"compare{suffix}"
        path.write_text(render(table))
        written.append(path)
    merged.rename(columns={c: c.replace("_a", f"_{a.name}").replace("_b", f"_{b.name}")
                           for c in merged.columns if c.endswith(("_a", "_b"))}).to_csv(out / "compare.csv", index=False)
    written.append(out / "compare.csv")
    written += plot_compare(merged, a, b, out / "compare", formats)
    replace_outputs(out, written)
    return written

