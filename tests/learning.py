"""Run one configuration in-process through the same path as `python -m ablate`."""

from __future__ import annotations

import os

from hydra import compose, initialize_config_dir

from ablate.config import ResolvedRun, register, resolve
from ablate.run import execute

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def resolved_run(results_dir, *overrides: str) -> ResolvedRun:
    """The run composed from conf/ with ``overrides``, as ``python -m ablate`` resolves it."""
    register()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"results_dir={results_dir}", "trainer.progress=false"])
    return resolve(cfg)


def train(results_dir, *overrides: str) -> dict:
    """The result row of one run composed from conf/ with ``overrides``."""
    row = execute(resolved_run(results_dir, *overrides), list(overrides))
    assert row is not None
    return row
