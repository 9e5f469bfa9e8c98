"""Small helpers that keep the notebooks in ``analysis/notebooks`` thin.

A notebook reads its results directories from the environment variable
``SSM_ABLATE_RESULTS`` (several separated by ``os.pathsep``) or, when unset, from the value in
its parameters cell, relative paths from the repository root; then it calls the library
(:mod:`analysis.report`, :mod:`analysis.plots`, :mod:`analysis.bench`) and shows what comes back.
IPython is imported only when something is shown, so this module imports without it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .load import load_results
from .report import Analysis, analyse, higher_by_task
from .selection import selection_lines
from .summary import compared_lines, held_lines
from .tables import Table, to_markdown

ENV_VAR = "SSM_ABLATE_RESULTS"


def repo_root() -> Path:
    """The repository root, found as the notebooks' first cell finds it: the first of the working
    directory and its parents that holds ``analysis/__init__.py`` (the working directory outside a
    checkout)."""
    return next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "analysis" / "__init__.py").is_file()),
                Path.cwd())


def results_inputs(default: str | Sequence[str]) -> list[str]:
    """The results directories to read: ``$SSM_ABLATE_RESULTS`` split on os.pathsep when set,
    else ``default`` (a string, split the same way, or a list). A relative entry is relative to
    the repository root (:func:`repo_root`), where the README's commands run, not to the
    notebook's folder, where ``jupyter execute`` runs the notebook."""
    value = os.environ.get(ENV_VAR) or default
    entries = [v for v in value.split(os.pathsep) if v] if isinstance(value, str) else list(value)
    return [str(repo_root() / entry) for entry in entries]


def load(default: str | Sequence[str]) -> Analysis:
    """Load and analyse the results named by :func:`results_inputs`."""
    return analyse(load_results(results_inputs(default)))


def figure_dir(out: str | None = None) -> Path:
    """Where a notebook's figures go: ``out`` when given, else a fresh temporary directory."""
    path = Path(out) if out else Path(tempfile.mkdtemp(prefix="ssm_ablate_figures_"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def show_markdown(text: str) -> None:
    """Display Markdown in the notebook."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def show_table(table: Table | None) -> None:
    """Display a table as Markdown (nothing for None)."""
    if table is not None:
        show_markdown(to_markdown(table))


def show_figures(paths: Iterable[Path]) -> None:
    """Display the PNG files among ``paths`` (a figure is written as PNG and PDF)."""
    from IPython.display import Image, display

    for path in paths:
        if Path(path).suffix == ".png":
            display(Image(filename=str(path)))


def describe(an: Analysis) -> str:
    """Markdown: what was compared and what was held equal."""
    if an.runs.empty:
        return "No training runs in these results."
    compared = compared_lines(an.runs, an.axes, an.label_axes, an.metric_by_task, higher_by_task(an))
    lines = ["**What was compared**", ""] + compared
    lines += selection_lines(an.all_runs, an.runs, an.tuned, an.metric_by_task)
    lines += ["", "**What was held equal**", ""] + held_lines(an.all_runs, list(an.axes) + list(an.tuned))
    return "\n".join(lines)


def present_axes(an: Analysis, wanted: Sequence[str]) -> list[str]:
    """The columns of ``wanted`` that were swept in ``an``, in the order given."""
    return [a for a in wanted if a in an.axes]
