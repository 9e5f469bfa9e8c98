"""What the benchmark measures: our layer at each point and mode, and the peers.

A :class:`Subject` is one series of the length sweep (one name and mode): it builds its module
once (seeded, so ours and a peer get the same weights where they share a layout) and makes
random inputs for each (batch, length). A :class:`StepSubject` is one recurrent-inference
measurement (``init_state`` / ``step``).

Peers, when installed (each row has ``peer=True`` and ``compare_to`` naming our series):

* ``mamba-ssm Mamba``: mamba-ssm's block with our Mamba preset's weights; on CPU its
  PyTorch reference path (``selective_scan_ref``, PyTorch conv; mode ``reference``), on a
  GPU with its CUDA build its kernels (mode ``cuda``). Compared with our ``mamba`` point.
* ``mamba-ssm selective_scan_fn`` (GPU, CUDA build) or else ``selective_scan_ref`` (its
  Python loop over L; recorded as skipped where the kernel runs): the selective scan alone, y = SSM(u; Δ, A, B, C) + D u, Δ = softplus(δ + b),
  compared with ``selective scan (ours)``: the same computation with :mod:`models.discretize`
  and :func:`models.scan.linear_scan` in each of our modes. In ``triton`` mode also
  ``selective scan (ours, (B, D, L))``: our kernels on the peer's own (B, D, L) inputs
  (``channels_first``: read in place, as the peer reads them).
* ``s5-pytorch S5``: s5-pytorch's ``S5(H, P)`` (the SSM alone: P complex states without
  conjugate symmetry, no activation; vmapped over the batch; mode ``native``). Compared with
  the point that does the peer's work (preset s5 with exactly conj_sym=False, gate=none, i.e.
  the same SSM plus a GELU; ``s5_like_peer`` in the ``ablations`` set) when there is one, else
  with our ``s5`` point, which also applies GELU and the half_glu1 gate and stores P/2
  conjugate pairs.

* ``mamba-ssm Mamba2``: mamba-ssm's ``Mamba2`` block with its own initial weights: the same
  function and parameter layout as our ``mamba2`` point (B, C and Δ projected from the block
  input, gated RMSNorm; tests/test_mamba_parity.py), which it is compared with, at the same
  width, state and headdim. Its kernels need a GPU: on a CPU the series is recorded as skipped.

FLOPs per token of a peer are :func:`models.flops_per_token` of our equivalent config (same
function computed); the selective scan alone counts, per token, 8 FLOPs per (channel, state)
(δA, exp, δ·B·u, a·h + b, C·h) and 5 per channel (bias, softplus, D·u).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models import SSMLayer, flops_per_token, param_count, preset, triton_scan
from models.cuda import selective_scan_kernel
from models.discretize import discretize
from models.peers import copy_into_mamba, mamba_reference, s5_peer
from models.scan import linear_scan
from models.sizing import build_on_meta

from .settings import CONCRETE_MODES, BenchSettings, Point

log = logging.getLogger(__name__)

STATE_COPIES = 10  # rough peak of a forward+backward, in (B, L, states) tensors: only guards the first length
SCAN_OURS = "selective scan (ours)"
SCAN_OURS_CHANNELS_FIRST = "selective scan (ours, (B, D, L))"


def version_of(distribution: str) -> str:
    """The installed version of a distribution, or '' when absent."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


@dataclass
class Subject:
    """One series of the length sweep.

    build(): the module (call under a fixed seed); inputs(batch, length, device): the
    random input tensors, e.g. (u,) with u (B, L, H); flops(length): forward FLOPs per token;
    estimate_bytes(batch, length): rough forward+backward peak, used only before the first
    measured length.
    """

    name: str
    peer: bool
    preset: str
    mode: str
    d_model: int
    d_state: int
    d_inner: int
    includes: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, int, torch.device], tuple[torch.Tensor, ...]]
    flops: Callable[[int], float]
    estimate_bytes: Callable[[int, int], int]
    param_count: int | None = None  # None: the module's parameters
    compare_to: str | None = None
    version: str = ""
    skip_reason: str | None = None  # set: the series is recorded as 'skipped'
    resolve_mode: Callable[[nn.Module, torch.device, int], str] | None = None


@dataclass
class StepSubject:
    """One recurrent-inference measurement: O(1)-per-token ``step`` calls.

    init_state(module, batch) -> state; step(module, x_t, state) -> state with x_t (B, d_input);
    state_bytes(state): bytes carried from one token to the next.
    """

    name: str
    peer: bool
    preset: str
    d_model: int
    d_state: int
    d_input: int
    includes: str
    build: Callable[[], nn.Module]
    init_state: Callable[[nn.Module, int], Any]
    step: Callable[[nn.Module, torch.Tensor, Any], Any]
    param_count: int | None = None
    flops: float = float("nan")
    compare_to: str | None = None
    version: str = ""
    skip_reason: str | None = None
    state_bytes: Callable[[Any], int] = field(default=lambda state: _tensor_bytes(state))


def _tensor_bytes(tree: Any) -> int:
    """Bytes of every tensor in a (nested) dict / tuple / list."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(_tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (tuple, list)):
        return sum(_tensor_bytes(v) for v in tree)
    return 0


def _randn(device: torch.device, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=device)


def sequence_inputs(width: int) -> Callable[[int, int, torch.device], tuple[torch.Tensor, ...]]:
    """A maker of u: (B, L, width), standard normal."""
    def inputs(batch: int, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        return (_randn(device, batch, length, width),)
    return inputs


# ---------------------------------------------------------------------------- our layer
def valid_modes(point: Point, device: torch.device, requested: Sequence[str] | None) -> list[tuple[str, str | None]]:
    """[(mode, reason it is skipped or None)] for a point: the requested modes (default every
    concrete mode), each checked against the config and the device."""
    cfg = point.cfg
    modes = list(requested) if requested is not None else list(CONCRETE_MODES)
    out = []
    for mode in modes:
        reason = None
        if mode == "fft" and not cfg.supports_fft:
            reason = "fft needs a time-invariant transition (selective dt, data-dependent A or rotation)"
        elif mode == "triton" and not cfg.supports_triton:
            reason = "triton (the fused kernels) covers the Mamba-1 axes only"
        elif mode == "cuda":
            if not cfg.supports_cuda_kernel:
                reason = "cuda (mamba-ssm's kernel) covers only the real SISO Mamba point"
            elif device.type != "cuda":
                reason = "cuda mode needs a GPU"
            elif selective_scan_kernel() is None:
                reason = "cuda mode needs mamba-ssm's CUDA build"
        elif mode == "triton" and not _times_triton(device):
            reason = "triton mode is timed on a GPU only (on a CPU it runs in Triton's interpreter, a test tool)"
        if reason and requested is None:
            log.debug("%s: mode %s not timed: %s", point.name, mode, reason)
            continue  # modes=all: only the valid modes; a mode asked for by name gets a 'skipped' row
        out.append((mode, reason))
    return out


def _times_triton(device: torch.device) -> bool:
    """The Triton kernels are timed where they are compiled: CUDA, not the CPU interpreter."""
    return device.type == "cuda" and triton_scan.runs_on(device)


def _layer_estimate(cfg) -> Callable[[int, int], int]:
    """Rough forward+backward peak bytes: STATE_COPIES (B, L, G, n) state tensors, or for the
    FFT convolution (no states materialised) STATE_COPIES complex (B, 2L, D) spectra."""
    if cfg.mode == "fft" and cfg.structure == "siso" and "B" not in cfg.selective:
        return lambda batch, length: STATE_COPIES * batch * 2 * length * cfg.d_inner * 8
    element = 8 if cfg.complex else 4
    return lambda batch, length: STATE_COPIES * batch * length * cfg.n_groups * cfg.n_modes * element


def point_subjects(point: Point, device: torch.device, requested: Sequence[str] | None) -> list[Subject]:
    """Our layer at one point, one subject per mode."""
    subjects = []
    for mode, reason in valid_modes(point, device, requested):
        cfg = point.cfg.with_(mode=mode) if reason is None else point.cfg
        # FLOPs of what runs: auto counted in the mode it resolves to on this device
        counted = cfg.with_(mode=build_on_meta(cfg).resolve_mode(device)) if reason is None else cfg
        subjects.append(Subject(
            name=point.name, peer=False, preset=point.preset, mode=mode, d_model=cfg.d_model, d_state=cfg.d_state,
            d_inner=cfg.d_inner, includes=_describe(point), build=lambda cfg=cfg: SSMLayer(cfg),
            inputs=sequence_inputs(cfg.d_model),
            flops=lambda length, cfg=counted: flops_per_token(cfg, length=length), estimate_bytes=_layer_estimate(cfg),
            param_count=param_count(cfg), skip_reason=reason, version=version_of("ssm-ablate"),
            resolve_mode=lambda module, device, length: module.resolve_mode(device)))
    return subjects


def _describe(point: Point) -> str:
    """'SSMLayer preset s5 with {...}': what a row of our layer computes."""
    extra = point.axis_overrides
    return f"SSMLayer preset {point.preset}" + (f" with {extra}" if extra else "")


def point_step_subject(point: Point) -> StepSubject:
    """Our layer's ``init_state`` / ``step`` at one point (mode does not matter for a step)."""
    cfg = point.cfg
    reason = "step() needs a causal (not bidirectional) layer" if cfg.bidirectional else None
    return StepSubject(
        name=point.name, peer=False, preset=point.preset, d_model=cfg.d_model, d_state=cfg.d_state,
        d_input=cfg.d_model, includes=_describe(point), build=lambda: SSMLayer(cfg),
        init_state=lambda layer, batch: layer.init_state(batch),
        step=lambda layer, x, state: layer.step(x, state)[1], param_count=param_count(cfg),
        flops=flops_per_token(cfg.with_(mode="recurrent")), skip_reason=reason, version=version_of("ssm-ablate"))


# ---------------------------------------------------------------------------- mamba-ssm
def _mamba_class(device: torch.device) -> tuple[type | None, str, str]:
    """(mamba-ssm's Mamba class for this device or None, mode label, note)."""
    found = mamba_reference()
    if found is None:
        return None, "reference", "mamba-ssm is not installed"
    kernel = device.type == "cuda" and selective_scan_kernel() is not None
    return found[0], ("cuda" if kernel else "reference"), ""


def _mamba_builder(cls: type, H: int, N: int, device: torch.device, use_fast_path: bool) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        ours = SSMLayer(preset("mamba", d_model=H, d_state=N))
        module = cls(d_model=H, d_state=N, use_fast_path=use_fast_path)
        copy_into_mamba(ours, module)  # the same function as our mamba point: same weights
        return module
    return build


def mamba_subjects(compare_to: str | None, H: int, N: int, device: torch.device) -> list[Subject]:
    """mamba-ssm's Mamba block (reference path on CPU, CUDA kernel on GPU) at width H, state N."""
    cls, mode, missing = _mamba_class(device)
    cfg = preset("mamba", d_model=H, d_state=N)
    kernel = mode == "cuda"
    includes = ("mamba-ssm Mamba: in_proj, causal conv 4 + SiLU, selective dt/B/C, D, y*SiLU(z), out_proj; "
                + ("CUDA kernels (fast path where causal_conv1d is installed)" if kernel
                   else "selective_scan_ref (Python loop over L), PyTorch conv") + "; our mamba preset's weights")
    estimate = lambda batch, length: STATE_COPIES * batch * length * cfg.d_inner * N * 4
    return [Subject(
        name="mamba-ssm Mamba", peer=True, preset="mamba", mode=mode, d_model=H, d_state=N, d_inner=cfg.d_inner,
        includes=includes, build=_mamba_builder(cls, H, N, device, use_fast_path=kernel) if cls else (lambda: None),
        inputs=sequence_inputs(H), flops=lambda length: flops_per_token(cfg.with_(mode="scan")),
        estimate_bytes=estimate, param_count=param_count(cfg), compare_to=compare_to,
        version=version_of("mamba_ssm") or version_of("mamba-ssm"), skip_reason=missing or None)]


def mamba_step_subject(compare_to: str | None, H: int, N: int, device: torch.device) -> StepSubject:
    """mamba-ssm's ``Mamba.step`` with ``allocate_inference_cache`` states."""
    cls, mode, missing = _mamba_class(device)
    cfg = preset("mamba", d_model=H, d_state=N)

    def init_state(module: nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return module.allocate_inference_cache(batch, 1)

    def step(module: nn.Module, x: torch.Tensor, state: tuple) -> tuple:
        _, conv_state, ssm_state = module.step(x.unsqueeze(1), *state)
        return conv_state, ssm_state

    return StepSubject(
        name="mamba-ssm Mamba", peer=True, preset="mamba", d_model=H, d_state=N, d_input=H,
        includes=f"mamba-ssm Mamba.step ({'CUDA selective_state_update' if mode == 'cuda' else 'PyTorch path'})",
        build=_mamba_builder(cls, H, N, device, use_fast_path=mode == "cuda") if cls else (lambda: None),
        init_state=init_state, step=step, param_count=param_count(cfg),
        flops=flops_per_token(cfg.with_(mode="recurrent")), compare_to=compare_to,
        version=version_of("mamba_ssm") or version_of("mamba-ssm"), skip_reason=missing or None)


# ---------------------------------------------------------------------------- selective scan alone
class SelectiveScanOurs(nn.Module):
    """The selective scan alone, ours: (u, δ, B, C) -> y, all (B, L, ·) (our layout).

    u, δ: (B, L, D); B_t, C_t: (B, L, N); Δ = softplus(δ + b); h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t
    (zoh_euler); y_t = C_t·h_t + D u_t. A = -exp(A_log): (D, N). channels_first (mode triton):
    True: every input and y in mamba-ssm's layout instead, (B, D, L) and (B, N, L), read in
    place; None: the kernels' default layout for these (B, L, ·) inputs, as the layer runs them
    (at the Mamba point channels first: u, δ copied into it, y a transposed view).
    """

    def __init__(self, D: int, N: int, mode: str, channels_first: bool | None = None):
        super().__init__()
        self.mode, self.channels_first = mode, channels_first
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D, 1))
        self.D = nn.Parameter(torch.ones(D))
        self.delta_bias = nn.Parameter(torch.log(torch.expm1(torch.full((D,), 0.01))))

    def forward(self, u: torch.Tensor, delta: torch.Tensor, B_t: torch.Tensor, C_t: torch.Tensor) -> torch.Tensor:
        A = -torch.exp(self.A_log)
        if self.mode == "triton":  # fused: no (B, L, D, N) tensor in memory
            if self.channels_first:  # every input (B, ·, L), as mamba-ssm takes them: read in place
                u, delta, B_t, C_t = (x.transpose(1, 2) for x in (u, delta, B_t, C_t))
            out = triton_scan.selective_scan(u, delta, A, B=B_t, C=C_t, D=self.D, delta_bias=self.delta_bias,
                                             delta_softplus=True, discretization="zoh_euler",
                                             channels_first=self.channels_first)
            return out.transpose(1, 2) if self.channels_first else out  # (B, D, L) for (B, ·, L) inputs
        dt = F.softplus(delta + self.delta_bias).unsqueeze(-1)  # (B, L, D, 1)
        a, factor = discretize("zoh_euler", A, dt)  # (B, L, D, N), (B, L, D, 1)
        b = (factor * u.unsqueeze(-1)) * B_t.unsqueeze(2)  # (B, L, D, N)
        h = linear_scan(a, b, self.mode)
        return torch.einsum("bldn,bln->bld", h, C_t) + u * self.D


class SelectiveScanPeer(nn.Module):
    """mamba-ssm's ``selective_scan_fn`` / ``selective_scan_ref`` on (u, δ, B, C) in its layout:
    u, δ: (B, D, L); B_t, C_t: (B, N, L); same parameters as :class:`SelectiveScanOurs`."""

    def __init__(self, D: int, N: int, fn: Callable):
        super().__init__()
        self.fn = fn
        ours = SelectiveScanOurs(D, N, "scan")
        self.A_log, self.D, self.delta_bias = ours.A_log, ours.D, ours.delta_bias

    def forward(self, u: torch.Tensor, delta: torch.Tensor, B_t: torch.Tensor, C_t: torch.Tensor) -> torch.Tensor:
        return self.fn(u, delta, -torch.exp(self.A_log), B_t, C_t, self.D, delta_bias=self.delta_bias,
                       delta_softplus=True)


def _scan_inputs(channels_first: bool, D: int, N: int) -> Callable:
    def inputs(batch: int, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        u, delta = _randn(device, batch, length, D), 0.5 * _randn(device, batch, length, D)
        B_t, C_t = _randn(device, batch, length, N), _randn(device, batch, length, N)
        if channels_first:
            return tuple(t.transpose(1, 2).contiguous() for t in (u, delta, B_t, C_t))
        return u, delta, B_t, C_t
    return inputs


def scan_flops(D: int, N: int) -> float:
    """Forward FLOPs per token of the selective scan alone (see the module docstring)."""
    return float(8 * D * N + 5 * D)


def selective_scan_subjects(H: int, N: int, device: torch.device, requested: Sequence[str] | None) -> list[Subject]:
    """The selective scan alone at our mamba point's D = 2H, N: ours per mode, and mamba-ssm's."""
    D = 2 * H
    estimate = lambda batch, length: STATE_COPIES * batch * length * D * N * 4
    flops = lambda length: scan_flops(D, N)
    count = D * N + 2 * D
    common = dict(preset="mamba", d_model=H, d_state=N, d_inner=D, flops=flops, estimate_bytes=estimate,
                  param_count=count)
    subjects = []
    for mode in ("recurrent", "scan", "chunked", "triton"):
        if requested is not None and mode not in requested:
            continue
        if mode == "triton" and not _times_triton(device):
            continue
        subjects.append(Subject(
            name=SCAN_OURS, peer=False, mode=mode, includes="softplus(δ+b), zoh_euler, linear_scan, C·h + D u",
            build=lambda mode=mode: SelectiveScanOurs(D, N, mode), inputs=_scan_inputs(False, D, N),
            version=version_of("ssm-ablate"), **common))
        if mode == "triton":  # the kernels on the peer's (B, D, L) inputs, in place: no copy on either side
            subjects.append(Subject(
                name=SCAN_OURS_CHANNELS_FIRST, peer=False, mode=mode,
                includes="softplus(δ+b), zoh_euler, linear_scan, C·h + D u; (B, D, L) layout",
                build=lambda: SelectiveScanOurs(D, N, "triton", channels_first=True),
                inputs=_scan_inputs(True, D, N), version=version_of("ssm-ablate"), **common))
    found = mamba_reference()
    missing = None if found is not None else "mamba-ssm is not installed"
    kernel = selective_scan_kernel() if device.type == "cuda" else None
    # where the CUDA kernel runs it stands for mamba-ssm: its reference, a Python loop over L,
    # took a minute at batch 8, L 2048 on an H200 (4.3 s a forward and backward)
    slow = "timed where mamba-ssm's CUDA kernel is not: here selective_scan_fn is" if kernel is not None else None
    peers = [("mamba-ssm selective_scan_fn", "cuda", kernel, None)] if kernel is not None else []
    peers.append(("mamba-ssm selective_scan_ref", "reference", found[1] if found else None, missing or slow))
    for name, mode, fn, skip in peers:
        subjects.append(Subject(
            name=name, peer=True, mode=mode,
            includes=f"mamba-ssm {name.split()[-1]}, delta_softplus, D; (B, D, L) layout",
            build=(lambda fn=fn: SelectiveScanPeer(D, N, fn)) if fn else (lambda: None),
            inputs=_scan_inputs(True, D, N), compare_to=SCAN_OURS,
            version=version_of("mamba_ssm") or version_of("mamba-ssm"), skip_reason=skip, **common))
    return subjects


# ---------------------------------------------------------------------------- s5-pytorch
def _s5_builder(H: int, P: int) -> Callable[[], nn.Module | None]:
    def build() -> nn.Module | None:
        cls = s5_peer()
        return cls(H, P)  # unidirectional, dense B/C, ZOH, degree 1
    return build


def s5_subjects(compare_to: str | None, H: int, P: int) -> list[Subject]:
    """s5-pytorch's ``S5(H, P)``: the SSM alone, P complex states, vmapped over the batch."""
    missing = None if s5_peer() is not None else "s5-pytorch is not installed"
    equivalent = preset("s5", d_model=H, d_state=P, conj_sym=False, gate="none", mode="scan")
    return [Subject(
        name="s5-pytorch S5", peer=True, preset="s5", mode="native", d_model=H, d_state=P, d_inner=H,
        includes=f"s5-pytorch S5({H}, {P}): MIMO SSM, {P} complex states (no conjugate symmetry), ZOH, D skip, "
                 "no gate; its associative scan, vmap over the batch",
        build=_s5_builder(H, P), inputs=sequence_inputs(H), flops=lambda length: flops_per_token(equivalent),
        estimate_bytes=lambda batch, length: STATE_COPIES * batch * length * P * 8, compare_to=compare_to,
        version=version_of("s5-pytorch"), skip_reason=missing)]


def s5_step_subject(compare_to: str | None, H: int, P: int) -> StepSubject:
    """s5-pytorch's ``S5SSM.forward_rnn`` (one token), vmapped over the batch."""
    missing = None if s5_peer() is not None else "s5-pytorch is not installed"
    equivalent = preset("s5", d_model=H, d_state=P, conj_sym=False, gate="none", mode="recurrent")

    def init_state(module: nn.Module, batch: int) -> torch.Tensor:
        # zeros (B, P) complex: S5.initial_state reads an attribute S5SSM lacks in s5-pytorch 0.2.1
        device = next(module.parameters()).device
        return torch.zeros(batch, P, dtype=torch.complex64, device=device)

    def step(module: nn.Module, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.vmap(module.seq.forward_rnn)(x, state)[1]

    return StepSubject(
        name="s5-pytorch S5", peer=True, preset="s5", d_model=H, d_state=P, d_input=H,
        includes=f"s5-pytorch S5({H}, {P}).seq.forward_rnn, vmap over the batch", build=_s5_builder(H, P),
        init_state=init_state, step=step, flops=flops_per_token(equivalent), compare_to=compare_to,
        version=version_of("s5-pytorch"), skip_reason=missing)


# ---------------------------------------------------------------------------- all of them
def _mamba2_class(device: torch.device) -> tuple[type | None, str]:
    """(mamba-ssm's Mamba2 class, '') where it runs, else (None, why not)."""
    if device.type != "cuda":
        return None, "mamba-ssm's Mamba2 runs its Triton kernels on a GPU only"
    if mamba_reference() is None or selective_scan_kernel() is None:
        return None, "mamba-ssm with its CUDA build is not installed"
    from mamba_ssm.modules.mamba2 import Mamba2
    return Mamba2, ""


def mamba2_subjects(compare_to: str | None, H: int, N: int, headdim: int, device: torch.device) -> list[Subject]:
    """mamba-ssm's Mamba2 block at width H, state N, headdim (its own weights; GPU only)."""
    cls, missing = _mamba2_class(device)
    cfg = preset("mamba2", d_model=H, d_state=N, headdim=headdim)
    estimate = lambda batch, length: STATE_COPIES * batch * length * cfg.d_inner * N * 4
    build = (lambda: cls(d_model=H, d_state=N, headdim=headdim)) if cls else (lambda: None)
    return [Subject(
        name="mamba-ssm Mamba2", peer=True, preset="mamba2", mode="cuda", d_model=H, d_state=N, d_inner=cfg.d_inner,
        includes="mamba-ssm Mamba2: in_proj to z, x, B, C, dt; causal conv over x, B, C; SSD chunked scan "
                 "kernels; gated RMSNorm; out_proj; its own weights",
        build=build, inputs=sequence_inputs(H), flops=lambda length: flops_per_token(cfg.with_(mode="scan")),
        estimate_bytes=estimate, compare_to=compare_to, version=version_of("mamba_ssm") or version_of("mamba-ssm"),
        skip_reason=missing or None)]


S5_PEER_EQUIVALENT = {"conj_sym": False, "gate": "none"}  # our S5 point doing s5-pytorch's S5 work (+ GELU)


def comparable_point(points: Sequence[Point], preset_name: str, equivalent: dict[str, Any]) -> Point | None:
    """The point a peer is compared with: the preset moved by exactly ``equivalent`` (the peer's
    function), else the preset itself at the bench's sizes, else None."""
    for wanted in (equivalent, {}):
        match = next((p for p in points if p.preset == preset_name and p.axis_overrides == wanted), None)
        if match is not None:
            return match
    return None


def peer_sizes(points: Sequence[Point], settings: BenchSettings, preset_name: str,
               equivalent: dict[str, Any] | None = None) -> tuple[str | None, int, int]:
    """(name of our point a peer compares with, d_model, d_state) for a preset's peers."""
    point = comparable_point(points, preset_name, equivalent or {})
    if point is not None:
        return point.name, point.cfg.d_model, point.cfg.d_state
    cfg = preset(preset_name, d_model=settings.scale.d_model,
                 **({"d_state": settings.scale.d_state} if settings.scale.d_state else {}))
    return None, cfg.d_model, cfg.d_state


def sweep_subjects(settings: BenchSettings, device: torch.device) -> list[Subject]:
    """Every series of the length sweep: each point x mode, then the peers (when asked for)."""
    subjects = [s for point in settings.points for s in point_subjects(point, device, settings.modes)]
    if not settings.peers:
        return subjects
    name, H, N = peer_sizes(settings.points, settings, "mamba")
    subjects += mamba_subjects(name, H, N, device)
    subjects += selective_scan_subjects(H, N, device, settings.modes)
    name, H, P = peer_sizes(settings.points, settings, "s5", S5_PEER_EQUIVALENT)
    subjects += s5_subjects(name, H, P)
    point = comparable_point(settings.points, "mamba2", {})
    if point is not None:
        subjects += mamba2_subjects(point.name, point.cfg.d_model, point.cfg.d_state, point.cfg.headdim, device)
    return subjects


def step_subjects(settings: BenchSettings, device: torch.device) -> list[StepSubject]:
    """Every recurrent-inference measurement: each point, then the peers (when asked for)."""
    subjects = [point_step_subject(point) for point in settings.points]
    if settings.peers:
        name, H, N = peer_sizes(settings.points, settings, "mamba")
        subjects.append(mamba_step_subject(name, H, N, device))
        name, H, P = peer_sizes(settings.points, settings, "s5", S5_PEER_EQUIVALENT)
        subjects.append(s5_step_subject(name, H, P))
    return subjects
