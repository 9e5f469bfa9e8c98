"""Configuration of one SSM layer and of a whole model, with validation.

Every axis of the ablation space is one field of :class:`SSMConfig`; the presets in
:mod:`models.presets` are named points of that space. Validation happens in
``__post_init__`` so a bad value fails before any tensor is allocated, with a message
that names the value and lists what would be valid.

Vocabulary used throughout (shapes in docstrings use these letters):

* ``H`` = ``d_model``: width of the residual stream.
* ``D`` = ``d_inner``: channels the SSM runs on; ``expand * H`` when ``expand > 0``
  (Mamba's input branch), else ``H``.
* ``G`` = ``groups``: number of independent diagonal SSMs; each reads and writes
  ``c = D // G`` channels. ``G = 1`` is full MIMO (S5), ``G = D`` is SISO (S4D, Mamba).
* ``N`` = ``d_state``: state dimension of each of the ``G`` SSMs, counted in real
  numbers, as the papers count it (S5's P, S4D's and Mamba's N).
* ``n`` = stored modes per SSM: ``N // 2`` complex modes with conjugate symmetry
  (the other half are their conjugates), ``N`` complex modes without it, ``N`` real
  modes for a real state.
* ``P`` = ``headdim`` (Mamba-2/3): channels per head sharing one A and one Δ; ``D // P``
  heads, in ``ngroups`` groups sharing B_t and C_t. ``R`` = ``mimo_rank`` (Mamba-3 MIMO).

The Mamba-2 and Mamba-3 axes (``headdim``, ``ngroups``, ``a_source``, ``rotation``,
``mimo_rank``, ``bc_norm``, ``bc_bias``) are computed by :class:`models.heads.HeadSSM`;
``discretization='trapezoidal'`` and ``eig_range`` apply to every point. A field added to
this class after the first results were recorded is left out of a run's identity while it
is at its default (:meth:`SSMConfig.identity`), so earlier run ids stay valid.

The Mamba-2 block's layout (mamba-ssm ``modules/mamba2.py``): ``project_from`` (``x``: Δ, B_t,
C_t and the other data-dependent terms are projections of the SSM input x after the short
conv, Mamba-1's layout; ``u``: of the block input u, with Δ full rank per head, and with a
conv B_t and C_t pass through it as Mamba-2's conv over x, B and C), ``gate_norm`` (RMSNorm of
y ⊙ SiLU(z) over ngroups groups, Mamba-2's ``RMSNormGated``) and ``skip_per`` (D per
``channel`` or per ``head``).

S5's conventions (lindermanlab/S5 ``s5/ssm.py``, ``s5/layers.py``): ``gelu`` (``exact`` erf or
``tanh``, flax's default, in every GELU of the layer's output gate), ``a_param`` (Re A stored as
``A_log`` with Re A = -exp(A_log), or ``direct``: stored as ``A_real``, S5's ``Lambda_re``),
``clip_eigs`` (Re A clipped at -1e-4 in the forward; a clipped entry gets no gradient) and
``step_rescale`` (Δ = step_rescale · exp(log_dt); change it on a trained layer with
:meth:`models.layer.SSMLayer.set_step_rescale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable

STRUCTURES = ("mimo", "siso")
SELECTIVE_PARAMS = ("dt", "B", "C")
GATES = ("none", "glu", "half_glu1", "half_glu2", "silu", "h3")
BRANCH_GATES = ("silu", "h3")  # gates that multiply projections of the input
INITS = ("hippo", "s4d_lin", "s4d_inv", "s4d_real", "random")
DISCRETIZATIONS = ("zoh", "bilinear", "zoh_euler", "trapezoidal")
C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
SKIP_INITS = ("normal", "ones", "zeros")
MODES = ("auto", "recurrent", "scan", "chunked", "fft", "cuda", "triton")
NORMS = ("layer", "batch", "rms", "none")
READOUTS = ("last", "mean", "all")
COMPLEX_INITS = ("hippo", "s4d_lin", "s4d_inv")
A_SOURCES = ("learned", "data")
ROTATIONS = ("none", "fixed", "data")
ROTATION_FORMS = ("rotate_bc", "complex")
ROPE_FRACTIONS = (0.5, 1.0)
EIG_RANGES = ((0, 1), (-1, 1))
GELUS = ("exact", "tanh")
A_PARAMS = ("log", "direct")
CLIP_EIGS_BOUND = -1e-4  # clip_eigs: Re A <= -1e-4 in the forward (S5's clip_eigs)
PROJECT_FROM = ("x", "u")
SKIP_PER = ("channel", "head")
# Fields added after schema 1, with their defaults: absent from a run's identity at these values.
LATER_FIELDS = {"headdim": None, "ngroups": 1, "a_source": "learned", "a_floor": 1e-4, "trapezoid": "data",
                "rotation": "none", "rope_fraction": 0.5, "rotation_form": "rotate_bc", "eig_range": (0, 1),
                "mimo_rank": 1, "bc_norm": False, "bc_bias": False,
                "gelu": "exact", "a_param": "log", "clip_eigs": False, "step_rescale": 1.0,
                "project_from": "x", "gate_norm": False, "skip_per": "channel"}  # the last three: Mamba-2's block
HEAD_AXES = ("headdim", "ngroups", "a_source", "rotation", "mimo_rank", "bc_norm", "bc_bias", "project_from",
             "skip_per")


def _choice(name: str, value: Any, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {list(valid)}")


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name}={value!r} is not valid; expected an integer {bound}")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; expected true or false")


def parse_selective(value: Any) -> tuple[str, ...]:
    """Normalise the ``selective`` axis to a sorted tuple drawn from ("dt", "B", "C").

    Accepts an iterable of names, a comma-separated string such as ``"dt,B,C"``, or
    ``"none"`` / ``""`` / ``None`` for a time-invariant layer.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = () if value.strip().lower() in ("", "none") else value.split(",")
    names = [str(v).strip() for v in value]
    for name in names:
        _choice("selective entry", name, SELECTIVE_PARAMS)
    return tuple(p for p in SELECTIVE_PARAMS if p in names)


def parse_eig_range(value: Any) -> tuple[int, int]:
    """``[0, 1]`` / ``[-1, 1]`` (a list, tuple or a string such as ``"-1,1"``) -> a tuple."""
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    try:
        pair = tuple(int(float(v)) for v in value)
    except (TypeError, ValueError):
        pair = None
    if pair not in EIG_RANGES:
        raise ValueError(f"eig_range={value!r} is not valid; expected one of {[list(r) for r in EIG_RANGES]}")
    return pair


def parse_trapezoid(value: Any) -> str | float:
    """λ of the trapezoidal rule: ``"data"`` (λ_t = σ(W_λ x_t)) or a fixed number in [0, 1]."""
    if value == "data":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0 or isinstance(value, bool):
        raise ValueError(f"trapezoid={value!r} is not valid; expected 'data' or a number in [0, 1]")
    return number


@dataclass
class SSMConfig:
    """One point of the ablation space (see DESIGN.md, "one layer, many ablations").

    Defaults give a small S4D-like SISO layer that runs on a laptop CPU.
    """

    d_model: int = 64
    d_state: int = 64
    structure: str = "siso"
    groups: int | None = None
    selective: Any = ()
    gate: str = "glu"
    conv: int = 0
    expand: int = 0
    init: str = "s4d_lin"
    discretization: str = "zoh"
    complex: bool = True
    conj_sym: bool = True
    bidirectional: bool = False
    blocks: int = 1
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    dt_rank: int | None = None
    c_init: str = "trunc_standard_normal"
    skip_init: str = "normal"
    mode: str = "auto"
    chunk_size: int | None = None
    headdim: int | None = None
    ngroups: int = 1
    a_source: str = "learned"
    a_floor: float = 1e-4
    trapezoid: Any = "data"
    rotation: str = "none"
    rope_fraction: float = 0.5
    rotation_form: str = "rotate_bc"
    eig_range: Any = (0, 1)
    mimo_rank: int = 1
    bc_norm: bool = False
    bc_bias: bool = False
    gelu: str = "exact"
    a_param: str = "log"
    clip_eigs: bool = False
    step_rescale: float = 1.0
    project_from: str = "x"
    gate_norm: bool = False
    skip_per: str = "channel"

    def __post_init__(self) -> None:
        self.selective = parse_selective(self.selective)
        self.eig_range = parse_eig_range(self.eig_range)
        self.trapezoid = parse_trapezoid(self.trapezoid)
        _positive_int("d_model", self.d_model)
        _positive_int("d_state", self.d_state)
        _choice("structure", self.structure, STRUCTURES)
        _choice("gate", self.gate, GATES)
        _positive_int("conv", self.conv, allow_zero=True)
        _positive_int("expand", self.expand, allow_zero=True)
        _choice("init", self.init, INITS)
        _choice("discretization", self.discretization, DISCRETIZATIONS)
        _choice("c_init", self.c_init, C_INITS)
        _choice("skip_init", self.skip_init, SKIP_INITS)
        _choice("mode", self.mode, MODES)
        for name in ("complex", "conj_sym", "bidirectional", "bc_norm", "bc_bias"):
            _boolean(name, getattr(self, name))
        _positive_int("blocks", self.blocks)
        if self.dt_rank is not None:
            _positive_int("dt_rank", self.dt_rank)
        if self.chunk_size is not None:
            _positive_int("chunk_size", self.chunk_size)
        if not (0 < self.dt_min <= self.dt_max):
            raise ValueError(
                f"dt_min={self.dt_min!r}, dt_max={self.dt_max!r} are not valid; expected 0 < dt_min <= dt_max"
            )
        d_inner = self.d_inner
        if self.structure == "siso" and self.groups not in (None, d_inner):
            raise ValueError(
                f"groups={self.groups!r} is not valid for structure='siso' (one SSM per channel); "
                f"expected None or {d_inner}, or use structure='mimo' for grouped MIMO"
            )
        if self.groups is not None:
            _positive_int("groups", self.groups)
            if d_inner % self.groups:
                raise ValueError(
                    f"groups={self.groups!r} is not valid; it must divide the {d_inner} SSM channels"
                )
        if self.gate in BRANCH_GATES and self.expand == 0:
            raise ValueError(
                f"gate={self.gate!r} is not valid with expand=0: it multiplies projections of the input that "
                "only exist with an input projection; set expand >= 1 or use gate in "
                "['none', 'glu', 'half_glu1', 'half_glu2']"
            )
        if not self.complex and self.init in COMPLEX_INITS:
            raise ValueError(
                f"init={self.init!r} is not valid with complex=False: it defines imaginary parts; "
                "expected init in ['s4d_real', 'random'] for a real state"
            )
        if self.complex and self.conj_sym and self.d_state % 2:
            raise ValueError(
                f"d_state={self.d_state} is not valid with conjugate symmetry; expected an even number "
                "(d_state / 2 complex modes are stored)"
            )
        if self.init == "hippo" and (self.d_state % self.blocks):
            raise ValueError(
                f"blocks={self.blocks} is not valid; it must divide d_state={self.d_state} (HiPPO block size)"
            )
        if self.init == "hippo" and self.complex and self.conj_sym and (self.d_state // self.blocks) % 2:
            raise ValueError(
                f"blocks={self.blocks} is not valid with conjugate symmetry; d_state / blocks = "
                f"{self.d_state // self.blocks} must be even"
            )

        self._check_block_layout()
        self._check_frontier_axes()
        self._check_s5_conventions()
        if self.mode == "fft" and not self.supports_fft:
            raise ValueError(
                f"mode='fft' is not valid with selective={list(self.selective)}, a_source={self.a_source!r}, "
                f"rotation={self.rotation!r}: a convolution needs a time-invariant transition; expected mode in "
                "['auto', 'recurrent', 'scan', 'chunked'] or selective without 'dt', a_source='learned' and "
                "rotation in ['none', 'fixed']"
            )
        if self.mode == "triton" and not self.supports_triton:
            raise ValueError(
                f"mode='triton' is not valid with {self._frontier_summary()}: the fused kernels cover the "
                "Mamba-1 axes only; expected mode in ['auto', 'recurrent', 'scan', 'chunked']"
                + (" or 'fft'" if self.supports_fft else "")
            )
        if self.mode == "cuda" and not self.supports_cuda_kernel:
            raise ValueError(
                "mode='cuda' (mamba-ssm's selective_scan_fn) is only valid for the Mamba point: "
                "structure='siso', selective=['dt', 'B', 'C'], complex=False, discretization='zoh_euler', "
                "bidirectional=False; expected mode in ['auto', 'recurrent', 'scan', 'chunked'"
                + (", 'fft']" if self.supports_fft else "]")
            )

    def _check_frontier_axes(self) -> None:
        """The Mamba-2/3 and eigenvalue-range axes: values and conflicts, one line each."""
        if self.headdim is not None:
            _positive_int("headdim", self.headdim)
            if self.d_inner % self.headdim:
                raise ValueError(f"headdim={self.headdim!r} is not valid; it must divide the {self.d_inner} SSM channels")
        _positive_int("ngroups", self.ngroups)
        _positive_int("mimo_rank", self.mimo_rank)
        _choice("a_source", self.a_source, A_SOURCES)
        _choice("rotation", self.rotation, ROTATIONS)
        _choice("rotation_form", self.rotation_form, ROTATION_FORMS)
        _choice("rope_fraction", self.rope_fraction, ROPE_FRACTIONS)
        if isinstance(self.a_floor, bool) or not isinstance(self.a_floor, (int, float)) or not self.a_floor > 0:
            raise ValueError(f"a_floor={self.a_floor!r} is not valid; expected a number > 0")
        if self.uses_heads and self.structure != "siso":
            raise ValueError(f"{self._frontier_summary()} is not valid with structure='mimo': heads, rotation and "
                             "rank-R MIMO are defined for SISO states; expected structure='siso'")
        if self.uses_heads and self.bidirectional:
            raise ValueError(f"bidirectional=True is not valid with {self._frontier_summary()}; expected "
                             "bidirectional=False")
        if self.ngroups > 1 and (self.headdim is None or (self.d_inner // self.headdim) % self.ngroups):
            raise ValueError(f"ngroups={self.ngroups} is not valid; it needs headdim set and must divide the number "
                             f"of heads ({self.d_inner // self.headdim if self.headdim else 'no heads'})")
        selective_bc = "B" in self.selective and "C" in self.selective
        for name, needs_both in (("ngroups", False), ("bc_norm", False), ("bc_bias", False), ("mimo_rank", True),
                                 ("rotation", True)):
            if getattr(self, name) == LATER_FIELDS[name]:
                continue
            if (needs_both and not selective_bc) or not ("B" in self.selective or "C" in self.selective):
                need = "both 'B' and 'C'" if needs_both else "'B' or 'C'"
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid with selective={list(self.selective)}: "
                                 f"it acts on B_t, C_t; expected selective with {need}")
        if self.rotation != "none":
            if self.complex:
                raise ValueError(f"rotation={self.rotation!r} is not valid with complex=True: it rotates pairs of a "
                                 "real state (complex=True already rotates by Δ·A_imag); expected complex=False")
            if self.headdim is None and self.a_source == "learned":
                raise ValueError(f"rotation={self.rotation!r} is not valid with a learned A per (channel, state) "
                                 "(headdim=None): a rotated pair must share one decay; expected headdim set (one A "
                                 "per head) or a_source='data'")
            if self.d_state % 2 or self.rotated_pairs == 0:
                raise ValueError(f"d_state={self.d_state} is not valid with rotation={self.rotation!r}; expected an "
                                 "even d_state with at least one rotated pair (d_state · rope_fraction >= 2)")
        if self.discretization == "trapezoidal" and self.bidirectional:
            raise ValueError("discretization='trapezoidal' is not valid with bidirectional=True (the rule pairs each "
                             "step with the one before); expected bidirectional=False")
        if self.bidirectional and self.structure == "siso" and "C" in self.selective:
            raise ValueError("bidirectional=True is not valid with a selective C in a SISO layer (C_t is shared by both "
                             "directions); expected selective without 'C', or structure='mimo'")
        if self.discretization != "trapezoidal" and self.trapezoid != "data":
            raise ValueError(f"trapezoid={self.trapezoid!r} is not valid with discretization={self.discretization!r}; "
                             "it is the λ of discretization='trapezoidal'")

    def _check_s5_conventions(self) -> None:
        """gelu, a_param, clip_eigs, step_rescale (S5's conventions): values and conflicts, one
        line each. As with the Mamba-2/3 axes, a value off its default on an A or Δ it cannot act
        on is refused."""
        _choice("gelu", self.gelu, GELUS)
        _choice("a_param", self.a_param, A_PARAMS)
        _boolean("clip_eigs", self.clip_eigs)
        rescale = self.step_rescale
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0 < rescale < math.inf:
            raise ValueError(f"step_rescale={rescale!r} is not valid; expected a number > 0")
        self.step_rescale = float(rescale)
        # gelu is a detail of the output stage, like c_init or blocks: unused (not refused) by the
        # silu and h3 gates, so an s5 preset moved to gate=silu keeps validating.
        moved = [f"{k}={getattr(self, k)!r}" for k in ("a_param", "clip_eigs", "step_rescale")
                 if getattr(self, k) != LATER_FIELDS[k]]
        if moved and self.uses_heads:
            raise ValueError(f"{', '.join(moved)} is not valid with {self._frontier_summary()}: models.heads keeps "
                             "its own A and Δ; expected a_param='log', clip_eigs=False, step_rescale=1.0")
        if self.step_rescale != 1.0 and "dt" in self.selective:
            raise ValueError(f"step_rescale={self.step_rescale!r} is not valid with selective={list(self.selective)}: "
                             "it rescales the learned step exp(log_dt) of a time-invariant Δ; expected step_rescale=1.0 "
                             "or selective without 'dt'")

    def _check_block_layout(self) -> None:
        """project_from, gate_norm, skip_per (the Mamba-2 block's layout): values and conflicts, one line each."""
        _choice("project_from", self.project_from, PROJECT_FROM)
        _choice("skip_per", self.skip_per, SKIP_PER)
        _boolean("gate_norm", self.gate_norm)
        if self.gate_norm and self.gate != "silu":
            raise ValueError(f"gate_norm=True is not valid with gate={self.gate!r}: it normalises y ⊙ SiLU(z) (Mamba-2's "
                             "gated RMSNorm); expected gate='silu' or gate_norm=False")
        if self.skip_per == "head" and self.headdim is None:
            raise ValueError("skip_per='head' is not valid with headdim=None (one head per channel); expected headdim "
                             "set or skip_per='channel'")
        if self.project_from != "u":
            return
        if not (self.selective or self.a_source == "data" or self.rotation == "data"
                or (self.discretization == "trapezoidal" and self.trapezoid == "data")):
            raise ValueError(f"project_from='u' is not valid with selective={list(self.selective)}: nothing is "
                             "projected; expected selective with some of ['dt', 'B', 'C'] or project_from='x'")
        if self.dt_rank is not None:
            raise ValueError(f"dt_rank={self.dt_rank!r} is not valid with project_from='u': Δ is projected from u one "
                             "per head at full rank (Mamba-2/3); expected dt_rank=None or project_from='x'")

    def _frontier_summary(self) -> str:
        moved = [f"{k}={getattr(self, k)!r}" for k in (*HEAD_AXES, "discretization", "eig_range")
                 if getattr(self, k) != LATER_FIELDS.get(k, getattr(self, k)) or
                 (k == "discretization" and self.discretization == "trapezoidal")]
        return ", ".join(moved) or "these axes"

    # ----- derived sizes -------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        """D: channels the SSM runs on."""
        return self.expand * self.d_model if self.expand > 0 else self.d_model

    @property
    def n_groups(self) -> int:
        """G: number of independent SSMs."""
        if self.groups is not None:
            return self.groups
        return self.d_inner if self.structure == "siso" else 1

    @property
    def channels_per_group(self) -> int:
        """c = D // G."""
        return self.d_inner // self.n_groups

    @property
    def n_modes(self) -> int:
        """n: stored modes per SSM."""
        return self.d_state // 2 if (self.complex and self.conj_sym) else self.d_state

    @property
    def time_invariant(self) -> bool:
        return not self.selective

    @property
    def uses_heads(self) -> bool:
        """Whether a Mamba-2/3 axis is off its default (the layer then runs models.heads)."""
        return any(getattr(self, k) != LATER_FIELDS[k] for k in HEAD_AXES)

    @property
    def rotated_pairs(self) -> int:
        """Pairs of state dimensions that rotate (Mamba-3: rope_fraction of the d_state / 2 pairs)."""
        return int(self.d_state * self.rope_fraction) // 2 if self.rotation != "none" else 0

    @property
    def n_heads(self) -> int:
        """Heads (one A and one Δ each): D // headdim, or one per channel without headdim."""
        return self.d_inner // (self.headdim or 1)

    @property
    def supports_fft(self) -> bool:
        """A convolution needs a fixed transition Ā: Δ, A and the rotation angle must not
        depend on the input."""
        return "dt" not in self.selective and self.a_source == "learned" and self.rotation != "data"

    @property
    def auto_picks_fft(self) -> bool:
        """Whether ``auto`` runs this layer in mode fft (a time-invariant SISO layer) where no
        fused kernel takes it: always on a CPU (:meth:`models.layer.SSMLayer.resolve_mode`)."""
        return self.time_invariant and self.supports_fft and self.structure == "siso"

    @property
    def chunked_is_dual(self) -> bool:
        """Whether mode chunked runs this layer in the chunked dual form (:mod:`models.ssd`,
        Mamba-2's SSD): a head layer whose decay is one real α_t = exp(Δ_t A_t) per head (A per
        head or from the data, eigenvalues in [0, 1] or [-1, 1]; no complex state, no rotation as a
        complex transition) with input-dependent B_t and C_t, at any MIMO rank."""
        return (self.uses_heads and (bool(self.headdim) or self.a_source == "data") and not self.complex
                and not (self.rotation != "none" and self.rotation_form == "complex")
                and self.discretization in ("zoh", "zoh_euler", "trapezoidal")
                and "B" in self.selective and "C" in self.selective)

    @property
    def supports_triton(self) -> bool:
        """The fused Triton kernels cover the Mamba-1 axes (any structure, gate, init)."""
        return not self.uses_heads and self.discretization != "trapezoidal" and self.eig_range == (0, 1)

    def identity(self) -> dict[str, Any]:
        """The fields that name this point in a run id: every field, except those added after
        the first recorded results while they are at their defaults."""
        out = self.as_dict()
        for name, default in LATER_FIELDS.items():
            if getattr(self, name) == default:
                out.pop(name)
        if "eig_range" in out:
            out["eig_range"] = list(self.eig_range)
        return out

    @property
    def supports_cuda_kernel(self) -> bool:
        """mamba-ssm's selective_scan_fn covers exactly the real SISO Mamba point."""
        return (
            self.structure == "siso"
            and self.selective == SELECTIVE_PARAMS
            and not self.complex
            and self.discretization == "zoh_euler"
            and not self.bidirectional
            and self.supports_triton
        )

    @property
    def resolved_dt_rank(self) -> int:
        """Rank of the Δ projection; ``ceil(d_model / 16)`` as in Mamba unless given."""
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

    def with_(self, **changes: Any) -> "SSMConfig":
        """A validated copy with some fields changed."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["selective"] = list(self.selective)
        out["eig_range"] = list(self.eig_range)
        return out


@dataclass
class ModelConfig:
    """A backbone: encoder -> ``n_layers`` blocks (pre-norm, SSM layer, dropout, residual,
    optional feed-forward network) -> final norm -> head.

    The feed-forward network's hidden width is ``ffn_width`` when set, else ``ffn_expand · H``
    (0: no network). ``ffn_width`` moves in steps of one unit, so a MIMO model can be
    parameter-matched by shrinking its MLP, as Mamba-3 does (e.g. 1500 -> 1264 at 180M).
    """

    ssm: SSMConfig = field(default_factory=SSMConfig)
    n_layers: int = 2
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    ffn_expand: int = 0
    ffn_width: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ssm, dict):
            self.ssm = SSMConfig(**self.ssm)
        _positive_int("n_layers", self.n_layers)
        _choice("norm", self.norm, NORMS)
        _boolean("prenorm", self.prenorm)
        _positive_int("ffn_expand", self.ffn_expand, allow_zero=True)
        if self.ffn_width is not None:
            _positive_int("ffn_width", self.ffn_width)
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout={self.dropout!r} is not valid; expected 0 <= dropout < 1")

    @property
    def d_model(self) -> int:
        return self.ssm.d_model

    @property
    def ffn_hidden(self) -> int:
        """Hidden width of each block's feed-forward network (0: none)."""
        return self.ffn_width if self.ffn_width is not None else self.ffn_expand * self.d_model

    def identity(self) -> dict[str, Any]:
        """The fields that name this model in a run id (see :meth:`SSMConfig.identity`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ssm"}
        if self.ffn_width is None:
            out.pop("ffn_width")
        return {**out, "ssm": self.ssm.identity()}


@dataclass
class IOSpec:
    """What a task feeds the model and expects back.

    Exactly one of ``vocab_size`` (token ids ``(B, L)``) and ``d_input`` (features
    ``(B, L, d_input)``) is set. ``d_output`` is the number of classes or outputs; ``None``
    returns the backbone features (width H) without a head. ``readout`` picks which
    positions the head sees: the ``last`` one, the ``mean`` over positions, or ``all``.
    """

    d_input: int | None = None
    vocab_size: int | None = None
    d_output: int | None = None
    readout: str = "all"

    def __post_init__(self) -> None:
        if (self.d_input is None) == (self.vocab_size is None):
            raise ValueError(
                f"IOSpec needs exactly one of d_input={self.d_input!r} and vocab_size={self.vocab_size!r}"
            )
        if self.d_input is not None:
            _positive_int("d_input", self.d_input)
        if self.vocab_size is not None:
            _positive_int("vocab_size", self.vocab_size)
        if self.d_output is not None:
            _positive_int("d_output", self.d_output)
        _choice("readout", self.readout, READOUTS)
