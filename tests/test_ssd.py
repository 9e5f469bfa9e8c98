"""The chunked dual form (models.ssd) equals the step-by-step recurrence it unrolls, and the head
layers' mode chunked runs it where ``chunked_is_dual`` says (their every-mode tests in
tests/test_frontier.py and tests/test_modes.py then compare it with ``recurrent``)."""

from __future__ import annotations

import copy

import pytest
import torch

import models.heads
from models.heads import dual_chunk
from models import SSMLayer, preset
from models.ssd import chunked_dual

from helpers import randomize_, relative_error


def loop(log_a: torch.Tensor, X: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
         flips: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = α_t h_{t-1} + Σ_j X_t[j] ⊗ B_t[j],  y_t[r] = h_t C_t[r], one step at a time, with
    α_t = exp(ℓ_t), negated where ``flips`` is 1."""
    batch, L, J, E, P = X.shape
    alpha = torch.exp(log_a)
    if flips is not None:
        alpha = torch.where(flips > 0, -alpha, alpha)
    alpha = alpha.expand(batch, L, E)
    h = X.new_zeros(batch, E, P, B.shape[-1])
    out = []
    for t in range(L):
        h = alpha[:, t].view(batch, E, 1, 1) * h + torch.einsum("bjep,bjen->bepn", X[:, t], B[:, t])
        out.append(torch.einsum("bepn,bren->brep", h, C[:, t]))
    return torch.stack(out, 1)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("time_invariant", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
def test_chunked_dual_equals_the_recurrence(chunk_size: int, time_invariant: bool, signed: bool) -> None:
    """Decays in (0, 1), or signed: negative at random steps (eigenvalues in [-1, 1])."""
    g = torch.Generator().manual_seed(1)
    batch, J, R, E, P, N = 2, 3, 2, 2, 3, 4
    for L in (1, 2, 5, 7, 16, 17):
        shape = (1, 1, E) if time_invariant else (batch, L, E)
        log_a = (-torch.rand(shape, dtype=torch.float64, generator=g) * 2).requires_grad_()
        flips = (torch.rand(shape, generator=g) < 0.5).double() if signed else None
        X, B, C = (torch.randn(batch, L, k, E, m, dtype=torch.float64, generator=g).requires_grad_()
                   for k, m in ((J, P), (J, N), (R, N)))
        expected = loop(log_a, X, B, C, flips)
        w = torch.randn(expected.shape, dtype=torch.float64, generator=g)
        got = chunked_dual(log_a, X, B, C, chunk_size, flips)
        assert got.shape == (batch, L, R, E, P)
        assert relative_error(got, expected) < 1e-13, L
        for a, b in zip(torch.autograd.grad((got * w).sum(), (log_a, X, B, C)),
                        torch.autograd.grad((expected * w).sum(), (log_a, X, B, C))):
            assert relative_error(a, b) < 1e-13, L


def test_strong_decay_underflows_to_zero_without_nan() -> None:
    """A decay of exp(-1000) per step: the states forget at once; nothing is inf or NaN, the
    gradients neither (the masked pairs' exp(-inf) = 0 backpropagates as 0)."""
    log_a = torch.full((1, 9, 1), -1000.0, requires_grad=True)
    X, B, C = (torch.randn(1, 9, 1, 1, 2, requires_grad=True) for _ in range(3))
    y = chunked_dual(log_a, X, B, C, 4)
    torch.testing.assert_close(y, loop(log_a, X, B, C))
    grads = torch.autograd.grad(y.sum(), (log_a, X, B, C))
    assert all(torch.isfinite(t).all() for t in (y, *grads))


DUAL = {
    "mamba2": preset("mamba2", d_model=4, d_state=8, headdim=2),
    "mamba3": preset("mamba3", d_model=4, d_state=8, headdim=2),
    "mamba2_zoh": preset("mamba2", d_model=4, d_state=8, headdim=2, discretization="zoh"),
    "data_A_per_channel": preset("mamba", d_model=4, d_state=4, a_source="data"),
    "mamba2_signed": preset("mamba2", d_model=4, d_state=8, headdim=2, eig_range=[-1, 1]),
    "mamba3_signed": preset("mamba3", d_model=4, d_state=8, headdim=2, eig_range=[-1, 1], dt_min=0.5, dt_max=5.0),
    "mamba3_mimo": preset("mamba3_mimo", d_model=4, d_state=8, headdim=4),
    "mamba3_mimo_signed": preset("mamba3_mimo", d_model=4, d_state=8, headdim=2, mimo_rank=2, eig_range=[-1, 1],
                                 dt_min=0.5, dt_max=5.0),
}
NOT_DUAL = {
    "complex_rotation": preset("mamba3", d_model=4, d_state=8, headdim=2, rotation_form="complex"),
    "signed_complex_rotation": preset("mamba3", d_model=4, d_state=8, headdim=2, rotation_form="complex",
                                      eig_range=[-1, 1]),
    "bilinear": preset("mamba2", d_model=4, d_state=8, headdim=2, discretization="bilinear"),
    "B_not_selective": preset("mamba2", d_model=4, d_state=8, headdim=2, selective="dt,C"),
    "A_per_state": preset("mamba", d_model=4, d_state=4, bc_norm=True),
    "mamba": preset("mamba", d_model=4, d_state=4),
}


@pytest.mark.parametrize("name", sorted(DUAL) + sorted(NOT_DUAL))
def test_mode_chunked_of_a_head_layer_runs_the_dual_form_where_it_applies(name: str, monkeypatch) -> None:
    cfg = {**DUAL, **NOT_DUAL}[name]
    cfg = cfg.with_(chunk_size=3 if cfg.mimo_rank == 1 else 6 * cfg.mimo_rank)  # chunks of 3 steps at any rank
    assert cfg.chunked_is_dual == (name in DUAL)
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(cfg).double(), scale=0.1)
    u = torch.randn(2, 8, cfg.d_model, dtype=torch.float64)
    layer.cfg.mode = "recurrent"
    with torch.no_grad():
        expected = layer(u)
    calls = []
    real = models.heads.chunked_dual
    monkeypatch.setattr(models.heads, "chunked_dual", lambda *a: calls.append(a[4:]) or real(*a))
    layer.cfg.mode = "chunked"
    with torch.no_grad():
        got = layer(u)
    assert len(calls) == (1 if name in DUAL else 0)
    if calls:
        chunk, flips = calls[0]
        assert chunk == 3
        if "signed" in name:  # the sign flips are passed, and both signs occur here
            assert 0 < flips.mean() < 1
    assert relative_error(got, expected) < 1e-12


def test_the_dual_forms_chunk_at_rank_r_holds_chunk_size_over_2r_steps() -> None:
    assert dual_chunk(preset("mamba3")) == 64 and dual_chunk(preset("mamba2", chunk_size=5)) == 5
    assert dual_chunk(preset("mamba3_mimo")) == 8 and dual_chunk(preset("mamba3_mimo", mimo_rank=2)) == 16
    assert dual_chunk(preset("mamba3_mimo", chunk_size=5)) == 1
    assert dual_chunk(preset("mamba3_mimo", chunk_size=None)) == 8  # the presets' 64 where none is set


@pytest.mark.parametrize("name, eig_range", [("mamba3", [0, 1]), ("mamba3", [-1, 1]), ("mamba3_mimo", [0, 1])])
def test_the_dual_form_in_float32_is_as_accurate_as_the_recurrence(name: str, eig_range: list) -> None:
    """Against the float64 recurrence at L = 1024 (16 chunks of 64; at rank 4, 128 of 8), strong
    and weak decays (with eigenvalues in [-1, 1] the longest steps make about half of the
    transitions negative)."""
    torch.manual_seed(0)
    for dt in ((1e-3, 1e-2), (0.1, 1.0), (0.5, 5.0)):
        cfg = preset(name, d_model=16, d_state=16, dt_min=dt[0], dt_max=dt[1], eig_range=eig_range)
        layer = SSMLayer(cfg)
        u = torch.randn(2, 1024, 16)
        reference = copy.deepcopy(layer).double()
        reference.cfg.mode = "recurrent"
        with torch.no_grad():
            y64 = reference(u.double())
            errors = {}
            for mode in ("recurrent", "chunked"):
                layer.cfg.mode = mode
                errors[mode] = relative_error(layer(u).double(), y64)
        assert errors["chunked"] < 2 * errors["recurrent"] + 1e-7, (dt, errors)
