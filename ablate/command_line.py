"""The command line of the two Hydra apps (``python -m ablate``, ``python -m ablate.bench``):
a command line that does not compose is refused in one line before Hydra starts and creates
anything; a job whose config composes but is not valid is refused in one line and leaves no
Hydra output folder behind."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError


def refuse(message: str) -> NoReturn:
    """The one-line error of the app: ``error: ...`` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def config_dir() -> str:
    """The apps' Hydra configs: ``conf/`` of the checkout this package runs from (the repository
    itself, or an editable install of it), else the copy that a non-editable install carries as
    ``ablate/_conf`` (pyproject.toml maps conf/ there)."""
    here = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.join(os.path.dirname(here), "conf")
    return checkout if os.path.isfile(os.path.join(checkout, "config.yaml")) else os.path.join(here, "_conf")


def uses_app_config(args: argparse.Namespace) -> bool:
    """Whether a command line (Hydra's parsed ``args``) runs the app's own config: no
    ``--config-name``, ``--config-path`` or ``--config-dir``, so it can be composed here."""
    return args.config_name is None and args.config_path is None and args.config_dir is None


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose for a check: the command line itself for one run; for a
    sweep, as many jobs as its longest swept list, job i taking the i-th value of each swept key
    (cycled), so every value is composed at least once."""
    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_discrete_sweep()
               else [o.input_line] for o in parsed]
    count = max((len(values) for values in choices), default=1)
    return [[values[i % len(values)] for values in choices] for i in range(count)]


def describe_hydra_error(err: HydraException) -> str:
    """One line for a composition error: the unknown option with the valid ones, the unknown key
    with the keys of its node, or else Hydra's message and its cause joined on one line."""
    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.options is not None:
        group, _, name = err.missing_cfg_file.rpartition("/")
        return f"{group}={name!r} is not valid; expected one of {sorted(err.options)}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.parent_node is not None:
        keys = sorted(str(key) for key in cause.parent_node.keys())
        return f"{cause.full_key} is not a config key; expected one of {keys}"
    lines = str(err).splitlines() + (str(cause).splitlines()[:1] if cause is not None else [])
    return "; ".join(line.strip() for line in lines if line.strip())


def composed_jobs(config_dir: str, overrides: list[str], multirun: bool,
                  hydra_config: bool = False) -> list[DictConfig]:
    """The configs of :func:`job_overrides`, composed from ``config_dir``'s ``config.yaml`` as
    Hydra will; a composition error is refused in one line (:func:`describe_hydra_error`)."""
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        try:
            return [compose("config", job, return_hydra_config=hydra_config)
                    for job in job_overrides(overrides, multirun)]
        except HydraException as err:
            refuse(describe_hydra_error(err))


def check_command_line(config_dir: str, overrides: list[str], multirun: bool, hydra_config: bool = False) -> None:
    """Compose what the command line asks for from ``config_dir``, as Hydra will, and check that
    each results_dir can be written; refuses (one line, exit 2) before Hydra creates anything
    (its output folder is under results_dir)."""
    from .config import check_writable

    configs = composed_jobs(config_dir, overrides, multirun, hydra_config=hydra_config)
    for results_dir in sorted({str(cfg.results_dir) for cfg in configs}):
        try:
            check_writable(results_dir)
        except ValueError as err:
            refuse(str(err))


def discard_output(folder: str) -> None:
    """Remove Hydra's output folder of a job that trained nothing, and the folder above it
    (``results_dir/hydra``, or the sweep's folder) when that is left empty."""
    path = Path(folder)
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def discard_idle_sweep(folder: str) -> None:
    """Remove a sweep's folder when none of its jobs kept an output folder (only Hydra's
    multirun.yaml is left in it)."""
    path = Path(folder)
    if path.is_dir() and [p.name for p in path.iterdir()] == ["multirun.yaml"]:
        discard_output(folder)


def refuse_job(hydra_cfg: DictConfig, message: str) -> NoReturn:
    """Refuse a job whose config composed but is not valid: its Hydra output folder goes (and
    a sweep's folder, this being its end), then :func:`refuse`."""
    discard_output(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        discard_idle_sweep(hydra_cfg.sweep.dir)
    refuse(message)
