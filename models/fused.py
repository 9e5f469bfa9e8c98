"""Compute mode ``triton`` for a layer on the Mamba-1 axes: the glue between
:class:`models.layer.SSMLayer` and the fused kernels of :mod:`models.triton_scan`.

The kernels compute what the layer's other modes compute (the tests hold them to the
step-by-step recurrence), without the (B, L, D, n) states in memory:

* SISO: one :func:`models.triton_scan.selective_scan` call over the D channels (n states
  each, kept on chip), with the D skip and the SiLU gate fused (the gate only for a layer
  of one direction: a bidirectional layer gates the sum of its two directions afterwards).
* MIMO: the dense B projection B_t x_t (B, L, G·n) in PyTorch, one
  :func:`models.triton_scan.diagonal_scan` over the G·n states with Δ and the C gains fused,
  then the dense C readout in PyTorch.
* Bidirectional: the same call on the time-reversed inputs, with C'.
* :func:`step`: one token of a SISO layer by the single-step kernel.

Under autocast (bf16 or fp16; the trainer's bf16 on a GPU) the per-step tensors go to the
kernels as autocast made them, without a copy: x, z, Δ before the bias, B_t, C_t and the C
gains, bf16 from the projections. The kernels read them in their dtype, widen them to fp32 in
registers (recurrence, readout and every sum in fp32; A, D, the Δ bias and the states stay
fp32) and write y, and in the backward the gradients of those tensors, in their dtypes. A
tensor that autocast left in fp32 stays fp32 (each is read in its own dtype).

Complex tensors are not narrowed: complex bf16 does not exist. A complex A, C or C_t is
complex64; a real bf16 B_t with a complex A is copied to complex64 inside
:func:`models.triton_scan.selective_scan`; in a complex MIMO layer B_t x_t is computed in fp32
(autocast off: the complex64 input of the scan) while Δ and the C gains stay bf16 and the
C readout runs under autocast, as in the other modes. A real MIMO layer's B projection and
readout run under autocast too (bf16 u and g).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from . import triton_scan

if TYPE_CHECKING:
    from .layer import Selection, SSMLayer


def scan(layer: SSMLayer, x: torch.Tensor, sel: Selection, A: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """y (B, L, D) before the output gate (after it, SiLU, when z is given: a layer of one
    direction only) from the SSM input
    x (B, L, D), the layer's selection ``sel`` and eigenvalues A (G, n); x.dtype (bf16 under
    autocast: see the module docstring)."""
    return _scan(layer, x, sel, A, z).to(x.dtype)


def _reversed(t: torch.Tensor | None) -> torch.Tensor | None:
    """Time-reverse a (B, L, ·) tensor; per-channel parameters pass through."""
    return t.flip(1) if t is not None and t.dim() == 3 else t


def _same(t: torch.Tensor | None) -> torch.Tensor | None:
    return t


def _scan(layer: SSMLayer, x: torch.Tensor, sel: Selection, A: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    cfg = layer.cfg
    selective_dt = layer.dt_proj is not None
    if selective_dt:
        delta, bias = sel.delta_raw, layer.dt_proj.bias
    else:
        delta, bias = layer.step_size().flatten(), None  # (D,) SISO, (G·n,) MIMO

    if layer.siso:
        def run(C_param: nn.Parameter | None, time: Callable) -> torch.Tensor:
            C = sel.C_t if C_param is None else layer._coefficients(C_param)
            forward = time is _same
            y = triton_scan.selective_scan(
                time(x), time(delta), A, B=time(sel.B_t), C=time(C), D=layer.D if forward else None,
                z=z if forward else None, delta_bias=bias, delta_softplus=selective_dt,
                discretization=cfg.discretization, scale=layer.scale)
            return time(y)
        y = run(layer.C, _same)
        return y + run(layer.C_backward, _reversed) if cfg.bidirectional else y
    batch, L, _ = x.shape
    G, n = cfg.n_groups, cfg.n_modes
    device = x.device.type
    if cfg.complex and torch.is_autocast_enabled(device):
        # complex bf16 does not exist: B_t x_t in fp32, the scan's complex64 input
        with torch.autocast(device, enabled=False):
            gain_B = None if sel.gain_B is None else sel.gain_B.float()
            u = layer._input(x.float(), type(sel)(delta=sel.delta, gain_B=gain_B))
    else:
        u = layer._input(x, sel)
    u = u.reshape(batch, L, G * n)
    gain = sel.gain_C.reshape(batch, L, G * n) if sel.gain_C is not None else None
    plain = type(sel)(delta=sel.delta)  # the C gains are applied in the scan

    def states(time: Callable) -> torch.Tensor:
        g = triton_scan.diagonal_scan(time(u), time(delta), A.flatten(), gain=time(gain), delta_bias=bias,
                                      delta_softplus=selective_dt, discretization=cfg.discretization)
        return time(g).view(batch, L, G, n)

    y = layer._readout(states(_same), plain, layer.C)
    if cfg.bidirectional:
        y = y + layer._readout(states(_reversed), plain, layer.C_backward)
    return y + x * layer.D


def step(layer: SSMLayer, x: torch.Tensor, z: torch.Tensor | None, sel: Selection,
         h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of a SISO layer (modes triton and cuda: mamba-ssm's scan kernel has no single
    step), the SiLU gate fused. x: (B, D), z: (B, 1, D) or None, h: (B, D, n) -> the (B, H)
    output and the new h."""
    selective_dt = layer.dt_proj is not None
    delta = sel.delta_raw[:, 0] if selective_dt else layer.step_size().flatten()
    fused_gate = z[:, 0] if layer.cfg.gate == "silu" else None
    y, h = triton_scan.selective_state_step(
        h, x, delta, layer.A(), B=None if sel.B_t is None else sel.B_t[:, 0],
        C=sel.C_t[:, 0] if layer.C is None else layer._coefficients(layer.C), D=layer.D, z=fused_gate,
        delta_bias=layer.dt_proj.bias if selective_dt else None, delta_softplus=selective_dt,
        discretization=layer.cfg.discretization, scale=layer.scale, fixed_C=layer.C is not None)
    return layer._output(y.unsqueeze(1), None if fused_gate is not None else z)[:, 0], h
