"""glibc's malloc, set for training tensors: the command lines restart once with these settings.

A CPU training step allocates and frees the same large tensors again and again (a Mamba
layer's (B, L, D, N) transitions and states: about 4.7 MB each at mamba_table1's sizes). glibc's
defaults hand every block over its dynamic mmap threshold to the kernel and take it back on
free, so that each step page-faults its big tensors in 4 KiB pages again, and zeroes them. Three
of glibc's tunables (``GLIBC_TUNABLES``, read when a process starts) stop that:

* ``glibc.malloc.mmap_threshold=33554432``: blocks up to 32 MiB (glibc's largest threshold)
  come from the heap, which keeps them when freed;
* ``glibc.malloc.trim_threshold=4294967295``: the heap keeps up to 4 GiB of freed memory at its top;
* ``glibc.malloc.hugetlb=1``: transparent huge pages (2 MiB) where the kernel lends them on
  request (``madvise``, the usual setting), so that a fresh block faults 512x less often.

Measured: ``train_time_s`` of single runs, each with ``GLIBC_TUNABLES=`` (glibc's defaults) and
without (these settings), three interleaved pairs, one run at a time on a 2-core machine (README,
"glibc's malloc, set for training"). Mamba Table 1's S6 cell with Mamba's gate, 300 steps: 15.9-18.3 s -> 11.3-12.1 s (1.34x
to 1.62x faster); on sequential digits (mimo_vs_siso), 300 steps: S4D 3.3-3.8 -> 2.9-3.2 s (1.06x
to 1.22x), Mamba-3 9.5-11.7 -> 9.0-10.3 s (1.05x to 1.14x), S5 no change to measure (2 to 10 s
runs, ratios 0.80 to 1.11 over nine pairs).

``python -m ablate`` and ``python -m ablate.bench`` call :func:`restart_with_tuned_malloc`
first. It re-runs the same command line in a fresh interpreter, once, with ``GLIBC_TUNABLES``
set, and only where it applies: the process was started by that command line (not a program
that runs the module in itself by ``runpy``, which the restart would replace), Linux with glibc,
and ``GLIBC_TUNABLES`` not set already. A user
who set it keeps their own; ``GLIBC_TUNABLES=`` (empty) opts out. Every run row records the value
it trained under (``glibc_tunables``), so that rows timed under different allocators can be told
apart. (hugetlb came with glibc 2.35; an older glibc skips a tunable it does not know.)
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

VARIABLE = "GLIBC_TUNABLES"
TUNABLES = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295"


def tuned_environment(environ: Mapping[str, str], system: str, libc: str) -> dict[str, str] | None:
    """``environ`` with ``GLIBC_TUNABLES`` set to :data:`TUNABLES`; None where that does not
    apply: not Linux (``system``, as ``sys.platform``), not glibc (``libc``, as
    ``platform.libc_ver()[0]``), or the variable is in ``environ`` already (even empty)."""
    if system != "linux" or libc != "glibc" or VARIABLE in environ:
        return None
    return {**environ, VARIABLE: TUNABLES}


# CPython's options that take a value: attached (-Wignore) or as the next argument (-W ignore)
VALUE_OPTIONS = "cmWX"


def started_as(module: str, orig_argv: list[str]) -> bool:
    """Whether the interpreter's own command line (``sys.orig_argv``) is ``python [options] -m
    module ...``, not a script, ``-c`` program or stdin that runs the module inside itself
    (``runpy``). Short options may be clustered (``-um ablate``, ``-mablate``)."""
    args = orig_argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--check-hash-based-pycs"):
            i += 1 if "=" in arg else 2
            continue
        if not arg.startswith("-") or arg.startswith("--") or arg == "-":  # a script, --, stdin
            return False
        for j, letter in enumerate(arg[1:], start=1):
            if letter in VALUE_OPTIONS:
                value = arg[j + 1:] or (args[i + 1] if i + 1 < len(args) else None)
                if letter == "m":
                    return value == module
                if letter == "c":
                    return False
                i += 0 if arg[j + 1:] else 1
                break
        i += 1
    return False


def restart_with_tuned_malloc(module: str) -> None:
    """Replace this process by its own command line under :func:`tuned_environment`, where the
    process was started as ``python -m module`` (:func:`started_as`); otherwise, or where the
    interpreter cannot be started again, return and go on under glibc's defaults."""
    environment = tuned_environment(os.environ, sys.platform, platform.libc_ver()[0])
    if environment is None or not sys.executable or not started_as(module, sys.orig_argv):
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None where the descriptor was closed
            stream.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environment)
    except OSError:
        return


def current() -> str:
    """The ``GLIBC_TUNABLES`` this process started with ('' when not set: glibc's defaults),
    the ``glibc_tunables`` of a run row and of a bench row."""
    return os.environ.get(VARIABLE, "")
