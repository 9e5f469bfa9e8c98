"""``python -m ablate``: one run, or with ``-m`` the sweep of ``+experiment=NAME``.

Examples::

    python -m ablate                                  # defaults of conf/config.yaml
    python -m ablate model=s5 task=mqar seed=1        # any override
    python -m ablate +experiment=mimo_vs_siso -m      # a whole sweep -> results/mimo_vs_siso/
    python -m ablate +experiment=mimo_vs_siso +plan=true -m   # list the runs and their cost only
    python -m ablate +experiment=smoke --cfg job --resolve    # print the resolved config of a run

A bad command line (an unknown group option or key, a value of the wrong type, a results_dir
that cannot be written) is refused before Hydra starts, and a config that composes but is not
valid (or cannot run on this machine) is refused by its job before any training: one line on
stderr, exit status 2, nothing written. Hydra's output folder of a job
(``results_dir/hydra/<time>/``: the composed config, the overrides, the log) is kept only when
the job trains, and a sweep's folder only when one of its jobs trained.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def refuse(message: str) -> NoReturn:
    """The one-line error of the app: ``error: ...`` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """One job: validate, then list (``+plan=true``) or train. The modules below import torch,
    so they are imported here, after the command line is known to be good."""
    from .config import resolve
    from .plan import plan_line
    from .run import execute
    from .trainer import spread_over_gpus

    hydra_cfg = HydraConfig.get()
    try:
        run = resolve(cfg)
    except (ValueError, FileNotFoundError) as err:
        discard_output(hydra_cfg.runtime.output_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweep ends here
            discard_idle_sweep(hydra_cfg.sweep.dir)
        refuse(str(err))
    if cfg.get("plan", False):
        discard_output(hydra_cfg.runtime.output_dir)
        print(plan_line(run))
        return None
    job_number = hydra_cfg.job.get("num", 0) or 0
    run.trainer.device = spread_over_gpus(run.trainer.device, job_number)
    row = execute(run, list(hydra_cfg.overrides.task))
    if row is None:  # already finished: nothing trained
        discard_output(hydra_cfg.runtime.output_dir)
        return None
    value = row.get(f"test_{row['metric']}")
    return float(value) if value is not None else None


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


class DiscardIdleSweep(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): once a sweep has ended, its folder
    goes if no job trained (a ``+plan=true`` sweep, or one whose runs were all finished)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        discard_idle_sweep(config.hydra.sweep.dir)


def group_options(*groups: str) -> str:
    """``group: option, ...`` per config group: the listing of ``--help``
    (resolver ``ablate_groups`` in conf/config.yaml's help template)."""
    loader = GlobalHydra.instance().config_loader()
    return "\n".join(f"{group}: {', '.join(sorted(loader.get_group_options(group)))}" for group in groups)


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


def check_command_line(overrides: list[str], multirun: bool) -> None:
    """Compose what the command line asks for, as Hydra will, and check that each results_dir
    can be written; refuses (one line, exit 2) before Hydra creates anything."""
    from .config import check_writable

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        try:
            results_dirs = {compose("config", job, return_hydra_config=True).results_dir
                            for job in job_overrides(overrides, multirun)}
        except HydraException as err:
            refuse(describe_hydra_error(err))
    for results_dir in sorted(results_dirs):
        try:
            check_writable(results_dir)
        except ValueError as err:
            refuse(str(err))


def cli() -> None:
    """Check the command line, then hand it to Hydra. ``--help`` composes the plain YAML (the
    typed schemas import torch, seconds), everything else the typed config."""
    OmegaConf.register_new_resolver("ablate_groups", group_options, replace=True)
    args = get_args_parser().parse_args()  # sys.argv, as hydra.main parses it
    if not args.help:
        from .config import register

        register()
        if args.config_name is None and args.config_path is None and args.config_dir is None:
            check_command_line(args.overrides, args.multirun)
    main()


if __name__ == "__main__":
    try:
        cli()
    except KeyboardInterrupt:  # Ctrl-C outside a training step (a run in training saves its checkpoint)
        print("interrupted (Ctrl-C); the same command resumes where the runs stopped", file=sys.stderr)
        raise SystemExit(130) from None
