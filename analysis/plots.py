"""Comparison figures, made with seaborn on matplotlib's object API and saved as PNG and PDF.

Figures are built with ``matplotlib.figure.Figure`` (rendered by the Agg canvas), never through
pyplot, so no global figure state is touched and no display is needed. Every function takes
frames that already carry a ``config`` label column (see :func:`analysis.axes.add_config_column`)
and a ``task`` column, draws one panel per task, and returns the files it wrote.

Only runs with status ``ok`` are drawn; the final-metric plot writes under each configuration
how many of its runs diverged or failed, so none disappears silently.

Every interval drawn is the Student-t 95% confidence interval of the mean over seeds, clipped
to the metric's valid range (accuracy in [0, 1]; losses and mse >= 0), and every figure says so
in a note below its panels (:data:`NOTES`, also the figure's caption in ``summary.md``). Figures are
reproducible byte for byte: no random jitter, no timestamps or versions in the files.
"""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from matplotlib.transforms import blended_transform_factory

from .axes import format_value
from .errors import AnalysisError
from .stats import (ci95_half_width, clip_interval, describe_excluded, extrapolation_columns, higher_is_better, ok_runs,
                    status_counts, value_range)
from .stats import t_interval as interval_of_mean
from .tables import column_title

log = logging.getLogger(__name__)

FORMATS = ("png", "pdf")
PANEL_HEIGHT = 3.6
BAND_ALPHA = 0.12  # light bands: overlapping ones stay readable
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DASHES = ((), (5, 2), (1.5, 1.5), (6, 2, 1.5, 2), (3, 1), (8, 2, 2, 2, 2, 2))  # () = solid
PARAMS_LOG_SPAN = 4.0  # parameter counts spanning more than this factor get a log axis
INTERVAL = ("95% CI of the mean over seeds (Student t), clipped to the metric's range "
            "(accuracy [0, 1], loss and mse ≥ 0)")
EXTRAPOLATION = f"Lines: mean test metric over seeds per test length; bands: {INTERVAL}"
NOTES = {
    "final": f"Bars: mean test metric over seeds; error bars: {INTERVAL}; dots: the seeds.",
    "curves": f"Lines: mean over seeds; bands: {INTERVAL}. Configurations with identical curves are drawn "
              "once, labelled 'A = B'.",
    "extrapolation": f"{EXTRAPOLATION}; dotted: the training length.",
    "params": f"Points: mean test metric over seeds against parameter count; error bars: {INTERVAL}.",
    "heatmap": "Cells: mean test metric over seeds (no interval); colour scale anchored to the metric's range "
               "([0, 1] for accuracy, from 0 for mse and loss).",
}
# The heatmap's note when a cell averages several configurations (:class:`Heatmap`).
AVERAGED_HEATMAP = ("Cells: mean test metric over seeds (no interval), averaged over the configurations with the "
                    "two values whose other settings are run in every cell (named per panel); n: configurations "
                    "per cell where more than one; colour scale anchored to the metric's range ([0, 1] for "
                    "accuracy, from 0 for mse and loss).")
# Per-format metadata that would otherwise record a timestamp or a version.
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """The Student-t 95% confidence interval of the mean of ``values`` (a point when n < 2);
    the same interval as the ``ci95`` column of the aggregate (seaborn's ``errorbar`` callable)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (float("nan"), float("nan"))
    mean = float(values.mean())
    half = ci95_half_width(float(values.std(ddof=1)), len(values)) if len(values) > 1 else 0.0
    return (mean - half, mean + half)


def bounded_interval(column: str) -> Callable[[Sequence[float]], tuple[float, float]]:
    """:func:`t_interval` clipped to the valid range of ``column`` (a seaborn ``errorbar`` callable)."""

    def interval(values: Sequence[float]) -> tuple[float, float]:
        return clip_interval(*t_interval(values), column)

    return interval


def style():
    """The context every figure is drawn in (seaborn's whitegrid style, restored afterwards)."""
    return sns.axes_style("whitegrid")


def palette_for(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per configuration label, stable across the figures of a report."""
    labels = list(dict.fromkeys(labels))
    colours = sns.color_palette("colorblind" if len(labels) <= 10 else "husl", n_colors=max(len(labels), 1))
    return dict(zip(labels, colours))


def line_styles(labels: Sequence[str]) -> dict[str, tuple[str, tuple]]:
    """(marker, dash pattern) per configuration label, so that lines differ beyond colour."""
    return {label: (MARKERS[i % len(MARKERS)], DASHES[i % len(DASHES)]) for i, label in enumerate(labels)}


def check_formats(formats: Sequence[str]) -> None:
    """Raise AnalysisError unless ``formats`` is a non-empty list of formats matplotlib writes."""
    supported = sorted(Figure().canvas.get_supported_filetypes())
    bad = [f for f in formats if f not in supported]
    if bad or not formats:
        raise AnalysisError(f"--formats={','.join(formats)!r} is not valid"
                            f"{' (' + ', '.join(bad) + ')' if bad else ''}; expected a comma-separated list of "
                            f"{', '.join(supported)}")


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` to ``stem.<format>`` for each format; returns the paths. The files carry no
    timestamp or version (:data:`METADATA`), so the same figure gives the same bytes."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix("." + fmt)
        with matplotlib.rc_context({"svg.hashsalt": "ssm-ablate"}):
            fig.savefig(path, dpi=150, format=fmt, metadata=METADATA.get(fmt))
        paths.append(path)
    return paths


def add_note(fig: Figure, text: str) -> None:
    """``text`` (what the marks and intervals are) below the panels, wrapped to the figure's width."""
    width = int(fig.get_figwidth() * 14)
    fig.supxlabel(textwrap.fill(text, width), fontsize="small", color="dimgray")


def _grid(n_panels: int, n_rows: int = 1, width: float = 4.5, max_cols: int = 3) -> tuple[Figure, np.ndarray]:
    cols = min(n_panels, max_cols)
    rows_of_panels = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, PANEL_HEIGHT * n_rows * rows_of_panels), layout="constrained")
    axes = fig.subplots(n_rows * rows_of_panels, cols, squeeze=False)
    return fig, axes


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _rotate_if_long(ax, labels: Sequence[str]) -> None:
    if sum(len(str(l)) for l in labels) > 28:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")


def _figure_legend(fig: Figure, axes: Sequence, title: str) -> None:
    """One legend for the figure, right of the panels: every label drawn in any panel, once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if entries:
        fig.legend(list(entries.values()), list(entries), title=title, loc="outside right upper", fontsize="small",
                   title_fontsize="small")


def _draw_seeds(ax, ok: pd.DataFrame, column: str, labels: Sequence[str]) -> None:
    """Each seed's value as a dot over its bar, spread evenly across the bar (no random jitter)."""
    for i, label in enumerate(labels):
        values = ok.loc[ok["config"] == label].sort_values("seed")[column].to_numpy(float)
        offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(i + offsets, values, color="black", s=12, zorder=3)


def plot_final(runs: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
               palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Final test metric per configuration: bars with 95% confidence intervals over seeds (Student t,
    clipped to the metric's range), the seeds as dots, one panel per task; under a bar, the count
    of its diverged/failed runs.

    runs: all runs (any status) with 'task', 'config', 'status' and ``test_<metric>`` columns.
    metric_by_task: task -> metric name ('accuracy', 'mse').
    order: task -> configuration labels in display order.
    """
    tasks = [t for t in metric_by_task if f"test_{metric_by_task[t]}" in runs.columns]
    if not tasks:
        return []
    widest = max(len(order[t]) for t in tasks)
    with style():
        fig, axes = _grid(len(tasks), width=max(3.5, 0.9 * widest + 1.5))
        for ax, task in zip(axes.flat, tasks):
            column = f"test_{metric_by_task[task]}"
            every = runs[runs["task"] == task]
            ok = ok_runs(every).dropna(subset=[column])
            labels = list(order[task])
            if len(ok):
                sns.barplot(data=ok, x="config", y=column, order=labels, hue="config", hue_order=labels,
                            palette=palette, errorbar=bounded_interval(column), capsize=0.15,
                            err_kws={"linewidth": 1.2}, alpha=0.85, saturation=1, legend=False, ax=ax)
                _draw_seeds(ax, ok, column, labels)
            counts = status_counts(every, ["config"])
            trans = blended_transform_factory(ax.transData, ax.transAxes)
            for i, label in enumerate(labels):
                excluded = describe_excluded(counts.loc[label]) if label in counts.index else ""
                if excluded:
                    ax.text(i, 0.02, excluded, transform=trans, ha="center", va="bottom", fontsize="x-small",
                            color="firebrick", rotation=90 if len(labels) > 4 else 0)
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            ax.set_xlabel(axis_title)
            ax.set_ylabel(column_title(column))
            ax.set_title(task)
            _rotate_if_long(ax, labels)
        _hide_unused(axes, len(tasks))
        add_note(fig, NOTES["final"])
        return _save(fig, stem, formats)


def _save(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = save_figure(fig, stem, formats)
    fig.clear()
    return paths


def identical_groups(data: pd.DataFrame, x: str, y: str, labels: Sequence[str]) -> dict[str, str]:
    """Configurations whose (seed, ``x``, ``y``) rows are all equal, drawn once: {first label of
    each group: the group's labels joined with ' = '}, in the order of ``labels``."""
    groups: dict[str, list[str]] = {}
    values: dict[str, np.ndarray] = {}
    for label in labels:
        rows = data.loc[data["config"] == label, ["seed", x, y]].sort_values(["seed", x]).to_numpy(float)
        same = next((first for first in groups if values[first].shape == rows.shape
                     and np.array_equal(values[first], rows, equal_nan=True)), None)
        if same is None:
            groups[label], values[label] = [label], rows
        else:
            groups[same].append(label)
    return {first: " = ".join(members) for first, members in groups.items()}


def mean_band(data: pd.DataFrame, x: str, y: str, column: str) -> pd.DataFrame:
    """Per value of ``x``: the mean of ``y`` over the rows (seeds) and its 95% confidence interval
    clipped to the range of ``column`` (columns x, mean, low, high; low = high = NaN for one seed)."""
    interval = bounded_interval(column)
    rows = []
    for value, group in data.groupby(x, sort=True):
        values = group[y].to_numpy(float)
        low, high = interval(values) if np.isfinite(values).sum() > 1 else (float("nan"), float("nan"))
        rows.append((value, float(np.nanmean(values)), low, high))
    return pd.DataFrame(rows, columns=[x, "mean", "low", "high"])


def draw_lines(ax, data: pd.DataFrame, x: str, y: str, column: str, labels: Sequence[str],
               palette: Mapping[str, tuple], styles: Mapping[str, tuple[str, tuple]]) -> None:
    """A line (mean over seeds) with a light band (:func:`mean_band`) per configuration; identical
    configurations (:func:`identical_groups`) are drawn once under their joined label."""
    for label, shown in identical_groups(data, x, y, labels).items():
        band = mean_band(data[data["config"] == label], x, y, column)
        marker, dashes = styles.get(label, ("o", ()))
        colour = palette.get(label)
        line, = ax.plot(band[x], band["mean"], color=colour, marker=marker, markersize=4, linewidth=1.5,
                        markevery=max(1, len(band) // 8), label=shown)
        if dashes:
            line.set_dashes(dashes)
        ax.fill_between(band[x], band["low"], band["high"], color=colour, alpha=BAND_ALPHA, linewidth=0)


def plot_curves(curves: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
                palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """Learning curves: validation metric (top row) and training loss (bottom row) against the
    step, a line per configuration (colour, marker and dash pattern of its own) with a light 95%
    confidence band over seeds clipped to the metric's range, one column per task.

    curves: curve rows of ok runs, with 'task' and 'config' joined on.
    """
    tasks = [t for t in metric_by_task if not curves.empty and (curves["task"] == t).any()]
    if not tasks:
        return []
    panels = [(task, col) for task in tasks for col in (f"val_{metric_by_task[task]}", "train_loss")]
    panels = [(t, c) for t, c in panels if c in curves.columns and curves.loc[curves["task"] == t, c].notna().any()]
    if not panels:
        return []
    styles = line_styles(list(palette))
    with style():
        fig = Figure(figsize=(4.5 * len(tasks) + 1.8, PANEL_HEIGHT * 2 + 0.4), layout="constrained")
        axes = fig.subplots(2, len(tasks), squeeze=False)
        used = set()
        for (task, col) in panels:
            row = 0 if col.startswith("val_") else 1
            ax = axes[row, tasks.index(task)]
            used.add((row, tasks.index(task)))
            data = curves[(curves["task"] == task)].dropna(subset=[col])
            labels = [l for l in order[task] if l in set(data["config"])]
            draw_lines(ax, data, "step", col, col, labels, palette, styles)
            ax.set_title(task if row == 0 else "")
            ax.set_xlabel("step")
            ax.set_ylabel({"train_loss": "Train loss"}.get(col, "Val. " + col[4:]) + " (mean, 95% CI)")
            if col == "train_loss" and (data[col] > 0).all() and data[col].max() / max(data[col].min(), 1e-12) > 20:
                ax.set_yscale("log")
        for r in range(2):
            for c in range(len(tasks)):
                if (r, c) not in used:
                    axes[r, c].set_visible(False)
        _figure_legend(fig, list(axes.flat), axis_title)
        add_note(fig, NOTES["curves"])
        return _save(fig, stem, formats)


def extrapolation_frame(runs: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, float | None]:
    """Long frame (config, seed, length, value) of one task's ``test_len_<L>_<metric>`` columns,
    plus the test metric at the training length when no length-test set has that length; and
    the training length (``task.length``) or None. Empty when the task has no such columns."""
    cols = [(L, c) for L, c in extrapolation_columns(runs.columns, metric) if runs[c].notna().any()]
    if not cols:
        return pd.DataFrame(), None
    long = runs.melt(id_vars=["config", "seed"], value_vars=[c for _, c in cols], var_name="column",
                     value_name="value").dropna(subset=["value"])
    long["length"] = long["column"].map({c: L for L, c in cols}).astype(float)
    if "task.length" not in runs.columns or runs["task.length"].notna().sum() == 0:
        return long, None
    train = float(pd.to_numeric(runs["task.length"], errors="coerce").dropna().iloc[0])
    if f"test_{metric}" in runs.columns and train not in {float(x) for x, _ in cols}:
        at_train = runs[["config", "seed", f"test_{metric}"]].rename(columns={f"test_{metric}": "value"})
        long = pd.concat([long, at_train.assign(length=train).dropna(subset=["value"])], ignore_index=True)
    return long, train


def extrapolation_panels(runs: pd.DataFrame,
                         metric_by_task: Mapping[str, str]) -> list[tuple[str, str, pd.DataFrame, float | None]]:
    """[(task, metric, :func:`extrapolation_frame`'s long frame and training length)] for each task
    with ``test_len_<L>_<metric>`` columns, in the order of ``metric_by_task``."""
    panels = []
    for task, metric in metric_by_task.items():
        long, train = extrapolation_frame(runs[runs["task"] == task], metric)
        if not long.empty:
            panels.append((task, metric, long, train))
    return panels


def extrapolation_note(trained: bool) -> str:
    """The note of the extrapolation figure: ``NOTES['extrapolation']`` when a training length is
    drawn (``trained``), else without the dotted line."""
    return NOTES["extrapolation"] if trained else f"{EXTRAPOLATION}."


def plot_extrapolation(runs: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
                       palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
                       formats: Sequence[str] = FORMATS) -> list[Path]:
    """Metric against test length for tasks with ``test_len_<L>_<metric>`` columns (the
    extrapolation test of induction heads): a line per configuration, a 95% band over seeds
    clipped to the metric's range, log2 x-axis, the training length (``task.length``) marked
    where the task has one (:func:`extrapolation_note`).

    runs: ok runs with 'task' and 'config'. Returns [] when no task has such columns.
    """
    panels = extrapolation_panels(runs, metric_by_task)
    if not panels:
        return []
    styles = line_styles(list(palette))
    with style():
        fig, axes = _grid(len(panels), width=5.0)
        for ax, (task, metric, long, train) in zip(axes.flat, panels):
            labels = [l for l in order[task] if l in set(long["config"])]
            draw_lines(ax, long, "length", "value", metric, labels, palette, styles)
            ax.set_xscale("log", base=2)
            ticks = sorted(set(long["length"]))
            ax.set_xticks(ticks, [format_value(float(L)) for L in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            if train is not None:
                ax.axvline(train, color="grey", linestyle=":", linewidth=1)
                ax.text(train, 0.02, " train length", transform=blended_transform_factory(
                    ax.transData, ax.transAxes), fontsize="x-small", color="grey")
            ax.set_xlabel("test sequence length")
            ax.set_ylabel(f"Test {metric} (mean, 95% CI)")
            ax.set_title(task)
        _hide_unused(axes, len(panels))
        _figure_legend(fig, list(axes.flat), axis_title)
        add_note(fig, extrapolation_note(any(train is not None for *_, train in panels)))
        return _save(fig, stem, formats)


def compact_number(value: float, _position: object = None) -> str:
    """Short tick label of a count: 7000 -> '7k', 12500 -> '12.5k', 2e6 -> '2M', 900 -> '900'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def set_count_axis(ax, log: bool) -> None:
    """An x-axis of counts with few, short, non-overlapping labels: on a log scale major ticks at
    1, 2 and 5 times powers of ten and no minor labels; else at most five linear ticks."""
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(FuncFormatter(compact_number))


def param_points(agg: pd.DataFrame, runs: pd.DataFrame, column: str,
                 order: Sequence[str]) -> list[tuple[str, str, tuple]]:
    """[(label, first, (parameters, mean, CI low, CI high))] of one task, in ``order`` (the CI None
    with fewer than 2 seeds): configurations with the same seeds (:func:`identical_groups` on
    parameters and ``column``) share one point, labelled 'A = B' and coloured as ``first``.
    ``agg``: one task's aggregate; ``runs``: its ok runs (config, seed, param_count, ``column``)."""
    labels = [label for label in order if label in agg.index
              and np.isfinite(agg.loc[label, [("param_count", "mean"), (column, "mean")]].to_numpy(float)).all()]
    points = []
    for first, label in identical_groups(runs, "param_count", column, labels).items():
        x, y = agg.loc[first, ("param_count", "mean")], agg.loc[first, (column, "mean")]
        low, high = interval_of_mean(y, agg.loc[first, (column, "std")], agg.loc[first, (column, "n")], column)
        bounds = (low, high) if np.isfinite(low) and np.isfinite(high) else (None, None)
        points.append((label, first, (float(x), float(y), *bounds)))
    return points


def params_figure(agg: pd.DataFrame, runs: pd.DataFrame, metric_by_task: Mapping[str, str],
                  order: Mapping[str, Sequence[str]], palette: Mapping[str, tuple],
                  axis_title: str = "configuration") -> Figure | None:
    """The figure of :func:`plot_vs_params` (draw it inside :func:`style`); None when no task has
    a point to draw."""
    if "param_count" not in agg.columns.get_level_values(0):
        return None
    tasks = [t for t in metric_by_task if f"test_{metric_by_task[t]}" in agg.columns.get_level_values(0)
             and t in agg.index.get_level_values(0)]
    if not tasks:
        return None
    counts = pd.concat([agg.loc[t][("param_count", "mean")] for t in tasks]).dropna()
    log = bool(len(counts) and counts.min() > 0 and counts.max() / counts.min() > PARAMS_LOG_SPAN)
    fig, axes = _grid(len(tasks), width=4.8)
    drawn = 0
    for ax, task in zip(axes.flat, tasks):
        column = f"test_{metric_by_task[task]}"
        for label, first, (x, y, low, high) in param_points(agg.loc[task], runs[runs["task"] == task], column,
                                                             order[task]):
            err = [[y - low], [high - y]] if low is not None else None
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, markersize=7, color=palette.get(first), label=label)
            drawn += 1
        set_count_axis(ax, log)
        ax.set_xlabel("parameters" + (" (log scale)" if log else ""))
        ax.set_ylabel(column_title(column) + " (mean, 95% CI)")
        ax.set_title(task)
    _hide_unused(axes, len(tasks))
    if not drawn:
        fig.clear()
        return None
    _figure_legend(fig, list(axes.flat), axis_title)
    add_note(fig, NOTES["params"])
    return fig


def plot_vs_params(agg: pd.DataFrame, runs: pd.DataFrame, metric_by_task: Mapping[str, str],
                   order: Mapping[str, Sequence[str]], palette: Mapping[str, tuple], stem: Path,
                   axis_title: str = "configuration", formats: Sequence[str] = FORMATS) -> list[Path]:
    """Final test metric against parameter count: a point per configuration (mean over seeds,
    error bar = 95% confidence interval clipped to the metric's range; configurations with the
    same seeds drawn once, as 'A = B'), one panel per task; every panel on the same x scale, log
    when the counts of all panels span more than :data:`PARAMS_LOG_SPAN`, with a few short tick
    labels (:func:`set_count_axis`).

    agg: :func:`analysis.stats.aggregate` indexed by (task, config) with param_count and
    ``test_<metric>`` aggregated; runs: the ok runs it aggregates (task, config, seed and those columns).
    """
    with style():
        fig = params_figure(agg, runs, metric_by_task, order, palette, axis_title)
        return _save(fig, stem, formats) if fig is not None else []


def colour_limits(metric: str, values: np.ndarray) -> tuple[float, float]:
    """The colour scale of a heatmap of ``metric``: its valid range ([0, 1] for accuracy); from the
    lower bound to the largest value when the range is open ([0, max] for mse and loss)."""
    finite = values[np.isfinite(values)]
    low, high = value_range(metric)
    low = low if np.isfinite(low) else float(finite.min()) if finite.size else 0.0
    high = high if np.isfinite(high) else float(finite.max()) if finite.size else 1.0
    return (low, high if high > low else low + 1.0)


class Heatmap(NamedTuple):
    """One task's heatmap over two swept axes (:func:`analysis.report.pivot_means`).

    means: rows = values of one axis, columns = values of the other, cells = mean test metric;
    index and columns named after the axes. n: the configurations averaged per cell (same shape).
    note: what a cell averages over beyond the two axes ('' for one configuration per cell), or
    why there are no cells (``means`` empty)."""

    means: pd.DataFrame
    n: pd.DataFrame
    note: str


def plot_heatmap(maps: Mapping[str, Heatmap], metric_by_task: Mapping[str, str], stem: Path,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """Mean test metric over two swept axes as an annotated heatmap, one panel per task.

    maps: task -> :class:`Heatmap`. Colours run from worse (dark) to better (bright) whatever the
    metric's direction, on a scale anchored to the metric's range (:func:`colour_limits`), so
    that seed noise does not look like an effect; every cell prints its value, and 'n=2' under
    it when it averages several configurations; the panel title names what those have in
    common (the note); a task without cells gets a panel saying why.
    """
    tasks = [t for t in maps if np.isfinite(maps[t].means.to_numpy(float)).any() or maps[t].note]
    if not tasks:
        return []
    with style():
        fig, axes = _grid(len(tasks), width=max(4.0, 1.1 * max(maps[t].means.shape[1] for t in tasks) + 2))
        for ax, task in zip(axes.flat, tasks):
            table, n, note = maps[task].means.astype(float), maps[task].n, maps[task].note
            if table.empty:
                ax.set_title(task)
                ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=ax.transAxes)
                ax.set_axis_off()
                continue
            ax.set_title(task + (f"\n({note})" if note else ""))
            metric = metric_by_task.get(task, "accuracy")
            finite = table.to_numpy()[np.isfinite(table.to_numpy())]
            decimals = 3 if finite.size == 0 or np.abs(finite).max() < 10 else 1
            cells = [[f"{v:.{decimals}f}" + (f"\nn={k}" if k > 1 else "") for v, k in zip(values, counts)]
                     for values, counts in zip(table.to_numpy(), n.to_numpy())]
            low, high = colour_limits(metric, table.to_numpy())
            cmap = "viridis" if higher_is_better(metric) else "viridis_r"
            sns.heatmap(table, annot=np.array(cells), fmt="", cmap=cmap, vmin=low, vmax=high,
                        cbar_kws={"label": f"Test {metric} (mean over seeds)"}, linewidths=0.5, ax=ax)
        _hide_unused(axes, len(tasks))
        add_note(fig, AVERAGED_HEATMAP if any(maps[t].note for t in tasks) else NOTES["heatmap"])
        return _save(fig, stem, formats)
