"""Benchmarks: speed, memory and scaling of every model point and compute mode, against peers.

``python -m ablate.bench`` (Hydra app, configs in ``conf/bench/``) times, for each point of
the ablation space in ``points`` (default: the S5, S4D and Mamba presets), each valid compute
mode, each batch size and each sequence length (default 256 .. 16384):

* forward (no_grad) and forward+backward times, tokens/s, peak memory, parameter count and
  FLOPs per token, the memory-bandwidth floor;
* recurrent inference: ``step`` latency, tokens/s and the state size in bytes;
* the fitted scaling exponent of time against length per series;

and, when installed, the same for the peers: mamba-ssm's ``Mamba`` block and its selective
scan alone, and s5-pytorch's ``S5`` (rows with ``peer=True``; ``ours_over_peer`` is our
fastest mode's time over the peer's).

Methodology (:mod:`ablate.bench.measure`): float32 ``torch.randn`` inputs (never all zero);
``warmup`` untimed calls then the median of ``repeats`` timed calls (perf_counter on CPU,
CUDA events on GPU); peak memory per measurement from the CUDA allocator's statistics on GPU,
on CPU from the allocation events of PyTorch's CPU allocator recorded by ``torch.profiler``
(``peak_memory_kind`` says which); each row records the device, threads and versions.
A series stops cleanly (status ``over_budget`` / ``oom``) when a measurement would exceed or
exceeds ``scale.budget_s`` or the memory (:mod:`ablate.bench.series`).

Results: ``<results_dir>/bench/<job_id>.parquet`` (default ``results/bench``), one row per
measurement; ``python -m analysis <results_dir>`` draws the log-log scaling plots and speed
tables from them.
"""

from .run import COLUMNS, bench_path, run_bench
from .settings import BenchSettings, resolve

__all__ = ["COLUMNS", "BenchSettings", "bench_path", "resolve", "run_bench"]
