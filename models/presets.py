"""S5, S4D and Mamba as named points of the ablation space.

Each preset returns an :class:`SSMConfig`; keyword overrides move along any axis from there
(``s5(selective="dt,B,C")`` is a selective MIMO layer, ``s4d(structure="mimo")`` is S4D's
output stage around one MIMO SSM). :func:`model_preset` wraps the layer in the block and
norm of ``PRESET_NORMS``: RMSNorm for the Mamba presets (mamba-ssm's); LayerNorm for S5 and S4D,
which is not their papers' LRA setting (BatchNorm: S5's ``run_train.py`` default and every S5
run script, S4's ``configs/experiment/lra/s4-*.yaml``); ``norm='batch'`` gives that.

* S5 (Smith et al. 2023): one MIMO SSM with P = d_state states over all H channels,
  HiPPO-N init in ``blocks`` blocks (here 1: one HiPPO-N of size P; the official
  ``run_train.py`` defaults to J = 8, its LRA scripts use J = 3 to 16), conjugate
  symmetry, learned per-state log step, ZOH,
  C ~ trunc_standard_normal then C̃ = CV, D ~ N(0, 1), half_glu1 output (``run_train.py``'s
  default, kept by the Image, Retrieval, Pathfinder and Path-X scripts; ListOps and Text use
  half_glu2) with flax's tanh GELU (``gelu='tanh'``), Re Λ stored directly as the official
  ``Lambda_re`` (``a_param='direct'``); ``clip_eigs`` (off, the official default; of the LRA
  scripts only Image, ``run_lra_cifar.sh``, turns it on) and ``step_rescale`` (1.0) as in
  ``s5/ssm.py``.
* S4D (Gu et al. 2022): H SISO SSMs of N = d_state (N/2 complex modes), S4D-Lin, one Δ per
  channel, B folded into C, ZOH, FFT convolution, GELU -> Linear(H, 2H) -> GLU.
* Mamba (Gu & Dao 2023): expand 2, causal conv k = 4 + SiLU, selective Δ (rank
  ceil(H/16)), B, C, S4D-Real A, ZOH for A with Euler for B, D = 1, y ⊙ SiLU(z), out_proj.
* Mamba-2 (Dao & Gu 2024; mamba-ssm's ``Mamba2`` block): A and Δ one scalar per head of
  ``headdim`` channels, B_t, C_t shared by all heads (ngroups 1), A per head from U[1, 16];
  Δ (full rank, + dt_bias), B_t and C_t projected from the block input u with x and z
  (``project_from='u'``), the short conv over x, B and C; D per head (``skip_per='head'``);
  y ⊙ SiLU(z) then the grouped RMSNorm (``gate_norm``), out_proj.
* Mamba-3 (arXiv 2603.15569, mamba-ssm's ``Mamba3``): heads, projections of u and D per
  head as Mamba-2, no short conv, no gated RMSNorm (``Mamba3``'s default),
  exponential-trapezoidal discretisation with data-dependent λ_t, data-dependent A_t
  (floor 1e-4), data-dependent rotation of half the state pairs (rope_fraction 0.5),
  BCNorm and B/C biases. ``mamba3_mimo``: the same with rank-4 MIMO.

Their defaults are the reference modules' (``Mamba2``, ``Mamba3``): d_state 128, headdim 64,
expand 2, ngroups 1, rope_fraction 0.5, A_floor 1e-4, mimo_rank 4; chunk_size 64 is
``Mamba3``'s SISO default (``Mamba2``'s is 256; ``Mamba3`` MIMO recommends 64/R), here only
the chunk of the ``chunked`` mode, which computes the same function at any chunk (at MIMO rank
R its dual form takes chunk_size // (2R) steps a chunk: :func:`models.heads.dual_chunk`). A layer
narrower than one head of 64 (D = expand·H not a multiple of 64) gets the largest headdim
that divides both D and 64.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .config import ModelConfig, SSMConfig


def s5(d_model: int = 64, d_state: int = 64, **overrides: Any) -> SSMConfig:
    base = dict(structure="mimo", selective=(), gate="half_glu1", conv=0, expand=0, init="hippo",
                discretization="zoh", complex=True, conj_sym=True, c_init="trunc_standard_normal",
                skip_init="normal", gelu="tanh", a_param="direct", clip_eigs=False, step_rescale=1.0)
    return SSMConfig(d_model=d_model, d_state=d_state, **{**base, **overrides})


def s4d(d_model: int = 64, d_state: int = 64, **overrides: Any) -> SSMConfig:
    base = dict(structure="siso", selective=(), gate="glu", conv=0, expand=0, init="s4d_lin",
                discretization="zoh", complex=True, conj_sym=True, skip_init="normal")
    return SSMConfig(d_model=d_model, d_state=d_state, **{**base, **overrides})


def mamba(d_model: int = 64, d_state: int = 16, **overrides: Any) -> SSMConfig:
    base = dict(structure="siso", selective=("dt", "B", "C"), gate="silu", conv=4, expand=2,
                init="s4d_real", discretization="zoh_euler", complex=False, skip_init="ones")
    return SSMConfig(d_model=d_model, d_state=d_state, **{**base, **overrides})


def _heads(d_model: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Mamba-2/3's head defaults: headdim 64 (or the largest divisor of D and 64), chunk 64."""
    d_inner = overrides.get("expand", 2) * d_model
    if not isinstance(d_inner, int) or isinstance(d_inner, bool) or d_inner < 1:
        return {"chunk_size": 64}  # SSMConfig refuses the d_model or expand by name
    return {"headdim": math.gcd(64, d_inner), "chunk_size": 64}


def mamba2(d_model: int = 64, d_state: int = 128, **overrides: Any) -> SSMConfig:
    base = dict(project_from="u", skip_per="head", gate_norm=True)
    return mamba(d_model, d_state, **{**_heads(d_model, overrides), **base, **overrides})


def mamba3(d_model: int = 64, d_state: int = 128, **overrides: Any) -> SSMConfig:
    base = dict(conv=0, discretization="trapezoidal", trapezoid="data", a_source="data", a_floor=1e-4,
                rotation="data", rope_fraction=0.5, bc_norm=True, bc_bias=True, project_from="u", skip_per="head")
    return mamba(d_model, d_state, **{**_heads(d_model, overrides), **base, **overrides})


def mamba3_mimo(d_model: int = 64, d_state: int = 128, **overrides: Any) -> SSMConfig:
    return mamba3(d_model, d_state, **{"mimo_rank": 4, **overrides})


PRESETS: dict[str, Callable[..., SSMConfig]] = {"s5": s5, "s4d": s4d, "mamba": mamba, "mamba2": mamba2,
                                                 "mamba3": mamba3, "mamba3_mimo": mamba3_mimo}
# S5/S4D: LayerNorm (S4's configs/model/base.yaml default), not the BatchNorm of their LRA runs.
PRESET_NORMS = {"s5": "layer", "s4d": "layer", "mamba": "rms", "mamba2": "rms", "mamba3": "rms", "mamba3_mimo": "rms"}


def preset(name: str, **overrides: Any) -> SSMConfig:
    """The layer config of a named preset, with overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not valid; expected one of {sorted(PRESETS)}")
    return PRESETS[name](**overrides)


def model_preset(name: str, n_layers: int = 2, dropout: float = 0.0, norm: str | None = None,
                 ffn_expand: int = 0, **layer_overrides: Any) -> ModelConfig:
    """A whole backbone config around a preset layer (norm: ``PRESET_NORMS``, see above)."""
    return ModelConfig(ssm=preset(name, **layer_overrides), n_layers=n_layers, dropout=dropout,
                       norm=norm or PRESET_NORMS[name], ffn_expand=ffn_expand)
