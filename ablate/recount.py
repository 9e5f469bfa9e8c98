"""``python -m ablate.recount DIR [DIR ...] [--dry-run]``: FLOPs per token of finished rows, recounted.

A row records ``flops_per_token`` as :func:`models.flops_per_token` counted it when the run
finished. When the count is corrected, the rows recorded before hold the old figure, and so do
what is derived from them: the FLOPs/token of a report's tables, and the GFLOP/s per core of a
``+plan=true`` (:func:`ablate.plan.reference_rates`). This rewrites the figure in place, from
the configuration the row names:

1. compose the row's ``overrides`` (``results_dir`` pointed at DIR) as Hydra does;
2. where a model.*, task.* or trainer.* column of the row differs from the composed
   configuration (an experiment whose defaults moved since the row was recorded), override it
   with the row's own value, and compose again;
3. count only where the configuration's columns and seed are now the row's, value for value
   (the columns fix what the count reads: the model, the task's inputs and length, the batch);
   otherwise the row is left as it is and the line says which column differs.

Only ``flops_per_token`` changes; the file is rewritten whole through a temporary name (see
:mod:`ablate.files`). Nothing else is read from the code of today: the metrics, times and sizes
stay those measured.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from .__main__ import CONF
from .config import register, resolve
from .results import RUNS, atomic_write_parquet, identity_columns

CONFIG_PREFIXES = ("model.", "task.", "trainer.")


def plain(value: Any) -> Any:
    """A row's or a config's value, comparable: numpy scalars as Python ones, NaN as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def number(text: str) -> Any:
    """``'3'`` -> 3, ``'0.5'`` -> 0.5, anything else as it is."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def override_text(key: str, value: Any, composed: Any) -> str:
    """``key=value`` in Hydra's override grammar, for a row's flattened ``value`` of a key whose
    composed value is ``composed`` (a list is recorded as ``a,b`` or ``none``)."""
    def atom(item: Any) -> str:
        if item is None:
            return "null"
        if isinstance(item, bool):
            return str(item).lower()
        if isinstance(item, (int, float)):
            return repr(item)
        # quoted: a run of backslashes is escaped only before a quote or at the end, as Hydra reads it
        text = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, str(item))
        return "'" + text.replace("'", "\\'") + "'"

    if isinstance(composed, list) and isinstance(value, str):
        items = [] if value == "none" else [number(item) for item in value.split(",")]
        return f"{key}=[{','.join(atom(item) for item in items)}]"
    return f"{key}={atom(value)}"


def differing(row: dict[str, Any], run) -> dict[str, tuple[Any, Any]]:
    """{column: (row's value, the configuration's)} over the config columns either holds, and the seed."""
    columns = identity_columns(run.identity)
    keys = {k for k in row if k.startswith(CONFIG_PREFIXES)} | set(columns)
    out = {k: (plain(row.get(k)), plain(columns.get(k))) for k in sorted(keys)
           if plain(row.get(k)) != plain(columns.get(k))}
    if plain(row.get("seed")) != run.seed:
        out["seed"] = (plain(row.get("seed")), run.seed)
    return out


def configuration(row: dict[str, Any], results_dir: Path):
    """The resolved run the row names (steps 1-2 above), and the columns that still differ."""
    overrides = [o for o in str(row["overrides"]).split(" ") if o and not o.startswith("results_dir=")]
    overrides.append(override_text("results_dir", str(results_dir), None))  # quoted: any folder name
    composed = compose("config", overrides)
    run = resolve(composed)
    moved = differing(row, run)
    if moved and "seed" not in moved:
        extra = []
        for key, (value, _) in moved.items():  # the composed value tells a list from a string
            node = OmegaConf.select(composed, key, default=None)
            extra.append(override_text(key, value, OmegaConf.to_object(node) if OmegaConf.is_list(node) else node))
        run = resolve(compose("config", overrides + extra))
        moved = differing(row, run)
    return run, moved


def row_files(results_dir: str | Path) -> list[Path]:
    """The run rows of a results folder; a ValueError naming it if it holds none."""
    paths = sorted((Path(results_dir) / RUNS).glob("*.parquet"))
    if not paths:
        raise ValueError(f"{str(results_dir)!r} is not a results folder with run rows; expected a folder holding "
                         f"{RUNS}/<run_id>.parquet (an experiment's results_dir)")
    return paths


def recount_row(path: Path, results_dir: Path, dry_run: bool = False) -> str:
    """Recount one row file (inside an initialised Hydra, see :func:`recount`): its line."""
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file is left, and said so
        return f"left {path.name}: not a readable parquet file ({type(err).__name__})"
    if len(frame) != 1 or not {"overrides", "flops_per_token", "run_id"} <= set(frame.columns):
        return f"left {path.name}: not a run row (one row with overrides and flops_per_token)"
    row = frame.iloc[0].to_dict()
    try:
        run, moved = configuration(row, results_dir)
    except (HydraException, ValueError, FileNotFoundError) as err:
        return f"left {row['run_id']}: its configuration does not compose today ({err})"
    if moved:
        key, (recorded, now) = next(iter(moved.items()))
        return (f"left {row['run_id']}: {key} is {recorded!r} in the row, {now!r} composed "
                f"({len(moved)} column{'s' if len(moved) > 1 else ''} differ)")
    count = run.flops_per_token()
    old = plain(row["flops_per_token"])
    if old == count:
        return f"unchanged {row['run_id']}: {count:,.0f}"
    if not dry_run:
        frame["flops_per_token"] = float(count)
        atomic_write_parquet(frame, str(path))
    return f"recounted {row['run_id']} ({run.preset} on {run.task.spec.name}): {old:,.0f} -> {count:,.0f}"


def recount(results_dir: str | Path, dry_run: bool = False) -> list[str]:
    """Recount the rows under ``results_dir``/runs; one line per row: recounted, unchanged or left (why)."""
    paths = row_files(results_dir)
    register()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return [recount_row(path, Path(results_dir), dry_run) for path in paths]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ablate.recount", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dirs", nargs="+", metavar="DIR", help="an experiment's results_dir")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    args = parser.parse_args(argv)
    for folder in args.results_dirs:  # every folder checked before any is rewritten
        try:
            row_files(folder)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    for folder in args.results_dirs:
        lines = recount(folder, dry_run=args.dry_run)
        for line in lines:
            print(line)
        counts = {word: sum(line.startswith(word) for line in lines) for word in ("recounted", "unchanged", "left")}
        print(f"{folder}: " + ", ".join(f"{n} {word}" for word, n in counts.items()))


if __name__ == "__main__":
    main()
