"""glibc's malloc settings for training (ablate.allocator): where they apply, that the command
line restarts under them with its arguments intact, that a user's own setting (or an empty one,
the opt-out) is kept, and that every run row records the setting it trained under."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pandas as pd
import pytest

from ablate.allocator import TUNABLES, VARIABLE, started_as, tuned_environment

GLIBC_LINUX = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
TINY = ["model.n_layers=1", "model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=3",
        "trainer.eval_every=3", "trainer.progress=false", "results_dir=out"]


def test_tunables_are_added_on_linux_with_glibc_only() -> None:
    environ = {"PATH": "/bin"}
    assert tuned_environment(environ, "linux", "glibc") == {"PATH": "/bin", VARIABLE: TUNABLES}
    assert environ == {"PATH": "/bin"}  # a new mapping; the caller's is left as it was
    assert tuned_environment(environ, "darwin", "") is None
    assert tuned_environment(environ, "linux", "") is None  # musl: platform.libc_ver() names no glibc
    assert tuned_environment(environ, "win32", "") is None


@pytest.mark.parametrize("own", ["", "glibc.malloc.arena_max=2"])
def test_a_users_own_setting_is_kept(own) -> None:
    assert tuned_environment({VARIABLE: own}, "linux", "glibc") is None


def test_only_a_process_started_as_the_module_restarts() -> None:
    assert started_as("ablate", ["python", "-m", "ablate", "seed=1"])
    assert started_as("ablate", ["/venv/bin/python3", "-X", "utf8", "-u", "-m", "ablate"])
    assert not started_as("ablate", ["python", "-W", "-m", "ablate"])  # -m is the value of -W there
    assert not started_as("ablate", ["python", "-m", "ablate.bench"])
    assert not started_as("ablate.bench", ["python", "-m", "ablate"])
    assert not started_as("ablate", ["python", "-c", "import runpy; runpy.run_module('ablate')", "-m", "ablate"])
    assert not started_as("ablate", ["python", "script.py", "-m", "ablate"])
    assert not started_as("ablate", ["python", "-m"])
    # clustered short options, as CPython reads them
    assert started_as("ablate", ["python", "-um", "ablate"]) and started_as("ablate", ["python", "-mablate"])
    assert started_as("ablate", ["python", "-uW", "ignore", "-m", "ablate"])
    assert started_as("ablate", ["python", "--check-hash-based-pycs", "always", "-m", "ablate"])
    assert not started_as("ablate", ["python", "-uW", "-m", "ablate"])  # -m is the value of -W
    assert not started_as("ablate", ["python", "-uc", "-m", "ablate"])  # a -c program
    assert not started_as("ablate", ["python", "-", "-m", "ablate"])  # a program on stdin
    assert not started_as("ablate", ["python", "--", "-m", "ablate"])
    assert not started_as("ablate", ["ipykernel_launcher.py", "-f", "kernel.json"])


def tiny_run_row(tmp_path, environ: dict[str, str]) -> pd.Series:
    """The row of a 3-step run by ``python -m ablate`` under ``environ``."""
    result = subprocess.run([sys.executable, "-m", "ablate", *TINY], cwd=tmp_path, env=environ,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [path] = (tmp_path / "out" / "runs").glob("*.parquet")
    return pd.read_parquet(path).iloc[0]


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's tunables apply on Linux with glibc only")
def test_the_command_line_restarts_under_the_tunables_with_its_arguments(tmp_path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != VARIABLE} | {"OMP_NUM_THREADS": "1"}
    row = tiny_run_row(tmp_path, environ)
    assert row["glibc_tunables"] == TUNABLES
    assert row["steps"] == 3 and row["model.ssm.d_model"] == 8  # the overrides survived the restart


def test_an_empty_setting_opts_out(tmp_path) -> None:
    row = tiny_run_row(tmp_path, dict(os.environ) | {VARIABLE: "", "OMP_NUM_THREADS": "1"})
    assert row["glibc_tunables"] == ""
