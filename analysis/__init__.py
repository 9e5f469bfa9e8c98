"""Analysis of ssm-ablate results: parquet in, tables, plots and a summary out.

``python -m analysis results/NAME`` writes ``results/NAME/report/``; see :mod:`analysis.__main__`.
This package reads parquet only: it never imports torch or :mod:`ablate`, so it works on
results copied from a cluster.

Modules, one job each:

- :mod:`analysis.load`     parquet files -> run, curve and benchmark frames (tolerant of bad files)
- :mod:`analysis.axes`     which configuration columns were swept, and short labels for them
- :mod:`analysis.stats`    aggregation over seeds (mean, std, n, 95% CI), metric directions, Welch's t-test
- :mod:`analysis.selection` tuned runs: one per (configuration, seed), selected on validation
- :mod:`analysis.significance` the baseline row of each table and which rows differ from it
- :mod:`analysis.tables`   Markdown and LaTeX (booktabs) tables
- :mod:`analysis.plots`    seaborn figures saved as PNG and PDF
- :mod:`analysis.bench`    benchmark (speed/memory vs length) tables and plots
- :mod:`analysis.summary`  the ``summary.md`` that ties a report together
- :mod:`analysis.report`   one results set -> a report directory
- :mod:`analysis.outputs`  the files a report wrote (its manifest), so a rerun removes its stale ones
- :mod:`analysis.compare`  two result sets (ours, or published numbers in a CSV) side by side
- :mod:`analysis.notebook` helpers that keep ``analysis/notebooks/*.ipynb`` thin
"""

from .errors import AnalysisError

__all__ = ["AnalysisError"]
