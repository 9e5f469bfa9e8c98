"""Initial eigenvalues A (continuous time) and the matrices that go with them.

All functions return float64 / complex128 tensors; the layer casts them to its dtype.

* HiPPO-LegS (Gu et al. 2020, eq. 2 of the S4 paper):
  A[n, k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k.
  Its normal part (S4, Gu et al. 2022; S5 §4.1) is S = A + p p^T with p_n = sqrt(n + 1/2):
  S = -1/2 I + (skew-symmetric), so every eigenvalue has real part exactly -1/2.
  S is diagonalised as S = V diag(Λ) V^*, V unitary.
* S4D-Lin  (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal SSMs", §4):
  A_n = -1/2 + i π n.
* S4D-Inv  (same paper): A_n = -1/2 + i (N/π) (N / (2n+1) - 1), N = d_state (the official
  code's convention: N counts both halves of the conjugate pairs), n = 0..N/2-1.
* S4D-Real (same paper; Mamba's default): A_n = -(n+1).
* random: Re A = -exp(z), z ~ N(log 1/2, 1); Im A ~ U(0, π n_modes) sorted (the S4D-Lin range).
"""

from __future__ import annotations

import math

import torch


def hippo_legs(size: int) -> torch.Tensor:
    """The HiPPO-LegS matrix A, shape (size, size), float64."""
    n = torch.arange(size, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    A = -torch.outer(root, root)
    A = torch.tril(A, diagonal=-1) - torch.diag(n + 1)
    return A


def hippo_legs_normal(size: int) -> torch.Tensor:
    """The normal part S = A + p p^T of HiPPO-LegS, shape (size, size), float64."""
    p = torch.sqrt(torch.arange(size, dtype=torch.float64) + 0.5)
    return hippo_legs(size) + torch.outer(p, p)


def hippo_legs_normal_eig(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition S = V diag(Λ) V^* of the HiPPO-LegS normal part.

    The skew part K = S + I/2 is diagonalised through the Hermitian matrix -iK, whose real
    eigenvalues e come out in ascending order: Λ = -1/2 + i e. The first half therefore
    holds the eigenvalues with negative imaginary part, the second half their conjugates
    (the ordering S5's conjugate-symmetric initialisation relies on).

    Returns Λ (size,) complex128 and V (size, size) complex128 (unitary).
    """
    S = hippo_legs_normal(size)
    real_part = torch.diagonal(S).mean()
    skew = S - real_part * torch.eye(size, dtype=torch.float64)
    e, V = torch.linalg.eigh(skew.to(torch.complex128) * -1j)
    Lambda = torch.complex(real_part.expand_as(e).clone(), e)
    return Lambda, V


def s4d_lin(n_modes: int) -> torch.Tensor:
    """A_n = -1/2 + iπn, n = 0..n_modes-1; (n_modes,) complex128."""
    n = torch.arange(n_modes, dtype=torch.float64)
    return torch.complex(torch.full_like(n, -0.5), math.pi * n)


def s4d_inv(n_modes: int, d_state: int) -> torch.Tensor:
    """A_n = -1/2 + i (N/π)(N/(2n+1) - 1), N = d_state, n < n_modes; (n_modes,) complex128."""
    n = torch.arange(n_modes, dtype=torch.float64)
    N = float(d_state)
    return torch.complex(torch.full_like(n, -0.5), N / math.pi * (N / (2 * n + 1) - 1))


def s4d_real(n_modes: int) -> torch.Tensor:
    """A_n = -(n+1), n = 0..n_modes-1; (n_modes,) float64."""
    return -(torch.arange(n_modes, dtype=torch.float64) + 1)


def random_eigenvalues(n_modes: int, complex_state: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random stable eigenvalues (see module docstring); (n_modes,)."""
    z = torch.randn(n_modes, dtype=torch.float64, generator=generator) + math.log(0.5)
    real = -torch.exp(z)
    if not complex_state:
        return real
    imag = torch.sort(torch.rand(n_modes, dtype=torch.float64, generator=generator) * math.pi * n_modes).values
    return torch.complex(real, imag)


def hippo_blocks(d_state: int, blocks: int, conj_sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """S5's block-diagonal HiPPO-N initialisation (S5 paper §4.1 and App. B.1.1).

    The HiPPO-N matrix of size d_state / blocks is diagonalised once; its eigenvalues are
    repeated ``blocks`` times and V becomes block-diagonal. With conjugate symmetry each
    block keeps its first half (negative imaginary parts) and the matching columns of V.

    Returns Λ (n,) and V (d_state, n) complex128, n = d_state / 2 with conjugate
    symmetry, else d_state. B̃ = V^* B and C̃ = C V (V^* V = I on the kept columns).
    """
    size = d_state // blocks
    Lambda, V = hippo_legs_normal_eig(size)
    keep = size // 2 if conj_sym else size
    Lambda, V = Lambda[:keep], V[:, :keep]
    return Lambda.repeat(blocks), torch.block_diag(*[V] * blocks)


def eigenvalues(init: str, n_modes: int, d_state: int, complex_state: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial eigenvalues of one SSM for the named init; (n_modes,) complex128 or float64.

    For ``hippo`` this is the unblocked HiPPO-N spectrum (the block-diagonal form with V
    is :func:`hippo_blocks`, used by MIMO layers).
    """
    if init == "hippo":
        Lambda, _ = hippo_legs_normal_eig(d_state)
        return Lambda[:n_modes]
    if init == "s4d_lin":
        return s4d_lin(n_modes)
    if init == "s4d_inv":
        return s4d_inv(n_modes, d_state)
    if init == "s4d_real":
        values = s4d_real(n_modes)
        return values.to(torch.complex128) if complex_state else values
    if init == "random":
        return random_eigenvalues(n_modes, complex_state, generator)
    raise ValueError(f"init={init!r} is not valid")


def lecun_normal_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """In place: truncated normal on [-2σ, 2σ] with variance 1/fan_in (JAX's lecun_normal)."""
    # std of a standard normal truncated to [-2, 2]; dividing by it restores variance 1.
    truncated_std = 0.87962566103423978
    std = 1.0 / math.sqrt(fan_in) / truncated_std
    with torch.no_grad():
        torch.nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)
    return tensor


def log_uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples with log-uniform distribution on [low, high]; float64."""
    u = torch.rand(shape, dtype=torch.float64, generator=generator)
    return torch.exp(u * (math.log(high) - math.log(low)) + math.log(low))


def dt_bias(size: int, dt_min: float, dt_max: float, floor: float) -> torch.Tensor:
    """A bias b (size,) with softplus(b) = Δ0, Δ0 log-uniform on [dt_min, dt_max] and at least
    ``floor`` (Mamba's dt_proj.bias and Mamba-2's dt_bias); float64."""
    dt = log_uniform((size,), dt_min, dt_max).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1(Δ0)
