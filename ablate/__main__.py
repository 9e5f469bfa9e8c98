"""``python -m ablate``: one run, or with ``-m`` the sweep of ``+experiment=NAME``.

Examples::

    python -m ablate                                  # defaults of conf/config.yaml
    python -m ablate model=s5 task=mqar seed=1        # any override
    python -m ablate +experiment=mimo_vs_siso -m      # a whole sweep -> results/mimo_vs_siso/
    python -m ablate +experiment=mimo_vs_siso +plan=true -m   # list the runs and their cost only
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import register, resolve
from .plan import plan_line
from .run import execute
from .trainer import spread_over_gpus

log = logging.getLogger("ablate")
register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        run = resolve(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_cfg = HydraConfig.get()
    if cfg.get("plan", False):
        print(plan_line(run))
        return None
    job_number = hydra_cfg.job.get("num", 0) or 0
    run.trainer.device = spread_over_gpus(run.trainer.device, job_number)
    row = execute(run, list(hydra_cfg.overrides.task))
    if row is None:
        return None
    value = row.get(f"test_{row['metric']}")
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
