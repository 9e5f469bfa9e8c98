"""``mode='auto'`` on the CPU: the FFT convolution for a time-invariant SISO layer; the chunked
dual form for a head layer with one real decay per head (Mamba-2, Mamba-3 at any rank, also with
eigenvalues in [-1, 1]:
``SSMConfig.chunked_is_dual``); the step-by-step recurrence for the other selective SISO and head
layers (measured faster than the chunked scan, see SSMLayer.resolve_mode); the chunked scan
otherwise (S5's MIMO)."""

from __future__ import annotations

import pytest
import torch

import models
from models import SSMLayer


@pytest.mark.parametrize("name, moved, expected", [
    ("mamba", {}, "recurrent"),
    ("mamba", {"eig_range": (-1, 1)}, "recurrent"),
    ("s4d", {"selective": "dt"}, "recurrent"),
    ("mamba2", {}, "chunked"),
    ("mamba3", {}, "chunked"),
    ("mamba3", {"rotation": "none"}, "chunked"),
    ("mamba3", {"rotation_form": "complex"}, "recurrent"),
    ("mamba2", {"eig_range": (-1, 1)}, "chunked"),
    ("mamba3", {"rotation": "none", "eig_range": (-1, 1)}, "chunked"),
    ("mamba3_mimo", {}, "chunked"),
    ("mamba3_mimo", {"mimo_rank": 2, "eig_range": (-1, 1)}, "chunked"),
    ("mamba3_mimo", {"rotation_form": "complex"}, "recurrent"),
    ("s5", {}, "chunked"),
    ("s5", {"selective": "dt,B,C"}, "chunked"),
    ("s4d", {}, "fft"),
])
def test_auto_mode_on_the_cpu(name: str, moved: dict, expected: str) -> None:
    layer = SSMLayer(models.preset(name, d_model=32, d_state=16, **moved))
    assert layer.resolve_mode(torch.device("cpu")) == expected
    assert SSMLayer(layer.cfg.with_(mode="chunked")).resolve_mode(torch.device("cpu")) == "chunked"  # as set
