"""Size of a configuration, and helpers that size one config to match another.

* :func:`param_count` — exact: the module is built on PyTorch's ``meta`` device (no
  memory, no initialisation cost) and its parameters' ``numel`` are summed.
* :func:`state_size` — real numbers carried from one step to the next by the SSM
  recurrence (conv windows excluded): G · N per layer with conjugate symmetry or a real
  state, G · 2N for a complex state without it (each complex number is two reals).
  This is the convention of the papers: S5's P, S4D's and Mamba's H·N / D·N.
* :func:`flops_per_token` — a documented estimate (see its docstring).
* :func:`match_state_size`, :func:`match_param_count` — pick d_state or a width so two
  configurations compare at equal state size or equal parameter count.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable

import torch
from torch import nn

from .backbone import Backbone
from .config import IOSpec, ModelConfig, SSMConfig
from .layer import SSMLayer
from .scan import power_tables

Config = SSMConfig | ModelConfig


def _default_spec(cfg: ModelConfig) -> IOSpec:
    return IOSpec(d_input=cfg.d_model, d_output=None)


def build_on_meta(cfg: Config, spec: IOSpec | None = None) -> nn.Module:
    """The module for a config, on the meta device (shapes only)."""
    with torch.device("meta"):
        if isinstance(cfg, SSMConfig):
            return SSMLayer(cfg)
        return Backbone(cfg, spec or _default_spec(cfg))


def param_count(cfg: Config, spec: IOSpec | None = None) -> int:
    """Exact number of parameters of ``SSMLayer(cfg)`` or ``Backbone(cfg, spec)``."""
    return sum(p.numel() for p in build_on_meta(cfg, spec).parameters())


def state_size(cfg: Config) -> int:
    """Real numbers in the recurrent SSM state (all layers for a ModelConfig)."""
    if isinstance(cfg, ModelConfig):
        return cfg.n_layers * state_size(cfg.ssm)
    per_mode = 2 if cfg.complex else 1
    return cfg.n_groups * cfg.n_modes * per_mode


def _uses_kernel_conv(cfg: SSMConfig, length: int | None) -> bool:
    """Whether the layer runs as a convolution with its SSM kernel: mode fft, or auto, which
    picks it on a CPU (a config carries no device: auto is counted as on a CPU; for what a GPU
    computes, count the resolved mode, ``cfg.with_(mode=layer.resolve_mode(device))``)."""
    return bool(length) and cfg.supports_fft and cfg.structure == "siso" and "B" not in cfg.selective \
        and "C" not in cfg.selective and cfg.mode in ("fft", "auto") and not cfg.uses_heads \
        and cfg.discretization != "trapezoidal"


def _powers_flops(cfg: SSMConfig, length: int) -> float:
    """FLOPs of the powers Ā^l, l < L, of one state (:func:`models.scan.powers`): two tables of
    Ā^r and Ā^{qT} (T = ⌈√L⌉ entries and ⌈L/T⌉), each entry exp(l log Ā) (complex: two
    multiplies, exp, cos, sin and two multiplies of torch.polar = 7; real: a multiply and an exp =
    2), then one product of an entry of each per lag (complex 6, real 1)."""
    return sum(power_tables(length)) * (7 if cfg.complex else 2) + length * (6 if cfg.complex else 1)


def _kernel_flops(cfg: SSMConfig, length: int) -> float:
    """FLOPs of one forward call's SSM kernel, shared by the whole batch (mode fft):
    K[l, g] = Re Σ_n C[g, n] F[g, n] Ā[g, n]^l for l < L. Per state the powers Ā^l
    (:func:`_powers_flops`), and per (state, lag) one multiply-add into K per direction
    (complex 8, real 2); then a real FFT of K at 2L per channel and direction (2.5 · 2L · log2(2L))."""
    states = cfg.n_groups * cfg.n_modes
    directions = 2 if cfg.bidirectional else 1
    mac = 8 if cfg.complex else 2
    vandermonde = states * (_powers_flops(cfg, length) + length * directions * mac)
    kernel_fft = directions * cfg.d_inner * 5 * length * math.log2(2 * length)
    return float(vandermonde + kernel_fft)


def _uses_state_conv(cfg: SSMConfig, length: int | None) -> bool:
    """Whether mode fft computes the states by FFT convolution (a time-invariant Ā where the layer
    is not one kernel convolution: MIMO, input-dependent B or C, trapezoidal, heads); auto as on a
    CPU, which picks fft for every time-invariant SISO layer (:meth:`SSMLayer.resolve_mode`)."""
    fft = cfg.mode == "fft" or (cfg.mode == "auto" and cfg.auto_picks_fft)
    return bool(length) and fft and not _uses_kernel_conv(cfg, length)


def _state_conv_flops(cfg: SSMConfig, length: int, batch: int) -> float:
    """FLOPs per token and direction of the states by FFT convolution, h = Ā^l * b at 2L
    (:func:`models.scan.state_convolution`): per state, the transform of b and its inverse
    (complex FFT 5 · 2L · log2(2L) each, real 2.5 · 2L · log2(2L)) and the product of the spectra
    (6 per bin: 2L complex, L + 1 real), per sequence of ``length``; and the kernel Ā^l
    (:func:`_powers_flops`) and its transform, once per call of ``batch`` sequences."""
    states = cfg.n_groups * cfg.n_modes
    fft = (5 if cfg.complex else 2.5) * 2 * length * math.log2(2 * length)
    bins = 2 * length if cfg.complex else length + 1
    per_sequence = 2 * fft + 6 * bins
    kernel = _powers_flops(cfg, length) + fft
    return states * (per_sequence / length + kernel / (batch * length))


def _layer_flops(cfg: SSMConfig, length: int | None, batch: int = 1) -> float:
    D, G, c, n = cfg.d_inner, cfg.n_groups, cfg.channels_per_group, cfg.n_modes
    states = G * n
    cmul = 6 if cfg.complex else 1  # one complex multiply = 4 multiplies + 2 adds
    mac_real_by_state = 2 * (2 if cfg.complex else 1)  # real x times a complex coefficient
    directions = 2 if cfg.bidirectional else 1
    layer = build_on_meta(cfg)
    flops = sum(2 * m.weight.numel() for m in layer.modules() if isinstance(m, nn.Linear))
    flops += sum(2 * m.weight.numel() for m in layer.modules() if isinstance(m, nn.Conv1d))  # x; B, C from u
    flops += 3 * D if cfg.gate_norm else 0  # the gated RMSNorm, as a norm
    if cfg.structure == "siso":
        b_map = states * (mac_real_by_state if "B" in cfg.selective else 0)
        read = states * 2 * (2 if cfg.complex else 1)
    else:
        b_map = G * n * c * mac_real_by_state
        read = G * c * n * 2 * (2 if cfg.complex else 1)
    gains = states * (("B" in cfg.selective) + ("C" in cfg.selective)) * (2 if cfg.structure == "mimo" else 0)
    # Δ-selective: ΔA and its exp per transition (_transitions_per_token), the factor of B̄ per state
    discretize = _transitions_per_token(cfg) * (cmul + 1) + states if "dt" in cfg.selective else 0
    step = states * (cmul + (2 if cfg.complex else 1))  # a*h + b
    recurrence = _state_conv_flops(cfg, length, batch) if _uses_state_conv(cfg, length) else step
    if cfg.discretization == "trapezoidal":  # + β_t v_{t-1}
        recurrence += step
    R = cfg.mimo_rank  # rank-R MIMO: R input and R output products per state, and the lift
    b_map, read = b_map * R, read * R
    flops += _frontier_flops(cfg) + discretize + gains + 3 * D
    if _uses_kernel_conv(cfg, length):
        # FFT convolution instead of the recurrence, per direction: forward and inverse real FFT
        # at 2L and the product of the spectra per channel; plus the kernel, once per call
        flops += directions * D * (2 * 5 * math.log2(2 * length) + 6) + _kernel_flops(cfg, length) / (batch * length)
    else:  # the drive B x once (the backward direction reads it reversed), the states and readout per direction
        flops += b_map + directions * (recurrence + read)
    return float(flops)


def _transitions_per_token(cfg: SSMConfig) -> int:
    """The distinct Ā_t = exp(Δ_t A) a Δ-selective layer computes per token: one per channel and
    state (Mamba-1: A per channel and state), one per head for the heads (Mamba-2/3: one real A
    and Δ per head; per head and state for a complex A)."""
    if cfg.uses_heads:
        return cfg.n_heads * (cfg.n_modes if cfg.complex else 1)
    return cfg.n_groups * cfg.n_modes


def _frontier_flops(cfg: SSMConfig) -> float:
    """Per token, beyond the projections: the rotation of B_t and C_t (per head, rank and rotated
    pair: two angles' cos and sin and two 2×2 rotations, 2 + 2·6) and the angle's running sum;
    BCNorm and biases (4 per entry); the rank-R lift of x and z, the per-rank gate and the
    sum over ranks (6 per rank and channel)."""
    E, N, R, D = cfg.n_heads, cfg.d_state, cfg.mimo_rank, cfg.d_inner
    rotation = E * (R * cfg.rotated_pairs * 14 + 2 * cfg.rotated_pairs) if cfg.rotation != "none" else 0
    bc = 4 * cfg.ngroups * R * N * (cfg.bc_norm + cfg.bc_bias) * 2
    lift = 6 * R * D if R > 1 else 0
    return float(rotation + bc + lift)


def flops_per_token(cfg: Config, spec: IOSpec | None = None, length: int | None = None, batch: int = 1) -> float:
    """Estimated forward FLOPs per token.

    Counting rules: a multiply-add is 2 FLOPs; a complex multiply 6; each Linear applies
    its weight once per token; the recurrence costs one multiply-add per state per token;
    Δ-selective layers add the discretisation (ΔA and its exp per distinct transition, one per
    state, or per head for Mamba-2/3, and the factor of B̄ per state); an FFT
    convolution (when ``length`` is given and the layer uses it) costs 5·log2(2L) per
    channel for each of the two real FFTs and 6 for the product of the spectra instead of
    the recurrence, plus its kernel (see :func:`_kernel_flops`: it grows with d_state),
    computed once per forward call of ``batch`` sequences of ``length`` tokens and so
    divided by batch · length (default batch 1: the cost of one sequence alone); where mode
    fft computes the states themselves by FFT (MIMO, input-dependent B or C), the transforms
    per state replace the recurrence (:func:`_state_conv_flops`). The mode counted is the
    config's, auto as on a CPU, except that the chunked dual form of a head layer (mode chunked
    where ``chunked_is_dual``, and auto on a CPU there: :mod:`models.ssd`) is counted as the
    recurrence it equals, not as its matmuls, whose count grows with the chunk size. The head counts per token for readout ``all`` and once per
    sequence of ``length`` for a pooled readout. Norms and activations are counted as 3 FLOPs
    per channel; exp, cos and sin as one FLOP each; the embedding lookup as none.
    """
    if isinstance(cfg, SSMConfig):
        return _layer_flops(cfg, length, batch)
    spec = spec or _default_spec(cfg)
    H = cfg.d_model
    per_block = _layer_flops(cfg.ssm, length, batch) + 5 * H
    if cfg.ffn_hidden:
        per_block += 2 * 2 * H * cfg.ffn_hidden + 5 * H
    flops = cfg.n_layers * per_block
    if spec.d_input is not None:
        flops += 2 * spec.d_input * H
    if spec.d_output is not None:  # a pooled readout (last, mean) applies the head once per sequence
        flops += 2 * H * spec.d_output / (length if spec.readout != "all" and length else 1)
    return float(flops)


def match_state_size(cfg: SSMConfig, target: int) -> SSMConfig:
    """A copy of ``cfg`` whose d_state gives ``state_size == target`` exactly.

    Raises ValueError naming the nearest achievable sizes when no d_state fits.
    """
    options = []
    for d_state in range(1, max(2, 2 * target) + 1):
        try:
            candidate = replace(cfg, d_state=d_state)
        except ValueError:
            continue
        size = state_size(candidate)
        if size == target:
            return candidate
        options.append(size)
        if size > target:
            break
    nearest = sorted(set(options), key=lambda s: abs(s - target))[:2]
    raise ValueError(f"state size {target} is not reachable by d_state for this config; nearest: {nearest}")


def match_param_count(cfg: Config, target: int, field: str = "d_state", spec: IOSpec | None = None,
                      candidates: Iterable[int] | None = None) -> Config:
    """A copy of ``cfg`` with the integer ``field`` chosen so its parameter count is closest to
    ``target`` (exact where possible): "d_state" or "d_model" of its layer, or "ffn_width" of
    a ModelConfig (the MLP's hidden width, Mamba-3's way of matching its MIMO models).

    ``candidates`` restricts the values tried (default 1..4096 for d_state and ffn_width,
    1..2048 for d_model); invalid values (e.g. odd d_state under conjugate symmetry) are skipped.
    A target outside the counts the valid values reach (below the smallest, above the largest)
    is a ValueError naming that range: the nearest value would not be a match.
    """
    if field not in ("d_state", "d_model", "ffn_width"):
        raise ValueError(f"field={field!r} is not valid; expected one of ['d_state', 'd_model', 'ffn_width']")
    if field == "ffn_width" and not isinstance(cfg, ModelConfig):
        raise ValueError("field='ffn_width' is not valid for a layer config; expected a ModelConfig (it has the MLP)")
    layer = cfg.ssm if isinstance(cfg, ModelConfig) else cfg
    values = sorted(candidates) if candidates is not None else range(1, 2049 if field == "d_model" else 4097)
    if field == "ffn_width" and candidates is None:
        values = _linear_neighbourhood(cfg, target, spec, values)
    best, best_gap, reached = None, None, []  # reached: (count, value) of the smallest and the last
    for value in values:
        try:
            if field == "ffn_width":
                new = replace(cfg, ffn_width=value)
            else:
                new_layer = replace(layer, **{field: value})
                new = replace(cfg, ssm=new_layer) if isinstance(cfg, ModelConfig) else new_layer
        except ValueError:
            continue
        count = param_count(new, spec)
        reached = reached[:1] + [(count, value)]
        gap = abs(count - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = new, gap
        if count > target and gap > (best_gap or 0):
            break  # parameter count grows with both fields: no closer value beyond here
    if best is None:
        raise ValueError(f"no valid value of {field} found for target parameter count {target}")
    (low, low_value), (high, high_value) = reached[0], reached[-1]
    if not low <= target <= high:
        edge = (f"the smallest valid {field}, {low_value}, gives {low}" if target < low
                else f"the largest valid {field}, {high_value}, gives {high}")
        raise ValueError(f"target parameter count {target} is not reachable by {field}: {edge} parameters; "
                         "expected a target the field reaches, or another field")
    return best


def _linear_neighbourhood(cfg: ModelConfig, target: int, spec: IOSpec | None, values: range) -> range:
    """The widths around the one that meets ``target``: a model's parameter count is exactly
    linear in ``ffn_width`` (two Linear layers per block), so two counts locate it."""
    first, second = (param_count(replace(cfg, ffn_width=w), spec) for w in (1, 2))
    guess = 1 + round((target - first) / (second - first))
    low = max(values.start, min(guess - 1, values.stop - 1))
    return range(low, min(values.stop, low + 3))
