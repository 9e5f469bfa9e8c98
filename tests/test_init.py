"""Initialisations and discretisations against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from models import SSMLayer, preset
from models import init as ssm_init
from models.discretize import discretize


@pytest.mark.parametrize("size", [2, 8, 33])
def test_hippo_normal_part_eigenvalues_have_real_part_minus_half(size: int) -> None:
    Lambda, V = ssm_init.hippo_legs_normal_eig(size)
    assert torch.allclose(Lambda.real, torch.full((size,), -0.5, dtype=torch.float64), atol=1e-12)
    S = ssm_init.hippo_legs_normal(size).to(torch.complex128)
    assert torch.allclose(V @ torch.diag(Lambda) @ V.conj().T, S, atol=1e-10)  # S = V Λ V^*
    assert torch.allclose(V.conj().T @ V, torch.eye(size, dtype=torch.complex128), atol=1e-10)
    half = size // 2
    assert (Lambda.imag[:half] <= 0).all()  # first half: negative imaginary parts (S5's conj-sym half)


def test_hippo_legs_matrix_entries() -> None:
    A = ssm_init.hippo_legs(3)
    expected = torch.tensor([[-1, 0, 0], [-math.sqrt(3), -2, 0], [-math.sqrt(5), -math.sqrt(15), -3]],
                            dtype=torch.float64)
    assert torch.allclose(A, expected)


def test_s4d_formulas() -> None:
    n = torch.arange(4, dtype=torch.float64)
    lin = ssm_init.s4d_lin(4)
    assert torch.allclose(lin, torch.complex(torch.full_like(n, -0.5), math.pi * n))
    real = ssm_init.s4d_real(4)
    assert real.tolist() == [-1.0, -2.0, -3.0, -4.0]
    inv = ssm_init.s4d_inv(4, d_state=8)
    assert torch.allclose(inv.imag, 8 / math.pi * (8 / (2 * n + 1) - 1))
    assert torch.allclose(inv.real, torch.full_like(n, -0.5))


def test_presets_start_from_their_published_eigenvalues() -> None:
    s4d = SSMLayer(preset("s4d", d_model=3, d_state=8))
    assert torch.allclose(s4d.A().to(torch.complex128), ssm_init.s4d_lin(4).expand(3, 4), atol=1e-6)
    mamba = SSMLayer(preset("mamba", d_model=3, d_state=5))
    assert torch.allclose(mamba.A(), -torch.arange(1.0, 6.0).expand(6, 5))
    s5 = SSMLayer(preset("s5", d_model=3, d_state=8, blocks=2))
    Lambda, _ = ssm_init.hippo_legs_normal_eig(4)
    assert torch.allclose(s5.A()[0].to(torch.complex128), Lambda[:2].repeat(2), atol=1e-6)


A_VALUES = [complex(-0.5, 3.0), complex(-2.0, 0.0)]


@pytest.mark.parametrize("A", A_VALUES)
def test_zoh_is_the_exact_solution_under_constant_input(A: complex) -> None:
    """Integrate h' = A h + x (x constant) with many small RK4 steps and compare."""
    A_t, delta = torch.tensor(A, dtype=torch.complex128), torch.tensor(0.3, dtype=torch.float64)
    A_bar, factor = discretize("zoh", A_t, delta)
    h0, x = complex(0.7, -0.2), 1.3
    h, steps = h0, 20000
    dt = 0.3 / steps
    f = lambda v: A * v + x  # noqa: E731
    for _ in range(steps):
        k1 = f(h); k2 = f(h + dt / 2 * k1); k3 = f(h + dt / 2 * k2); k4 = f(h + dt * k3)
        h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    got = (A_bar * h0 + factor * x).item()
    assert abs(got - h) < 1e-10


@pytest.mark.parametrize("A", A_VALUES)
def test_discretisation_closed_forms(A: complex) -> None:
    A_t, d = torch.tensor(A, dtype=torch.complex128), torch.tensor(0.1, dtype=torch.float64)
    A_bar, factor = discretize("bilinear", A_t, d)
    assert abs(A_bar.item() - (1 + 0.05 * A) / (1 - 0.05 * A)) < 1e-14
    assert abs(factor.item() - 0.1 / (1 - 0.05 * A)) < 1e-14
    A_bar, factor = discretize("zoh_euler", A_t, d)
    assert abs(A_bar.item() - complex(math.e ** (0.1 * A.real)) * complex(math.cos(0.1 * A.imag), math.sin(0.1 * A.imag))) < 1e-14
    assert abs(factor.item() - 0.1) < 1e-15
    A_bar, factor = discretize("zoh", A_t, d)
    assert abs(factor.item() - (A_bar.item() - 1) / A) < 1e-14


@pytest.mark.parametrize("method", ["zoh", "zoh_euler", "bilinear"])
@pytest.mark.parametrize("complex_A", [True, False])
def test_per_step_discretisation_equals_the_textbook_formulas(method: str, complex_A: bool) -> None:
    # Δ per step (B, L, D, 1) against A (D, n): a complex Ā by its modulus and angle, F by one
    # reciprocal; values and gradients equal those of exp(ΔA), (Ā - 1)/A and the quotients
    g = torch.Generator().manual_seed(0)
    real = -0.1 - torch.rand(3, 4, generator=g, dtype=torch.float64)
    A = (torch.complex(real, 5 * torch.randn(3, 4, generator=g, dtype=torch.float64)) if complex_A else real).requires_grad_()
    delta = (0.01 + 0.5 * torch.rand(2, 5, 3, 1, generator=g, dtype=torch.float64)).requires_grad_()
    dA = delta * A
    textbook = {"zoh": (torch.exp(dA), (torch.exp(dA) - 1) / A), "zoh_euler": (torch.exp(dA), delta),
                "bilinear": ((1 + dA / 2) / (1 - dA / 2), delta / (1 - dA / 2))}[method]
    got = discretize(method, A, delta)
    weights = [torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64) for _ in range(4)]

    def loss(pair):
        return sum(((w1 * t.real + w2 * t.imag) if t.is_complex() else w1 * t).sum()
                   for t, w1, w2 in zip(pair, weights[::2], weights[1::2]))

    for mine, want in zip(got, textbook):
        torch.testing.assert_close(mine, want, rtol=1e-14, atol=1e-15)
    for mine, want in zip(torch.autograd.grad(loss(got), (A, delta)), torch.autograd.grad(loss(textbook), (A, delta))):
        torch.testing.assert_close(mine, want, rtol=1e-13, atol=1e-14)


def test_unknown_discretisation_is_refused() -> None:
    with pytest.raises(ValueError, match="zoh"):
        discretize("euler", torch.tensor(-1.0), torch.tensor(0.1))


def test_mamba_dt_bias_is_inverse_softplus_of_range() -> None:
    layer = SSMLayer(preset("mamba", d_model=16, d_state=4))
    dt = torch.nn.functional.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    bound = layer.dt_rank ** -0.5
    assert layer.dt_proj.weight.abs().max() <= bound


def test_s5_log_step_range_and_selective_mimo_starts_as_s5() -> None:
    torch.manual_seed(0)
    s5 = SSMLayer(preset("s5", d_model=4, d_state=8))
    step = torch.exp(s5.log_dt)
    assert step.shape == (1, 4) and step.min() >= 1e-3 and step.max() <= 1e-1
    sel = SSMLayer(preset("s5", d_model=4, d_state=8, selective="B,C"))
    assert sel.x_proj.weight.abs().max() == 0
    sel.load_state_dict(s5.state_dict(), strict=False)  # same A, B, C, D, Δ; x_proj stays as initialised
    u = torch.randn(2, 5, 4)
    torch.testing.assert_close(sel(u), s5(u))  # gains start at 1: same function at init


def test_s5_B_and_C_follow_the_official_initialisation() -> None:
    """Without conjugate symmetry V is square and unitary: V B̃ recovers the real lecun_normal
    B (std 1/sqrt(P), fan_in P), and C̃ V^* the real and imaginary parts of C (std 1/sqrt(P))."""
    torch.manual_seed(0)
    P, H = 64, 96
    layer = SSMLayer(preset("s5", d_model=H, d_state=P, conj_sym=False)).double()
    _, V = ssm_init.hippo_legs_normal_eig(P)
    B = V @ torch.view_as_complex(layer.B[0])  # (P, H)
    assert B.imag.abs().max() < 1e-6
    assert abs(B.real.std().item() - 1 / math.sqrt(P)) < 0.1 / math.sqrt(P)
    C = torch.view_as_complex(layer.C[0]) @ V.conj().T  # (H, P)
    assert abs(C.real.std().item() - 1 / math.sqrt(P)) < 0.1 / math.sqrt(P)
    assert abs(C.imag.std().item() - 1 / math.sqrt(P)) < 0.1 / math.sqrt(P)


@pytest.mark.parametrize("c_init", ["trunc_standard_normal", "lecun_normal"])
def test_mimo_C_has_the_same_scale_under_every_init(c_init: str) -> None:
    """A MIMO layer's C̃ = C V under hippo; under another init C̃ is drawn directly with the
    same variance per entry, so an init ablation moves A, not the output's scale."""
    scale = {}
    for init in ("hippo", "s4d_lin", "random"):
        torch.manual_seed(0)
        layer = SSMLayer(preset("s5", d_model=64, d_state=32, init=init, c_init=c_init)).double()
        scale[init] = torch.view_as_complex(layer.C.detach()).abs().pow(2).mean().item()
    assert 0.85 < scale["s4d_lin"] / scale["hippo"] < 1.15, scale
    assert 0.85 < scale["random"] / scale["hippo"] < 1.15, scale
