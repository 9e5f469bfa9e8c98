"""One result set -> a report directory: tables (Markdown, LaTeX, CSV), figures (PNG, PDF), summary.md.

    analysis = analyse(load_results(["results/mimo_vs_siso"]))
    files = write_report(analysis, Path("results/mimo_vs_siso/report"))

:func:`analyse` does all the bookkeeping once (swept axes, selection of the tuned runs on
validation, configuration labels, aggregation over seeds, status counts, the baseline row of
each task); the table, plot and summary functions only format it. The notebooks in
``analysis/notebooks`` call the same functions.

A fair comparison, in every results table:

- tuning: when runs were tuned (``tuned`` column), one run per (configuration, seed) is selected
  on validation (:mod:`analysis.selection`); the caption names the tuned keys and the grid, and
  ``Sel. <key>`` columns show the values selected;
- budget: the caption states what every row was given equally (``budget_kind`` =
  ``budget_value``), or warns that budgets differ and between which rows;
- significance: a 95% CI column (Student-t, over seeds, clipped to the metric's range) and † on
  rows whose test metric differs from the baseline row's (two-sided Welch's t-test, p < 0.05,
  >= 3 seeds in both cells; :mod:`analysis.significance`).

Files written (those without data are skipped):

    summary.md                       what was compared, what was held equal, headline differences
    tables.md, tables.tex            every table below, concatenated
    results_<task>.md/.tex           configurations x metrics, mean ± std (n), best in bold
    extrapolation_<task>.md/.tex     metric on the test split and at each test length (induction heads)
    speed_time.md/.tex, speed_memory.md/.tex   benchmark: time and memory per length
    aggregate.csv                    the numbers behind the tables (mean, std, n, ci95, status counts)
    final.png/.pdf                   final test metric per configuration, 95% CI, a panel per task
    curves.png/.pdf                  learning curves with a 95% band over seeds
    extrapolation.png/.pdf           metric against test length
    params.png/.pdf                  metric against parameter count, 95% CI
    heatmap.png/.pdf                 mean metric over two swept axes (when exactly two are swept)
    speed_time.png/.pdf, speed_memory.png/.pdf  log-log benchmark plots
    .manifest                        the files above that this report wrote (see :mod:`analysis.outputs`)

Every interval is clipped to the metric's valid range and named in captions and figure notes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import bench as bench_lib
from . import plots, selection, summary
from .axes import add_config_column, format_value, label_axes, ordered_labels, short_name, sort_key, swept_axes
from .load import ResultSet, load_results
from .outputs import output_folder, replace_outputs
from .significance import Baseline, p_text, resolve_baselines, significance, significance_phrase
from .stats import (aggregate, describe_excluded, extrapolation_columns, metric_direction, ok_runs,
                    range_text, status_counts, t_interval)
from .tables import Table, column_title, latex_label, results_table, seeds_phrase, to_latex, to_markdown

log = logging.getLogger(__name__)


# Metrics a task derives from its own (ablate's Task.derived_metrics), shown beside it in the
# results table when the runs recorded them: scaled accuracy (state-tracking tasks, Grazzi et
# al. and Mamba-3 App. D: (accuracy - 1/C) / (1 - 1/C), 0 at chance).
DERIVED = {"accuracy": ("scaled_accuracy",)}


def derived_metrics(runs: pd.DataFrame, metric: str) -> list[str]:
    """The derived metrics of ``metric`` (:data:`DERIVED`) whose test column ``runs`` filled."""
    return [d for d in DERIVED.get(metric, ()) if f"test_{d}" in runs.columns and runs[f"test_{d}"].notna().any()]


def table_columns(metric: str, derived: Sequence[str] = ()) -> list[str]:
    """The metric columns of a results table for a task scored by ``metric``, in order; each
    derived metric (e.g. ``scaled_accuracy``) beside the metric it is derived from."""
    columns = [f"test_{metric}", *(f"test_{d}" for d in derived), f"best_val_{metric}",
               *(f"best_val_{d}" for d in derived), "test_loss", "param_count", "state_size", "tokens_per_s",
               "peak_memory_mb"]
    return list(dict.fromkeys(columns))  # a task scored by its loss has one test_loss column


def aggregated_columns(runs: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """Every numeric result column worth aggregating: the table columns of each metric, the
    final-validation and timing columns, and the extrapolation columns."""
    cols: list[str] = []
    for metric in metrics:
        cols += table_columns(metric, derived_metrics(runs, metric)) + [f"final_val_{metric}"]
        cols += [c for _, c in extrapolation_columns(runs.columns, metric)]
    cols += ["final_val_loss", "train_time_s", "flops_per_token", "steps"]
    return [c for c in dict.fromkeys(cols) if c in runs.columns]


@dataclass
class Analysis:
    """A loaded result set with its bookkeeping done.

    runs:           one run per (task, configuration, seed), with a 'config' label column (all
                    statuses): every run, or when runs were tuned the one selected on validation
    axes:           swept config columns that are not tuned (see :func:`analysis.axes.swept_axes`)
    label_axes:     the subset that names configurations
    metric_by_task: task -> 'accuracy' | 'mse', in display order
    order:          task -> configuration labels in display order
    agg:            :func:`analysis.stats.aggregate` indexed by (task, config), ok runs only
    counts:         :func:`analysis.stats.status_counts` indexed by (task, config)
    curves:         curve rows of ok runs with task and config joined on
    bench:          benchmark rows (may be empty)
    palette:        config label -> colour
    all_runs:       every run (tuning candidates included), with 'config' and '_selected'
    tuned:          the config keys tuned per configuration and seed (empty: nothing tuned)
    higher_by_task: task -> whether a higher test metric is better
    baselines:      task -> the baseline row of its significance marks
    """

    results: ResultSet
    runs: pd.DataFrame
    axes: list[str]
    label_axes: list[str]
    metric_by_task: dict[str, str]
    order: dict[str, list[str]]
    agg: pd.DataFrame
    counts: pd.DataFrame
    curves: pd.DataFrame
    bench: pd.DataFrame
    palette: dict[str, tuple] = field(default_factory=dict)
    all_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    tuned: list[str] = field(default_factory=list)
    higher_by_task: dict[str, bool] = field(default_factory=dict)
    baselines: dict[str, Baseline] = field(default_factory=dict)

    @property
    def ok(self) -> pd.DataFrame:
        """The runs with status ok."""
        return ok_runs(self.runs)

    @property
    def axis_title(self) -> str:
        """The label axes' short names joined, for legends and axis titles."""
        return ", ".join(short_name(a, self.label_axes) for a in self.label_axes) or "configuration"

    def labels_frame(self, task: str) -> pd.DataFrame:
        """One row per configuration of ``task`` (index: config label, display order), one column
        per label axis (header: its short name) with the formatted values."""
        order = self.order[task]
        if not self.label_axes:
            return pd.DataFrame({"Configuration": order}, index=order)
        first = self.runs[self.runs["task"] == task].drop_duplicates("config").set_index("config")
        return pd.DataFrame({short_name(a, self.label_axes): [format_value(first.loc[c, a]) for c in order]
                             for a in self.label_axes}, index=order)


def analyse(results: ResultSet, baseline: str | None = None) -> Analysis:
    """Detect the swept and tuned axes, select the tuned runs on validation, label
    configurations, aggregate over seeds and pick each task's baseline row.

    baseline: the configuration significance is tested against (a label or ``key=value,...``,
        see :func:`analysis.significance.match_baseline`); default the first row of each table.
        Raises AnalysisError when it names no configuration.
    """
    runs = results.runs
    if runs.empty:  # benchmark results only
        runs = pd.DataFrame(columns=["run_id", "task", "metric", "status", "seed", "config"])
        empty = pd.DataFrame()
        return Analysis(results, runs, [], [], {}, {}, empty, empty, empty, results.bench, all_runs=runs)
    all_runs = runs
    tuned = selection.tuned_keys(all_runs)
    axes = [a for a in swept_axes(all_runs) if a not in tuned]
    if tuned:
        runs = selection.select_runs(all_runs, axes, tuned)
    labels = label_axes(runs, axes)
    runs = add_config_column(runs, labels)
    all_runs = add_config_column(all_runs, labels).assign(_selected=all_runs["run_id"].isin(set(runs["run_id"])))
    metric_by_task = {t: str(g["metric"].mode().iloc[0])
                      for t, g in sorted(runs.groupby("task", sort=False), key=lambda kv: str(kv[0]))}
    higher_by_task = {t: selection.higher_is_better(all_runs[all_runs["task"] == t], m)
                      for t, m in metric_by_task.items()}
    order = {t: ordered_labels(g, labels, g["config"]) for t, g in runs.groupby("task", sort=False)}
    agg = aggregate(runs, ["task", "config"], aggregated_columns(runs, set(metric_by_task.values())))
    counts = status_counts(runs, ["task", "config"])
    curves = results.curves
    if not curves.empty:
        info = ok_runs(runs)[["run_id", "task", "config", "seed"]]
        curves = curves.drop(columns=[c for c in ("task", "config", "seed") if c in curves.columns]).merge(
            info, on="run_id", how="inner")
    all_labels = [l for t in metric_by_task for l in order[t]]
    baselines = resolve_baselines(runs, {t: order[t] for t in metric_by_task}, axes, baseline)
    return Analysis(results=results, runs=runs, axes=axes, label_axes=labels, metric_by_task=metric_by_task,
                    order=order, agg=agg, counts=counts, curves=curves, bench=results.bench,
                    palette=plots.palette_for(all_labels), all_runs=all_runs, tuned=tuned,
                    higher_by_task=higher_by_task, baselines=baselines)


def higher(an: Analysis, task: str) -> bool:
    """Whether a higher test metric is better on ``task`` (recorded, else from the metric name)."""
    return an.higher_by_task.get(task, metric_direction(an.metric_by_task[task]))


def higher_by_task(an: Analysis) -> dict[str, bool]:
    """{task: whether a higher test metric is better} (:func:`higher`)."""
    return {task: higher(an, task) for task in an.metric_by_task}


def task_significance(an: Analysis, task: str) -> pd.DataFrame:
    """:func:`analysis.significance.significance` of the task's test metric against its baseline."""
    column = f"test_{an.metric_by_task[task]}"
    return significance(an.runs[an.runs["task"] == task], column, an.order[task], an.baselines[task].label)


def fairness_phrase(an: Analysis, task: str) -> str:
    """Caption sentences on tuning and budget for one task ('' parts left out)."""
    runs = an.all_runs[an.all_runs["task"] == task] if not an.all_runs.empty else an.runs[an.runs["task"] == task]
    parts = [selection.tuning_phrase(runs, an.tuned, an.metric_by_task[task]),
             summary.budget_phrase(runs, order=an.order.get(task))]
    return " ".join(p for p in parts if p)


def task_caption(an: Analysis, task: str, lead: str | None = None) -> str:
    """Caption of a task's results table: metric and direction, seeds, what was held equal,
    how many runs were excluded and why. ``lead``: the table's first column when it is not
    the test metric (the caption then names the task only)."""
    metric = an.metric_by_task[task]
    column = f"test_{metric}"
    runs = an.runs[an.runs["task"] == task]
    ok = ok_runs(runs)
    n_cells = list(an.agg.loc[task][column]["n"]) if column in an.agg.columns.get_level_values(0) else []
    seeds = seeds_phrase(n_cells, ok["seed"].nunique() if "seed" in ok else 0)
    direction = "higher" if higher(an, task) else "lower"
    title = (f"{column_title(column, arrows=False)} on {task} ({direction} is better)" if lead in (None, column)
             else f"Results on {task}")
    clipped = f", clipped to the metric's range {range_text(column)}" if range_text(column) else ""
    ci = (f"95% CI: Student-t interval of the mean over seeds (n ≥ 2){clipped}. "
          if any(n >= 2 for n in n_cells) else "")
    sig = significance_phrase(task_significance(an, task), an.baselines[task]) if n_cells else ""
    caption = (f"{title}: mean ± std over {seeds}; "
               f"n = successful runs per cell in parentheses; best per column in bold. {ci}"
               + (f"{sig} " if sig else "")
               + " ".join(p for p in (fairness_phrase(an, task), summary.held_equal_phrase(runs)) if p))
    excluded = describe_excluded(an.counts.loc[task].drop(columns="total").sum())
    caption += f" Excluded from the means: {excluded} run(s)." if excluded else ""
    return caption


MEMORY_KINDS = {
    "cpu_allocator_profiler": "PyTorch's CPU allocator peak of the run (one profiled training step per curriculum "
                              "stage and one evaluation batch, plus parameters, gradients and optimiser state)",
    "cuda_allocator": "the CUDA allocator's peak of the run",
    "process_max_rss": "the process's maximum resident set since it started (in a sweep it includes the runs "
                       "before, so it is not a per-run figure)",
}


PER_RUN_MEMORY = {"cpu_allocator_profiler", "cuda_allocator"}


def _memory_kinds(runs: pd.DataFrame) -> set[str]:
    return set(runs["peak_memory_kind"].dropna()) if "peak_memory_kind" in runs else set()


def memory_comparable(runs: pd.DataFrame) -> bool:
    """False when the rows mix per-run peaks (allocators) with per-process resident sets (older
    rows): figures that cannot be ranked against each other."""
    kinds = _memory_kinds(runs)
    return not (kinds & PER_RUN_MEMORY and kinds - PER_RUN_MEMORY)


def memory_phrase(runs: pd.DataFrame) -> str:
    """What the table's peak memory measures, from the rows' ``peak_memory_kind``."""
    if "peak_memory_kind" not in runs:
        return " Peak mem.: how it was measured is not recorded."
    described = "; ".join(MEMORY_KINDS.get(k, k) for k in sorted(_memory_kinds(runs))) or "not recorded"
    mixed = "" if memory_comparable(runs) else (" The rows mix per-run and per-process figures, which are not "
                                                "comparable: no value of that column is in bold.")
    return f" Peak mem.: {described}.{mixed}"


def memory_title(runs: pd.DataFrame) -> str:
    """The peak-memory column's header: per run, per process (older rows), or see the caption
    (both kinds: no arrow, as nothing is ranked)."""
    kinds = _memory_kinds(runs)
    if kinds and kinds <= PER_RUN_MEMORY:
        return "Peak mem./run (MB) ↓"
    if kinds == {"process_max_rss"}:
        return "Peak RSS/process (MB) ↓"
    return "Peak mem. (MB, see caption)" + ("" if not memory_comparable(runs) else " ↓")


def malloc_settings(runs: pd.DataFrame) -> set[str]:
    """The glibc malloc settings the rows trained under (``glibc_tunables``; '' for glibc's
    defaults, also where a row records none: rows written before the column)."""
    if "glibc_tunables" not in runs:
        return {""}
    return set(runs["glibc_tunables"].fillna("").astype(str))


def speed_phrase(runs: pd.DataFrame) -> str:
    """A caption sentence when the rows' Tokens/s were measured under different malloc settings."""
    if len(malloc_settings(runs)) < 2:
        return ""
    return (" Tokens/s: the rows trained under different glibc malloc settings (`glibc_tunables`), which "
            "change CPU training speed by up to 1.6x: no value of that column is in bold.")


def selected_columns(an: Analysis, task: str) -> list[tuple[str, list[str]]]:
    """('Sel. <key>', text per configuration) for each tuned key (empty when nothing was tuned)."""
    if not an.tuned:
        return []
    values = selection.selected_values(an.runs[an.runs["task"] == task], an.tuned, an.order[task])
    headers = selection.selected_headers(an.tuned)
    return [(headers[k], values[k]) for k in an.tuned if k in values]


def task_table(an: Analysis, task: str, columns: Sequence[str] | None = None) -> Table:
    """The results table of one task (rows = configurations, columns = metrics): the test
    metric with its 95% CI, † marks and p against the baseline row, the other metrics, the
    selected hyperparameters when runs were tuned, and the Runs column when runs were excluded."""
    metric = an.metric_by_task[task]
    labels = an.labels_frame(task)
    agg, counts = an.agg.loc[task], an.counts.loc[task]
    better = higher(an, task)
    main = f"test_{metric}"
    derived = derived_metrics(an.runs[an.runs["task"] == task], metric)
    direction = {f"{split}_{m}": better for split in ("test", "best_val") for m in (metric, *derived)}
    columns = list(columns or table_columns(metric, derived))
    sig = task_significance(an, task)
    beside = {main: [("p vs baseline", [p_text(r) for _, r in sig.iterrows()])]} if sig["tested"].any() else {}
    caption, titles, unranked = task_caption(an, task, columns[0]), {}, []
    runs = an.runs[an.runs["task"] == task]
    speed = speed_phrase(runs) if "tokens_per_s" in columns else ""
    if speed:
        caption += speed
        unranked.append("tokens_per_s")
    if "peak_memory_mb" in columns:
        caption += memory_phrase(runs)
        titles["peak_memory_mb"] = memory_title(runs)
        unranked += [] if memory_comparable(runs) else ["peak_memory_mb"]
    return results_table(agg, counts, labels, columns, caption,
                         latex_label(f"tab:results-{task}"), direction=direction, ci_column=main,
                         marks={main: list(sig["mark"])}, beside=beside, extra=selected_columns(an, task),
                         titles=titles, unranked=unranked)


def _constant(runs: pd.DataFrame, column: str) -> str | None:
    """The one value ``column`` takes across ``runs`` (formatted), or None."""
    values = pd.to_numeric(runs[column], errors="coerce").dropna().unique() if column in runs.columns else []
    return format_value(float(values[0])) if len(values) == 1 else None


def extrapolation_headers(columns: Sequence[tuple[int, str]], train_length: str | None, arrow: str) -> list[str]:
    """Headers of an extrapolation table's metric columns: the test split at its length, the training
    length or a curriculum task's eval_length ('L=256 (test split)'), then one per length-test set
    ('L=512'; 'L=256 (length test)' where it has that length, so that no two headers read the same)."""
    first = f"L={train_length} (test split)" if train_length else "Test split (train length)"
    rest = [f"L={L}" + (" (length test)" if str(L) == train_length else "") for L, _ in columns]
    return [h + arrow for h in [first, *rest]]


def extrapolation_table(an: Analysis, task: str) -> Table | None:
    """Metric at each test length (``test_len_<L>_<metric>``, plus the test split's metric at the
    training length) for one task; None when the task has no such columns."""
    metric = an.metric_by_task[task]
    runs = an.runs[an.runs["task"] == task]
    cols = [(L, c) for L, c in extrapolation_columns(runs.columns, metric) if runs[c].notna().any()]
    if not cols:
        return None
    agg = an.agg.loc[task]
    train_length = _constant(runs, "task.length")
    # a length-curriculum task (parity, modular arithmetic) tests at its own eval_length, not at one training length
    eval_length = _constant(runs, "task.eval_length")
    columns = [f"test_{metric}"] + [c for _, c in cols]
    labels = an.labels_frame(task)
    headers = extrapolation_headers(cols, eval_length or train_length, " ↑" if higher(an, task) else " ↓")
    table = results_table(agg, an.counts.loc[task], labels, columns, "", latex_label(f"tab:extrapolation-{task}"),
                          direction={c: higher(an, task) for c in columns}, titles=dict(zip(columns, headers)))
    n_test, n_extra = _constant(runs, "task.n_test"), _constant(runs, "task.n_extrapolation")
    ok = ok_runs(runs)
    table.caption = (f"Test {metric} on {task} "
                     + ("at each test length" if eval_length else "at longer test sequences than trained on")
                     + (f" (trained at length {train_length})" if train_length else "")
                     + f": mean ± std over {seeds_phrase(list(agg[columns[-1]]['n']), ok['seed'].nunique())}; "
                     "best per length in bold. 'Test split': the task's test split "
                     + (f"at its evaluation length {eval_length} (training lengths follow the task's curriculum)"
                        if eval_length else "at the training length")
                     + (f" ({n_test} sequences)" if n_test else "") + ", the test metric of the results table; "
                     "L=… columns: the length-test sets, drawn separately for each length"
                     + (f" ({n_extra} sequences each)" if n_extra else "") + "."
                     + (f" {fairness_phrase(an, task)}" if fairness_phrase(an, task) else ""))
    return table


def speed_tables(an: Analysis) -> dict[str, Table]:
    """Benchmark tables: {'speed_time': ..., 'speed_memory': ...} (those with data)."""
    tables = {}
    if an.bench.empty:
        return tables
    time_col = "fwdbwd_ms" if "fwdbwd_ms" in an.bench.columns and an.bench["fwdbwd_ms"].notna().any() else "fwd_ms"
    for name, col in (("speed_time", time_col), ("speed_memory", "peak_memory_mb")):
        table = bench_lib.speed_table(an.bench, col, label=f"tab:{name.replace('_', '-')}")
        if table is not None:
            tables[name] = table
    return tables


def pivot_means(an: Analysis, task: str, row_axis: str, col_axis: str) -> plots.Heatmap:
    """Mean test metric of ``task`` over two swept axes: rows = values of ``row_axis``, columns =
    values of ``col_axis`` (index and columns named after the axes' short names). A cell is the
    configuration with those two values (its mean over seeds); where the other label axes vary,
    the mean over the configurations with the settings of them run in every cell, so that every
    cell averages the same settings (as :func:`analysis.summary.main_effect` does); ``n`` counts
    them and ``note`` names them. No such setting: empty means, and the note says so."""
    column = f"test_{an.metric_by_task[task]}"
    if column not in an.agg.columns.get_level_values(0) or task not in an.agg.index.get_level_values(0):
        return plots.Heatmap(pd.DataFrame(), pd.DataFrame(), "")
    means = an.agg.loc[task][(column, "mean")]
    first = an.runs[an.runs["task"] == task].drop_duplicates("config").set_index("config")
    others = [a for a in an.label_axes if a not in (row_axis, col_axis)]
    frame = pd.DataFrame({"row": [format_value(first.loc[c, row_axis]) for c in means.index],
                          "col": [format_value(first.loc[c, col_axis]) for c in means.index],
                          "others": [", ".join(f"{short_name(a, an.label_axes)}={format_value(first.loc[c, a])}"
                                               for a in others) for c in means.index],
                          "value": means.to_numpy(float)})
    rows, cols = sorted(set(frame["row"]), key=sort_key), sorted(set(frame["col"]), key=sort_key)
    settings = frame.dropna(subset=["value"]).groupby(["row", "col"])["others"].agg(set)
    if settings.empty:
        return plots.Heatmap(pd.DataFrame(), pd.DataFrame(), "")
    common = set.intersection(*settings)
    names = ", ".join(short_name(a, an.label_axes) for a in others)
    if not common:
        return plots.Heatmap(pd.DataFrame(), pd.DataFrame(), f"no setting of {names} is run in every cell")
    kept = frame[frame["others"].isin(common)]
    cells = [kept.pivot_table(index="row", columns="col", values="value", aggfunc=how, dropna=False, sort=False)
             .reindex(index=rows, columns=cols) for how in ("mean", "count")]
    axis_names = list(an.axes) or [row_axis, col_axis]
    for cell in cells:
        cell.index.name, cell.columns.name = short_name(row_axis, axis_names), short_name(col_axis, axis_names)
    if not others:
        note = ""
    elif len(common) > 1 and all(len(s) == len(common) for s in settings):
        note = f"averaged over {names}"
    else:
        shown = "; ".join(sorted(common)) if len(common) <= 3 else f"{len(common)} settings of {names}"
        note = f"over {shown}, run in every cell"
    return plots.Heatmap(cells[0], cells[1].fillna(0).astype(int), note)


def heatmap_means(an: Analysis, axes: Sequence[str] | None = None) -> dict[str, plots.Heatmap]:
    """task -> :func:`pivot_means` over ``axes`` (two columns; default: the label axes when there
    are exactly two, else nothing); tasks with neither cells nor a note are left out."""
    axes = list(axes) if axes is not None else list(an.label_axes) if len(an.label_axes) == 2 else []
    if len(axes) != 2:
        return {}
    out = {task: pivot_means(an, task, axes[0], axes[1]) for task in an.metric_by_task}
    return {task: cells for task, cells in out.items() if not cells.means.empty or cells.note}


def aggregate_csv(an: Analysis) -> pd.DataFrame:
    """The numbers behind the tables, flat: task, config, label axes, <column>_<stat>, status counts."""
    if an.agg.empty:
        return pd.DataFrame()
    flat = an.agg.copy()
    flat.columns = [f"{col}_{stat}" for col, stat in flat.columns]
    flat = flat.join(an.counts.add_prefix("runs_"))
    flat = flat.reset_index()
    position = [an.order[t].index(c) if c in an.order.get(t, []) else 0 for t, c in zip(flat["task"], flat["config"])]
    flat = flat.assign(_position=position).sort_values(["task", "_position"], kind="stable").drop(columns="_position")
    first = an.runs.drop_duplicates(["task", "config"]).set_index(["task", "config"])
    for axis in an.label_axes:
        flat.insert(2 + an.label_axes.index(axis), axis,
                    [format_value(first.loc[(t, c), axis]) for t, c in zip(flat["task"], flat["config"])])
    extra: dict[tuple[str, str], dict[str, object]] = {}
    headers = selection.selected_headers(an.tuned)
    for task, metric in an.metric_by_task.items():
        sig = task_significance(an, task)
        selected = dict(selected_columns(an, task))
        column = f"test_{metric}"
        stats = an.agg.loc[task][column] if column in an.agg.columns.get_level_values(0) else None
        for i, config in enumerate(an.order[task]):
            low, high = (t_interval(*stats.loc[config, ["mean", "std", "n"]], column=column) if stats is not None
                         else (float("nan"), float("nan")))
            extra[(task, config)] = {
                "test_ci95_low": low, "test_ci95_high": high, "baseline": bool(sig.loc[config, "baseline"]),
                "diff_vs_baseline": sig.loc[config, "diff"], "p_vs_baseline": sig.loc[config, "p"],
                "significant": bool(sig.loc[config, "significant"]),
                **{f"selected_{k}": selected.get(headers[k], ["—"] * len(an.order[task]))[i] for k in an.tuned}}
    columns = list(next(iter(extra.values())).keys()) if extra else []
    for col in columns:
        flat[col] = [extra.get((t, c), {}).get(col) for t, c in zip(flat["task"], flat["config"])]
    return flat


def make_figures(an: Analysis, out: Path, formats: Sequence[str] = plots.FORMATS) -> list[Path]:
    """Every figure that has data, into ``out``; returns the files written."""
    written: list[Path] = []
    title = an.axis_title
    if not an.runs.empty:
        written += plots.plot_final(an.runs, an.metric_by_task, an.order, an.palette, out / "final", title, formats)
        written += plots.plot_curves(an.curves, an.metric_by_task, an.order, an.palette, out / "curves", title, formats)
        written += plots.plot_extrapolation(an.ok, an.metric_by_task, an.order, an.palette, out / "extrapolation",
                                            title, formats)
        written += plots.plot_vs_params(an.agg, an.ok, an.metric_by_task, an.order, an.palette, out / "params",
                                        title, formats)
        written += plots.plot_heatmap(heatmap_means(an), an.metric_by_task, out / "heatmap", formats)
    if not an.bench.empty:
        written += bench_lib.plot_speed(an.bench, out / "speed_time", out / "speed_memory", formats)
    return written


def file_stem(task: str) -> str:
    """A task label as part of a file name: ``modular_arithmetic (brackets)`` ->
    ``modular_arithmetic_brackets``; a plain task name is unchanged."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("_")


def make_tables(an: Analysis) -> dict[str, Table]:
    """Every table that has data: {file stem: Table}."""
    tables: dict[str, Table] = {}
    for task in an.metric_by_task:
        stem = file_stem(task)
        tables[f"results_{stem}"] = task_table(an, task)
        extra = extrapolation_table(an, task)
        if extra is not None:
            tables[f"extrapolation_{stem}"] = extra
    tables.update(speed_tables(an))
    return tables


def describe_status(runs: pd.DataFrame) -> str:
    """'30 ok, 4 diverged, 2 failed'."""
    counts = runs["status"].value_counts()
    return ", ".join([f"{int(counts.get('ok', 0))} ok"] + [f"{int(n)} {s}" for s, n in counts.items() if s != "ok"])


def summary_markdown(an: Analysis, tables: dict[str, Table], figures: Sequence[Path]) -> str:
    """The text of summary.md (links are relative to the report directory)."""
    title = ", ".join(sorted(set(an.runs["experiment"].dropna().astype(str)))) if "experiment" in an.runs else ""
    lines = [f"# Report: {title or ', '.join(d.name for d in an.results.dirs)}", ""]
    lines.append("Source: " + ", ".join(f"`{d}`" for d in an.results.dirs) + ".")
    if not an.runs.empty:
        if an.tuned:
            lines.append(f"{len(an.all_runs)} runs trained while tuning "
                         f"({describe_status(an.all_runs)}); selection on validation kept one per "
                         f"(configuration, seed): {summary.status_line(an.runs)}")
        else:
            lines.append(summary.status_line(an.runs))
    if an.results.skipped:
        lines.append(f"Skipped {len(an.results.skipped)} unreadable or foreign file(s): "
                     + ", ".join(f"`{p.parent.name}/{p.name}`" for p in an.results.skipped) + ".")
    if not an.runs.empty:
        lines += ["", "## What was compared", ""]
        lines += summary.compared_lines(an.runs, an.axes, an.label_axes, an.metric_by_task, higher_by_task(an))
        lines += selection.selection_lines(an.all_runs, an.runs, an.tuned, an.metric_by_task)
        lines += ["", "## What was held equal", ""]
        lines += summary.held_lines(an.all_runs, list(an.axes) + list(an.tuned))
        lines += ["", "## Headline differences", ""]
        for task, metric in an.metric_by_task.items():
            lines += [f"### {task} (test {metric}, {'higher' if higher(an, task) else 'lower'} is better)", ""]
            ok = an.ok[an.ok["task"] == task]
            lines += summary.headline(task, metric, higher(an, task), ok, an.agg.loc[task], an.order[task],
                                      an.label_axes)
            lines += summary.significance_lines(task_significance(an, task), an.baselines[task], metric)
            lines += summary.extrapolation_headline(task, metric, higher(an, task), ok)
            lines.append("")
        bad = summary.excluded_runs(an.runs)
        if bad:
            lines += ["## Runs not averaged in", ""] + bad + [""]
    if not an.bench.empty:
        lines += ["## Speed", ""]
        lines.append(f"- Benchmarked on {', '.join(bench_lib.devices(an.bench))}, "
                     f"{bench_lib.count_phrase(an.bench)}.")
        fastest = bench_lib.fastest_per_length(an.bench, "fwdbwd_ms" if "fwdbwd_ms" in an.bench else "fwd_ms")
        if len(fastest):
            lines.append("- Fastest per length: " + "; ".join(
                f"L={int(r.length)}: {r.series} ({r.value:.3g} ms)" for r in fastest.itertuples()) + ".")
        lines.append("")
    lines += ["## Tables", ""] + [f"- [{stem}]({stem}.md) ([LaTeX]({stem}.tex)): "
                                  + t.caption.split(":")[0].split(";")[0].split(" (")[0]
                                  for stem, t in tables.items()]
    if not an.agg.empty:
        lines.append("- [aggregate.csv](aggregate.csv): the numbers behind them")
    lines += ["", "## Figures", ""] + figure_lines(figures, figure_notes(an))
    return "\n".join(lines).rstrip() + "\n"


def figure_notes(an: Analysis) -> dict[str, str]:
    """{figure stem: what the figure shows and what its intervals are}: the notes drawn in the
    figures of ``an``."""
    trained = any(train is not None for *_, train in plots.extrapolation_panels(an.ok, an.metric_by_task))
    return {**plots.NOTES, **bench_lib.NOTES, "extrapolation": plots.extrapolation_note(trained)}


def figure_lines(figures: Sequence[Path], notes: dict[str, str]) -> list[str]:
    """Markdown for each figure: the PNG inline (else a link to its first file) and its caption,
    the figure's note (:func:`figure_notes`)."""
    by_stem: dict[str, list[Path]] = {}
    for path in figures:
        by_stem.setdefault(path.stem, []).append(path)
    lines = []
    for stem, paths in by_stem.items():
        png = next((p for p in paths if p.suffix == ".png"), None)
        lines += [f"![{stem}]({png.name})" if png else f"[{stem}]({paths[0].name})", ""]
        caption = notes.get(stem, "")
        if caption:
            lines += [f"*Figure {stem}: {caption}*", ""]
    return lines


def write_report(an: Analysis, out: Path, formats: Sequence[str] = plots.FORMATS) -> list[Path]:
    """Write tables, figures and summary.md for ``an`` into ``out``; returns the files written.
    Files an earlier report wrote into ``out`` and this one does not are removed
    (:func:`analysis.outputs.replace_outputs`); no other file of ``out`` is touched. Bad
    ``formats`` or an ``out`` that cannot be made raise AnalysisError before anything is written."""
    plots.check_formats(formats)
    out = output_folder(out)
    written: list[Path] = []
    tables = make_tables(an)
    for stem, table in tables.items():
        for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
            path = out / f"{stem}{suffix}"
            path.write_text(render(table))
            written.append(path)
    if tables:
        (out / "tables.md").write_text("\n".join(to_markdown(t) for t in tables.values()))
        (out / "tables.tex").write_text("\n".join(to_latex(t) for t in tables.values()))
        written += [out / "tables.md", out / "tables.tex"]
    flat = aggregate_csv(an)
    if not flat.empty:
        flat.to_csv(out / "aggregate.csv", index=False)
        written.append(out / "aggregate.csv")
    figures = make_figures(an, out, formats)
    written += figures
    (out / "summary.md").write_text(summary_markdown(an, tables, figures))
    written.append(out / "summary.md")
    replace_outputs(out, written)
    log.info("wrote %d files to %s", len(written), out)
    return written


def build_report(inputs: Sequence[str | Path], out: str | Path | None = None,
                 formats: Sequence[str] = plots.FORMATS, baseline: str | None = None) -> list[Path]:
    """Load ``inputs`` (directories or globs), analyse, and write the report.

    out: report directory; default ``<first results directory>/report``.
    baseline: the row significance is tested against (see :func:`analyse`); default the first.
    Returns the files written. Raises AnalysisError for missing/empty input or a baseline that
    names no configuration.
    """
    plots.check_formats(formats)
    results = load_results(inputs)
    target = Path(out) if out is not None else results.dirs[0] / "report"
    return write_report(analyse(results, baseline=baseline), target, formats)
