"""Parquet files on disk -> three pandas frames: runs, learning curves, benchmark rows.

A results directory (written by ``python -m ablate``, see ``ablate/results.py``) holds::

    runs/<run_id>.parquet     one row per run: flattened config (dotted columns), metrics, status
    curves/<run_id>.parquet   one row per evaluation: step, train_time_s, tokens, losses, val_<metric>
    bench/*.parquet           benchmark rows (name, mode, batch, length, fwd_ms, fwdbwd_ms, ...)

Reading is tolerant, because results are copied between machines and written by different
versions of the runner:

- a corrupt or truncated parquet file is skipped with a warning that names it;
- a parquet file written by another tool (without this suite's schema, see
  :func:`has_schema`) is skipped with a warning that names it, never counted as a run;
- a file written by an older version with fewer columns still loads: the missing values are
  NaN, and the hidden column ``_absent`` lists, per row, the columns its file lacked (so
  :mod:`analysis.axes` does not mistake "not recorded" for "a different setting");
- the essential columns (``run_id``, ``task``, ``metric``, ``status``) are filled in from
  what is there when an old file lacks them.

Hidden bookkeeping columns start with an underscore: ``_file`` (the parquet path), ``_source``
(the results directory), ``_absent`` (see above).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import AnalysisError

log = logging.getLogger(__name__)

RUNS, CURVES, BENCH = "runs", "curves", "bench"
METRICS = ("accuracy", "mse")  # the task metrics the runner writes (test_<metric>, best_val_<metric>, ...)
STATUSES = ("ok", "diverged", "failed")
# Columns that mark a file as this suite's (see has_schema).
RUN_MARKERS = ("run_id", "status", "schema_version", "experiment")
# Layer fields the runner writes only when they are off these defaults (models.config
# LATER_FIELDS, as ablate.results.flatten writes them: a list as "0,1"); a test keeps the two
# in step. A field not listed here stays NaN in rows that lack it (not recorded, see _absent).
LATER_DEFAULTS = {f"model.ssm.{k}": v for k, v in {
    "headdim": None, "ngroups": 1, "a_source": "learned", "a_floor": 1e-4, "trapezoid": "data", "rotation": "none",
    "rope_fraction": 0.5, "rotation_form": "rotate_bc", "eig_range": "0,1", "mimo_rank": 1, "bc_norm": False,
    "bc_bias": False, "gelu": "exact", "a_param": "log", "clip_eigs": False, "step_rescale": 1.0,
    "project_from": "x", "gate_norm": False, "skip_per": "channel"}.items() if v is not None}
CURVE_COLUMNS = ("run_id", "step")
BENCH_NAMES = ("name", "preset", "section")
BENCH_MEASURES = ("fwd_ms", "fwdbwd_ms", "step_ms", "peak_memory_mb")
_GLOB_CHARS = set("*?[")


@dataclass
class ResultSet:
    """Everything loaded from one or more results directories.

    runs:    one row per run (may be empty when only benchmark results exist)
    curves:  one row per (run_id, step) evaluation (may be empty)
    bench:   one row per benchmark measurement (may be empty)
    dirs:    the results directories read, in order
    skipped: parquet files that could not be read or are not this suite's (each was logged as a warning)
    """

    runs: pd.DataFrame
    curves: pd.DataFrame
    bench: pd.DataFrame
    dirs: list[Path]
    skipped: list[Path] = field(default_factory=list)


def is_results_dir(path: Path) -> bool:
    """True when ``path`` has ``runs/*.parquet`` or ``bench/*.parquet`` below it."""
    return any(any((path / kind).glob("*.parquet")) for kind in (RUNS, BENCH) if (path / kind).is_dir())


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Results directories named by ``inputs`` (paths or glob patterns), in order, without repeats.

    A pattern keeps the matches that are results directories. A plain directory that holds no
    results itself but has results directories one level below (e.g. ``results/``) stands for
    those. Raises AnalysisError (one line) for a missing path, a non-directory, a directory
    without results, or a pattern that matches none.
    """
    if not inputs:
        raise AnalysisError("no results directory given")
    found: list[Path] = []
    for spec in inputs:
        if _GLOB_CHARS & set(spec) and not Path(spec).exists():  # a path that exists is read as it is
            matches = [Path(p) for p in sorted(glob.glob(spec)) if Path(p).is_dir() and is_results_dir(Path(p))]
            if not matches:
                raise AnalysisError(f"no results directory matches {spec!r}")
            found.extend(matches)
            continue
        path = Path(spec)
        if not path.exists():
            raise AnalysisError(f"results directory {spec!r} does not exist")
        if not path.is_dir():
            raise AnalysisError(f"{spec!r} is not a directory")
        if is_results_dir(path):
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and is_results_dir(p))
        if not children:
            raise AnalysisError(f"no results in {spec!r} (expected runs/*.parquet or bench/*.parquet)")
        log.info("%s holds %d results directories: %s", spec, len(children), ", ".join(p.name for p in children))
        found.extend(children)
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


def has_schema(frame: pd.DataFrame, kind: str) -> bool:
    """Whether ``frame`` looks like what this suite writes under ``kind`` (runs, curves, bench).

    runs: at least two of :data:`RUN_MARKERS` (an older runner may lack status and
    schema_version, but has run_id and experiment); curves: run_id and step; bench: a name
    (name, preset or section) and a measurement (fwd_ms, fwdbwd_ms, step_ms or peak_memory_mb).
    """
    columns = set(frame.columns)
    if kind == RUNS:
        return len(columns & set(RUN_MARKERS)) >= 2
    if kind == CURVES:
        return set(CURVE_COLUMNS) <= columns
    if kind == BENCH:
        return bool(columns & set(BENCH_NAMES)) and bool(columns & set(BENCH_MEASURES))
    return True


def _schema_hint(kind: str) -> str:
    return {RUNS: f"at least two of {', '.join(RUN_MARKERS)}", CURVES: " and ".join(CURVE_COLUMNS),
            BENCH: f"one of {', '.join(BENCH_NAMES)} and one of {', '.join(BENCH_MEASURES)}"}.get(kind, "")


def read_parquet_files(paths: Iterable[Path], kind: str | None = None
                       ) -> tuple[list[tuple[Path, pd.DataFrame]], list[Path]]:
    """Read each parquet file; returns ([(path, frame)], [skipped paths]).

    A file that cannot be read (truncated, corrupt, not parquet), has no rows or, when ``kind``
    (runs, curves, bench) is given, lacks this suite's columns for it (:func:`has_schema`) is
    skipped with a warning naming it; it never stops the analysis.
    """
    frames, skipped = [], []
    for path in paths:
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for damaged files
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            detail = detail if len(detail) <= 100 else detail[:97] + "..."
            log.warning("skipping %s: not a readable parquet file (%s%s)", path, type(err).__name__,
                        f": {detail}" if detail and str(path) not in detail else "")
            skipped.append(Path(path))
            continue
        if frame.empty:
            log.warning("skipping %s: no rows", path)
            skipped.append(Path(path))
            continue
        if kind is not None and not has_schema(frame, kind):
            log.warning("skipping %s: not an ssm-ablate %s file (needs columns %s; has %s)", path, kind,
                        _schema_hint(kind), ", ".join(map(str, list(frame.columns)[:6]))
                        + (", ..." if len(frame.columns) > 6 else ""))
            skipped.append(Path(path))
            continue
        frames.append((Path(path), frame))
    return frames, skipped


def _concat(frames: list[tuple[Path, pd.DataFrame]], source: dict[Path, Path]) -> pd.DataFrame:
    """Concatenate frames, recording per row the file, the source directory and absent columns."""
    if not frames:
        return pd.DataFrame()
    union: list[str] = []
    seen: set[str] = set()
    for _, frame in frames:
        for col in frame.columns:
            if col not in seen:
                seen.add(col)
                union.append(col)
    parts = []
    for path, frame in frames:
        frame = frame.copy()
        absent = tuple(c for c in union if c not in frame.columns)
        frame["_file"] = str(path)
        frame["_source"] = str(source[path])
        frame["_absent"] = [absent] * len(frame)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True, sort=False)


def _files(dirs: Sequence[Path], kind: str) -> tuple[list[Path], dict[Path, Path]]:
    paths, source = [], {}
    for d in dirs:
        for p in sorted((Path(d) / kind).glob("*.parquet")):
            paths.append(p)
            source[p] = Path(d)
    return paths, source


def _numeric(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    for col in columns:
        if col in frame.columns and not pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")


def _missing(frame: pd.DataFrame, col: str) -> pd.Series:
    return frame[col].isna() if col in frame.columns else pd.Series(True, index=frame.index)


def _infer_metric(row: pd.Series) -> str:
    for metric in METRICS:
        for prefix in ("test_", "best_val_", "final_val_"):
            value = row.get(prefix + metric)
            if value is not None and not pd.isna(value):
                return metric
    return METRICS[0]


def numeric_run_columns(columns: Iterable[str]) -> list[str]:
    """The run columns that hold numbers (metrics, sizes, timings), by name."""
    fixed = {"seed", "steps", "param_count", "state_size", "flops_per_token", "train_time_s", "tokens_seen",
             "tokens_per_s", "peak_memory_mb", "wall_time_s", "match_target", "test_loss", "final_val_loss"}
    prefixes = ("test_", "best_val_", "final_val_")
    return [c for c in columns if c in fixed or (c.startswith(prefixes) and not c.startswith("_"))]


def normalize_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the essential columns an older runner may not have written; returns a new frame.

    run_id <- file stem; task <- ``task.name``; preset <- ``model.preset``; metric <- the metric
    whose ``test_``/``best_val_`` column is filled; status <- ``ok`` when the test metric is
    there, else ``failed``; match_by <- ``none`` when no file has it (a value missing from some
    files stays NaN: unknown, not "unmatched"). Metric columns become numeric. Rows repeating
    a run_id (the same run copied twice) keep the first, with a warning.
    """
    frame = frame.copy()
    if frame.empty:
        return frame
    stems = frame["_file"].map(lambda p: Path(p).stem) if "_file" in frame.columns else pd.Series("", index=frame.index)
    frame["run_id"] = frame["run_id"].where(~_missing(frame, "run_id"), stems) if "run_id" in frame.columns else stems
    _numeric(frame, numeric_run_columns(frame.columns))
    for target, fallback, default in (("task", "task.name", "unknown"), ("preset", "model.preset", "unknown")):
        value = frame[target] if target in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
        if fallback in frame.columns:
            value = value.where(value.notna(), frame[fallback])
        frame[target] = value.fillna(default).astype(str)
    if "metric" not in frame.columns or frame["metric"].isna().any():
        inferred = frame.apply(_infer_metric, axis=1)
        frame["metric"] = frame["metric"].where(frame["metric"].notna(), inferred) if "metric" in frame.columns else inferred
    frame["metric"] = frame["metric"].astype(str)
    if "status" not in frame.columns or frame["status"].isna().any():
        has_test = frame.apply(lambda r: not pd.isna(r.get(f"test_{r['metric']}", float("nan"))), axis=1)
        inferred = has_test.map({True: "ok", False: "failed"})
        if "status" in frame.columns:
            inferred = frame["status"].where(frame["status"].notna(), inferred)
        n = int(_missing(frame, "status").sum())
        log.info("%d run(s) without a status column: inferred from whether a test metric was recorded", n)
        frame["status"] = inferred
    frame["status"] = frame["status"].astype(str)
    if "match_by" not in frame.columns:  # no file recorded it: nothing was matched
        frame["match_by"] = "none"
    if "seed" not in frame.columns:
        frame["seed"] = float("nan")
    duplicated = frame["run_id"].duplicated(keep="first")
    if duplicated.any():
        log.warning("%d run(s) appear more than once (same run_id in several files); keeping the first: %s",
                    int(duplicated.sum()), ", ".join(frame.loc[duplicated, "run_id"].astype(str).unique()[:5]))
        frame = frame.loc[~duplicated].reset_index(drop=True)
    return label_task_variants(fill_later_defaults(frame))


def fill_later_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Layer fields that the runner leaves out of a row at their defaults (:data:`LATER_DEFAULTS`)
    get that default where some other row recorded the column, and leave ``_absent``: the
    Mamba-3 row without rotation reads ``rotation = none`` beside the one with ``data``."""
    for col, default in LATER_DEFAULTS.items():
        if col not in frame.columns or not frame[col].isna().any():
            continue
        missing = frame[col].isna()
        frame[col] = frame[col].astype(object).where(~missing, default)
        if "_absent" in frame.columns:
            frame["_absent"] = [tuple(c for c in a if c != col) if isinstance(a, tuple) else a for a in frame["_absent"]]
    return frame


def label_task_variants(frame: pd.DataFrame) -> pd.DataFrame:
    """``task`` names the variant of a task: a boolean option ``task.<x>`` that is true for some
    runs of a task and not for others is folded into the name of those runs, e.g.
    ``modular_arithmetic (brackets)`` beside ``modular_arithmetic`` and ``parity`` (which has no
    such option), so that tables and figures have one panel per variant and no column that is
    empty for the other tasks. ``task.name`` keeps the plain name."""
    if frame.empty or "task" not in frame.columns:
        return frame
    names = frame["task"].astype(str)
    extra: list[list[str]] = [[] for _ in range(len(frame))]
    for col in sorted(c for c in frame.columns if c.startswith("task.") and c != "task.name"):
        values = frame[col]
        known = values.dropna()
        if known.empty or not known.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            continue
        true = values.map(lambda v: isinstance(v, (bool, np.bool_)) and bool(v)).to_numpy()
        for task in names[true].unique():
            of_task = (names == task).to_numpy()
            if (~true[of_task]).any():
                for i in np.flatnonzero(of_task & true):
                    extra[i].append(col[len("task."):])
    if any(extra):
        frame["task"] = [f"{n} ({', '.join(e)})" if e else n for n, e in zip(names, extra)]
    return frame


def normalize_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Curve rows with a run_id (file stem when absent) and numeric step/loss/metric columns."""
    frame = frame.copy()
    if frame.empty:
        return frame
    if "run_id" not in frame.columns:
        frame["run_id"] = frame["_file"].map(lambda p: Path(p).stem)
    frame["run_id"] = frame["run_id"].fillna(frame["_file"].map(lambda p: Path(p).stem)).astype(str)
    _numeric(frame, [c for c in frame.columns if c not in ("run_id",) and not c.startswith("_")])
    return frame.dropna(subset=["step"]) if "step" in frame.columns else frame.iloc[0:0]


def normalize_bench(frame: pd.DataFrame) -> pd.DataFrame:
    """Benchmark rows with the columns the speed tables and plots use.

    name <- ``preset`` or ``section``; mode <- '-'; status <- 'ok'; device <- 'unknown';
    peer <- False; tokens_per_s <- ``tokens_per_s_fwdbwd`` or ``tokens_per_s_fwd`` (the names
    ``models.bench`` uses); times and sizes numeric.
    """
    frame = frame.copy()
    if frame.empty:
        return frame
    name = frame["name"] if "name" in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
    for fallback in ("preset", "section"):
        if fallback in frame.columns:
            name = name.where(name.notna(), frame[fallback])
    frame["name"] = name.fillna("unnamed").astype(str)
    for col, default in (("mode", "-"), ("status", "ok"), ("device", "unknown")):
        value = frame[col] if col in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
        frame[col] = value.fillna(default).astype(str)
    frame["peer"] = frame["peer"].fillna(False).astype(bool) if "peer" in frame.columns else False
    _numeric(frame, ["batch", "length", "fwd_ms", "fwdbwd_ms", "tokens_per_s", "tokens_per_s_fwd",
                     "tokens_per_s_fwdbwd", "peak_memory_mb", "d_model", "d_state"])
    tokens = frame["tokens_per_s"] if "tokens_per_s" in frame.columns else pd.Series(float("nan"), index=frame.index)
    for fallback in ("tokens_per_s_fwdbwd", "tokens_per_s_fwd"):
        if fallback in frame.columns:
            tokens = tokens.fillna(frame[fallback])
    frame["tokens_per_s"] = tokens
    for col in ("batch", "length", "fwd_ms", "fwdbwd_ms", "peak_memory_mb"):
        if col not in frame.columns:
            frame[col] = float("nan")
    return frame


def load_runs(dirs: Sequence[Path]) -> tuple[pd.DataFrame, list[Path]]:
    """All run rows under ``dirs``/runs, normalized; returns (frame, skipped files)."""
    paths, source = _files(dirs, RUNS)
    frames, skipped = read_parquet_files(paths, RUNS)
    return normalize_runs(_concat(frames, source)), skipped


def load_curves(dirs: Sequence[Path]) -> tuple[pd.DataFrame, list[Path]]:
    """All curve rows under ``dirs``/curves, normalized; returns (frame, skipped files)."""
    paths, source = _files(dirs, CURVES)
    frames, skipped = read_parquet_files(paths, CURVES)
    return normalize_curves(_concat(frames, source)), skipped


def load_bench(dirs: Sequence[Path]) -> tuple[pd.DataFrame, list[Path]]:
    """All benchmark rows under ``dirs``/bench, normalized; returns (frame, skipped files)."""
    paths, source = _files(dirs, BENCH)
    frames, skipped = read_parquet_files(paths, BENCH)
    return normalize_bench(_concat(frames, source)), skipped


def load_results(inputs: Sequence[str | os.PathLike]) -> ResultSet:
    """Runs, curves and benchmark rows from the results directories named by ``inputs``.

    inputs: directories or glob patterns (see :func:`expand_inputs`).
    Raises AnalysisError when nothing readable is found.
    """
    dirs = expand_inputs([str(i) for i in inputs])
    runs, skipped_runs = load_runs(dirs)
    curves, skipped_curves = load_curves(dirs)
    bench, skipped_bench = load_bench(dirs)
    skipped = skipped_runs + skipped_curves + skipped_bench
    if runs.empty and bench.empty:
        names = ", ".join(str(d) for d in dirs)
        raise AnalysisError(f"no readable results in {names} ({len(skipped)} unreadable or foreign parquet file(s) "
                            "skipped)")
    if not runs.empty and not curves.empty:
        curves = curves[curves["run_id"].isin(set(runs["run_id"]))].reset_index(drop=True)
    return ResultSet(runs=runs, curves=curves, bench=bench, dirs=dirs, skipped=skipped)
