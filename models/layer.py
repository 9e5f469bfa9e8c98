"""SSMLayer: one diagonal state-space layer whose behaviour is set by an :class:`SSMConfig`.

u: (B, L, H) -> (B, L, H). With G groups of c = D/G channels and n stored modes each:

1. Input branch. expand > 0 (Mamba): x = W_x u, z = W_z u, D = expand·H; else x = u.
   conv = k > 0: x = SiLU(causal depthwise conv_k(x))  (the last tap sees the current token).
2. Selection (Mamba §3.2; DESIGN.md "the layer, precisely"), from x_t through one
   projection x_proj to [δ (dt_rank) | B-part | C-part]:
   - Δ: selective  Δ_t = softplus(W_Δ δ_t + b_Δ), per channel (SISO) or per state (MIMO);
     else Δ = exp(log_dt), learned, per channel (SISO, as S4D) or per state (MIMO, as S5).
   - SISO: B_t, C_t ∈ R^n (C^n for complex states) shared by all channels (Mamba); a
     non-selective SISO layer has B ≡ 1 and a learned C (S4D folds B into C).
   - MIMO / grouped: learned B ∈ C^{G×n×c}, C ∈ C^{G×c×n} (S5); selection makes per-state
     gains  B_t = diag(1 + s_B(x_t)) B,  C_t = C diag(1 + s_C(x_t)), s linear in x_t and
     zero at initialisation, so a selective MIMO layer starts as S5.
3. Dynamics:  h_t = Ā_t ⊙ h_{t-1} + F_t ⊙ (B_t x_t),  (Ā, F) from :mod:`models.discretize`;
   trapezoidal: h_t = Ā_t h_{t-1} + β_t B_{t-1} x_{t-1} + γ_t B_t x_t; eig_range [-1, 1]:
   Ā_t -> 2Ā_t - 1 (both for every structure);
   y_t = s · Re(C_t h_t) + D ⊙ x_t,  s = 2 with conjugate symmetry (the dropped conjugate
   modes contribute the conjugate), else 1. Bidirectional: a second recurrence right to
   left with the same Ā, B̄ and its own C (S5): y += s·Re(C' h'_t).
4. Output: silu: y ⊙ SiLU(z) (Mamba); h3: y ⊙ q, where the SSM read k ⊙ v (H3's
   multiplicative gates, Fu et al. 2023, with the short conv standing in for its shift SSM); glu: GLU(W GELU(y)) with W: D -> 2D (S4D, S5's
   full_glu); half_glu1: g = GELU(y), g ⊙ σ(W g); half_glu2: y ⊙ σ(W GELU(y)) (S5);
   none: GELU(y). ``gate_norm`` (silu): then RMSNorm over ``ngroups`` groups of channels with a
   learned weight (Mamba-2's gated RMSNorm, :mod:`models.block_parts`). Then out_proj D -> H when D ≠ H.

With any Mamba-2/3 axis moved (heads, groups, data-dependent A, rotation, rank-R MIMO,
BCNorm, B/C biases, projections of u, D per head: ``SSMConfig.uses_heads``), steps 2-3 and
the D term are :class:`models.heads.HeadSSM`, whose docstring gives its recurrences; with
``project_from='u'`` it takes the block input u too (Mamba-2/3: Δ, B_t, C_t projected from u,
B_t and C_t through their own short conv).

Choices the papers leave open, fixed here:
- Re A is stored as ``A_log`` with Re A = -exp(A_log) (``a_param='log'``, S4D and Mamba: stable by
  construction, Adam steps are relative in |Re A|) or directly as ``A_real`` (``a_param='direct'``,
  S5's ``Lambda_re``, the s5 preset: the same function at initialisation, but additive steps, and
  Re A >= 0 is representable, as in an official checkpoint trained without clip_eigs).
  ``clip_eigs``: Re A -> min(Re A, -1e-4) in the forward (S5's ``jnp.clip(Lambda_re, None, -1e-4)``),
  a clipped entry gets no gradient and keeps its stored value. An official S5 parameter tree maps
  as A_real = Lambda_re, A_imag = Lambda_im (same shapes per group), whatever its values.
- Δ = step_rescale · exp(log_dt) for a time-invariant Δ (S5: evaluate at another sampling rate
  without retraining; :meth:`SSMLayer.set_step_rescale`).
- GELU: exact (erf) or tanh-approximated (flax's ``nn.gelu`` default, the official S5 layer), by
  ``gelu``; the block's feed-forward network (models.backbone) keeps the exact GELU.
- MIMO layers whose init is not HiPPO sample B̃ and C̃ directly (V = I), with the variance per
  entry that V^* B and C V have under HiPPO.
- Bidirectional, for every structure: S5's rule, the current input enters both directions
  (h'_t reads x_t). The s4 repository's FFT convolution instead shifts the backward kernel by
  one step (the backward direction reads x_{t+1} onwards); its minimal S4D has no backward.
- A complex selective SISO B_t / C_t takes 2n outputs of x_proj (real, imaginary parts).

Compute modes change how h is computed, never what is computed (see :mod:`models.scan`):
``recurrent``, ``scan``, ``chunked`` (for a head layer with one real decay per head, Mamba-2's
chunked dual form: :mod:`models.ssd`), ``fft`` (Δ not selective), ``cuda`` (mamba-ssm's kernel,
the real SISO Mamba point only), ``triton`` (the fused kernels of :mod:`models.triton_scan` through :mod:`models.fused`, every
point: on a GPU, or on the CPU under ``TRITON_INTERPRET=1``), ``auto``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import init as ssm_init
from .block_parts import GatedRMSNorm, causal_conv, last_window
from .config import CLIP_EIGS_BOUND, SSMConfig
from .cuda import run_selective_scan, selective_scan_kernel
from .discretize import discretize, log_transition, signed_transition, trapezoid_drive
from .heads import HeadSSM, complex_pairs
from .scan import linear_scan, powers, state_convolution, widened
from . import fused, triton_scan


@dataclass
class Selection:
    """Input-dependent pieces of one forward pass (None where not selective).

    delta: (B, L, G, 1|n) or (G, 1|n); B_t, C_t (SISO): (B, L, n); gain_B, gain_C (MIMO):
    (B, L, G, n); delta_raw: (B, L, D or G·n) before bias and softplus (for the cuda mode).
    """

    delta: torch.Tensor
    B_t: torch.Tensor | None = None
    C_t: torch.Tensor | None = None
    gain_B: torch.Tensor | None = None
    gain_C: torch.Tensor | None = None
    delta_raw: torch.Tensor | None = None


class SSMLayer(nn.Module):
    def __init__(self, cfg: SSMConfig):
        super().__init__()
        self.cfg = cfg
        H, D = cfg.d_model, cfg.d_inner
        self.siso = cfg.structure == "siso"
        self.scale = 2.0 if (cfg.complex and cfg.conj_sym) else 1.0

        # 1. input branch
        branches = {"silu": 2, "h3": 3}.get(cfg.gate, 1)  # x | x, z | q, k, v
        self.in_proj = nn.Linear(H, D * branches, bias=False) if cfg.expand else None
        self.conv1d = nn.Conv1d(D, D, cfg.conv, groups=D, padding=cfg.conv - 1) if cfg.conv else None

        # 2.-3. the SSM: Mamba-2/3 axes in models.heads, the rest here
        self.heads = HeadSSM(cfg) if cfg.uses_heads else None
        if self.heads is None:
            self._build_ssm()
        else:
            self.x_proj = self.dt_proj = self.log_dt = self.lambda_proj = None
            self.A_log = self.A_real = self.A_imag = self.B = self.C = self.C_backward = self.D = None

        # 4. output
        out_width = {"glu": 2 * D, "half_glu1": D, "half_glu2": D}.get(cfg.gate)
        self.output_linear = nn.Linear(D, out_width) if out_width else None
        self.gate_norm = GatedRMSNorm(D, cfg.ngroups) if cfg.gate_norm else None  # Mamba-2's RMSNormGated
        self.out_proj = nn.Linear(D, H, bias=False) if cfg.expand else None
        self.reset_parameters()

    def _build_ssm(self) -> None:
        """The selection projections and dynamics parameters of a Mamba-1-axes layer."""
        cfg = self.cfg
        D, G, c, n = cfg.d_inner, cfg.n_groups, cfg.channels_per_group, cfg.n_modes
        parts = 2 if cfg.complex else 1  # real numbers per stored coefficient
        # 2. selection projections
        sel = cfg.selective
        self.dt_rank = cfg.resolved_dt_rank if "dt" in sel else 0
        self.n_dt = D if self.siso else G * n
        width = n * parts if self.siso else G * n  # B-part / C-part width of x_proj
        self.b_width = width if "B" in sel else 0
        self.c_width = width if "C" in sel else 0
        proj = self.dt_rank + self.b_width + self.c_width
        self.x_proj = nn.Linear(D, proj, bias=False) if proj else None
        self.dt_proj = nn.Linear(self.dt_rank, self.n_dt, bias=True) if "dt" in sel else None
        self.log_dt = None if "dt" in sel else nn.Parameter(torch.empty(G, 1 if self.siso else n))
        data_lambda = cfg.discretization == "trapezoidal" and cfg.trapezoid == "data"
        self.lambda_proj = nn.Linear(D, self.n_dt, bias=False) if data_lambda else None

        # 3. dynamics
        direct = cfg.a_param == "direct"  # store Re A itself (S5's Lambda_re), else log(-Re A)
        self.A_log = None if direct else nn.Parameter(torch.empty(G, n))
        self.A_real = nn.Parameter(torch.empty(G, n)) if direct else None
        self.A_imag = nn.Parameter(torch.empty(G, n)) if cfg.complex else None
        shape_B = None if self.siso else (G, n, c)
        shape_C = None if (self.siso and "C" in sel) else ((G, n) if self.siso else (G, c, n))
        tail = (2,) if cfg.complex else ()
        self.B = nn.Parameter(torch.empty(*shape_B, *tail)) if shape_B else None
        self.C = nn.Parameter(torch.empty(*shape_C, *tail)) if shape_C else None
        self.C_backward = (
            nn.Parameter(torch.empty(*shape_C, *tail)) if (shape_C and cfg.bidirectional) else None
        )
        self.D = nn.Parameter(torch.empty(D))

    # ------------------------------------------------------------------ initialisation
    def reset_parameters(self) -> None:
        if self.gate_norm is not None:
            self.gate_norm.reset_parameters()
        if self.heads is not None:
            self.heads.reset_parameters()
            return
        if self._real_parameter().is_meta:  # shapes only (models.sizing): nothing to initialise
            return
        cfg = self.cfg
        G, n, N = cfg.n_groups, cfg.n_modes, cfg.d_state
        with torch.no_grad():
            V = None
            if cfg.init == "hippo" and not self.siso:
                Lambda, V = ssm_init.hippo_blocks(N, cfg.blocks, cfg.conj_sym)
                Lambda = Lambda.expand(G, n)
            else:
                Lambda = torch.stack([ssm_init.eigenvalues(cfg.init, n, N, cfg.complex) for _ in range(G)])
            if self.A_log is not None:
                self.A_log.copy_(torch.log(-Lambda.real))
            else:
                self.A_real.copy_(Lambda.real)
            if self.A_imag is not None:
                self.A_imag.copy_(Lambda.imag)

            if self.log_dt is not None:
                self.log_dt.copy_(torch.log(ssm_init.log_uniform(tuple(self.log_dt.shape), cfg.dt_min, cfg.dt_max)))
            if self.dt_proj is not None:
                std = self.dt_rank ** -0.5
                nn.init.uniform_(self.dt_proj.weight, -std, std)
                self.dt_proj.bias.copy_(ssm_init.dt_bias(self.n_dt, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
            if self.x_proj is not None and not self.siso:
                self.x_proj.weight[self.dt_rank :].zero_()  # gains start at 1: the layer starts as S5

            if self.B is not None:
                self._init_B(V)
            for C in (self.C, self.C_backward):
                if C is not None:
                    self._init_C(C, V)
            {"normal": nn.init.normal_, "ones": nn.init.ones_, "zeros": nn.init.zeros_}[cfg.skip_init](self.D)

    def _init_B(self, V: torch.Tensor | None) -> None:
        """S5: B ~ lecun_normal over (N, c) (fan_in N, JAX's convention for that shape),
        B̃ = V^* B; without V, B̃ sampled directly with the same variance per entry."""
        cfg = self.cfg
        G, c, n, N = cfg.n_groups, cfg.channels_per_group, cfg.n_modes, cfg.d_state
        if not cfg.complex:
            ssm_init.lecun_normal_(self.B, fan_in=N)
            return
        if V is not None:
            B = ssm_init.lecun_normal_(torch.empty(G, N, c, dtype=torch.float64), fan_in=N)
            B_tilde = torch.einsum("Nn,gNc->gnc", V.conj(), B.to(torch.complex128))
        else:
            parts = ssm_init.lecun_normal_(torch.empty(G, n, c, 2, dtype=torch.float64), fan_in=N)
            B_tilde = torch.view_as_complex(parts / math.sqrt(2))
        self.B.copy_(torch.view_as_real(B_tilde))

    def _init_C(self, C: nn.Parameter, V: torch.Tensor | None) -> None:
        """SISO: C ~ N(0, 1) complex (S4D) or real. MIMO: S5's C_init options, C̃ = C V
        (without V: C̃ drawn with the variance per entry of C V)."""
        cfg = self.cfg
        G, c, n, N = cfg.n_groups, cfg.channels_per_group, cfg.n_modes, cfg.d_state
        if self.siso:
            if cfg.complex:
                C.copy_(torch.randn(G, n, 2, dtype=torch.float64) / math.sqrt(2))
            else:
                nn.init.normal_(C)
            return
        if not cfg.complex:
            ssm_init.lecun_normal_(C, fan_in=n)
            return
        if cfg.c_init == "complex_normal":
            C.copy_(torch.randn(G, c, n, 2, dtype=torch.float64) * math.sqrt(0.5))
            return
        # trunc_standard_normal: each row drawn as lecun_normal of shape (1, N, 2): fan_in N;
        # lecun_normal: one draw of shape (c, N, 2): fan_in c·N (JAX's fan_in convention).
        # Without V (an init other than hippo) C̃'s n entries are drawn directly with the
        # variance an entry of C V has (V's columns have unit norm): the same fan_in, so that
        # moving the init moves A alone, not the output's scale (as _init_B does for B̃).
        size = N if V is not None else n
        fan_in = N if cfg.c_init == "trunc_standard_normal" else c * N
        raw = ssm_init.lecun_normal_(torch.empty(G, c, size, 2, dtype=torch.float64), fan_in=fan_in)
        C_full = torch.view_as_complex(raw)
        C_tilde = torch.einsum("gcN,Nn->gcn", C_full, V) if V is not None else C_full
        C.copy_(torch.view_as_real(C_tilde))

    # ------------------------------------------------------------------ parameters as tensors
    def A(self) -> torch.Tensor:
        """Continuous-time eigenvalues, (G, n): -exp(A_log) or A_real (+ i A_imag); with
        clip_eigs, Re A clipped at -1e-4 (no gradient where clipped)."""
        real = -torch.exp(self.A_log) if self.A_log is not None else self.A_real
        if self.cfg.clip_eigs:
            real = real.clamp(max=CLIP_EIGS_BOUND)
        return torch.complex(real, self.A_imag) if self.A_imag is not None else real

    def _real_parameter(self) -> torch.Tensor:
        """The stored Re A parameter: A_log or A_real."""
        return self.A_log if self.A_log is not None else self.A_real

    def step_size(self) -> torch.Tensor:
        """Δ of a time-invariant layer, (G, 1|n): step_rescale · exp(log_dt)."""
        step = torch.exp(self.log_dt)
        return step if self.cfg.step_rescale == 1.0 else self.cfg.step_rescale * step

    def set_step_rescale(self, value: float) -> None:
        """Evaluate at another sampling rate without retraining (S5): Δ = value · exp(log_dt),
        e.g. 2.0 for a signal sampled at half the training rate. Validated like the config field;
        a Backbone sets every layer with :meth:`models.backbone.Backbone.set_step_rescale`."""
        self.cfg = self.cfg.with_(step_rescale=value)

    def _coefficients(self, param: torch.Tensor) -> torch.Tensor:
        return torch.view_as_complex(param) if self.cfg.complex else param

    def dynamics_parameters(self) -> list[str]:
        """Names of the SSM dynamics parameters (own learning rate, no weight decay; S4/S5)."""
        if self.heads is not None:
            return [f"heads.{name}" for name in self.heads.dynamics_parameters()]
        names = ["A_log", "A_real", "A_imag", "log_dt", "B", "C", "C_backward", "D", "dt_proj.weight", "dt_proj.bias"]
        own = dict(self.named_parameters())
        return [name for name in names if name in own]

    # ------------------------------------------------------------------ forward pieces
    def check_input(self, u: torch.Tensor, step: bool = False) -> None:
        """ValueError naming the expected shape/dtype, before any work is done."""
        H = self.cfg.d_model
        expected = f"(batch, {H})" if step else f"(batch, length, {H})"
        rank = 2 if step else 3
        if not isinstance(u, torch.Tensor):
            raise ValueError(f"expected a tensor of shape {expected}, got {type(u).__name__}")
        if u.dim() != rank or u.shape[-1] != H:
            raise ValueError(f"expected input of shape {expected}, got {tuple(u.shape)}")
        if not step and u.shape[1] == 0:
            raise ValueError(f"expected input of shape {expected} with length >= 1, got length 0")
        dtype = self._parameter_dtype()
        if not u.is_floating_point() or (u.dtype != dtype and not torch.is_autocast_enabled(u.device.type)):
            raise ValueError(f"expected input of dtype {dtype} and shape {expected}, got dtype {u.dtype}")

    def _branch(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """u (B, L, H) -> x (B, L, D), z (B, L, D) or None.

        silu: x, z = W_x u, W_z u. h3: q, k, v = W_q u, W_k u, W_v u; the SSM reads k ⊙ v
        (k after the short conv when conv > 0) and its output is multiplied by z = q.
        """
        if self.in_proj is None:
            return u, None
        projected = self.in_proj(u)
        if self.cfg.gate == "silu":
            x, z = projected.chunk(2, dim=-1)
            return x, z
        if self.cfg.gate == "h3":
            q, kv = projected.split([self.cfg.d_inner, 2 * self.cfg.d_inner], dim=-1)
            return kv, q
        return projected, None

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(causal depthwise conv(x)), x: (B, L, D)."""
        return x if self.conv1d is None else causal_conv(self.conv1d, x)[0]

    def _ssm_input(self, x: torch.Tensor, conv) -> torch.Tensor:
        """The SSM's input from the branch output: conv(x), or conv(k) ⊙ v for the h3 gate."""
        if self.cfg.gate == "h3":
            k, v = x.chunk(2, dim=-1)
            return conv(k) * v
        return conv(x)

    def _trapezoid_lambda(self, x: torch.Tensor) -> torch.Tensor | float:
        """λ of the trapezoidal rule: σ(W_λ x_t), (B, L, G, 1|n) like Δ, or the fixed number."""
        if self.lambda_proj is None:
            return self.cfg.trapezoid
        batch, L, _ = x.shape
        return torch.sigmoid(self.lambda_proj(x)).view(batch, L, self.cfg.n_groups, -1)

    def _transition(self, A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ā, F) of the configured discretisation, Ā mapped to (-1, 1] when eig_range is [-1, 1]."""
        A_bar, factor = discretize(self.cfg.discretization, A, delta)
        if self.cfg.eig_range == (-1, 1):  # a complex Ā's angle from log Ā (a real Ā needs none)
            log_a = log_transition(self.cfg.discretization, A, delta, A_bar) if A_bar.is_complex() else None
            A_bar = signed_transition(A_bar, log_a)
        return A_bar, factor

    def _selection(self, x: torch.Tensor) -> Selection:
        """x: (B, L, D) -> Δ and the selective B, C pieces."""
        cfg = self.cfg
        batch, L, _ = x.shape
        G, n = cfg.n_groups, cfg.n_modes
        per = 1 if self.siso else n
        if self.x_proj is None:
            return Selection(delta=self.step_size())
        dt_low, b_part, c_part = torch.split(self.x_proj(x), [self.dt_rank, self.b_width, self.c_width], dim=-1)
        if self.dt_proj is not None:
            delta_raw = F.linear(dt_low, self.dt_proj.weight)
            delta = F.softplus(delta_raw + self.dt_proj.bias).view(batch, L, G, per)
        else:
            delta_raw, delta = None, self.step_size()
        sel = Selection(delta=delta, delta_raw=delta_raw)
        if self.siso:
            sel.B_t = self._siso_vector(b_part) if self.b_width else None
            sel.C_t = self._siso_vector(c_part) if self.c_width else None
        else:
            sel.gain_B = 1 + b_part.view(batch, L, G, n) if self.b_width else None
            sel.gain_C = 1 + c_part.view(batch, L, G, n) if self.c_width else None
        return sel

    def _siso_vector(self, part: torch.Tensor) -> torch.Tensor:
        """(B, L, n·parts) -> (B, L, n), complex from (real, imag) pairs for a complex state."""
        if not self.cfg.complex:
            return part
        return complex_pairs(part)

    def _driving_term(self, x: torch.Tensor, sel: Selection, factor: torch.Tensor) -> torch.Tensor:
        """b_t = F_t ⊙ (B_t x_t): (B, L, G, n) (SISO without selective B and with a
        per-channel F: (B, L, G, 1), broadcast over n), in the state's dtype."""
        if self.siso and factor.shape[-1] == 1:
            # F is per channel (Euler B̄ = Δ B): scale x first, then one outer product with B_t
            u = (factor * x.unsqueeze(-1)).to(self._state_dtype())
            return u * sel.B_t.unsqueeze(2) if sel.B_t is not None else u
        return factor * self._input(x, sel)

    def _input(self, x: torch.Tensor, sel: Selection) -> torch.Tensor:
        """B_t x_t: (B, L, G, n) (SISO without selective B: (B, L, G, 1), broadcast over n),
        in the state's dtype."""
        batch, L, _ = x.shape
        G, c = self.cfg.n_groups, self.cfg.channels_per_group
        if self.siso:
            u = x.unsqueeze(-1).to(self._state_dtype())
            return u * sel.B_t.unsqueeze(2) if sel.B_t is not None else u
        xg = x.view(batch, L, G, c)
        if self.cfg.complex:
            Bx = torch.view_as_complex(torch.einsum("blgc,gnck->blgnk", xg, self.B).contiguous())
        else:
            Bx = torch.einsum("blgc,gnc->blgn", xg, self.B)
        return Bx * sel.gain_B if sel.gain_B is not None else Bx

    def _readout(self, h: torch.Tensor, sel: Selection, C_param: torch.Tensor | None) -> torch.Tensor:
        """s · Re(C_t h_t): h (B, L, G, n) -> (B, L, D)."""
        batch, L = h.shape[:2]
        cplx = self.cfg.complex
        hr = torch.view_as_real(h) if cplx else h  # (B, L, G, n[, 2])
        conj = torch.tensor([1.0, -1.0], dtype=hr.dtype, device=hr.device) * self.scale
        if self.siso:
            if C_param is None:  # selective C_t (B, L, n), shared by channels: (B, L, 1, n[, 2])
                Cw = (torch.view_as_real(sel.C_t) * conj if cplx else sel.C_t * self.scale).unsqueeze(2)
            else:  # (G, n[, 2])
                Cw = C_param * conj if cplx else C_param * self.scale
            # Σ_n as a broadcast product and a sum over the trailing dims: on a CPU an einsum here
            # copied h into a bmm's layout (README "Complex transitions and SISO readouts on a CPU")
            return (hr * Cw).sum((-2, -1) if cplx else -1)
        if sel.gain_C is not None:
            hr = hr * (sel.gain_C.unsqueeze(-1) if cplx else sel.gain_C)
        Cw = C_param * conj if cplx else C_param * self.scale
        y = torch.einsum("blgnk,gcnk->blgc" if cplx else "blgn,gcn->blgc", hr, Cw)
        return y.reshape(batch, L, -1)

    def _parameter_dtype(self) -> torch.dtype:
        return self.heads.D.dtype if self.heads is not None else self._real_parameter().dtype

    def _state_dtype(self) -> torch.dtype:
        dtype = self._real_parameter().dtype
        if not self.cfg.complex:
            return dtype
        return torch.complex128 if dtype == torch.float64 else torch.complex64

    # ------------------------------------------------------------------ modes
    def resolve_mode(self, device: torch.device) -> str:
        """The compute mode for this input: the configured one, or the ``auto`` pick.

        auto: mamba-ssm's kernel where it applies on a GPU, the Triton kernels for every other
        point on a GPU; on the CPU an FFT convolution for a fully time-invariant SISO layer (O(L log L), no states materialised); otherwise the
        chunked scan on CPU and the associative scan on GPU (measured fastest, see
        ``python -m models.bench``), except that on the CPU a selective SISO layer (the Mamba-1/2/3
        axes: input-dependent Δ, B or C, or any head layer, ``uses_heads``) runs ``recurrent``.
        Measured forward+backward, batch 16, d_model 32, d_state 64, one thread, medians of 5 on
        a shared 2-core machine: recurrent over chunked at L = 160 1.7x and 1.9x (Mamba-2),
        1.8x and 3.4x (Mamba-3), 1.06x to 1.55x (Mamba-1, three samples); at L = 1024 1.3x and
        2.7x (Mamba-2), 1.15x and 2.3x (Mamba-3), 1.13x and 1.23x (Mamba-1). Only samples
        taken under a much heavier load had chunked ahead for Mamba-1 (2.0x at 160, 1.2x at
        1024); ``scan`` was ahead for Mamba-3 at L = 1024 (1.5x) but behind for Mamba-2 there.
        A head layer with a dual form (``cfg.chunked_is_dual``: Mamba-2, Mamba-3 at any rank, also
        with eigenvalues in [-1, 1]: 852 -> 49 ms for Mamba-3 without rotation at L = 256) runs
        ``chunked``, that form (:mod:`models.ssd`): forward+backward of the layer, d_model 64,
        the presets' d_state 128, batch 4, one thread, medians of 5 (``python -m ablate.bench
        points=frontier modes=[recurrent,chunked] threads=1``): Mamba-2 509 -> 23 ms at L = 256
        and 2575 -> 98 ms at L = 1024, Mamba-3 856 -> 25 and 2217 -> 97 ms; a 2-layer model's
        training step at mamba3_components' sizes (d_state 16, L 32, batch 32) 59 -> 20 ms
        (Mamba-3) and 76 -> 18 ms (Mamba-2). At rank R > 1 in chunks of chunk_size // (2R)
        steps (:func:`models.heads.dual_chunk`; in chunks of 64, rank 4 had measured 1.4x to 1.7x
        slower than ``recurrent``): layer forward+backward, d_model 32, one thread, rank 2
        27.3 -> 17.8 ms and rank 4 29.8 -> 29.6 ms at batch 32, L 64, d_state 16; 200 -> 61 and
        269 -> 142 ms at batch 16, L 256, d_state 64; but at mamba3_components' sizes (MQAR, L 32,
        d_model 64, d_state 16) rank 4 trained 4% to 15% slower (two pairs of 150-step runs).
        """
        cfg, mode = self.cfg, self.cfg.mode
        if mode == "cuda" and (device.type != "cuda" or selective_scan_kernel() is None):
            raise ValueError(
                f"mode='cuda' needs mamba-ssm's CUDA kernels and a CUDA tensor, got device {device}; "
                "expected mode in ['auto', 'recurrent', 'scan', 'chunked']"
            )
        if mode == "triton" and not triton_scan.runs_on(device):
            raise ValueError(
                f"mode='triton' needs triton and a CUDA tensor (or TRITON_INTERPRET=1 on the CPU), got device "
                f"{device}; expected mode in ['auto', 'recurrent', 'scan', 'chunked']"
            )
        if mode != "auto":
            return mode
        if device.type == "cuda" and cfg.supports_cuda_kernel and selective_scan_kernel() is not None:
            return "cuda"
        if device.type == "cuda" and cfg.supports_triton and triton_scan.runs_on(device):
            return "triton"
        if cfg.auto_picks_fft:
            return "fft"
        if device.type == "cuda":
            return "scan"
        if cfg.chunked_is_dual:
            return "chunked"
        return "recurrent" if cfg.uses_heads or (self.siso and not cfg.time_invariant) else "chunked"

    def _mix(self, x: torch.Tensor, mode: str, z: torch.Tensor | None = None,
             keep: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The SSM proper: x (B, L, D) -> y (B, L, D), before the gate; with z (mode triton,
        SISO, gate silu, one direction) the gate y ⊙ SiLU(z) is applied inside the kernel. With ``keep`` (a
        dict; modes recurrent, scan, chunked, fft) the final state is written into it as
        :meth:`step` carries it: ``h`` (B, G, n) and, trapezoidal, ``v`` = B_L x_L (B, G, n)."""
        sel = self._selection(x)
        A = self.A()
        if mode == "triton":
            return fused.scan(self, x, sel, A, z)
        if mode == "cuda":
            return run_selective_scan(selective_scan_kernel(), x, sel.delta_raw, self.dt_proj.bias.float(),
                                      A.float(), sel.B_t, sel.C_t, self.D.float()).to(x.dtype)
        A_bar, factor = self._transition(A, sel.delta)
        trapezoidal = self.cfg.discretization == "trapezoidal"
        if mode == "fft" and self.siso and self.C is not None and sel.B_t is None and not trapezoidal and keep is None:
            y = self._kernel_conv(x, A, sel.delta, A_bar, factor)
        else:
            if trapezoidal:
                v = self._input(x, sel)
                b = trapezoid_drive(v, A_bar, sel.delta, self._trapezoid_lambda(x))
                if keep is not None:
                    keep["v"] = v[:, -1].expand(-1, -1, self.cfg.n_modes)
            else:
                b = self._driving_term(x, sel, factor)
            if b.shape[-1] != A_bar.shape[-1]:
                b = b.expand(*b.shape[:-1], A_bar.shape[-1])
            a = A_bar if A_bar.dim() == 4 else A_bar.expand(1, 1, *A_bar.shape)
            log_a = self._log_transition(A, sel.delta, A_bar) if mode == "fft" else None
            h = self._states(a, b, mode, log_a)
            if keep is not None:
                keep["h"] = h[:, -1]
            y = self._readout(h, sel, self.C)
            if self.cfg.bidirectional:
                h_backward = self._states(a.flip(1), b.flip(1), mode, log_a).flip(1)
                y = y + self._readout(h_backward, sel, self.C_backward)
        return y + x * self.D

    def _states(self, a: torch.Tensor, b: torch.Tensor, mode: str, log_a: torch.Tensor | None) -> torch.Tensor:
        """h (B, L, G, n) from a (·, L|1, G, n) and b (B, L, G, n) by the chosen mode."""
        if mode == "fft":
            return state_convolution(log_a, b)
        return linear_scan(a, b, mode, self.cfg.chunk_size)

    def _kernel_conv(self, x, A, delta, A_bar, factor) -> torch.Tensor:
        """Time-invariant SISO as a convolution with the SSM kernel (S4D):
        K[l, g] = s · Re Σ_n C[g, n] F[g, n] Ā[g, n]^l  (a Vandermonde product), y = K * x.
        """
        L = x.shape[1]
        log_a = self._log_transition(A, delta, A_bar)  # (G, n)
        vandermonde = powers(log_a, L, self._real_parameter().dtype)  # (G, n, L)
        y = None
        for C_param, flip in ((self.C, False), (self.C_backward, True)):
            if C_param is None:
                continue
            weight = self._coefficients(C_param) * factor * self.scale  # (G, n)
            K = torch.einsum("gn,gnl->lg", weight.to(vandermonde.dtype), vandermonde)
            K = K.real if K.is_complex() else K
            x_dir = x.flip(1) if flip else x
            y_dir = _causal_fft_conv(x_dir, K)
            y_dir = y_dir.flip(1) if flip else y_dir
            y = y_dir if y is None else y + y_dir
        return y

    def _log_transition(self, A: torch.Tensor, delta: torch.Tensor, A_bar: torch.Tensor) -> torch.Tensor:
        """log Ā for mode fft, (G, n); a logarithm of Ā (bilinear, eig_range [-1, 1]) taken in float64:
        :func:`models.scan.powers` multiplies its angle by the lag, which float32's rounding of it would not survive."""
        return log_transition(self.cfg.discretization, A, delta, widened(A_bar), signed=self.cfg.eig_range == (-1, 1))

    def _gelu(self, y: torch.Tensor) -> torch.Tensor:
        """GELU of the output gate: exact (erf) or the tanh approximation (cfg.gelu)."""
        return F.gelu(y, approximate="tanh" if self.cfg.gelu == "tanh" else "none")

    def _output(self, y: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The gate (z None: the SiLU gate was already applied in the scan), gate_norm, then out_proj."""
        gate = self.cfg.gate
        gelu = self._gelu
        if gate == "silu":
            y = y if z is None else y * F.silu(z)
        elif gate == "h3":
            y = y * z
        elif gate == "glu":
            y = F.glu(self.output_linear(gelu(y)), dim=-1)
        elif gate == "half_glu1":
            g = gelu(y)
            y = g * torch.sigmoid(self.output_linear(g))
        elif gate == "half_glu2":
            y = y * torch.sigmoid(self.output_linear(gelu(y)))
        else:
            y = gelu(y)
        if self.gate_norm is not None:
            y = self.gate_norm(y)
        return self.out_proj(y) if self.out_proj is not None else y

    def forward(self, u: torch.Tensor, return_state: bool = False):
        """u: (B, L, H) -> (B, L, H). With ``return_state`` (prefill): (y, state), the state
        after the last position as :meth:`step` would leave it, so generation goes on with
        ``step`` from there (see :meth:`_prefill`)."""
        self.check_input(u)
        mode = self.resolve_mode(u.device)
        x, z = self._branch(u)
        if return_state:
            return self._prefill(u, x, z, mode)
        if self.heads is not None:
            y, gated = self.heads(self._ssm_input(x, self._conv), mode, z, u)
            return self._output(y, None if gated else z)
        if mode == "triton" and self.cfg.gate == "silu" and self.siso and not self.cfg.bidirectional:
            # the gate is fused into the kernel (bidirectional: it gates the sum of both directions, after them)
            return self._output(self._mix(self._ssm_input(x, self._conv), mode, z), None)
        return self._output(self._mix(self._ssm_input(x, self._conv), mode), z)

    # ------------------------------------------------------------------ recurrent inference
    def _prefill(self, u: torch.Tensor, x: torch.Tensor, z: torch.Tensor | None, mode: str
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """forward's output and final state from the block input u and the branch outputs x, z
        (B, L, ·); a Mamba-2/3 layer's own state pieces come from :meth:`HeadSSM.forward`.

        ``conv``: the last k pre-conv inputs (B, D, k), oldest first, zero-padded on the left
        when L < k; ``h`` (and ``v``) from the states the scan computes anyway. The fused
        kernels (modes triton, cuda) keep no states: they are replaced by ``scan``, the
        same function; the ``fft`` mode takes its state convolution instead of the kernel.
        """
        if self.cfg.bidirectional:
            raise ValueError("return_state=True is not valid for a bidirectional layer (no state continues it); "
                             "expected bidirectional=False")
        state: dict[str, torch.Tensor] = {}

        def conv_keeping(x_in: torch.Tensor) -> torch.Tensor:
            if self.conv1d is not None:
                state["conv"] = last_window(x_in, self.cfg.conv)
            return self._conv(x_in)

        mode = "scan" if mode in ("triton", "cuda") else mode
        if self.heads is not None:
            y, gated = self.heads(self._ssm_input(x, conv_keeping), mode, z, u, keep=state)
            return self._output(y, None if gated else z), state
        y = self._output(self._mix(self._ssm_input(x, conv_keeping), mode, keep=state), z)
        return y, state

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        """Zero state for :meth:`step`: ``h`` (batch, G, n) and, with a conv, ``conv``
        (batch, D, k): the last k pre-conv inputs, oldest first (mamba-ssm's layout)."""
        if self.cfg.bidirectional:
            raise ValueError("step() is not valid for a bidirectional layer: it needs the future; "
                             "expected bidirectional=False")
        if self.heads is not None:
            state = self.heads.init_state(batch)
        else:
            state = {"h": torch.zeros(batch, self.cfg.n_groups, self.cfg.n_modes, dtype=self._state_dtype(),
                                      device=self._real_parameter().device)}
            if self.cfg.discretization == "trapezoidal":  # B_{t-1} x_{t-1}, the rule's second term
                state["v"] = torch.zeros_like(state["h"])
        if self.conv1d is not None:
            p = self.conv1d.weight
            state["conv"] = torch.zeros(batch, self.cfg.d_inner, self.cfg.conv, dtype=p.dtype, device=p.device)
        return state

    def check_state(self, state: dict[str, torch.Tensor], batch: int) -> None:
        """ValueError unless ``state`` is a dict of tensors for ``batch`` sequences (as
        :meth:`init_state` and :meth:`step` make them; a leading 1 is one state for every
        sequence, as a fixed rotation's angle), before any work is done."""
        if not isinstance(state, dict):
            raise ValueError(f"state={type(state).__name__} is not valid; expected the dict of init_state({batch})")
        wrong = {key: tuple(value.shape) for key, value in state.items()
                 if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] not in (1, batch)}
        if wrong:
            raise ValueError(f"state={wrong} is not valid for an input of batch {batch}; expected the state of "
                             f"init_state({batch}) or of the step before")

    def step(self, u_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token: u_t (B, H) -> y_t (B, H), new state. O(1) in the sequence length."""
        if self.cfg.bidirectional:
            raise ValueError("step() is not valid for a bidirectional layer; expected bidirectional=False")
        self.check_input(u_t, step=True)
        self.check_state(state, u_t.shape[0])
        x, z = self._branch(u_t.unsqueeze(1))  # (B, 1, D) (h3: (B, 1, 2D))
        new_state = {}

        def conv_step(x1: torch.Tensor) -> torch.Tensor:
            if self.conv1d is None:
                return x1
            y1, new_state["conv"] = causal_conv(self.conv1d, x1, state["conv"])
            return y1

        x = self._ssm_input(x, conv_step)
        if self.heads is not None:
            y, gated, ssm_state = self.heads.step(x, z, state, u_t.unsqueeze(1))
            new_state.update(ssm_state)
            return self._output(y, None if gated else z)[:, 0], new_state
        sel = self._selection(x)
        if self.siso and self.resolve_mode(u_t.device) in ("triton", "cuda") and triton_scan.runs_on(u_t.device):
            y, new_state["h"] = fused.step(self, x[:, 0], z, sel, state["h"])
            return y, new_state
        A_bar, factor = self._transition(self.A(), sel.delta)
        if self.cfg.discretization == "trapezoidal":
            v = self._input(x, sel).expand(-1, -1, -1, self.cfg.n_modes)  # (B, 1, G, n)
            b = trapezoid_drive(v, A_bar, sel.delta, self._trapezoid_lambda(x), before=state["v"].unsqueeze(1))[:, 0]
            new_state["v"] = v[:, 0]
        else:
            b = self._driving_term(x, sel, factor)[:, 0]
        h = A_bar.squeeze(1) * state["h"] + b if A_bar.dim() == 4 else A_bar * state["h"] + b
        new_state["h"] = h
        y = self._readout(h.unsqueeze(1), sel, self.C) + x * self.D
        return self._output(y, z)[:, 0], new_state


def _causal_fft_conv(x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """y[:, t] = Σ_{s<=t} K[t-s] x[:, s] by FFT at length 2L. x: (B, L, D), K: (L, D)."""
    L = x.shape[1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(x, n=n, dim=1) * torch.fft.rfft(K, n=n, dim=0), n=n, dim=1)
    return y[:, :L]
