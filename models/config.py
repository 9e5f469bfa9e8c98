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
DISCRETIZATIONS = ("zoh", "bilinear", "zoh_euler")
C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
SKIP_INITS = ("normal", "ones", "zeros")
MODES = ("auto", "recurrent", "scan", "chunked", "fft", "cuda", "triton")
NORMS = ("layer", "batch", "rms", "none")
READOUTS = ("last", "mean", "all")
COMPLEX_INITS = ("hippo", "s4d_lin", "s4d_inv")


def _choice(name: str, value: Any, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {list(valid)}")


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name}={value!r} is not valid; expected an integer {bound}")


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

    def __post_init__(self) -> None:
        self.selective = parse_selective(self.selective)
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

        if self.mode == "fft" and not self.supports_fft:
            raise ValueError(
                f"mode='fft' is not valid with selective={list(self.selective)}: a convolution needs a "
                "time-invariant transition; expected mode in ['auto', 'recurrent', 'scan', 'chunked'] "
                "or selective without 'dt'"
            )
        if self.mode == "cuda" and not self.supports_cuda_kernel:
            raise ValueError(
                "mode='cuda' (mamba-ssm's selective_scan_fn) is only valid for the Mamba point: "
                "structure='siso', selective=['dt', 'B', 'C'], complex=False, discretization='zoh_euler', "
                "bidirectional=False; expected mode in ['auto', 'recurrent', 'scan', 'chunked'"
                + (", 'fft']" if self.supports_fft else "]")
            )

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
    def supports_fft(self) -> bool:
        """A convolution needs a fixed transition Ā: Δ must not depend on the input."""
        return "dt" not in self.selective

    @property
    def supports_cuda_kernel(self) -> bool:
        """mamba-ssm's selective_scan_fn covers exactly the real SISO Mamba point."""
        return (
            self.structure == "siso"
            and self.selective == SELECTIVE_PARAMS
            and not self.complex
            and self.discretization == "zoh_euler"
            and not self.bidirectional
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
        return out


@dataclass
class ModelConfig:
    """A backbone: encoder -> ``n_layers`` blocks (pre-norm, SSM layer, dropout, residual,
    optional feed-forward network) -> final norm -> head."""

    ssm: SSMConfig = field(default_factory=SSMConfig)
    n_layers: int = 2
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    ffn_expand: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ssm, dict):
            self.ssm = SSMConfig(**self.ssm)
        _positive_int("n_layers", self.n_layers)
        _choice("norm", self.norm, NORMS)
        _positive_int("ffn_expand", self.ffn_expand, allow_zero=True)
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout={self.dropout!r} is not valid; expected 0 <= dropout < 1")

    @property
    def d_model(self) -> int:
        return self.ssm.d_model


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
