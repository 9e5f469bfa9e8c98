"""Comparison figures, made with seaborn on matplotlib's object API and saved as PNG and PDF.

Figures are built with ``matplotlib.figure.Figure`` (rendered by the Agg canvas), never through
pyplot, so no global figure state is touched and no display is needed. Every function takes
frames that already carry a ``config`` label column (see :func:`analysis.axes.add_config_column`)
and a ``task`` column, draws one panel per task, and returns the files it wrote.

Only runs with status ``ok`` are drawn; the final-metric plot writes under each configuration
how many of its runs diverged or failed, so none disappears silently.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from matplotlib.transforms import blended_transform_factory

from .axes import format_value
from .stats import ci95_half_width, describe_excluded, extrapolation_columns, higher_is_better, ok_runs, status_counts
from .tables import column_title

log = logging.getLogger(__name__)

FORMATS = ("png", "pdf")
PANEL_HEIGHT = 3.6


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


ERRORBAR = t_interval  # 95% confidence interval over seeds (Student t, exact and deterministic)


def style():
    """The context every figure is drawn in (seaborn's whitegrid style, restored afterwards)."""
    return sns.axes_style("whitegrid")


def palette_for(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per configuration label, stable across the figures of a report."""
    labels = list(dict.fromkeys(labels))
    colours = sns.color_palette("colorblind" if len(labels) <= 10 else "husl", n_colors=max(len(labels), 1))
    return dict(zip(labels, colours))


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` to ``stem.<format>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix("." + fmt)
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
        fig.savefig(path, dpi=150, format=fmt, metadata=metadata)
        paths.append(path)
    return paths


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
    """One legend for the figure, right of the panels, from the first axis that has one."""
    handles, labels = [], []
    for ax in axes:
        if ax.get_legend() is not None:
            if not handles:
                handles, labels = ax.get_legend_handles_labels()
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, loc="outside right upper", fontsize="small", title_fontsize="small")


def plot_final(runs: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
               palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Final test metric per configuration: bars with 95% confidence intervals over seeds (Student t), the seeds
    as dots, one panel per task; under a bar, the count of its diverged/failed runs.

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
                            palette=palette, errorbar=ERRORBAR, capsize=0.15,
                            err_kws={"linewidth": 1.2}, alpha=0.85, legend=False, ax=ax)
                sns.stripplot(data=ok, x="config", y=column, order=labels, color="black", size=3.5, jitter=0.12,
                              ax=ax)
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
        return _save(fig, stem, formats)


def _save(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = save_figure(fig, stem, formats)
    fig.clear()
    return paths


def plot_curves(curves: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
                palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """Learning curves: validation metric (top row) and training loss (bottom row) against the
    step, a line per configuration with a 95% confidence band over seeds, one column per task.

    curves: curve rows of ok runs, with 'task' and 'config' joined on.
    """
    tasks = [t for t in metric_by_task if not curves.empty and (curves["task"] == t).any()]
    if not tasks:
        return []
    panels = [(task, col) for task in tasks for col in (f"val_{metric_by_task[task]}", "train_loss")]
    panels = [(t, c) for t, c in panels if c in curves.columns and curves.loc[curves["task"] == t, c].notna().any()]
    if not panels:
        return []
    with style():
        fig = Figure(figsize=(4.5 * len(tasks) + 1.8, PANEL_HEIGHT * 2), layout="constrained")
        axes = fig.subplots(2, len(tasks), squeeze=False)
        used = set()
        for (task, col) in panels:
            row = 0 if col.startswith("val_") else 1
            ax = axes[row, tasks.index(task)]
            used.add((row, tasks.index(task)))
            data = curves[(curves["task"] == task)].dropna(subset=[col])
            labels = [l for l in order[task] if l in set(data["config"])]
            sns.lineplot(data=data, x="step", y=col, hue="config", hue_order=labels, palette=palette,
                         errorbar=ERRORBAR, ax=ax)
            ax.set_title(task if row == 0 else "")
            ax.set_ylabel({"train_loss": "Train loss"}.get(col, "Val. " + col[4:]))
            if col == "train_loss" and (data[col] > 0).all() and data[col].max() / max(data[col].min(), 1e-12) > 20:
                ax.set_yscale("log")
        for r in range(2):
            for c in range(len(tasks)):
                if (r, c) not in used:
                    axes[r, c].set_visible(False)
        _figure_legend(fig, list(axes.flat), axis_title)
        return _save(fig, stem, formats)


def plot_extrapolation(runs: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
                       palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
                       formats: Sequence[str] = FORMATS) -> list[Path]:
    """Metric against test length for tasks with ``test_len_<L>_<metric>`` columns (the
    extrapolation test of induction heads): a line per configuration, a 95% band over seeds,
    log2 x-axis, the training length (``task.length``) marked.

    runs: ok runs with 'task' and 'config'. Returns [] when no task has such columns.
    """
    frames, train_length = [], {}
    for task, metric in metric_by_task.items():
        sub = runs[runs["task"] == task]
        cols = [(L, c) for L, c in extrapolation_columns(sub.columns, metric) if sub[c].notna().any()]
        if not cols:
            continue
        long = sub.melt(id_vars=["config", "seed"], value_vars=[c for _, c in cols], var_name="column",
                        value_name="value").dropna(subset=["value"])
        long["length"] = long["column"].map({c: L for L, c in cols})
        if "task.length" in sub.columns and sub["task.length"].notna().any():
            L = float(pd.to_numeric(sub["task.length"], errors="coerce").dropna().iloc[0])
            train_length[task] = L
            if f"test_{metric}" in sub.columns and L not in {x for x, _ in cols}:
                at_train = sub[["config", "seed", f"test_{metric}"]].rename(columns={f"test_{metric}": "value"})
                long = pd.concat([long, at_train.assign(length=L).dropna(subset=["value"])], ignore_index=True)
        frames.append((task, metric, long))
    if not frames:
        return []
    with style():
        fig, axes = _grid(len(frames), width=5.0)
        for ax, (task, metric, long) in zip(axes.flat, frames):
            labels = [l for l in order[task] if l in set(long["config"])]
            sns.lineplot(data=long, x="length", y="value", hue="config", hue_order=labels, palette=palette,
                         errorbar=ERRORBAR, marker="o", ax=ax)
            ax.set_xscale("log", base=2)
            ticks = sorted(set(long["length"]))
            ax.set_xticks(ticks, [format_value(float(L)) for L in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            if task in train_length:
                ax.axvline(train_length[task], color="grey", linestyle=":", linewidth=1)
                ax.text(train_length[task], 0.02, " train length", transform=blended_transform_factory(
                    ax.transData, ax.transAxes), fontsize="x-small", color="grey")
            ax.set_xlabel("test sequence length")
            ax.set_ylabel(f"Test {metric}")
            ax.set_title(task)
        _hide_unused(axes, len(frames))
        _figure_legend(fig, list(axes.flat), axis_title)
        return _save(fig, stem, formats)


def plot_vs_params(agg: pd.DataFrame, metric_by_task: Mapping[str, str], order: Mapping[str, Sequence[str]],
                   palette: Mapping[str, tuple], stem: Path, axis_title: str = "configuration",
                   formats: Sequence[str] = FORMATS) -> list[Path]:
    """Final test metric against parameter count: a point per configuration (mean over seeds,
    error bar = std), one panel per task; log x-axis when the counts span over 10x.

    agg: :func:`analysis.stats.aggregate` indexed by (task, config) with param_count and
    ``test_<metric>`` aggregated.
    """
    if "param_count" not in agg.columns.get_level_values(0):
        return []
    tasks = [t for t in metric_by_task if f"test_{metric_by_task[t]}" in agg.columns.get_level_values(0)
             and t in agg.index.get_level_values(0)]
    if not tasks:
        return []
    with style():
        fig, axes = _grid(len(tasks), width=4.8)
        drawn = 0
        for ax, task in zip(axes.flat, tasks):
            column = f"test_{metric_by_task[task]}"
            sub = agg.loc[task]
            for label in order[task]:
                if label not in sub.index:
                    continue
                x, y = sub.loc[label, ("param_count", "mean")], sub.loc[label, (column, "mean")]
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                err = sub.loc[label, (column, "std")]
                ax.errorbar(x, y, yerr=err if np.isfinite(err) else None, fmt="o", capsize=3, markersize=7,
                            color=palette.get(label), label=label)
                drawn += 1
            xs = sub[("param_count", "mean")].dropna()
            if len(xs) and xs.min() > 0 and xs.max() / xs.min() > 10:
                ax.set_xscale("log")
            ax.set_xlabel("parameters")
            ax.set_ylabel(column_title(column))
            ax.set_title(task)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        _hide_unused(axes, len(tasks))
        if not drawn:
            fig.clear()
            return []
        _figure_legend(fig, list(axes.flat), axis_title)
        return _save(fig, stem, formats)


def plot_heatmap(means: Mapping[str, pd.DataFrame], metric_by_task: Mapping[str, str], stem: Path,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """Mean test metric over two swept axes as an annotated heatmap, one panel per task.

    means: task -> DataFrame (rows: values of one axis, columns: values of the other, cells:
    mean test metric; index and columns named after the axes).
    Colours run from worse (dark) to better (bright) whatever the metric's direction.
    """
    tasks = [t for t in means if not means[t].empty and np.isfinite(means[t].to_numpy(float)).any()]
    if not tasks:
        return []
    with style():
        fig, axes = _grid(len(tasks), width=max(4.0, 1.1 * max(means[t].shape[1] for t in tasks) + 2))
        for ax, task in zip(axes.flat, tasks):
            table = means[task].astype(float)
            higher = higher_is_better(metric_by_task.get(task, "accuracy"))
            finite = table.to_numpy()[np.isfinite(table.to_numpy())]
            decimals = 3 if finite.size == 0 or np.abs(finite).max() < 10 else 1
            sns.heatmap(table, annot=True, fmt=f".{decimals}f", cmap="viridis" if higher else "viridis_r",
                        cbar_kws={"label": f"Test {metric_by_task.get(task, '')}"}, linewidths=0.5, ax=ax)
            ax.set_title(task)
        _hide_unused(axes, len(tasks))
        return _save(fig, stem, formats)

