"""HeadSSM: the selective SSM of Mamba-2 and Mamba-3, one axis at a time.

x: (B, L, D) -> y: (B, L, D), for D = E·P channels in E heads of P = ``headdim`` channels
(without headdim, one head per channel: Mamba-1), N = ``d_state``, R = ``mimo_rank``.
Everything below is per head unless said otherwise; "[Mamba-2 (k)]" cites Dao & Gu 2024
eq. k, "[M3 §k]" the Mamba-3 paper (arXiv 2603.15569), "[mamba3.py]" mamba-ssm 2.3.2's
``modules/mamba3.py`` and its reference recurrences in ``tests/ops``.

1. One projection of x_t (``x_proj``) to: δ_t (``dt_rank``) -> Δ_t = softplus(W_Δ δ_t + b_Δ);
   B_t, C_t ∈ R^{g×R×N} (C^{g×R×n} for a complex state) shared by the heads of each of the
   g = ``ngroups`` groups [Mamba-2 §7]; with ``a_source='data'`` A_t = -max(softplus(W_A x_t),
   a_floor) [M3 §3, mamba3.py]; with a data-dependent trapezoid λ_t = σ(W_λ x_t) [M3 (6)];
   with ``rotation='data'`` θ_t = π·tanh(W_θ x_t) ∈ (-π, π), one angle per rotated pair,
   shared by the heads [mamba3.py]. Learned A = -exp(A_log): one scalar per head with
   headdim (Mamba-2), one per (channel, state) without (Mamba-1). Fixed Δ: exp(log_dt) per head.
   With ``project_from='u'`` (Mamba-2/3's layout) ``x_proj`` projects the block input u_t
   instead, Δ_t = softplus(w_Δ·u_t + dt_bias) one per head at full rank (no low-rank W_Δ),
   and with a short conv (k = ``conv``) B_t, C_t <- SiLU(causal depthwise conv_k(B_t, C_t))
   (``bc_conv``; with the layer's conv over x this is Mamba-2's one conv over x, B and C).
2. ``bc_norm``: B_t, C_t <- RMSNorm over their N entries (learned weight); ``bc_bias``:
   + a learned bias per (head, rank), initialised to 1 [mamba3.py].
3. Rotation ("RoPE trick", [M3 §3.2]): the angle accumulates per head and rotated pair j,
   Φ_t = Φ_{t-1} + ω_t with ω_t = Δ_t θ_t (``data``) or ω_j = 10000^{-j/M} for the M rotated
   pairs (``fixed``: standard RoPE frequencies, neither data-dependent nor learned, Mamba-3
   Table 5b's "standard RoPE"). Pairs are (0, 1), (2, 3), ...; the first
   M = ``rotated_pairs`` = ``rope_fraction``·N/2 rotate, the rest do not. Two equal forms:

   * ``rotation_form='rotate_bc'``: a real state with the real transition α_t, read and
     written through rotated vectors B̃_t = R(Φ_t) B_t, C̃_t = R(Φ_t) C_t.
   * ``rotation_form='complex'``: pair j as one complex mode h_j with transition
     α_t e^{iω_t,j}, input conj(b_2j + i b_2j+1), read Re((c_2j + i c_2j+1) h_j).

   They agree because b_sᵀ R(Φ_s)ᵀ R(Φ_t) c_t = Re(conj(b̂_s) ĉ_t e^{i(Φ_t - Φ_s)}), which needs
   one decay per pair: a rotation takes A one per head (headdim) or from the data.
4. Lift (R > 1, [M3 §3.3]): x^(r) = mimo_x[r] ⊙ x (init 1/R); the state of a channel d
   receives v_t[d] = Σ_r x^(r)_t[d] B̃_t[r] ∈ R^N (R times the FLOPs of SISO, same state).
5. Discretisation (:mod:`models.discretize`): α_t = exp(Δ_t A_t) (or bilinear), mapped to
   2α_t - 1 with ``eig_range=[-1, 1]``; b_t = F_t v_t, or with ``trapezoidal``
   b_t = γ_t v_t + β_t v_{t-1}.
6. h_t = α_t h_{t-1} + b_t per channel, (B, L, D, N), by the layer's compute mode; mode
   ``chunked``, where ``cfg.chunked_is_dual`` (one real α_t per head, B_t and C_t selective, any
   rank), computes y in Mamba-2's chunked dual form instead (:mod:`models.ssd`, :meth:`HeadSSM.dual`):
   the drive terms as (X, B) pairs, the trapezoidal rule's β_t v_{t-1} as a second pair of the
   previous step's x and B_t, a negative 2α_t - 1 as log|2α_t - 1| and a sign flip, and no state
   formed but those the chunks hand on.
7. y^(r)_t[d] = s·Re(C̃_t[r] · h_t[d]) + D[d] x^(r)_t[d] (s = 2 for a conjugate-symmetric
   complex state, else 1; ``skip_per='head'``: D[d] = D_e, one per head e of channel d). R > 1: y^(r) ⊙ SiLU(mimo_z[r] ⊙ z) inside (init 1) when the gate
   is ``silu``, then y = Σ_r mimo_o[r] ⊙ y^(r) (init 1/R) [mamba3.py]; any other gate acts
   on the sum. R = 1 has no lift vectors: it is the SISO point.

Choices that differ from the reference blocks at the defaults, which compose with Mamba-1's
axes: Δ, A_t, λ_t, θ_t, B_t, C_t are projections of the SSM input x_t (``project_from='x'``:
after the short conv, through Mamba-1's low-rank Δ projection), where Mamba-2/3 project them
from the block input u_t (Mamba-2 also convolves B and C); D is per channel
(``skip_per='channel'``), not per head; the layer's gate is y ⊙ SiLU(z) without Mamba-2's
RMSNorm (``gate_norm=False``). ``project_from='u'``, ``skip_per='head'`` and ``gate_norm``
give the reference layouts: the mamba2 preset computes mamba-ssm's ``Mamba2`` block and the
mamba3 presets its ``Mamba3`` (tests/test_mamba_parity.py, tests/test_frontier.py). A per
head is initialised from U[1, 16] for the real inits (Mamba-2's A_init_range) and from the
mean real part of the named init otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import init as ssm_init
from .block_parts import causal_conv, last_window
from .config import SSMConfig
from .discretize import discretize, log_transition, signed_transition, trapezoid_drive, trapezoid_weights
from .scan import linear_scan, state_convolution, widened
from .ssd import chunked_dual

DUAL_CHUNK = 64  # chunk_size of the dual form where the config sets none (Mamba-2/3's presets: 64)


def dual_chunk(cfg: SSMConfig) -> int:
    """T, the steps in a chunk of the dual form: the config's ``chunk_size`` (else
    :data:`DUAL_CHUNK`) at rank 1; at rank R > 1, chunk_size // (2R), at least 1, so that
    a chunk's (T·R x T·J) scores keep chunk_size / 2 rows (Mamba-3 recommends 64/R for its MIMO
    kernel on a GPU; on a CPU half of that measured fastest).

    Measured at rank R > 1 (Mamba-3, d_model 32, layer forward+backward on one thread, medians of
    15, T in {64, 32, 16, 8}): at batch 32, L 64, d_state 16, rank 2 ran 21.8, 19.4, 17.8, 17.2 ms
    (the recurrence 27.3), rank 4 54.7, 45.8, 38.3, 29.6 ms (the recurrence 29.8); at batch 16,
    L 256, d_state 64, rank 2 75.1, 80.8, 61.3, 73.5 ms (200), rank 4 247, 182, 149, 142 ms (269).
    Rank 1 keeps T = chunk_size (32 measured 10% faster than 64 there, but the committed rank-1
    runs used 64, and a float32 training run's trajectory depends on its rounding).
    """
    chunk = cfg.chunk_size or DUAL_CHUNK
    return chunk if cfg.mimo_rank == 1 else max(1, chunk // (2 * cfg.mimo_rank))


@dataclass
class Coefficients:
    """The recurrence's pieces before its terms are formed: Δ (B|1, L|1, E, 1); A, Ā, F (B|1,
    L|1, E|D, 1|n); λ (B, L, E, 1), a float, or None (not trapezoidal); lifted x (B, L, R, D);
    B̃_t (B, L, U, R, n) or None (B ≡ 1); read: C̃_t (B, L, U, R, n) or the fixed C (D, n);
    phi_last (B, 1, E, M) or None."""

    delta: torch.Tensor
    A: torch.Tensor
    A_bar: torch.Tensor
    factor: torch.Tensor
    lam: torch.Tensor | float | None
    lifted: torch.Tensor
    B_t: torch.Tensor | None
    read: torch.Tensor
    phi_last: torch.Tensor | None


@dataclass
class Terms:
    """One stretch of the recurrence: a (B|1, L|1, D, n), b (B, L, D, n); read: C̃_t
    (B, L, U, R, n) for U units (groups or heads) or the fixed C (D, n); lifted x (B, L, R, D);
    v_last (B, 1, D, n) and phi_last (B, 1, E, M) to carry into the next step; log_a (D, n)
    where the transition is time-invariant."""

    a: torch.Tensor
    b: torch.Tensor
    read: torch.Tensor
    lifted: torch.Tensor
    v_last: torch.Tensor | None
    phi_last: torch.Tensor | None
    log_a: torch.Tensor | None


def rotate_pairs(v: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (0, 1), (2, 3), ... of the last dim of v (N) by the angles phi (M <= N/2
    of them, broadcast against v's leading dims); pairs from M on are left as they are."""
    M = phi.shape[-1]
    pairs = v.unflatten(-1, (-1, 2))
    first, second = pairs[..., :M, 0], pairs[..., :M, 1]
    cos, sin = torch.cos(phi), torch.sin(phi)
    rotated = torch.stack([first * cos - second * sin, first * sin + second * cos], dim=-1)
    rotated, rest = torch.broadcast_tensors(rotated, pairs[..., :M, :])[0], pairs[..., M:, :]
    rest = rest.expand(*rotated.shape[:-2], *rest.shape[-2:])
    return torch.cat([rotated, rest], dim=-2).flatten(-2)


def complex_pairs(v: torch.Tensor) -> torch.Tensor:
    """(..., N) real -> (..., N/2) complex, pair j as v_2j + i v_2j+1 (a new tensor: a view
    of a slice can start at an odd offset, which a complex view cannot)."""
    pairs = v.unflatten(-1, (-1, 2))
    return torch.complex(pairs[..., 0], pairs[..., 1])


def rms_norm(v: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * weight


class HeadSSM(nn.Module):
    """The SSM of a layer with any Mamba-2/3 axis moved (see the module docstring)."""

    def __init__(self, cfg: SSMConfig):
        super().__init__()
        self.cfg = cfg
        D, E, g, R, N = cfg.d_inner, cfg.n_heads, cfg.ngroups, cfg.mimo_rank, cfg.d_state
        self.complex_form = cfg.rotation != "none" and cfg.rotation_form == "complex"
        self.n = N // 2 if self.complex_form else cfg.n_modes  # modes of the state
        self.scale = 2.0 if (cfg.complex and cfg.conj_sym) else 1.0
        parts = 2 if cfg.complex else 1
        self.M = cfg.rotated_pairs
        sel = cfg.selective
        from_u = cfg.project_from == "u"  # Mamba-2/3: from u, Δ one per head at full rank
        self.dt_rank = (E if from_u else cfg.resolved_dt_rank) if "dt" in sel else 0
        bc = g * R * cfg.n_modes * parts
        self.widths = {"dt": self.dt_rank, "B": bc if "B" in sel else 0, "C": bc if "C" in sel else 0,
                       "A": E if cfg.a_source == "data" else 0,
                       "lambda": E if (cfg.discretization == "trapezoidal" and cfg.trapezoid == "data") else 0,
                       "theta": self.M if cfg.rotation == "data" else 0}
        width = sum(self.widths.values())
        self.x_proj = nn.Linear(cfg.d_model if from_u else D, width, bias=False) if width else None
        self.dt_proj = nn.Linear(self.dt_rank, E, bias=True) if "dt" in sel and not from_u else None
        self.dt_bias = nn.Parameter(torch.empty(E)) if "dt" in sel and from_u else None
        bc_width = self.widths["B"] + self.widths["C"]
        self.bc_conv = nn.Conv1d(bc_width, bc_width, cfg.conv, groups=bc_width, padding=cfg.conv - 1) \
            if from_u and cfg.conv and bc_width else None
        self.log_dt = None if "dt" in sel else nn.Parameter(torch.empty(E, 1))
        a_rows, a_cols = (E, 1) if cfg.headdim else (D, cfg.n_modes)
        self.A_log = nn.Parameter(torch.empty(a_rows, a_cols)) if cfg.a_source == "learned" else None
        self.A_imag = nn.Parameter(torch.empty(E, cfg.n_modes)) if cfg.complex else None
        tail = (2,) if cfg.complex else ()
        self.C = None if "C" in sel else nn.Parameter(torch.empty(D, cfg.n_modes, *tail))
        self.B_norm = nn.Parameter(torch.empty(cfg.n_modes * parts)) if cfg.bc_norm and "B" in sel else None
        self.C_norm = nn.Parameter(torch.empty(cfg.n_modes * parts)) if cfg.bc_norm and "C" in sel else None
        self.B_bias = nn.Parameter(torch.empty(E, R, cfg.n_modes * parts)) if cfg.bc_bias and "B" in sel else None
        self.C_bias = nn.Parameter(torch.empty(E, R, cfg.n_modes * parts)) if cfg.bc_bias and "C" in sel else None
        self.mimo_x = nn.Parameter(torch.empty(R, D)) if R > 1 else None
        self.mimo_z = nn.Parameter(torch.empty(R, D)) if R > 1 and cfg.gate == "silu" else None
        self.mimo_o = nn.Parameter(torch.empty(R, D)) if R > 1 else None
        self.D = nn.Parameter(torch.empty(E if cfg.skip_per == "head" else D))
        self.reset_parameters()

    # ------------------------------------------------------------------ initialisation
    def reset_parameters(self) -> None:
        if self.D.is_meta:
            return
        cfg = self.cfg
        E, n = cfg.n_heads, cfg.n_modes
        with torch.no_grad():
            Lambda = torch.stack([ssm_init.eigenvalues(cfg.init, n, cfg.d_state, cfg.complex)
                                  for _ in range(E if cfg.headdim else cfg.d_inner)])
            if self.A_log is not None:
                if not cfg.headdim:
                    self.A_log.copy_(torch.log(-Lambda.real))
                elif cfg.init in ("s4d_real", "random"):
                    self.A_log.copy_(torch.log(torch.empty(E, 1, dtype=torch.float64).uniform_(1, 16)))
                else:
                    self.A_log.copy_(torch.log(-Lambda.real.mean(-1, keepdim=True)))
            if self.A_imag is not None:
                self.A_imag.copy_(Lambda.imag[:E])
            if self.log_dt is not None:
                self.log_dt.copy_(torch.log(ssm_init.log_uniform((E, 1), cfg.dt_min, cfg.dt_max)))
            if self.dt_proj is not None:
                std = self.dt_rank ** -0.5
                nn.init.uniform_(self.dt_proj.weight, -std, std)
                self.dt_proj.bias.copy_(ssm_init.dt_bias(E, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
            if self.dt_bias is not None:  # Mamba-2's dt_bias: the same law
                self.dt_bias.copy_(ssm_init.dt_bias(E, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
            if self.C is not None:
                self.C.normal_(0, 1 / math.sqrt(2) if cfg.complex else 1)
            for weight in (self.B_norm, self.C_norm, self.B_bias, self.C_bias, self.mimo_z):
                if weight is not None:
                    weight.fill_(1.0)
            for weight in (self.mimo_x, self.mimo_o):
                if weight is not None:
                    weight.fill_(1.0 / cfg.mimo_rank)
            {"normal": nn.init.normal_, "ones": nn.init.ones_, "zeros": nn.init.zeros_}[cfg.skip_init](self.D)

    def dynamics_parameters(self) -> list[str]:
        """A, Δ, the fixed C and D (own learning rate, no weight decay)."""
        names = ["A_log", "A_imag", "log_dt", "C", "D", "dt_proj.weight", "dt_proj.bias", "dt_bias"]
        own = dict(self.named_parameters())
        return [name for name in names if name in own]

    def state_dtype(self) -> torch.dtype:
        dtype = self.D.dtype
        if not (self.cfg.complex or self.complex_form):
            return dtype
        return torch.complex128 if dtype == torch.float64 else torch.complex64

    # ------------------------------------------------------------------ the pieces
    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        """(..., E, k) per head -> (..., D, k) per channel (each head's P channels)."""
        P = self.cfg.headdim or 1
        return t.repeat_interleave(P, dim=-2) if P > 1 and t.shape[-2] == self.cfg.n_heads else t

    def _skip(self) -> torch.Tensor:
        """D per channel (D,), also with ``skip_per='head'`` (each head's D over its channels)."""
        return self.D if self.D.shape[0] == self.cfg.d_inner else self.D.repeat_interleave(self.cfg.headdim)

    def project(self, x: torch.Tensor, u: torch.Tensor | None = None, window: torch.Tensor | None = None,
                keep: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The data-dependent parts (``widths``: Δ, B, C, A, λ, θ) from x (B, L, D), or from u
        (B, L, H) with ``project_from='u'``, B and C then through ``bc_conv`` (``window``: its
        last inputs, step()). Returns (parts, the new window). With ``keep`` (prefill), the last k
        inputs of ``bc_conv`` are written into it as ``bc_conv`` (B, widths, k), oldest first."""
        if self.x_proj is None:
            return {}, None
        from_u = self.cfg.project_from == "u"
        if from_u and u is None:
            raise ValueError("project_from='u' needs the block input u; expected HeadSSM called with u")
        parts = dict(zip(self.widths, torch.split(self.x_proj(u if from_u else x), list(self.widths.values()), dim=-1)))
        if self.bc_conv is not None:
            names = [k for k in ("B", "C") if self.widths[k]]
            bc_in = torch.cat([parts[k] for k in names], dim=-1)
            if keep is not None:
                keep["bc_conv"] = last_window(bc_in, self.cfg.conv)
            bc, window = causal_conv(self.bc_conv, bc_in, window)
            parts.update(zip(names, torch.split(bc, [self.widths[k] for k in names], dim=-1)))
        return parts, window

    def _vectors(self, part: torch.Tensor, norm, bias, phi) -> torch.Tensor:
        """A selective B or C: (B, L, g·R·n·parts) -> (B, L, U, R, n) for U = g groups, or E
        heads once a per-head bias or rotation applies; complex for a complex state."""
        cfg = self.cfg
        batch, L, _ = part.shape
        v = part.view(batch, L, cfg.ngroups, cfg.mimo_rank, -1)
        if norm is not None:
            v = rms_norm(v, norm)
        if bias is not None or phi is not None:
            v = v.repeat_interleave(cfg.n_heads // cfg.ngroups, dim=2)
        if bias is not None:
            v = v + bias
        if cfg.complex:
            return complex_pairs(v)
        if phi is None:
            return v
        if self.complex_form:
            return complex_pairs(v)
        return rotate_pairs(v, phi.unsqueeze(-2))

    def rope_frequencies(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed rotation's frequencies 10000^(-j/M), j < M, (M,) in x's dtype (computed
        in it, not rounded from another)."""
        j = torch.arange(self.M, dtype=x.dtype, device=x.device)
        return 10000.0 ** (-j / max(self.M, 1))

    def _transition(self, parts: dict, delta: torch.Tensor, omega: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, Ā, F) per head: (B|1, L|1, E|D, 1|n)."""
        cfg = self.cfg
        if self.A_log is not None:
            A = -torch.exp(self.A_log)
            A = A.view(1, 1, *A.shape)
        else:
            A = -F.softplus(parts["A"]).clamp_min(cfg.a_floor).unsqueeze(-1)
        if self.A_imag is not None:
            A = torch.complex(*torch.broadcast_tensors(A, self.A_imag.view(1, 1, *self.A_imag.shape)))
        A_bar, factor = discretize(cfg.discretization, A, delta)
        # eig_range [-1, 1] of a complex Ā (A complex, or the rotation as its angle): the angle from log Ā
        signed_complex = cfg.eig_range == (-1, 1) and (A_bar.is_complex() or self.complex_form)
        log_a = log_transition(cfg.discretization, A, delta, A_bar) if signed_complex else None
        if self.complex_form:  # the rotation as the transition's angle (pairs past M: angle 0)
            angle = F.pad(omega, (0, self.n - self.M))
            A_bar = A_bar * torch.polar(torch.ones_like(angle), angle)
            log_a = None if log_a is None else log_a + 1j * angle
        if cfg.eig_range == (-1, 1):
            A_bar = signed_transition(A_bar, log_a)
        return A, A_bar, factor

    def coefficients(self, x: torch.Tensor, phi_before: torch.Tensor | None = None,
                     parts: dict[str, torch.Tensor] | None = None) -> Coefficients:
        """The pieces of the recurrence for x (B, L, D), per head; ``phi_before``: the angle Φ of
        the token before (step()), else zero; ``parts``: the projections (:meth:`project`),
        computed from x when not given."""
        cfg = self.cfg
        L = x.shape[1]
        E = cfg.n_heads
        if parts is None:
            parts, _ = self.project(x)
        if self.dt_proj is not None:
            delta = F.softplus(self.dt_proj(parts["dt"])).unsqueeze(-1)  # (B, L, E, 1)
        elif self.dt_bias is not None:
            delta = F.softplus(parts["dt"] + self.dt_bias).unsqueeze(-1)
        else:
            delta = torch.exp(self.log_dt).view(1, 1, E, 1)
        omega = phi = None
        if cfg.rotation != "none":
            if cfg.rotation == "data":
                omega = delta * (math.pi * torch.tanh(parts["theta"])).unsqueeze(-2)  # (B, L, E, M)
            else:
                omega = self.rope_frequencies(x).view(1, 1, 1, -1).expand(1, L, E, -1)
            phi = torch.cumsum(omega, dim=1)
            if phi_before is not None:
                phi = phi + phi_before
        A, A_bar, factor = self._transition(parts, delta, omega[:, :1] if cfg.rotation == "fixed" else omega)
        lifted = x.unsqueeze(2) if self.mimo_x is None else self.mimo_x * x.unsqueeze(2)  # (B, L, R, D)
        B_t = None
        if "B" in cfg.selective:
            B_t = self._vectors(parts["B"], self.B_norm, self.B_bias, phi)
            if self.complex_form:
                B_t = B_t.conj()
        lam = None
        if cfg.discretization == "trapezoidal":
            lam = torch.sigmoid(parts["lambda"]).unsqueeze(-1) if self.widths["lambda"] else cfg.trapezoid
        if "C" in cfg.selective:
            read = self._vectors(parts["C"], self.C_norm, self.C_bias, phi)
        else:
            read = torch.view_as_complex(self.C) if cfg.complex else self.C
        return Coefficients(delta=delta, A=A, A_bar=A_bar, factor=factor, lam=lam, lifted=lifted, B_t=B_t,
                            read=read, phi_last=None if phi is None else phi[:, -1:])

    def terms(self, x: torch.Tensor, phi_before: torch.Tensor | None = None,
              v_before: torch.Tensor | None = None, parts: dict[str, torch.Tensor] | None = None) -> Terms:
        """The recurrence's coefficients for x (B, L, D) (:meth:`coefficients`'s arguments);
        ``v_before``: the input term v of the token before (step()), else zero."""
        cfg = self.cfg
        batch, L, D = x.shape
        R = cfg.mimo_rank
        c = self.coefficients(x, phi_before, parts)
        state_dtype = self.state_dtype()
        if c.B_t is not None:
            units = c.B_t.shape[2]
            v = torch.einsum("blruc,blurn->blucn", c.lifted.to(c.B_t.dtype).view(batch, L, R, units, D // units), c.B_t)
            v = v.reshape(batch, L, D, -1).to(state_dtype)
        else:
            v = x.unsqueeze(-1).to(state_dtype)  # B ≡ 1
        a = self._per_channel(c.A_bar)
        if cfg.discretization == "trapezoidal":
            lam = self._per_channel(c.lam) if isinstance(c.lam, torch.Tensor) else c.lam
            b = trapezoid_drive(v, a, self._per_channel(c.delta), lam, before=v_before)
        else:
            b = self._per_channel(c.factor) * v
        a = a.expand(*a.shape[:2], D, self.n)
        b = b.expand(*b.shape[:3], self.n)
        log_a = None
        if a.shape[1] == 1 and a.shape[0] == 1:
            # in float64 for mode fft: models.scan.powers multiplies its angle by the lag
            log_a = log_transition(cfg.discretization, c.A, c.delta, widened(a[0, 0]), signed=True)
        return Terms(a=a, b=b, read=c.read, lifted=c.lifted, v_last=v[:, -1:].expand(*b[:, -1:].shape),
                     phi_last=c.phi_last, log_a=log_a)

    def dual(self, x: torch.Tensor, parts: dict[str, torch.Tensor], z: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """forward in the chunked dual form (:mod:`models.ssd`; where ``cfg.chunked_is_dual``): the
        same y, from x (B, L, D) and its projections, with no (B, L, D, N) states."""
        cfg = self.cfg
        batch, L, D = x.shape
        E, R, P = cfg.n_heads, cfg.mimo_rank, D // cfg.n_heads
        c = self.coefficients(x, parts=parts)
        # B̃_t, C̃_t per unit (a group, or a head) -> per head: (B, L, R, E, N)
        B_t, C_t = (t.repeat_interleave(E // t.shape[2], dim=2).transpose(2, 3) for t in (c.B_t, c.read))
        X = c.lifted.reshape(batch, L, R, E, P)
        flips = None
        if cfg.eig_range == (-1, 1):  # α_t = 2 exp(Δ_t A_t) - 1: ℓ_t = log|α_t| and its sign
            a = c.A_bar[..., 0]
            log_a = a.abs().clamp_min(torch.finfo(a.dtype).tiny).log()
            flips = (a < 0).to(a.dtype)
        else:
            log_a = (c.delta * c.A)[..., 0]  # ℓ_t = log α_t = Δ_t A_t, (B|1, L|1, E)
        if cfg.discretization == "trapezoidal":  # b_t = γ_t v_t + β_t v_{t-1}, γ = λΔ, β = (1 - λ)Δα
            gamma, beta = trapezoid_weights(c.A_bar, c.delta, c.lam)
            X_before = F.pad(X[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))
            B_before = F.pad(B_t[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))
            X = torch.cat([gamma.unsqueeze(2) * X, beta.unsqueeze(2) * X_before], 2)
            B_t = torch.cat([B_t, B_before], 2)
        else:
            X = c.factor.unsqueeze(2) * X
        dtype = self.state_dtype()
        y = chunked_dual(log_a.to(dtype), X.to(dtype), B_t.to(dtype), C_t.to(dtype), dual_chunk(cfg),
                         None if flips is None else flips.to(dtype))
        return self.finish(y.reshape(batch, L, R, D), c.lifted, z)

    def readout(self, h: torch.Tensor, terms: Terms, z: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """y (B, L, D) from h (B, L, D, n); True when the SiLU gate was applied (rank > 1)."""
        batch, L, D, _ = h.shape
        read = terms.read
        if read.dim() == 2:  # the fixed C, per channel: (D, n)
            y = (h * read).sum(-1).unsqueeze(2)
        else:
            units = read.shape[2]
            y = torch.einsum("blucn,blurn->blruc", h.view(batch, L, units, D // units, -1), read.to(h.dtype))
            y = y.reshape(batch, L, -1, D)
        return self.finish(y, terms.lifted, z)

    def finish(self, y: torch.Tensor, lifted: torch.Tensor, z: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """From the read states C̃_t · h_t (B, L, R|1, D): the scale, the skip D x^(r), and with rank
        R > 1 the per-rank gate and the sum over ranks; True when the SiLU gate was applied."""
        y = (y.real if y.is_complex() else y) * self.scale + self._skip() * lifted  # (B, L, R, D)
        if self.mimo_o is None:
            return y[:, :, 0], False
        gated = z is not None and self.mimo_z is not None
        if gated:
            y = y * F.silu(self.mimo_z * z.unsqueeze(2))
        return (self.mimo_o * y).sum(2), gated

    # ------------------------------------------------------------------ forward and step
    def forward(self, x: torch.Tensor, mode: str, z: torch.Tensor | None = None, u: torch.Tensor | None = None,
                keep: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, bool]:
        """x: (B, L, D) -> (y (B, L, D), whether the SiLU gate with z was applied); u (B, L, H):
        the block input (``project_from='u'``). With ``keep`` (a dict, prefill) the state
        :meth:`step` would hold after the last position is written into it (:meth:`init_state`'s
        keys but the layer's conv)."""
        parts = self.project(x, u, keep=keep)[0]
        if mode == "chunked" and self.cfg.chunked_is_dual and keep is None:
            return self.dual(x, parts, z)
        terms = self.terms(x, parts=parts)
        if mode == "fft":
            h = state_convolution(terms.log_a, terms.b)
        else:
            h = linear_scan(terms.a, terms.b, mode, self.cfg.chunk_size)
        if keep is not None:
            keep["h"] = h[:, -1]
            if self.cfg.discretization == "trapezoidal":
                keep["v"] = terms.v_last[:, 0]
            if self.cfg.rotation != "none":
                keep["phi"] = terms.phi_last
        return self.readout(h, terms, z)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        """h (batch, D, n); with trapezoidal v (the last input term); with a rotation phi
        (batch, 1, E, M), the accumulated angle; with ``bc_conv``, bc_conv (batch, B and C widths,
        k): its last k inputs, oldest first."""
        cfg, device = self.cfg, self.D.device
        state = {"h": torch.zeros(batch, cfg.d_inner, self.n, dtype=self.state_dtype(), device=device)}
        if cfg.discretization == "trapezoidal":
            state["v"] = torch.zeros_like(state["h"])
        if cfg.rotation != "none":
            state["phi"] = torch.zeros(batch, 1, cfg.n_heads, self.M, dtype=self.D.dtype, device=device)
        if self.bc_conv is not None:
            w = self.bc_conv.weight
            state["bc_conv"] = torch.zeros(batch, w.shape[0], cfg.conv, dtype=w.dtype, device=w.device)
        return state

    def step(self, x_t: torch.Tensor, z: torch.Tensor | None, state: dict[str, torch.Tensor],
             u_t: torch.Tensor | None = None) -> tuple[torch.Tensor, bool, dict[str, torch.Tensor]]:
        """x_t (B, 1, D), u_t (B, 1, H) -> (y (B, 1, D), gated, new state)."""
        v_before = state["v"].unsqueeze(1) if "v" in state else None
        parts, window = self.project(x_t, u_t, state.get("bc_conv"))
        terms = self.terms(x_t, phi_before=state.get("phi"), v_before=v_before, parts=parts)
        h = terms.a[:, 0] * state["h"] + terms.b[:, 0]
        new_state = {"h": h}
        if window is not None:
            new_state["bc_conv"] = window
        if "v" in state:
            new_state["v"] = terms.v_last[:, 0]
        if "phi" in state:
            new_state["phi"] = terms.phi_last
        y, gated = self.readout(h.unsqueeze(1), terms, z)
        return y, gated, new_state
