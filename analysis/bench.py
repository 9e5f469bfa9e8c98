"""Benchmark results: time and memory against sequence length, as tables and log-log plots.

Benchmark rows (``<results_dir>/bench/*.parquet``, normalized by :func:`analysis.load.normalize_bench`)
carry name, peer, mode, batch, length, fwd_ms, fwdbwd_ms, tokens_per_s, peak_memory_mb,
status ('ok', 'over_budget', 'oom', ...), device and threads. A **series** is one (name, mode)
pair measured one way: batch, device and threads are part of its identity, as are the widths,
so rows that differ in any of them are never averaged together; those that vary appear in the
series label ('s5 / scan / threads=2'), those that do not in the table caption ('on cpu,
1 thread, batch 4'). Rows without a length (e.g. per-step latency) are not part of the length
sweep and are ignored here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from .axes import format_value
from .plots import FORMATS, PANEL_HEIGHT, add_note, save_figure, style
from .stats import aggregate, describe_excluded
from .tables import Cell, Table, stat_column

log = logging.getLogger(__name__)

TIME_COLUMNS = ("fwd_ms", "fwdbwd_ms")
STATUS_TEXT = {"over_budget": "over budget", "oom": "OOM"}
# how a series was measured: part of its identity (glibc_tunables: the malloc setting, ablate.allocator)
MEASURED_WITH = ("batch", "device", "threads", "glibc_tunables")
WIDTHS = ("d_model", "d_state")
_MARKS = "Points: mean over repeated measurements of a series (no interval); ▼: not measured (over budget / OOM)."
NOTES = {
    "speed_time": f"Forward and forward+backward time against sequence length, log-log. {_MARKS}",
    "speed_memory": f"Peak memory against sequence length, log-log. {_MARKS}",
}


def sweep_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """The rows of the length sweep: a length and at least one time, memory or a non-ok status."""
    if bench.empty:
        return bench
    measured = bench[[c for c in (*TIME_COLUMNS, "peak_memory_mb") if c in bench.columns]].notna().any(axis=1)
    rows = bench[bench["length"].notna() & (measured | (bench["status"] != "ok"))].copy()
    rows["length"] = rows["length"].astype(int)
    return rows


def series_keys(rows: pd.DataFrame) -> list[str]:
    """name and mode, plus each of batch, device, threads, glibc_tunables, d_model and d_state that
    takes several values (a missing value counts as one of them)."""
    keys = ["name", "mode"]
    for col in (*MEASURED_WITH, *WIDTHS):
        if col in rows.columns and rows[col].astype(object).map(format_value).nunique() > 1:
            keys.append(col)
    return keys


def style_keys(rows: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The keys that tell apart the series of one name in a plot: mode, plus every extra key that
    varies within a (name, mode) pair (e.g. threads)."""
    extra = [k for k in keys if k not in ("name", "mode")]
    pairs = rows.astype({k: object for k in extra}).groupby(["name", "mode"], sort=False)
    return ["mode"] + [k for k in extra if pairs[k].agg(lambda v: v.map(format_value).nunique()).max() > 1]


def _label(row: pd.Series, keys: Sequence[str]) -> str:
    parts = [str(row[k]) for k in keys if k in ("name", "mode") and row[k] not in ("-", "")]
    return " / ".join(parts + [_key_label(k, row[k]) for k in keys if k not in ("name", "mode")])


def _key_label(key: str, value: Any) -> str:
    """'threads=2'; the malloc setting as 'malloc=defaults' (none recorded or empty) or its
    tunables without glibc's prefix, 'malloc=hugetlb=1:mmap_threshold=...'."""
    if key != "glibc_tunables":
        return f"{key}={format_value(value)}"
    text = format_value(value)
    return "malloc=" + ("defaults" if text in ("", "n/a") else text.replace("glibc.malloc.", ""))


def add_series_label(rows: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A copy with a 'series' column: 'S5 / scan' (plus 'threads=2', ... for the extra keys) and a
    'variant' column: the label without the name, for :func:`style_keys` ('scan / threads=2')."""
    out = rows.copy()
    variant = style_keys(rows, keys) if len(rows) else ["mode"]
    out["series"] = out.apply(lambda r: _label(r, keys), axis=1) if len(out) else pd.Series(dtype=str)
    out["variant"] = out.apply(lambda r: _label(r, variant) or "-", axis=1) if len(out) else pd.Series(dtype=str)
    return out


def measured_with(rows: pd.DataFrame, keys: Sequence[str]) -> str:
    """How every series was measured, from the batch, device and threads shared by all rows:
    'cpu, 1 thread, batch 4' (those that vary are in the series labels instead)."""
    shared = {c: format_value(rows[c].iloc[0]) for c in MEASURED_WITH if c in rows.columns and c not in keys}
    parts = [shared["device"]] if "device" in shared else []
    if shared.get("threads", "n/a") != "n/a":
        parts.append(f"{shared['threads']} thread{'' if shared['threads'] == '1' else 's'}")
    if shared.get("batch", "n/a") != "n/a":
        parts.append(f"batch {shared['batch']}")
    return ", ".join(parts)


def status_counts(bench: pd.DataFrame) -> dict[str, int]:
    """Rows of the length sweep per status, e.g. {'ok': 30, 'over_budget': 2}."""
    rows = sweep_rows(bench)
    return {str(k): int(v) for k, v in rows["status"].value_counts().items()} if len(rows) else {}


def count_phrase(bench: pd.DataFrame) -> str:
    """What the benchmark rows are, in counts that add up to their number: '26 rows: 23 measured,
    1 over budget, 1 OOM (not measured), 1 outside the length sweep (no length, e.g. per-step
    latency, or nothing measured)'."""
    counts = status_counts(bench)
    parts = [f"{counts.get('ok', 0)} measured"]
    missed = [f"{n} {STATUS_TEXT.get(s, s.replace('_', ' '))}" for s, n in sorted(counts.items()) if s != "ok"]
    if missed:
        parts.append(", ".join(missed) + " (not measured)")
    outside = len(bench) - sum(counts.values())
    if outside:
        parts.append(f"{outside} outside the length sweep (no length, e.g. per-step latency, or nothing measured)")
    return f"{len(bench)} rows: " + ", ".join(parts)


def speed_table(bench: pd.DataFrame, column: str = "fwdbwd_ms", caption: str | None = None,
                label: str = "tab:speed") -> Table | None:
    """Rows = series, columns = sequence lengths, cells = mean ``column`` over repeated
    measurements (n in parentheses when repeated), fastest/smallest per length in bold;
    a length a series could not run shows its status ('over budget', 'OOM').

    Returns None when no ok row has ``column``.
    """
    rows = sweep_rows(bench)
    if rows.empty or column not in rows.columns or rows.loc[rows["status"] == "ok", column].notna().sum() == 0:
        return None
    keys = series_keys(rows)
    rows = add_series_label(rows, keys)
    series = list(dict.fromkeys(rows.sort_values(keys, kind="stable")["series"]))
    lengths = sorted(rows["length"].unique())
    agg = aggregate(rows, ["series", "length"], [column])
    header = ["Series"] + [f"L={L}" for L in lengths]
    cells: dict[int, list[Cell]] = {}
    for L in lengths:
        index = [(s, L) for s in series]
        present = [i for i in index if i in agg.index]
        column_cells = dict(zip(present, stat_column(agg, column, present, significant=True))) if present else {}
        for cell in column_cells.values():
            cell.show_n = cell.n > 1
        cells[L] = [column_cells.get(i, Cell(n=0)) for i in index]
    bad = rows[rows["status"] != "ok"]
    body = []
    for i, s in enumerate(series):
        row = [Cell(text=s)]
        for L in lengths:
            cell = cells[L][i]
            if not cell.has_value:
                statuses = bad.loc[(bad["series"] == s) & (bad["length"] == L), "status"]
                if len(statuses):
                    cell = Cell(text=STATUS_TEXT.get(statuses.iloc[0], statuses.iloc[0]))
            row.append(cell)
        body.append(row)
    if caption is None:
        what = {"fwd_ms": "Forward time (ms)", "fwdbwd_ms": "Forward+backward time (ms)",
                "peak_memory_mb": "Peak memory (MB)", "tokens_per_s": "Throughput (tokens/s)"}.get(column, column)
        devices = ", ".join(sorted(rows["device"].astype(str).unique()))
        how = measured_with(rows, keys)
        repeated = any(c.n > 1 for cells_ in cells.values() for c in cells_ if c.has_value)
        caption = (f"{what} against sequence length on {how or devices}; "
                   + ("mean ± std (n) where a series was measured in several jobs; " if repeated else "")
                   + "lowest per length in bold.")
        if column == "tokens_per_s":
            caption = caption.replace("lowest", "highest")
        excluded = describe_excluded(pd.Series(status_counts(bench)))
        if excluded:
            caption += f" Not measured: {excluded.replace('_', ' ')}."
    return Table(header=header, rows=body, caption=caption, label=label, n_text=1)


def plot_speed(bench: pd.DataFrame, stem_time: Path, stem_memory: Path,
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Log-log plots against sequence length: time (a panel for forward and one for
    forward+backward) and peak memory; colour by name, line style by mode (and by batch, device or
    threads where they vary within a name and mode: :func:`style_keys`). A length a series
    could not run (over budget, OOM) is a triangle at the top of the panel. Returns the files written.
    """
    rows = sweep_rows(bench)
    if rows.empty:
        return []
    keys = series_keys(rows)
    heading = " / ".join(style_keys(rows, keys))
    rows = add_series_label(rows, keys)
    names = list(dict.fromkeys(rows.sort_values("name")["name"]))
    palette = dict(zip(names, sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))))
    written = []
    time_cols = [c for c in TIME_COLUMNS if c in rows.columns and rows.loc[rows["status"] == "ok", c].notna().any()]
    if time_cols:
        written += _loglog(rows, heading, time_cols, palette, stem_time, formats,
                           {"fwd_ms": "forward (ms)", "fwdbwd_ms": "forward + backward (ms)"})
    if "peak_memory_mb" in rows.columns and rows.loc[rows["status"] == "ok", "peak_memory_mb"].notna().any():
        written += _loglog(rows, heading, ["peak_memory_mb"], palette, stem_memory, formats,
                           {"peak_memory_mb": "peak memory (MB)"})
    return written


def _loglog(rows: pd.DataFrame, heading: str, columns: Sequence[str], palette: dict, stem: Path,
            formats: Sequence[str], titles: dict[str, str]) -> list[Path]:
    """One log-log panel per column; ``heading`` names the line styles in the legend ('mode'). Every
    panel gets every name and variant in the same order, so a variant that one panel lacks does
    not shift the styles of the others, and the first panel's legend holds for all."""
    ok = rows[rows["status"] == "ok"]
    bad = rows[rows["status"] != "ok"]
    variants = list(dict.fromkeys(ok["variant"]))
    with style():
        fig = Figure(figsize=(5.0 * len(columns) + 2.0, PANEL_HEIGHT + 0.4), layout="constrained")
        axes = fig.subplots(1, len(columns), squeeze=False)[0]
        for ax, col in zip(axes, columns):
            data = ok.dropna(subset=[col]).groupby(["series", "name", "variant", "length"], as_index=False)[col].mean()
            sns.lineplot(data=data, x="length", y=col, hue="name", hue_order=list(palette), palette=palette,
                         style="variant", style_order=variants, units="series", estimator=None, markers=True,
                         dashes=True, ax=ax)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            lengths = sorted(rows["length"].unique())
            ax.set_xticks(lengths, [str(int(L)) for L in lengths])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("sequence length")
            ax.set_ylabel(titles.get(col, col))
            trans = blended_transform_factory(ax.transData, ax.transAxes)
            for _, row in bad.iterrows():
                ax.plot(row["length"], 0.97, marker="v", color=palette.get(row["name"], "black"), transform=trans,
                        clip_on=False, linestyle="none")
            if len(bad):
                ax.text(0.01, 0.99, "▼: not measured (over budget / OOM)", transform=ax.transAxes, fontsize="x-small",
                        va="top", color="grey")
        handles, labels = axes[0].get_legend_handles_labels()
        labels = [heading if label == "variant" else label for label in labels]
        for ax in axes:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize="small")
        add_note(fig, NOTES.get(stem.name, _MARKS))
        paths = save_figure(fig, stem, formats)
        fig.clear()
        return paths


def devices(bench: pd.DataFrame) -> list[str]:
    """The devices the benchmark ran on."""
    return sorted(bench["device"].astype(str).unique()) if not bench.empty else []


def fastest_per_length(bench: pd.DataFrame, column: str = "fwdbwd_ms") -> pd.DataFrame:
    """For each length, the series with the lowest mean ``column`` and its value
    (columns: length, series, value); empty when there is no such data."""
    rows = sweep_rows(bench)
    if rows.empty or column not in rows.columns:
        return pd.DataFrame(columns=["length", "series", "value"])
    rows = add_series_label(rows[rows["status"] == "ok"].dropna(subset=[column]), series_keys(rows))
    if rows.empty:
        return pd.DataFrame(columns=["length", "series", "value"])
    means = rows.groupby(["length", "series"])[column].mean().reset_index()
    best = means.loc[means.groupby("length")[column].idxmin()]
    return best.rename(columns={column: "value"}).reset_index(drop=True)[["length", "series", "value"]]
