"""Test-wide settings: one torch thread per test process.

`make test` runs two pytest workers on two cores; two threads each would oversubscribe the
cores, and OpenMP's spin-waiting then slows small ops by an order of magnitude.
"""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocesses that tests start
torch.set_num_threads(1)
