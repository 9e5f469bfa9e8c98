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


def mamba3_from_official(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """The ``SSMLayer`` state dict that computes what mamba-ssm's ``Mamba3`` (SISO or MIMO)
    with parameters ``state`` computes, for a layer config ``cfg`` of the mamba3 presets with
    ``dt_rank`` equal to its number of heads (so Δ's projection can be full rank).

    ``Mamba3`` projects z, x, B, C, Δ, A, λ and the angles from the block input u; this layer
    projects all but z and x from x = W_x u. With no short conv and D = expand·H >= H, W_x has
    a left inverse W_x⁺ (its pseudo-inverse), and a projection W of u becomes W W_x⁺ of x:
    (W W_x⁺)(W_x u) = W u. Δ's projection is the identity on the heads with bias dt_bias; D
    per head is repeated over the head's channels. MIMO pairs state dimension i with i + N/2
    for its rotation, this layer pairs 2j with 2j + 1, so the N entries of B, C and their
    biases are permuted. Differentiable in ``state`` (tests compare gradients through it).
    """
    E, P, N, D = cfg.n_heads, cfg.headdim, cfg.d_state, cfg.d_inner
    R, g, M = cfg.mimo_rank, cfg.ngroups, cfg.rotated_pairs
    if cfg.conv or not cfg.expand or cfg.resolved_dt_rank != E or not cfg.uses_heads or cfg.rotation != "data":
        raise ValueError(f"the layer config must be a mamba3 preset with conv=0 and dt_rank={E} (one per head) to "
                         f"take Mamba3's parameters; got conv={cfg.conv}, dt_rank={cfg.resolved_dt_rank}")
    z_w, x_w, B_w, C_w, dt_w, A_w, trap_w, angle_w = state["in_proj.weight"].split(
        [D, D, g * R * N, g * R * N, E, E, E, M])
    order = torch.arange(N) if R == 1 else torch.stack([torch.arange(N // 2), torch.arange(N // 2) + N // 2], 1).flatten()
    left_inverse = torch.linalg.pinv(x_w)  # (H, D): left_inverse @ x_w = I_H

    def per_state(t: torch.Tensor) -> torch.Tensor:  # rows (r, g, n) -> ours (g, r, n), n permuted
        return t.view(R, g, N, -1)[:, :, order].transpose(0, 1).reshape(g * R * N, -1)

    projection = torch.cat([dt_w, per_state(B_w), per_state(C_w), A_w, trap_w, angle_w]) @ left_inverse
    ours = {"in_proj.weight": torch.cat([x_w, z_w]), "heads.x_proj.weight": projection,
            "heads.dt_proj.weight": torch.eye(E, dtype=x_w.dtype), "heads.dt_proj.bias": state["dt_bias"],
            "heads.D": state["D"].repeat_interleave(P), "out_proj.weight": state["out_proj.weight"],
            "heads.B_norm": state["B_norm.weight"][order], "heads.C_norm": state["C_norm.weight"][order],
            "heads.B_bias": state["B_bias"][..., order], "heads.C_bias": state["C_bias"][..., order]}
    if R > 1:
        for name in ("mimo_x", "mimo_z", "mimo_o"):  # (E, R, P) -> (R, D)
            ours[f"heads.{name}"] = state[name].transpose(0, 1).reshape(R, D)
    return ours
