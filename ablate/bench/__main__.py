"""``python -m ablate.bench``: time every model point and mode against the peers.

Examples::

    python -m ablate.bench                              # conf/bench/config.yaml defaults (a few minutes on a CPU)
    python -m ablate.bench scale=smoke                  # tiny sizes, 1 repeat (seconds)
    python -m ablate.bench scale=gpu device=cuda        # paper-scale sizes on a GPU
    python -m ablate.bench scale=kernel points=ablations modes=[scan,triton,cuda]   # GPU: fused scans vs mamba-ssm
    python -m ablate.bench points=ablations modes=[scan,chunked] scale.batch=[1,8]
    python -m ablate.bench -m threads=1,2               # a sweep: one parquet per job
    python -m ablate.bench --cfg job --resolve          # print the resolved config
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .report import render
from .run import make_job_id, run_bench
from .settings import resolve

log = logging.getLogger("ablate.bench")


@hydra.main(version_base="1.3", config_path="../../conf/bench", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        settings = resolve(OmegaConf.to_container(cfg, resolve=True))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_cfg = HydraConfig.get()
    job_num = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
    frame, path = run_bench(settings, make_job_id(settings, job_num))
    print(render(frame))
    print(f"\nwrote {len(frame)} rows to {path}")


if __name__ == "__main__":
    main()
