"""``mode='auto'`` on the CPU: the FFT convolution for a time-invariant SISO layer, the
step-by-step recurrence for a selective SISO layer or a head layer (the Mamba-1/2/3 axes:
measured 1.06x to 3.4x faster than the chunked scan at L = 160 and 1024, see
SSMLayer.resolve_mode), the chunked scan otherwise (S5's MIMO)."""

from __future__ import annotations

import pytest
import torch

import models
from models import SSMLayer


@pytest.mark.parametrize("name, moved, expected", [
    ("mamba", {}, "recurrent"),
    ("mamba", {"eig_range": (-1, 1)}, "recurrent"),
    ("s4d", {"selective": "dt"}, "recurrent"),
    ("mamba2", {}, "recurrent"),
    ("mamba3", {}, "recurrent"),
    ("mamba3", {"rotation": "none"}, "recurrent"),
    ("mamba3_mimo", {}, "recurrent"),
    ("s5", {}, "chunked"),
    ("s5", {"selective": "dt,B,C"}, "chunked"),
    ("s4d", {}, "fft"),
])
def test_auto_mode_on_the_cpu(name: str, moved: dict, expected: str) -> None:
    layer = SSMLayer(models.preset(name, d_model=32, d_state=16, **moved))
    assert layer.resolve_mode(torch.device("cpu")) == expected
    assert SSMLayer(layer.cfg.with_(mode="chunked")).resolve_mode(torch.device("cpu")) == "chunked"  # as set
