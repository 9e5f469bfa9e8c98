"""Benchmark results: time and memory against sequence length, as tables and log-log plots.

Benchmark rows (``<results_dir>/bench/*.parquet``, normalized by :func:`analysis.load.normalize_bench`)
carry name, peer, mode, batch, length, fwd_ms, fwdbwd_ms, tokens_per_s, peak_memory_mb,
status ('ok', 'over_budget', 'oom', ...) and device. A **series** is one (name, mode) pair, plus
batch, device and widths when those vary. Rows without a length (e.g. per-step latency) are not
part of the length sweep and are ignored here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from .plots import FORMATS, PANEL_HEIGHT, save_figure, style
from .stats import aggregate, describe_excluded
from .tables import Cell, Table, stat_column

log = logging.getLogger(__name__)

TIME_COLUMNS = ("fwd_ms", "fwdbwd_ms")
STATUS_TEXT = {"over_budget": "over budget", "oom": "OOM"}


def sweep_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """The rows of the length sweep: a length and at least one time, memory or a non-ok status."""
    if bench.empty:
        return bench
    measured = bench[[c for c in (*TIME_COLUMNS, "peak_memory_mb") if c in bench.columns]].notna().any(axis=1)
    rows = bench[bench["length"].notna() & (measured | (bench["status"] != "ok"))].copy()
    rows["length"] = rows["length"].astype(int)
    return rows


def series_keys(rows: pd.DataFrame) -> list[str]:
    """name and mode, plus batch, device, d_model and d_state where they take several values."""
    keys = ["name", "mode"]
    for col in ("batch", "device", "d_model", "d_state"):
        if col in rows.columns and rows[col].nunique(dropna=True) > 1:
            keys.append(col)
    return keys


def add_series_label(rows: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A copy with a 'series' column: 'S5 / scan' (plus 'batch=8', ... for the extra keys)."""
    out = rows.copy()

    def label(row: pd.Series) -> str:
        parts = [str(row["name"])] + ([str(row["mode"])] if row["mode"] not in ("-", "") else [])
        parts += [f"{k}={_fmt(row[k])}" for k in keys if k not in ("name", "mode")]
        return " / ".join(parts)

    out["series"] = out.apply(label, axis=1) if len(out) else pd.Series(dtype=str)
    return out


def _fmt(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def status_counts(bench: pd.DataFrame) -> dict[str, int]:
    """Rows of the length sweep per status, e.g. {'ok': 30, 'over_budget': 2}."""
    rows = sweep_rows(bench)
    return {str(k): int(v) for k, v in rows["status"].value_counts().items()} if len(rows) else {}


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
        caption = f"{what} against sequence length on {devices}; lowest per length in bold."
        if column == "tokens_per_s":
            caption = caption.replace("lowest", "highest")
        excluded = describe_excluded(pd.Series(status_counts(bench)))
        if excluded:
            caption += f" Not measured: {excluded.replace('_', ' ')}."
    return Table(header=header, rows=body, caption=caption, label=label, n_text=1)


def plot_speed(bench: pd.DataFrame, stem_time: Path, stem_memory: Path,
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Log-log plots against sequence length: time (a panel for forward and one for
    forward+backward) and peak memory; colour by name, line style by mode. A length a series
    could not run (over budget, OOM) is a triangle at the top of the panel. Returns the files written.
    """
    rows = sweep_rows(bench)
    if rows.empty:
        return []
    keys = series_keys(rows)
    rows = add_series_label(rows, keys)
    names = list(dict.fromkeys(rows.sort_values("name")["name"]))
    palette = dict(zip(names, sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))))
    written = []
    time_cols = [c for c in TIME_COLUMNS if c in rows.columns and rows.loc[rows["status"] == "ok", c].notna().any()]
    if time_cols:
        written += _loglog(rows, time_cols, palette, stem_time, formats,
                           {"fwd_ms": "forward (ms)", "fwdbwd_ms": "forward + backward (ms)"})
    if "peak_memory_mb" in rows.columns and rows.loc[rows["status"] == "ok", "peak_memory_mb"].notna().any():
        written += _loglog(rows, ["peak_memory_mb"], palette, stem_memory, formats,
                           {"peak_memory_mb": "peak memory (MB)"})
    return written


def _loglog(rows: pd.DataFrame, columns: Sequence[str], palette: dict, stem: Path, formats: Sequence[str],
            titles: dict[str, str]) -> list[Path]:
    ok = rows[rows["status"] == "ok"]
    bad = rows[rows["status"] != "ok"]
    modes = list(dict.fromkeys(ok["mode"]))
    with style():
        fig = Figure(figsize=(5.0 * len(columns) + 2.0, PANEL_HEIGHT + 0.4), layout="constrained")
        axes = fig.subplots(1, len(columns), squeeze=False)[0]
        for ax, col in zip(axes, columns):
            data = ok.dropna(subset=[col]).groupby(["series", "name", "mode", "length"], as_index=False)[col].mean()
            sns.lineplot(data=data, x="length", y=col, hue="name", hue_order=[n for n in palette if n in set(data["name"])],
                         palette=palette, style="mode", style_order=[m for m in modes if m in set(data["mode"])],
                         units="series", estimator=None, markers=True, dashes=True, ax=ax)
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
        for ax in axes:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize="small")
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
