"""Compute mode ``cuda``: mamba-ssm's fused selective-scan kernel, when it is installed.

The kernel computes, for the real SISO Mamba point of the ablation space,
    Δ = softplus(δ + bias),  h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t,  y_t = C_t h_t + D x_t
without writing the (B, L, D, N) states to memory. Its layout is channels-first:
x, δ: (B, D, L); A: (D, N); B_t, C_t: (B, N, L).
"""

from __future__ import annotations

from typing import Callable

import torch


def selective_scan_kernel() -> Callable | None:
    """mamba-ssm's ``selective_scan_fn`` if its compiled extension imports, else None."""
    try:
        import selective_scan_cuda  # the compiled extension the function needs
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA build raising at import
        return None
    # a stand-in module (see models.peers) has no kernels
    return selective_scan_fn if hasattr(selective_scan_cuda, "fwd") else None


def run_selective_scan(kernel: Callable, x: torch.Tensor, delta_raw: torch.Tensor, delta_bias: torch.Tensor,
                       A: torch.Tensor, B_t: torch.Tensor, C_t: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Call the kernel in its layout and return y without the gate.

    x, delta_raw: (B, L, D) (δ before bias and softplus); delta_bias, D: (D,); A: (D, N) real;
    B_t, C_t: (B, L, N). Returns y: (B, L, D).
    """
    y = kernel(
        x.transpose(1, 2).contiguous(),
        delta_raw.transpose(1, 2).contiguous(),
        A.contiguous(),
        B_t.transpose(1, 2).contiguous(),
        C_t.transpose(1, 2).contiguous(),
        D,
        z=None,
        delta_bias=delta_bias,
        delta_softplus=True,
    )
    return y.transpose(1, 2)
