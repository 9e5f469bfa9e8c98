"""Discretisation of a diagonal continuous-time SSM  h'(t) = A h(t) + B x(t).

Each function maps (A, Δ) to (Ā, F) with  h_t = Ā h_{t-1} + F · (B x_t),  i.e. B̄ = F · B.
A and Δ broadcast against each other; A may be real or complex.

* ``zoh``      (S4, S5 eq. 6):  Ā = exp(ΔA),                 B̄ = (Ā - 1)/A · B
* ``bilinear`` (S4 eq. 3):      Ā = (1 + ΔA/2)/(1 - ΔA/2),    B̄ = Δ/(1 - ΔA/2) · B
* ``zoh_euler`` (Mamba §3.5, mamba-ssm's kernels): Ā = exp(ΔA),  B̄ = Δ · B
* ``trapezoidal`` (Mamba-3 §3.1, "exponential-trapezoidal"): two input terms,
      h_t = α_t h_{t-1} + β_t B_{t-1} x_{t-1} + γ_t B_t x_t,
      α_t = exp(Δ_t A),  β_t = (1 - λ_t) Δ_t α_t,  γ_t = λ_t Δ_t;
  here (Ā, F) = (α, Δ) and :func:`trapezoid_drive` forms the two terms from λ. λ = 1 is
  ``zoh_euler``.

Eigenvalue range (Grazzi et al. 2025, "Unlocking state-tracking in linear RNNs through
negative eigenvalues"): with ``eig_range = (-1, 1)`` the transition applied is 2Ā - 1 for a
real Ā in (0, 1) (:func:`signed_transition`), which reaches into (-1, 0) and can flip a sign
(parity). A complex Ā keeps its angle and maps its modulus: (2|Ā| - 1) e^{i arg Ā} (a negative
real Ā, bilinear's at ΔA < -2, is the angle π: 1 + 2Ā, so the transition stays in [-1, 1]). B̄ is
unchanged; in the trapezoidal rule β_t uses the transition as applied.
"""

from __future__ import annotations

import math

import torch


def exp_transition(A: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Ā = exp(ΔA) for a real Δ. Where Δ varies per step (has more entries than A), a complex Ā
    is formed as exp(Δ Re A) e^{iΔ Im A} (torch.polar): the same value to an ulp, by real
    exponentials, cosines and sines, where PyTorch's complex exp is not vectorised on a CPU (S4D
    with a selective Δ trains 1.8x faster: README, "Complex transitions and SISO readouts on a
    CPU"). A time-invariant Ā is as small as A: there the plain exp, fewer operations, is faster."""
    if not A.is_complex() or delta.numel() <= A.numel():
        return torch.exp(delta * A)
    return torch.polar(torch.exp(delta * A.real), delta * A.imag)


def discretize_zoh(A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A_bar = exp_transition(A, delta)
    return A_bar, (A_bar - 1) * A.reciprocal()  # one division per state, not one per step


def discretize_bilinear(A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = delta * A / 2
    inverse = (1 - half).reciprocal()  # one division, shared by Ā and F (a complex one is slow)
    return (1 + half) * inverse, delta * inverse


def discretize_zoh_euler(A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return exp_transition(A, delta), delta


DISCRETIZE = {"zoh": discretize_zoh, "bilinear": discretize_bilinear, "zoh_euler": discretize_zoh_euler,
              "trapezoidal": discretize_zoh_euler}


def signed_transition(A_bar: torch.Tensor, log_A_bar: torch.Tensor | None = None) -> torch.Tensor:
    """Ā in the unit disc -> the same angle with radius 2|Ā| - 1: radius [0, 1] -> [-1, 1].

    A real Ā keeps its sign: 2Ā - 1 for Ā >= 0, 1 + 2Ā for a negative Ā (bilinear at ΔA < -2:
    angle π), as a complex Ā of the same value would map. ``log_A_bar``: log Ā where it is
    known apart from Ā (ΔA for the exponential discretisations, plus a rotation's angle); a
    complex Ā's angle is read from it, so that where |Ā| underflows to 0 (Re ΔA below about
    -103 in float32), and Ā has lost its angle, the transition is still the limit -e^{i arg Ā}.
    """
    if not A_bar.is_complex():
        return torch.where(A_bar < 0, 1 + 2 * A_bar, 2 * A_bar - 1)
    if log_A_bar is None:
        modulus, angle = A_bar.abs(), A_bar.angle()
    else:
        modulus, angle = torch.exp(log_A_bar.real), log_A_bar.imag
    return torch.polar(torch.ones_like(angle), angle) * (2 * modulus - 1)


def trapezoid_weights(A_bar: torch.Tensor, delta: torch.Tensor, lam: torch.Tensor | float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(γ_t, β_t) = (λ_t Δ_t, (1 - λ_t) Δ_t Ā_t): the weights of v_t and v_{t-1} in b_t."""
    return lam * delta, (1 - lam) * delta * A_bar


def trapezoid_drive(v: torch.Tensor, A_bar: torch.Tensor, delta: torch.Tensor, lam: torch.Tensor | float,
                    before: torch.Tensor | None = None) -> torch.Tensor:
    """b_t = β_t v_{t-1} + γ_t v_t along dim 1, with v_t = B_t x_t, γ = λΔ, β = (1 - λ) Δ Ā.

    v: (B, L, *S); A_bar, delta, lam broadcast against it; ``before``: v_{-1}, (B, 1, *S)
    (zero when None: the sequence starts here; step() passes the previous token's).
    """
    gamma, beta = trapezoid_weights(A_bar, delta, lam)
    if before is None:
        first = torch.zeros_like(v[:, :1])
    else:  # v may be broadcast over the states (B ≡ 1): widen it to the carried term's shape
        shape = torch.broadcast_shapes(v[:, :1].shape, before.shape)
        v = v.expand(shape[0], v.shape[1], *shape[2:])
        first = before.to(v.dtype).expand(shape)
    previous = torch.cat([first, v[:, :-1]], dim=1)
    return gamma * v + beta * previous


def discretize(method: str, A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on the method name; see the module docstring for the formulas."""
    try:
        fn = DISCRETIZE[method]
    except KeyError:
        raise ValueError(f"discretization={method!r} is not valid; expected one of {list(DISCRETIZE)}") from None
    return fn(A, delta)


def log_transition(method: str, A: torch.Tensor, delta: torch.Tensor, A_bar: torch.Tensor,
                   signed: bool = False) -> torch.Tensor:
    """log Ā, in a complex dtype when Ā may be negative, so Ā^l = exp(l log Ā) for integer l.

    Exact for the exponential discretisations (log Ā = ΔA); the principal logarithm
    otherwise, or when ``signed`` (Ā already mapped by :func:`signed_transition`; any branch
    gives the same integer powers). A zero Ā gets the log of the dtype's smallest normal
    number, so that Ā^0 = 1 and Ā^l underflows to 0.
    """
    if method in ("zoh", "zoh_euler", "trapezoidal") and not signed:
        return delta * A
    if not A_bar.is_complex():
        A_bar = A_bar.to(torch.complex128 if A_bar.dtype == torch.float64 else torch.complex64)
    log = torch.log(A_bar)
    floor = math.log(torch.finfo(log.real.dtype).tiny)  # a Python float: on the device of log
    return torch.complex(log.real.clamp_min(floor), log.imag)
