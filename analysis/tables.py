"""Tables ready to paste into a paper: Markdown and LaTeX (booktabs) from one neutral form.

A :class:`Table` is a header, rows of :class:`Cell` and a caption. Statistic cells render as
``mean ± std (n)`` (``$0.812 \\pm 0.004$ (3)`` in LaTeX); the best cell of each column whose
metric has a better direction is bold (higher accuracy and throughput, lower error, loss, time
and memory). Each column gets three significant digits for its largest value (at least three
decimals below 10). The LaTeX needs ``\\usepackage{booktabs}`` only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .stats import EXTRAPOLATION, clip_interval, describe_excluded, higher_is_better

DASH = "—"
_TITLES = {
    "test_loss": "Test loss", "final_val_loss": "Final val. loss", "param_count": "Params",
    "state_size": "State size", "tokens_per_s": "Tokens/s", "peak_memory_mb": "Peak mem. (MB)",
    "train_time_s": "Train time (s)", "flops_per_token": "FLOPs/token", "steps": "Steps",
    "wall_time_s": "Wall time (s)", "fwd_ms": "Fwd (ms)", "fwdbwd_ms": "Fwd+bwd (ms)",
}
INTEGER_COLUMNS = ("param_count", "state_size", "flops_per_token", "steps", "tokens_seen")


@dataclass
class Cell:
    """One table cell: plain ``text``, or a statistic (mean, std, n) printed with ``decimals``
    (None: three significant digits for each number).

    integer: print the mean as an integer and, when std is 0, the value alone (sizes).
    show_n: append '(n)'.
    mark: a significance mark ('†') printed after the number, before '(n)'.
    """

    text: str | None = None
    mean: float = float("nan")
    std: float = float("nan")
    n: int = 0
    decimals: int | None = 3  # None: three significant digits per value
    bold: bool = False
    integer: bool = False
    show_n: bool = True
    mark: str = ""

    @property
    def has_value(self) -> bool:
        return self.text is None and self.n > 0 and np.isfinite(self.mean)

    def _number(self, value: float) -> str:
        if self.integer:
            return f"{value:.0f}"
        if self.decimals is None:  # three significant digits, never scientific
            return f"{value:.{decimals_for([value], minimum=0)}f}"
        return f"{value:.{self.decimals}f}"

    def _parts(self) -> tuple[str, str | None, str]:
        """(mean text, std text or None, n text) of a statistic cell."""
        mean = self._number(self.mean)
        spread = None
        if (self.n > 1 or not self.show_n) and np.isfinite(self.std) and not (self.integer and self.std == 0):
            spread = self._number(self.std)
        count = f" ({self.n})" if self.show_n and not (self.integer and spread is None) else ""
        return mean, spread, count

    def markdown(self) -> str:
        if self.text is not None:
            return self.text.replace("|", "\\|")
        if not self.has_value:
            return DASH
        mean, spread, count = self._parts()
        body = f"{mean} ± {spread}" if spread is not None else mean
        return (f"**{body}**" if self.bold else body) + self.mark + count

    def latex(self) -> str:
        if self.text is not None:
            return latex_escape(self.text)
        if not self.has_value:
            return "--"
        mean, spread, count = self._parts()
        body = f"{mean} \\pm {spread}" if spread is not None else mean
        mark = LATEX_MARKS.get(self.mark, f"^{{\\mbox{{{latex_escape(self.mark)}}}}}") if self.mark else ""
        return (f"$\\mathbf{{{body}}}{mark}$" if self.bold else f"${body}{mark}$") + count


@dataclass
class Table:
    """A rendered-agnostic table: ``header`` titles, ``rows`` of cells (``n_text`` leading text
    columns, left-aligned), a ``caption`` and a LaTeX ``label``."""

    header: list[str]
    rows: list[list[Cell]]
    caption: str
    label: str
    n_text: int = 1
    notes: list[str] = field(default_factory=list)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_MARKS = {"†": r"^{\dagger}", "‡": r"^{\ddagger}", "*": r"^{*}"}  # inside the cell's math
_LATEX_UNICODE = {"±": r"$\pm$", "†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$", "∈": r"$\in$", "…": r"\ldots{}",
                  "<": r"$<$", ">": r"$>$", "→": r"$\rightarrow$", "—": "---", "–": "--", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                  "×": r"$\times$", "−": r"$-$", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$", "Δ": r"$\Delta$", "·": r"$\cdot$",
                  "∞": r"$\infty$"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table or caption: specials escaped, common symbols as math."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for symbol, replacement in _LATEX_UNICODE.items():
        out = out.replace(symbol, replacement)
    return out


def column_title(column: str, arrows: bool = True) -> str:
    """Readable header for a result column, with ↑/↓ when the column has a better direction.

    test_accuracy -> 'Test accuracy ↑', best_val_mse -> 'Best val. mse ↓',
    test_len_512_accuracy -> 'L=512 ↑', param_count -> 'Params'.
    """
    match = EXTRAPOLATION.match(column)
    if column in _TITLES:
        title = _TITLES[column]
    elif match:
        title = f"L={match.group(1)}"
    elif column.startswith("test_"):
        title = "Test " + column[5:].replace("_", " ")
    elif column.startswith("best_val_"):
        title = "Best val. " + column[9:].replace("_", " ")
    elif column.startswith("final_val_"):
        title = "Final val. " + column[10:].replace("_", " ")
    else:
        title = column.replace("_", " ")
    better = higher_is_better(column)
    if arrows and better is not None:
        title += " ↑" if better else " ↓"
    return title


def decimals_for(values: Sequence[float], minimum: int = 3) -> int:
    """Decimals giving 3 significant digits to the largest |value|; at least ``minimum`` when
    that value is below 10, at most 6."""
    finite = [abs(v) for v in values if v is not None and np.isfinite(v)]
    largest = max(finite) if finite else 0.0
    if largest == 0:
        return minimum
    digits = 2 - math.floor(math.log10(largest))
    if largest < 10:
        digits = max(digits, minimum)
    return int(min(max(digits, 0), 6))


def stat_column(agg: pd.DataFrame, column: str, index: Sequence, *, bold_best: bool = True,
                direction: bool | None = None, significant: bool = False) -> list[Cell]:
    """Cells for one aggregated column, in the order of ``index``.

    agg: output of :func:`analysis.stats.aggregate` (MultiIndex columns (column, stat)).
    direction: True if higher is better, False if lower; default from the column name.
    significant: print each number with three significant digits instead of one precision per column.
    The best cells (ties at the printed precision included) are bold when bold_best and a
    direction exists and at least two rows have a value.
    """
    rows = agg.loc[list(index), column] if column in agg.columns.get_level_values(0) else None
    if rows is None:
        return [Cell(n=0) for _ in index]
    means, stds, ns = rows["mean"].to_numpy(float), rows["std"].to_numpy(float), rows["n"].to_numpy(int)
    integer = column in INTEGER_COLUMNS and all(float(m).is_integer() for m in means[np.isfinite(means)])
    decimals = decimals_for(means)
    cells = [Cell(mean=m, std=s, n=int(n), decimals=None if significant else decimals, integer=integer)
             for m, s, n in zip(means, stds, ns)]
    better = higher_is_better(column) if direction is None else direction
    valued = [c for c in cells if c.has_value]
    if bold_best and better is not None and len(valued) >= 2:
        best = max if better else min
        target = best(c.mean for c in valued)
        for c in valued:
            c.bold = c._number(c.mean) == c._number(target)
    return cells


def runs_cell(counts: pd.Series) -> Cell:
    """'3' when every run is ok, else '2 of 4 (1 diverged, 1 failed)'."""
    ok, total = int(counts.get("ok", 0)), int(counts.get("total", 0))
    if ok == total:
        return Cell(text=str(total))
    return Cell(text=f"{ok} of {total} ({describe_excluded(counts)})")


def ci_cells(agg: pd.DataFrame, column: str, index: Sequence, decimals: int | None = None) -> list[Cell]:
    """'[low, high]' text cells: the Student-t 95% confidence interval of each row's mean of
    ``column`` (mean ± ci95 from :func:`analysis.stats.aggregate`), clipped to the column's valid
    range (:func:`analysis.stats.clip_interval`: accuracy in [0, 1], losses >= 0); '—' with
    fewer than 2 values."""
    if column not in agg.columns.get_level_values(0):
        return [Cell(text=DASH) for _ in index]
    rows = agg.loc[list(index), column]
    if decimals is None:
        decimals = decimals_for(rows["mean"].to_numpy(float))
    cells = []
    for mean, half, n in zip(rows["mean"], rows["ci95"], rows["n"]):
        if n < 2 or not (np.isfinite(mean) and np.isfinite(half)):
            cells.append(Cell(text=DASH))
        else:
            low, high = clip_interval(mean - half, mean + half, column)
            cells.append(Cell(text=f"[{low:.{decimals}f}, {high:.{decimals}f}]"))
    return cells


def results_table(agg: pd.DataFrame, counts: pd.DataFrame, labels: pd.DataFrame, columns: Sequence[str],
                  caption: str, label: str, direction: dict[str, bool] | None = None, *,
                  ci_column: str | None = None, marks: dict[str, Sequence[str]] | None = None,
                  beside: dict[str, Sequence[tuple[str, Sequence[str]]]] | None = None,
                  extra: Sequence[tuple[str, Sequence[str]]] = (), titles: dict[str, str] | None = None,
                  unranked: Sequence[str] = ()) -> Table:
    """Rows = configurations, columns = aggregated metrics.

    agg: :func:`analysis.stats.aggregate` indexed by configuration (one task).
    counts: :func:`analysis.stats.status_counts` with the same index.
    labels: one row per configuration (same index, same order as the table), one text column per
        label axis (its header is the column name).
    columns: which aggregated columns to show, in order (absent ones skipped).
    direction: overrides of better-direction per column.
    ci_column: a shown column followed by a '95% CI' column ('[low, high]', Student-t, clipped to
        the column's valid range).
    marks: {column: one mark per row ('' for none)} printed after the cell's number ('†').
    beside: {column: [(header, one text per row)]}: text columns placed right after a shown
        column (after its CI column, if any).
    extra: (header, one text per row) columns appended after the statistics.
    titles: headers of columns (default :func:`column_title`, with the arrow of ``direction``).
    unranked: shown columns whose best is not marked in bold (values that are not comparable).
    A 'Runs' column is added when any configuration has excluded (diverged/failed) runs.
    """
    direction = direction or {}
    index = list(labels.index)
    shown = [c for c in columns if c in agg.columns.get_level_values(0) and agg[c]["n"].sum() > 0]
    body = {c: stat_column(agg, c, index, direction=direction.get(c), bold_best=c not in unranked) for c in shown}
    for column, column_marks in (marks or {}).items():
        for cell, mark in zip(body.get(column, []), column_marks):
            cell.mark = mark if cell.has_value else ""
    after: dict[str, list[tuple[str, list[Cell]]]] = {c: [] for c in shown}
    if ci_column in shown:
        decimals = body[ci_column][0].decimals if body[ci_column] else None
        after[ci_column].append(("95% CI", ci_cells(agg, ci_column, index, decimals)))
    for column, texts in (beside or {}).items():
        if column in after:
            after[column] += [(h, [Cell(text=str(t)) for t in values]) for h, values in texts]
    header = list(labels.columns)
    for c in shown:
        header.append((titles or {}).get(c) or (column_title(c) if c not in direction else
                      column_title(c, arrows=False) + (" ↑" if direction[c] else " ↓")))
        header += [h for h, _ in after[c]]
    header += [h for h, _ in extra]
    with_runs = bool((counts.loc[index, "ok"] != counts.loc[index, "total"]).any())
    if with_runs:
        header.append("Runs")
    rows = []
    for i, key in enumerate(index):
        row = [Cell(text=str(v)) for v in labels.loc[key]]
        for c in shown:
            row.append(body[c][i])
            row += [cells[i] for _, cells in after[c]]
        row += [Cell(text=str(texts[i])) for _, texts in extra]
        if with_runs:
            row.append(runs_cell(counts.loc[key]))
        rows.append(row)
    return Table(header=header, rows=rows, caption=caption, label=label, n_text=len(labels.columns))


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: an italic caption line, then the pipe table."""
    align = [":--"] * table.n_text + ["--:"] * (len(table.header) - table.n_text)
    lines = [f"*{table.caption}*", "", "| " + " | ".join(h.replace("|", "\\|") for h in table.header) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell.markdown() for cell in row) + " |" for row in table.rows]
    lines += [""] + [f"{note}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (caption on top, ``\\label``), text columns left-aligned."""
    spec = "l" * table.n_text + "r" * (len(table.header) - table.n_text)
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[htbp]",
        "  \\centering",
        "  \\small",
        f"  \\caption{{{latex_escape(table.caption)}}}",
        f"  \\label{{{latex_label(table.label)}}}",
        f"  \\begin{{tabular}}{{{spec}}}",
        "    \\toprule",
        "    " + " & ".join(latex_escape(h) for h in table.header) + " \\\\",
        "    \\midrule",
    ]
    lines += ["    " + " & ".join(cell.latex() for cell in row) + " \\\\" for row in table.rows]
    lines += ["    \\bottomrule", "  \\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def latex_label(text: str) -> str:
    """A LaTeX label made of safe characters: 'tab:results-sdigits'."""
    return re.sub(r"[^A-Za-z0-9:.-]+", "-", text).strip("-")


def seeds_phrase(n_per_cell: Sequence[int], n_seeds: int) -> str:
    """'3 seeds' or '2-3 seeds per configuration' from the counts per cell and distinct seeds."""
    valued = [n for n in n_per_cell if n > 0]
    if not valued:
        return "no successful runs"
    low, high = min(valued), max(valued)
    if low == high:
        return f"{high} seed{'s' if high != 1 else ''}"
    return f"{low}–{high} seeds per configuration ({n_seeds} distinct)"
