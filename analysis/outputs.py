"""Which files of an output folder a report (or a comparison) wrote, so a rerun can remove its own stale ones.

A report folder may be a user's ``--out`` folder holding other files, so nothing is removed by
pattern. Each run lists the files it wrote in the folder's :data:`MANIFEST`; the next run
removes the files that the previous manifest lists and that it did not write again (an old
``heatmap.png`` after the sweep lost an axis, ``final.pdf`` after ``--formats png``), and
nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from .errors import AnalysisError

log = logging.getLogger(__name__)

MANIFEST = ".manifest"


def output_folder(out: str | Path) -> Path:
    """``out``, created with its parents if missing; AnalysisError when it cannot be."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AnalysisError(f"--out={str(out)!r} cannot be created ({err.strerror or err}); expected a folder "
                            "that exists or can be made") from err
    return out


def _names(out: Path, paths: Iterable[Path]) -> list[str]:
    """The paths that lie in ``out`` itself, as file names (sorted, no repeats)."""
    folder = out.resolve()
    return sorted({p.name for p in map(Path, paths) if p.resolve().parent == folder})


def previous_files(out: Path) -> list[str]:
    """The file names the last run recorded in ``out``'s manifest (none without one)."""
    manifest = Path(out) / MANIFEST
    if not manifest.is_file():
        return []
    names = [line.strip() for line in manifest.read_text().splitlines()]
    return [n for n in names if n and "/" not in n and "\\" not in n and n not in (".", "..", MANIFEST)]


def replace_outputs(out: Path, written: Iterable[Path]) -> list[Path]:
    """Remove the files of ``out`` that the previous run wrote and this one did not, then record
    ``written`` (those in ``out`` itself) as the new manifest. Returns the files removed."""
    out = Path(out)
    current = _names(out, written)
    removed = []
    for name in previous_files(out):
        path = out / name
        if name not in current and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    if removed:
        log.info("removed %d stale file(s) from %s: %s", len(removed), out, ", ".join(p.name for p in removed))
    (out / MANIFEST).write_text("".join(f"{name}\n" for name in current))
    return removed
