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

import os
import sys
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .allocator import restart_with_tuned_malloc
from .command_line import (check_command_line, config_dir, discard_idle_sweep, discard_output, refuse_job,
                           uses_app_config)

CONF = config_dir()


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """One job: validate, then list (``+plan=true``) or train. The modules below import torch,
    so they are imported here, after the command line is known to be good."""
    from .config import resolve
    from .plan import plan_line
    from .run import BadData, execute
    from .trainer import spread_over_gpus

    hydra_cfg = HydraConfig.get()
    try:
        run = resolve(cfg)
    except (ValueError, FileNotFoundError) as err:
        refuse_job(hydra_cfg, str(err))
    if cfg.get("plan", False):
        discard_output(hydra_cfg.runtime.output_dir)
        write_line(plan_line(run))
        return None
    job_number = hydra_cfg.job.get("num", 0) or 0
    run.trainer.device = spread_over_gpus(run.trainer.device, job_number)
    try:
        row = execute(run, list(hydra_cfg.overrides.task), sweep_started=sweep_start(hydra_cfg))
    except BadData as err:  # the task's data, read before the run is claimed or trained
        refuse_job(hydra_cfg, str(err))
    if row is None:  # already finished: nothing trained
        discard_output(hydra_cfg.runtime.output_dir)
        return None
    value = row.get(f"test_{row['metric']}")
    return float(value) if value is not None else None


def sweep_start(hydra_cfg: DictConfig) -> float | None:
    """When this job's sweep began: the time its ``multirun.yaml`` was written (by the sweeper,
    before any job; on the results_dir's file system, like the rows compared with it); None for
    a single run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    try:
        return os.path.getmtime(os.path.join(hydra_cfg.sweep.dir, "multirun.yaml"))
    except OSError:
        return None


class DiscardIdleSweep(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): once a sweep has ended, its folder
    goes if no job trained (a ``+plan=true`` sweep, or one whose runs were all finished)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        discard_idle_sweep(config.hydra.sweep.dir)


def write_line(text: str) -> None:
    """``text`` and a newline on stdout in one write(): jobs of a sweep in parallel processes
    (joblib) share the pipe, and one write of under PIPE_BUF (4096) bytes is never interleaved
    with another's, where buffered prints can split a line."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (text + "\n").encode())


def group_options(*groups: str) -> str:
    """``group: option, ...`` per config group: the listing of ``--help``
    (resolver ``ablate_groups`` in conf/config.yaml's help template)."""
    loader = GlobalHydra.instance().config_loader()
    return "\n".join(f"{group}: {', '.join(sorted(loader.get_group_options(group)))}" for group in groups)


def cli() -> None:
    """Check the command line, then hand it to Hydra. ``--help`` composes the plain YAML (the
    typed schemas import torch, seconds), everything else the typed config."""
    OmegaConf.register_new_resolver("ablate_groups", group_options, replace=True)
    args = get_args_parser().parse_args()  # sys.argv, as hydra.main parses it
    if not args.help:
        from .config import register

        register()
        if uses_app_config(args):
            check_command_line(CONF, args.overrides, args.multirun, hydra_config=True)
    main()


if __name__ == "__main__":
    restart_with_tuned_malloc("ablate")
    try:
        cli()
    except KeyboardInterrupt:  # Ctrl-C outside a training step (a run in training saves its checkpoint)
        print("interrupted (Ctrl-C); the same command resumes where the runs stopped", file=sys.stderr)
        raise SystemExit(130) from None
