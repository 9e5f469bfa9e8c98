"""Reference implementations used as oracles (tests) and peers (benchmarks), when installed.

mamba-ssm on a machine without its CUDA build imports only through a stand-in for its
compiled ``selective_scan_cuda`` module; its pure-PyTorch ``selective_scan_ref`` then
replaces the fused kernel in ``Mamba``'s forward, and ``step`` takes its PyTorch path.
``Mamba2``'s Triton kernels are replaced by mamba-ssm's own PyTorch references the same way
(:func:`mamba2_reference`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import math
import types
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F

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
            with _replaced(simple, selective_scan_fn=interface.selective_scan_ref, causal_conv1d_fn=None,
                           selective_state_update=None):
                return super().forward(hidden_states, inference_params)

        def step(self, hidden_states, conv_state, ssm_state):
            with _replaced(simple, causal_conv1d_update=None, selective_state_update=None):
                return super().step(hidden_states, conv_state, ssm_state)

    return ReferenceMamba, interface.selective_scan_ref


@contextmanager
def _replaced(module: types.ModuleType, **names):
    """Module globals replaced for the duration of a call, then restored."""
    saved = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def mamba2_reference() -> type | None:
    """mamba-ssm's ``Mamba2`` with its Triton kernels replaced by mamba-ssm's own PyTorch
    references, so that it runs on a CPU and in float64 (on any device, CUDA build or not);
    None when mamba-ssm is not installed. The class is always built with
    ``use_mem_eff_path=False`` (the fused ``mamba_split_conv1d_scan_combined`` path has no
    reference that takes a learned norm weight's gradient), and substitutes, during its own
    ``forward`` and ``step`` only:

    * ``causal_conv1d_fn`` / ``causal_conv1d_update`` -> None: ``Mamba2``'s own PyTorch
      branches (``self.conv1d`` + SiLU, and the rolled conv state in ``step``);
    * ``mamba_chunk_scan_combined`` -> ``modules/ssd_minimal.py::ssd_minimal_discrete``
      (the paper's Listing 1), fed as the kernel is: Δ = softplus(dt + dt_bias), X = Δ·x,
      A·Δ, B and C repeated over the heads of each group, the length zero-padded to a whole
      number of chunks (Δ = 0 there: the state passes unchanged), then + D·x (and · SiLU(z)
      if z is given); its final state is returned for ``return_final_states``. A is taken as
      -exp(A_log) at the module's precision (``Mamba2.forward`` rounds it to float32 first,
      a guard for fp16: the same value in a float32 module, but in float64 it would cap the
      agreement at ~1e-7). seq_idx, cu_seqlens and a dt_limit are refused;
    * ``layernorm_gated.rmsnorm_fn`` (Triton, used by ``RMSNormGated``) ->
      ``layernorm_gated.rms_norm_ref`` called with a unit weight and ``upcast`` only below
      float32, the learned weight multiplied after (``rms_norm_ref`` casts its weight, and with
      ``upcast`` its inputs, to float32; the product is the same, bias is None for RMSNorm);
    * in ``step``: ``selective_state_update`` -> None (``Mamba2.step``'s own PyTorch path,
      which asserts ngroups == 1), or for ngroups > 1 ->
      ``ops/triton/selective_state_update.py::selective_state_update_ref``.
    """
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    module = importlib.import_module("mamba_ssm.modules.mamba2")
    layernorm_gated = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update_ref

    def rmsnorm_ref(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        if bias is not None:
            raise NotImplementedError("the reference norm applies the weight after rms_norm_ref: RMSNorm only")
        unit = torch.ones(weight.shape, dtype=torch.float32, device=weight.device)
        upcast = x.dtype not in (torch.float32, torch.float64)
        return layernorm_gated.rms_norm_ref(x, unit, None, z=z, eps=eps, group_size=group_size,
                                            norm_before_gate=norm_before_gate, upcast=upcast) * weight

    class ReferenceMamba2(module.Mamba2):
        """mamba-ssm's Mamba2 on its PyTorch references (see :func:`mamba2_reference`)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "use_mem_eff_path": False})

        def _chunk_scan(self, x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                        seq_idx=None, cu_seqlens=None, dt_limit=(0.0, math.inf), return_final_states=False,
                        return_varlen_states=False):
            if seq_idx is not None or cu_seqlens is not None or tuple(dt_limit) != (0.0, math.inf):
                raise NotImplementedError("the reference scan covers whole sequences without a dt_limit")
            A = -torch.exp(self.A_log)  # at the module's precision (see the docstring)
            dt = dt + dt_bias if dt_bias is not None else dt
            dt = F.softplus(dt) if dt_softplus else dt
            L, heads_per_group = x.shape[1], x.shape[2] // B.shape[2]
            pad = (-L) % chunk_size

            def padded(t):  # (b, l, ...) -> (b, l + pad, ...)
                return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))

            y, final = ssd_minimal_discrete(padded(x * dt.unsqueeze(-1)), padded(A * dt),
                                            padded(B.repeat_interleave(heads_per_group, dim=2)),
                                            padded(C.repeat_interleave(heads_per_group, dim=2)), chunk_size)
            y = y[:, :L]
            if D is not None:
                y = y + x * (D.unsqueeze(-1) if D.dim() == 1 else D)
            if z is not None:
                y = y * F.silu(z)
            return (y, final) if return_final_states else y

        def forward(self, u, seqlen=None, seq_idx=None, cu_seqlens=None, inference_params=None):
            with _replaced(module, causal_conv1d_fn=None, mamba_chunk_scan_combined=self._chunk_scan), \
                    _replaced(layernorm_gated, rmsnorm_fn=rmsnorm_ref):
                return super().forward(u, seqlen, seq_idx, cu_seqlens, inference_params)

        def step(self, hidden_states, conv_state, ssm_state):
            update = None if self.ngroups == 1 else selective_state_update_ref
            with _replaced(module, causal_conv1d_update=None, selective_state_update=update), \
                    _replaced(layernorm_gated, rmsnorm_fn=rmsnorm_ref):
                return super().step(hidden_states, conv_state, ssm_state)

    return ReferenceMamba2


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


def mamba2_from_official(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """The ``SSMLayer`` state dict that computes what mamba-ssm's ``Mamba2`` with parameters
    ``state`` computes, for a layer config ``cfg`` of the mamba2 preset (its ``conv`` the
    block's d_conv; ``Mamba2`` built with bias=False, conv_bias=True, rmsnorm=True,
    norm_before_gate=False, D_has_hdim=False, d_ssm=None, its default dt_limit).

    ``Mamba2``'s in_proj rows [z, x, B, C, dt] become our in_proj [x, z] and the heads'
    projection of u [dt, B, C]; its one conv over [x, B, C] splits into our conv over x and
    the heads' conv over [B, C]; A_log (E,) -> (E, 1); dt_bias, D (per head), the norm's
    weight and out_proj are copied. Differentiable in ``state`` (tests compare gradients
    through it)."""
    E, D, g, N = cfg.n_heads, cfg.d_inner, cfg.ngroups, cfg.d_state
    layout = (cfg.project_from, cfg.skip_per, cfg.gate_norm, cfg.selective, cfg.mimo_rank, cfg.a_source, cfg.rotation,
              cfg.discretization, cfg.complex, cfg.bc_norm, cfg.bc_bias)
    if cfg.headdim is None or layout != ("u", "head", True, ("dt", "B", "C"), 1, "learned", "none", "zoh_euler",
                                         False, False, False):
        raise ValueError("the layer config must be a mamba2 preset (project_from='u', skip_per='head', gate_norm=True, "
                         f"headdim set) to take Mamba2's parameters; got project_from={cfg.project_from!r}, "
                         f"skip_per={cfg.skip_per!r}, gate_norm={cfg.gate_norm!r}, headdim={cfg.headdim!r}")
    z_w, x_w, B_w, C_w, dt_w = state["in_proj.weight"].split([D, D, g * N, g * N, E])
    ours = {"in_proj.weight": torch.cat([x_w, z_w]), "heads.x_proj.weight": torch.cat([dt_w, B_w, C_w]),
            "heads.dt_bias": state["dt_bias"], "heads.A_log": state["A_log"].unsqueeze(-1), "heads.D": state["D"],
            "gate_norm.weight": state["norm.weight"], "out_proj.weight": state["out_proj.weight"]}
    if cfg.conv:
        for name in ("weight", "bias"):
            x_part, bc_part = state[f"conv1d.{name}"].split([D, 2 * g * N])
            ours[f"conv1d.{name}"], ours[f"heads.bc_conv.{name}"] = x_part, bc_part
    return ours


def mamba3_from_official(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """The ``SSMLayer`` state dict that computes what mamba-ssm's ``Mamba3`` (SISO or MIMO)
    with parameters ``state`` computes, for a layer config ``cfg`` of the mamba3 presets.

    ``Mamba3`` projects z, x, B, C, Δ, A, λ and the angles from the block input u, as the
    presets do (``project_from='u'``): its in_proj rows [z, x, B, C, dt, A, trap, angles]
    become our in_proj [x, z] and the heads' projection of u [dt, B, C, A, λ, θ]; dt_bias and
    D (per head) are copied. MIMO pairs state dimension i with i + N/2 for its rotation, this
    layer pairs 2j with 2j + 1, so the N entries of B, C and their biases are permuted.
    Differentiable in ``state`` (tests compare gradients through it).
    """
    E, N, D = cfg.n_heads, cfg.d_state, cfg.d_inner
    R, g, M = cfg.mimo_rank, cfg.ngroups, cfg.rotated_pairs
    if cfg.conv or not cfg.expand or cfg.project_from != "u" or cfg.skip_per != "head" or cfg.rotation != "data":
        raise ValueError("the layer config must be a mamba3 preset (conv=0, project_from='u', skip_per='head') to take "
                         f"Mamba3's parameters; got conv={cfg.conv}, project_from={cfg.project_from!r}, "
                         f"skip_per={cfg.skip_per!r}")
    z_w, x_w, B_w, C_w, dt_w, A_w, trap_w, angle_w = state["in_proj.weight"].split(
        [D, D, g * R * N, g * R * N, E, E, E, M])
    order = torch.arange(N) if R == 1 else torch.stack([torch.arange(N // 2), torch.arange(N // 2) + N // 2], 1).flatten()

    def per_state(t: torch.Tensor) -> torch.Tensor:  # rows (r, g, n) -> ours (g, r, n), n permuted
        return t.view(R, g, N, -1)[:, :, order].transpose(0, 1).reshape(g * R * N, -1)

    projection = torch.cat([dt_w, per_state(B_w), per_state(C_w), A_w, trap_w, angle_w])
    ours = {"in_proj.weight": torch.cat([x_w, z_w]), "heads.x_proj.weight": projection,
            "heads.dt_bias": state["dt_bias"], "heads.D": state["D"], "out_proj.weight": state["out_proj.weight"],
            "heads.B_norm": state["B_norm.weight"][order], "heads.C_norm": state["C_norm.weight"][order],
            "heads.B_bias": state["B_bias"][..., order], "heads.C_bias": state["C_bias"][..., order]}
    if R > 1:
        for name in ("mimo_x", "mimo_z", "mimo_o"):  # (E, R, P) -> (R, D)
            ours[f"heads.{name}"] = state[name].transpose(0, 1).reshape(R, D)
    return ours
