"""Test-wide settings: one torch thread per test process; Triton's interpreter without a GPU.

`make test` runs two pytest workers on two cores; two threads each would oversubscribe the
cores, and OpenMP's spin-waiting then slows small ops by an order of magnitude.
Without CUDA the Triton kernels (mode ``triton``) run on CPU tensors in Triton's interpreter,
which must be chosen before triton is first imported: here, before any test module.
"""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocesses that tests start
torch.set_num_threads(1)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
