"""Reference implementations used as oracles (tests) and peers (benchmarks), when installed.

mamba-ssm on a machine without its CUDA build imports only through a stand-in for its
compiled ``selective_scan_cuda`` module; its pure-PyTorch ``selective_scan_ref`` then
replaces the fused kernel in ``Mamba``'s forward, and ``step`` takes its PyTorch path.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Callable

import torch

from .cuda import selective_scan_kernel


def mamba_reference() -> tuple[type, Callable] | None:
    """(``Mamba`` class running on the reference scan, ``selective_scan_ref``), or None
    when mamba-ssm is not installed. On a CUDA build the classes are returned unchanged."""
    if selective_scan_kernel() is not None:
        from mamba_ssm.modules.mamba_simple import Mamba
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
        return Mamba, selective_scan_ref
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")

    class ReferenceMamba(simple.Mamba):
        """mamba-ssm's Mamba with its PyTorch paths: reference scan, PyTorch conv and step."""

        def forward(self, hidden_states, inference_params=None):
            saved = simple.selective_scan_fn, simple.causal_conv1d_fn, simple.selective_state_update
            simple.selective_scan_fn, simple.causal_conv1d_fn, simple.selective_state_update = (
                interface.selective_scan_ref, None, None)
            try:
                return super().forward(hidden_states, inference_params)
            finally:
                simple.selective_scan_fn, simple.causal_conv1d_fn, simple.selective_state_update = saved

        def step(self, hidden_states, conv_state, ssm_state):
            saved = simple.causal_conv1d_update, simple.selective_state_update
            simple.causal_conv1d_update, simple.selective_state_update = None, None
            try:
                return super().step(hidden_states, conv_state, ssm_state)
            finally:
                simple.causal_conv1d_update, simple.selective_state_update = saved

    return ReferenceMamba, interface.selective_scan_ref


def s5_peer() -> type | None:
    """s5-pytorch's ``S5`` class, or None when it is not installed."""
    try:
        from s5 import S5
    except ImportError:
        return None
    return S5


def copy_into_mamba(layer, reference) -> None:
    """Copy an ``SSMLayer`` built from the mamba preset into mamba-ssm's ``Mamba``
    (same parameter names and layouts: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj)."""
    ours = dict(layer.named_parameters())
    theirs = dict(reference.named_parameters())
    missing = sorted(set(theirs) - set(ours))
    if missing:
        raise ValueError(f"the layer lacks mamba-ssm parameters {missing}; build it with models.preset('mamba')")
    with torch.no_grad():
        for name, param in theirs.items():
            param.copy_(ours[name])
