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
import os

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..allocator import restart_with_tuned_malloc
from ..command_line import check_command_line, config_dir, refuse_job, uses_app_config
from .report import render
from .run import make_job_id, run_bench
from .settings import resolve

log = logging.getLogger("ablate.bench")
CONF = os.path.join(config_dir(), "bench")


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        settings = resolve(OmegaConf.to_container(cfg, resolve=True))
    except (ValueError, FileNotFoundError) as err:
        refuse_job(hydra_cfg, str(err))
    job_num = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
    frame, path = run_bench(settings, make_job_id(settings, job_num))
    print(render(frame))
    print(f"\nwrote {len(frame)} rows to {path}")


def cli() -> None:
    """Refuse a command line that does not compose (an unknown option or key), or whose
    results_dir cannot be written, in one line, before Hydra starts (Hydra creates its output
    folder under results_dir first); then hand it to Hydra."""
    args = get_args_parser().parse_args()  # sys.argv, as hydra.main parses it
    if not args.help and uses_app_config(args):
        check_command_line(CONF, args.overrides, args.multirun)
    main()


if __name__ == "__main__":
    restart_with_tuned_malloc("ablate.bench")
    cli()
