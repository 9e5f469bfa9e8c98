"""Discretisation of a diagonal continuous-time SSM  h'(t) = A h(t) + B x(t).

Each function maps (A, Δ) to (Ā, F) with  h_t = Ā h_{t-1} + F · (B x_t),  i.e. B̄ = F · B.
A and Δ broadcast against each other; A may be real or complex.

* ``zoh``      (S4, S5 eq. 6):  Ā = exp(ΔA),                 B̄ = (Ā - 1)/A · B
* ``bilinear`` (S4 eq. 3):      Ā = (1 + ΔA/2)/(1 - ΔA/2),    B̄ = Δ/(1 - ΔA/2) · B
* ``zoh_euler`` (Mamba §3.5, mamba-ssm's kernels): Ā = exp(ΔA),  B̄ = Δ · B
"""

from __future__ import annotations

import torch


def discretize_zoh(A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A_bar = torch.exp(delta * A)
    return A_bar, (A_bar - 1) / A


def discretize_bilinear(A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = delta * A / 2
    denominator = 1 - half
    return (1 + half) / denominator, delta / denominator


def discretize_zoh_euler(A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A_bar = torch.exp(delta * A)
    return A_bar, delta


DISCRETIZE = {"zoh": discretize_zoh, "bilinear": discretize_bilinear, "zoh_euler": discretize_zoh_euler}


def discretize(method: str, A: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on the method name; see the module docstring for the formulas."""
    try:
        fn = DISCRETIZE[method]
    except KeyError:
        raise ValueError(f"discretization={method!r} is not valid; expected one of {list(DISCRETIZE)}") from None
    return fn(A, delta)


def log_transition(method: str, A: torch.Tensor, delta: torch.Tensor, A_bar: torch.Tensor) -> torch.Tensor:
    """log Ā, in a complex dtype when Ā may be negative, so Ā^l = exp(l log Ā) for integer l.

    Exact for the exponential discretisations (log Ā = ΔA); the principal logarithm
    otherwise (any branch gives the same integer powers).
    """
    if method in ("zoh", "zoh_euler"):
        return delta * A
    if not A_bar.is_complex():
        A_bar = A_bar.to(torch.complex128 if A_bar.dtype == torch.float64 else torch.complex64)
    return torch.log(A_bar)
