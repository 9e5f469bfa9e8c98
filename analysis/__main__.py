"""Command line: ``python -m analysis results/NAME`` writes ``results/NAME/report/``.

    python -m analysis results/mimo_vs_siso                  # -> results/mimo_vs_siso/report/
    python -m analysis results/gating results/selectivity --out reports/gating_selectivity
    python -m analysis 'results/*'                           # every results directory (quote the glob)
    python -m analysis --compare results/presets paper.csv --key model.preset
    python -m analysis results/gating --baseline "gate=none"   # significance against this row

Tuned runs (the runner's ``tuned`` column) are selected on validation per configuration and
seed; tables report the selected run's test metric, a 95% CI, and † where a row differs from the
baseline row (first row unless ``--baseline``; Welch's t-test, p < 0.05, >= 3 seeds per cell).

Exit status 0 on success; 2 with a one-line ``error: ...`` for a missing or empty directory, a bad
``--formats`` or an ``--out`` that cannot be made (before anything is written),
unreadable results or a bad CSV.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # the CLI never opens a window

from .errors import AnalysisError  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Tables (Markdown, LaTeX), plots (PNG, PDF) and a summary from ssm-ablate results.")
    parser.add_argument("inputs", nargs="*", metavar="RESULTS_DIR",
                        help="results directories (with runs/ and/or bench/) or glob patterns")
    parser.add_argument("--out", metavar="DIR", help="report directory (default: the first input's report/)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="put two result sets side by side: results directories or CSVs of published numbers "
                             "(columns label, task, metric, value[, std, n])")
    parser.add_argument("--key", metavar="COL[,COL]",
                        help="with --compare: run columns whose values name our configurations (e.g. model.preset)")
    parser.add_argument("--names", nargs=2, metavar=("NAME_A", "NAME_B"), help="with --compare: column titles")
    parser.add_argument("--baseline", metavar="ROW",
                        help="the row significance is tested against: a configuration label (e.g. 'siso, glu') "
                             "or key=value pairs (e.g. 'gate=glu,structure=siso'); default: each table's first row")
    parser.add_argument("--formats", default="png,pdf", help="figure formats, comma-separated (default: png,pdf)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.compare):
        parser.error("give results directories, or --compare A B (not both)")
    if args.compare and args.baseline:
        parser.error("--baseline is for reports, not --compare")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    formats = [f.strip().lstrip(".") for f in args.formats.split(",") if f.strip()]
    try:
        if args.compare:
            from .compare import run_compare

            key = [k.strip() for k in args.key.split(",")] if args.key else None
            written = run_compare(args.compare[0], args.compare[1], args.out, key, args.names, formats)
        else:
            from .report import build_report

            written = build_report(args.inputs, args.out, formats, baseline=args.baseline)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folder = Path(os.path.commonpath([str(p.parent) for p in written])) if written else Path(".")
    try:
        print(f"wrote {len(written)} files to {folder}/")
        for path in written:
            print(f"  {path.relative_to(folder) if path.is_relative_to(folder) else path}")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the report is written, that is what counts
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
