"""The Mamba-2 / Mamba-3 axes and the eigenvalue range: every CPU mode equals the recurrence,
step() equals forward(), the stated identities hold (λ = 1 is Euler, the two rotation forms
agree, rank 1 is SISO), a loop written from the papers' equations agrees, and conflicts are
refused in one line."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from models import SSMConfig, SSMLayer, preset
from models.discretize import discretize, log_transition, signed_transition
from models.peers import mamba3_from_official

from helpers import (assert_same_function, mamba3_class, outputs_and_grads, randomize_, relative_error,
                     stepped_outputs, valid_modes)

SMALL = dict(d_model=4, d_state=8)
CONFIGS = {
    "mamba2": preset("mamba2", headdim=2, **SMALL),
    "mamba2_groups": preset("mamba2", headdim=2, ngroups=2, **SMALL),
    "mamba3": preset("mamba3", headdim=2, **SMALL),
    "mamba3_mimo": preset("mamba3_mimo", headdim=4, **SMALL),
    "mamba3_with_conv": preset("mamba3", headdim=2, conv=4, **SMALL),  # B_t, C_t through the conv too (from u)
    # steps long enough that 2α_t - 1 takes both signs (the dual form's sign flips)
    "mamba3_signed": preset("mamba3", headdim=2, eig_range=[-1, 1], dt_min=0.5, dt_max=5.0, **SMALL),
    "mamba3_complex_form_signed": preset("mamba3", headdim=2, rope_fraction=1.0, rotation_form="complex",
                                         eig_range=[-1, 1], **SMALL),
    "heads_lti_s4d": preset("s4d", headdim=2, **SMALL),
    "fixed_rotation_lti": preset("mamba3", headdim=2, selective="B,C", a_source="learned", rotation="fixed",
                                 trapezoid=0.5, **SMALL),
    "data_A_complex_heads": preset("mamba", complex=True, init="s4d_lin", discretization="zoh", headdim=2,
                                   a_source="data", **SMALL),
    "trapezoidal_s5": preset("s5", discretization="trapezoidal", **SMALL),
    "trapezoidal_s4d_fixed": preset("s4d", discretization="trapezoidal", trapezoid=0.5, **SMALL),
    "signed_mamba": preset("mamba", eig_range=[-1, 1], **SMALL),
    "signed_s4d_bilinear": preset("s4d", eig_range=[-1, 1], discretization="bilinear", **SMALL),
}
# Ā_t the same at every step (Δ and A not input-dependent): the configs the FFT computes; the
# fused Triton kernels cover none of these axes
TIME_INVARIANT = {"fixed_rotation_lti", "heads_lti_s4d", "signed_s4d_bilinear", "trapezoidal_s4d_fixed", "trapezoidal_s5"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_mode_equals_recurrent(name: str) -> None:
    cfg = CONFIGS[name].with_(chunk_size=5)
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(cfg).double(), scale=0.1)
    u = torch.randn(2, 19, cfg.d_model, dtype=torch.float64)
    y_ref, g_ref = outputs_and_grads(layer, u, "recurrent")
    modes = valid_modes(cfg)[1:]
    assert cfg.supports_fft == (name in TIME_INVARIANT) and not cfg.supports_triton, name
    for mode in modes:
        y, grads = outputs_and_grads(layer, u, mode)
        assert relative_error(y, y_ref) < 1e-10, (name, mode)
        for (pname, _), g, gr in zip([("input", None), *layer.named_parameters()], grads, g_ref):
            assert relative_error(g, gr) < 1e-10 if gr.abs().max() > 0 else g.abs().max() == 0, (name, mode, pname)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make gpu-check)")
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_on_a_gpu_scan_and_auto_equal_recurrent_on_the_cpu(name: str) -> None:
    """Each point of the new axes runs on a GPU: ``scan``, ``chunked`` (the dual form where it
    applies) and the mode ``auto`` picks there, on a CUDA copy of the layer equal the CPU
    recurrence (float64, output and every gradient)."""
    cfg = CONFIGS[name].with_(chunk_size=5)
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(cfg).double(), scale=0.1)
    u = torch.randn(2, 19, cfg.d_model, dtype=torch.float64)
    y_ref, g_ref = outputs_and_grads(layer, u, "recurrent")
    gpu_layer = copy.deepcopy(layer).cuda()
    for mode in ("scan", "chunked", "auto"):
        y, grads = outputs_and_grads(gpu_layer, u.cuda(), mode)
        assert relative_error(y.cpu(), y_ref) < 1e-10, (name, mode, gpu_layer.resolve_mode(u.cuda().device))
        for (pname, _), g, gr in zip([("input", None), *layer.named_parameters()], grads, g_ref):
            g = g.cpu()
            assert relative_error(g, gr) < 1e-10 if gr.abs().max() > 0 else g.abs().max() == 0, (name, mode, pname)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_step_equals_forward(name: str) -> None:
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(CONFIGS[name]), scale=0.1)
    u = torch.randn(3, 13, CONFIGS[name].d_model)
    with torch.no_grad():
        y = layer(u)
    torch.testing.assert_close(stepped_outputs(layer, u), y, rtol=1e-5, atol=1e-5)


def same_weights(cfg: SSMConfig, source: SSMLayer) -> SSMLayer:
    layer = SSMLayer(cfg).double()
    layer.load_state_dict(source.state_dict())
    return layer


@pytest.mark.parametrize("base", [preset("mamba", d_model=4, d_state=4), preset("mamba2", headdim=2, **SMALL),
                                  preset("s5", d_model=4, d_state=4, discretization="zoh_euler")])
def test_trapezoid_with_lambda_one_is_exponential_euler(base: SSMConfig) -> None:
    torch.manual_seed(1)
    euler = randomize_(SSMLayer(base).double())
    trapezoid = same_weights(base.with_(discretization="trapezoidal", trapezoid=1.0), euler)
    u = torch.randn(2, 11, base.d_model, dtype=torch.float64)
    assert relative_error(trapezoid(u), euler(u)) < 1e-14
    half = same_weights(base.with_(discretization="trapezoidal", trapezoid=0.5), euler)
    assert relative_error(half(u), euler(u)) > 1e-6  # λ moves the output (by O(Δ)): the check can fail


@pytest.mark.parametrize("rope_fraction", [0.5, 1.0])
@pytest.mark.parametrize("rotation", ["data", "fixed"])
def test_rotating_b_and_c_equals_the_complex_recurrence(rope_fraction: float, rotation: str) -> None:
    cfg = preset("mamba3_mimo", d_model=4, d_state=8, headdim=2, mimo_rank=2, rope_fraction=rope_fraction,
                 rotation=rotation, eig_range=[-1, 1])
    torch.manual_seed(2)
    rotated = randomize_(SSMLayer(cfg).double(), scale=0.3)
    complex_form = same_weights(cfg.with_(rotation_form="complex"), rotated)
    assert complex_form.heads.state_dtype() == torch.complex128 and rotated.heads.state_dtype() == torch.float64
    u = torch.randn(2, 17, 4, dtype=torch.float64)
    y_real, g_real = outputs_and_grads(rotated, u, "scan")
    y_complex, g_complex = outputs_and_grads(complex_form, u, "scan")
    assert relative_error(y_complex, y_real) < 1e-12
    for a, b in zip(g_complex, g_real):
        assert relative_error(a, b) < 1e-10
    if rotation == "data":  # θ_t = 0 (rows of the angle projection zeroed) gives another function
        unrotated = same_weights(cfg, rotated)
        with torch.no_grad():
            unrotated.heads.x_proj.weight[-unrotated.heads.widths["theta"]:] = 0
        assert relative_error(unrotated(u), y_real) > 1e-3


def test_signed_transition_keeps_the_unit_disc_and_the_angle() -> None:
    """A negative real Ā (bilinear at ΔA < -2) maps as the complex Ā of the same value, into
    [-1, 1]; a complex Ā that underflowed to 0 gets the limit -e^{i Im ΔA}, not NaN."""
    f64 = torch.float64
    A_bar, _ = discretize("bilinear", torch.tensor([-1.0, -0.5, -64.0], dtype=f64), torch.tensor(10.0, dtype=f64))
    assert (A_bar < 0).any()
    real = signed_transition(A_bar)
    as_complex = signed_transition(A_bar.to(torch.complex128))
    assert real.abs().max() <= 1 and relative_error(as_complex, real.to(torch.complex128)) < 1e-15
    A, delta = torch.tensor([complex(-16.0, 3.0)], dtype=torch.complex128), torch.tensor(100.0, dtype=f64)
    A_bar, _ = discretize("zoh", A, delta)
    assert A_bar.abs().item() == 0  # exp(-1600) underflows
    signed = signed_transition(A_bar, log_transition("zoh", A, delta, A_bar))
    assert relative_error(signed, -torch.exp(1j * delta * A.imag)) < 1e-12


def test_rotation_forms_agree_where_the_transition_underflows() -> None:
    """eig_range [-1, 1] at a step so large that α_t = exp(Δ_t A_t) underflows to 0: the
    complex form's transition is still -e^{iω_t} (its angle from log α_t), as the rotated B_t,
    C_t with the real transition -1 give."""
    cfg = preset("mamba3", d_model=4, d_state=8, headdim=2, rope_fraction=1.0, eig_range=[-1, 1])
    torch.manual_seed(4)
    rotated = randomize_(SSMLayer(cfg).double(), scale=0.3)
    with torch.no_grad():
        rotated.heads.dt_bias.fill_(5000.0)
    complex_form = same_weights(cfg.with_(rotation_form="complex"), rotated)
    u = torch.randn(2, 9, 4, dtype=torch.float64)
    y_complex = complex_form(u)
    assert torch.isfinite(y_complex).all()
    assert relative_error(y_complex, rotated(u)) < 1e-10  # angles of ~1e3 rad: sin, cos to ~1e-13


def test_rank_one_is_the_siso_point() -> None:
    """A rank-2 layer whose second rank is switched off (no input, no output) and whose lift
    vectors are 1 computes the SISO layer with the first rank's weights."""
    siso_cfg = preset("mamba3", d_model=4, d_state=8, headdim=2)
    torch.manual_seed(3)
    siso = randomize_(SSMLayer(siso_cfg).double())
    mimo = SSMLayer(siso_cfg.with_(mimo_rank=2)).double()
    source, target = siso.state_dict(), mimo.state_dict()
    N, g = siso_cfg.d_state, siso_cfg.ngroups
    widths = siso.heads.widths
    with torch.no_grad():
        for name, value in source.items():
            if name == "heads.x_proj.weight":
                rows = list(value.split(list(widths.values())))
                for index, key in enumerate(widths):
                    if key in ("B", "C"):  # (g·1·N) rows -> (g·2·N): rank 0 as given, rank 1 arbitrary
                        rows[index] = torch.cat([rows[index].view(g, 1, N, -1),
                                                 torch.randn(g, 1, N, value.shape[1], dtype=value.dtype)], 1).flatten(0, 2)
                target[name] = torch.cat(rows)
            elif name in ("heads.B_bias", "heads.C_bias"):
                target[name] = torch.cat([value, torch.randn_like(value)], 1)
            else:
                target[name] = value
        target["heads.mimo_x"] = torch.tensor([[1.0], [0.0]], dtype=torch.float64).expand(2, 8).clone()
        target["heads.mimo_o"] = target["heads.mimo_x"].clone()
        target["heads.mimo_z"] = torch.ones(2, 8, dtype=torch.float64) + torch.tensor([[0.0], [5.0]], dtype=torch.float64)
    mimo.load_state_dict(target)
    u = torch.randn(2, 9, 4, dtype=torch.float64)
    assert relative_error(mimo(u), siso(u)) < 1e-14


def official_state(cfg: SSMConfig, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """Random parameters in the layout of mamba-ssm's ``Mamba3`` (SISO: checked against the
    class itself where it imports; MIMO, whose class needs TileLang: the same names and shapes)."""
    H, D, E, P, N = cfg.d_model, cfg.d_inner, cfg.n_heads, cfg.headdim, cfg.d_state
    R, g, M = cfg.mimo_rank, cfg.ngroups, cfg.rotated_pairs
    shapes = {"dt_bias": (E,), "B_bias": (E, R, N), "C_bias": (E, R, N), "D": (E,),
              "in_proj.weight": (2 * D + 2 * g * R * N + 3 * E + M, H), "B_norm.weight": (N,),
              "C_norm.weight": (N,), "out_proj.weight": (H, D)}
    if R > 1:
        shapes.update({name: (E, R, P) for name in ("mimo_x", "mimo_z", "mimo_o")})
    elif mamba3_class() is not None:
        official = mamba3_class()(d_model=H, d_state=N, expand=cfg.expand, headdim=P, ngroups=g,
                                  rope_fraction=cfg.rope_fraction, A_floor=cfg.a_floor)
        assert {k: tuple(v.shape) for k, v in official.state_dict().items()} == shapes
    generator = torch.Generator().manual_seed(seed)
    around_one = ("dt_bias", "B_bias", "C_bias", "D", "B_norm.weight", "C_norm.weight", "mimo_x", "mimo_z", "mimo_o")
    return {k: (0.5 * torch.randn(shape, generator=generator, dtype=torch.float64) + (k in around_one))
            .to(dtype).requires_grad_() for k, shape in shapes.items()}


def official_mamba3(state: dict[str, torch.Tensor], cfg: SSMConfig, u: torch.Tensor) -> torch.Tensor:
    """``Mamba3.forward`` (mamba-ssm 2.3.2, is_outproj_norm False) with its fused kernel replaced
    by the recurrence it computes, one token at a time, derived from ``modules/mamba3.py`` and
    the paper's equations: its MIMO path is TileLang, which does not run on a CPU (the SISO
    path's Triton kernels do run in the interpreter, with stand-ins: tests/test_mamba3_official.py
    compares against them), and this loop covers both, in float64. Per head an (N × P) state;
    SISO rotates adjacent pairs of B, C, MIMO pairs i with i + N/2 (its kernel's layout);
    eig_range [-1, 1] maps α to 2α - 1 (Grazzi et al.; not part of Mamba3)."""
    D, E, P, N = cfg.d_inner, cfg.n_heads, cfg.headdim, cfg.d_state
    R, g, M = cfg.mimo_rank, cfg.ngroups, cfg.rotated_pairs
    batch, L, _ = u.shape
    z, x, B, C, dd_dt, dd_A, trap, angles = (u @ state["in_proj.weight"].T).split(
        [D, D, g * R * N, g * R * N, E, E, E, M], dim=-1)

    def vectors(v, norm, bias):  # (B, L, E, R, N): RMSNorm over N, the heads of each group, + bias
        v = v.view(batch, L, R, g, N)
        v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * norm
        return v.transpose(2, 3).repeat_interleave(E // g, dim=2) + bias

    def rotate(v, angle):  # v (B, E, R, N), angle (B, E, M)
        a, b = (v[..., 0::2], v[..., 1::2]) if R == 1 else (v[..., :N // 2], v[..., N // 2:])
        c, s = torch.cos(angle).unsqueeze(2), torch.sin(angle).unsqueeze(2)
        a, b = (torch.cat([a[..., :M] * c - b[..., :M] * s, a[..., M:]], -1),
                torch.cat([a[..., :M] * s + b[..., :M] * c, b[..., M:]], -1))
        return torch.stack([a, b], -1).flatten(-2) if R == 1 else torch.cat([a, b], -1)

    Bs, Cs = vectors(B, state["B_norm.weight"], state["B_bias"]), vectors(C, state["C_norm.weight"], state["C_bias"])
    dt = F.softplus(dd_dt + state["dt_bias"])
    A = torch.clamp(-F.softplus(dd_A), max=-cfg.a_floor)
    lam, theta = torch.sigmoid(trap), torch.tanh(angles) * math.pi

    def lift(t, name):  # (B, L, R, E, P)
        t = t.view(batch, L, 1, E, P)
        return t * state[name].transpose(0, 1) if R > 1 else t

    xr, zr = lift(x, "mimo_x"), lift(z, "mimo_z")
    h = torch.zeros(batch, E, N, P, dtype=u.dtype)
    angle = torch.zeros(batch, E, M, dtype=u.dtype)
    k_prev, v_prev = torch.zeros(batch, E, R, N, dtype=u.dtype), torch.zeros(batch, R, E, P, dtype=u.dtype)
    out = []
    for t in range(L):
        angle = angle + dt[:, t, :, None] * theta[:, t, None, :]
        k, q = rotate(Bs[:, t], angle), rotate(Cs[:, t], angle)
        alpha = torch.exp(dt[:, t] * A[:, t])
        alpha = 2 * alpha - 1 if cfg.eig_range == (-1, 1) else alpha
        beta, gamma = (1 - lam[:, t]) * dt[:, t] * alpha, lam[:, t] * dt[:, t]
        v = xr[:, t]
        h = (alpha[..., None, None] * h + beta[..., None, None] * torch.einsum("berN,breP->beNP", k_prev, v_prev)
             + gamma[..., None, None] * torch.einsum("berN,breP->beNP", k, v))
        y = (torch.einsum("beNP,berN->breP", h, q) + state["D"].view(1, 1, E, 1) * v) * F.silu(zr[:, t])
        y = (y * state["mimo_o"].transpose(0, 1)).sum(1) if R > 1 else y[:, 0]
        out.append(y.reshape(batch, D))
        k_prev, v_prev = k, v
    return torch.stack(out, 1) @ state["out_proj.weight"].T


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("overrides", [dict(), dict(ngroups=2, rope_fraction=1.0), dict(mimo_rank=2),
                                       dict(mimo_rank=2, eig_range=[-1, 1])])
def test_mamba3_with_official_parameters_equals_mamba3(overrides: dict, dtype: torch.dtype, tolerance: float) -> None:
    """Our mamba3 preset loaded from Mamba3's parameters (models.peers.mamba3_from_official)
    computes Mamba3's function: the output and the gradients of the input and of every
    official parameter."""
    cfg = preset("mamba3", d_model=4, d_state=8, headdim=2, **overrides)
    state = official_state(cfg, dtype, seed=5)
    layer = SSMLayer(cfg).to(dtype)
    u = torch.randn(2, 12, 4, dtype=torch.float64).to(dtype).requires_grad_()
    weights = torch.randn(2, 12, 4, dtype=torch.float64).to(dtype)
    expected = official_mamba3(state, cfg, u)
    ours = torch.func.functional_call(layer, mamba3_from_official(state, cfg), (u,))
    assert_same_function(ours, expected, {"u": u, **state}, tolerance, weights)


def test_signed_eigenvalues_flip_the_state_s_sign() -> None:
    """With eig_range [-1, 1] and a step so large that Ā ≈ 0, the transition is ≈ -1: an
    impulse's response alternates in sign (it cannot with eig_range [0, 1])."""
    cfg = preset("s4d", d_model=1, d_state=1, complex=False, init="s4d_real", gate="none", skip_init="zeros",
                 dt_min=50.0, dt_max=50.0)
    u = torch.zeros(1, 6, 1, dtype=torch.float64)
    u[0, 0, 0] = 1.0
    for eig_range, alternates in (([0, 1], False), ([-1, 1], True)):
        layer = SSMLayer(cfg.with_(eig_range=eig_range)).double()
        with torch.no_grad():
            layer.C.fill_(1.0)
            signs = torch.sign(layer(u)[0, :, 0])
        flips = (signs[1:] * signs[:-1] < 0).all().item()
        assert flips == alternates, (eig_range, signs)


@pytest.mark.parametrize("overrides, message", [
    (dict(rotation="data", complex=True, init="s4d_lin"), "rotation='data' is not valid with complex=True"),
    (dict(mimo_rank=2, selective="dt,B"), "mimo_rank=2 is not valid with selective=['dt', 'B']"),
    (dict(headdim=3), "headdim=3 is not valid; it must divide the 8 SSM channels"),
    (dict(headdim=2, structure="mimo"), "headdim=2 is not valid with structure='mimo'"),
    (dict(ngroups=2), "ngroups=2 is not valid; it needs headdim set"),
    (dict(trapezoid=0.5), "trapezoid=0.5 is not valid with discretization='zoh_euler'"),
    (dict(trapezoid=1.5, discretization="trapezoidal"), "trapezoid=1.5 is not valid; expected 'data' or a number"),
    (dict(eig_range=[-2, 1]), "eig_range=[-2, 1] is not valid; expected one of [[0, 1], [-1, 1]]"),
    (dict(headdim=2, mode="triton"), "mode='triton' is not valid with headdim=2"),
    (dict(a_source="data", selective="B,C", mode="fft"), "mode='fft' is not valid with selective=['B', 'C'], "
                                                         "a_source='data'"),
    (dict(discretization="trapezoidal", mode="cuda"), "mode='cuda' (mamba-ssm's selective_scan_fn) is only valid"),
    (dict(rotation="data", d_state=2, rope_fraction=0.5, headdim=2), "d_state=2 is not valid with rotation='data'"),
    (dict(rotation="data"), "rotation='data' is not valid with a learned A per (channel, state)"),
    (dict(a_source="sometimes"), "a_source='sometimes' is not valid; expected one of ['learned', 'data']"),
    (dict(project_from="v"), "project_from='v' is not valid; expected one of ['x', 'u']"),
    (dict(skip_per="state"), "skip_per='state' is not valid; expected one of ['channel', 'head']"),
    (dict(gate_norm="yes"), "gate_norm='yes' is not valid; expected true or false"),
    (dict(gate="glu", gate_norm=True), "gate_norm=True is not valid with gate='glu'"),
    (dict(skip_per="head"), "skip_per='head' is not valid with headdim=None"),
    (dict(project_from="u", dt_rank=2), "dt_rank=2 is not valid with project_from='u'"),
    (dict(project_from="u", selective="none"), "project_from='u' is not valid with selective=[]"),
    (dict(project_from="u", structure="mimo"), "project_from='u' is not valid with structure='mimo'"),
    (dict(bidirectional=True, selective="C"), "bidirectional=True is not valid with a selective C in a SISO layer"),
])
def test_conflicts_are_refused_in_one_line(overrides: dict, message: str) -> None:
    base = dict(d_model=4, d_state=8)
    with pytest.raises(ValueError) as err:
        preset("mamba", **{**base, **overrides})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_identity_of_a_point_off_the_new_axes_is_unchanged() -> None:
    """Run ids hash SSMConfig.identity(): the new fields appear only when moved."""
    old = preset("s4d").identity()
    assert not {"headdim", "eig_range", "mimo_rank", "rotation", "project_from", "gate_norm", "skip_per"} & set(old)
    moved = preset("s4d", eig_range=[-1, 1], headdim=4).identity()
    assert moved["eig_range"] == [-1, 1] and moved["headdim"] == 4


def ssd_minimal():
    """mamba-ssm's pure-PyTorch SSD reference (``modules/ssd_minimal.py``), or None."""
    if mamba3_class() is None:  # installs the stand-in module mamba-ssm's import needs
        return None
    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete
    return ssd_minimal_discrete


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="mamba-ssm is not installed")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_heads_equal_mamba_ssm_ssd_reference(ngroups: int, dtype: torch.dtype, tolerance: float) -> None:
    """The mamba2 preset's SSM (scalar A per head, Δ per head, B_t and C_t shared by groups of
    heads), here projecting from x, against mamba-ssm's ssd_minimal_discrete fed the same x, Δ,
    A, B, C: the output and the gradients of the input and of every parameter, in scan and
    chunked modes (the whole block: tests/test_mamba_parity.py)."""
    cfg = preset("mamba2", d_model=8, d_state=4, headdim=4, ngroups=ngroups, project_from="x", skip_per="channel")
    E, P, N, g = cfg.n_heads, cfg.headdim, cfg.d_state, cfg.ngroups
    torch.manual_seed(6)
    heads = randomize_(SSMLayer(cfg), scale=0.2).to(dtype).heads
    x = torch.randn(2, 16, cfg.d_inner, dtype=torch.float64).to(dtype).requires_grad_()
    weights = torch.randn(2, 16, cfg.d_inner, dtype=torch.float64).to(dtype)
    parts = dict(zip(heads.widths, heads.x_proj(x).split(list(heads.widths.values()), dim=-1)))
    delta = F.softplus(heads.dt_proj(parts["dt"]))                               # (B, L, E)
    A = -torch.exp(heads.A_log[:, 0])                                            # (E,)
    B_t, C_t = (parts[k].view(2, 16, g, N).repeat_interleave(E // g, dim=2) for k in ("B", "C"))
    X = (x.view(2, 16, E, P) * delta.unsqueeze(-1))
    expected, _ = ssd_minimal()(X, A * delta, B_t, C_t, block_len=4)
    expected = expected.reshape(2, 16, -1)
    inputs = [x, *heads.parameters()]
    g_expected = torch.autograd.grad((expected * weights).sum(), inputs, allow_unused=True)
    for mode in ("scan", "chunked"):
        y, _ = heads(x, mode)
        ours = y - heads.D * x
        assert relative_error(ours, expected) < tolerance, mode
        g_ours = torch.autograd.grad((ours * weights).sum(), inputs, allow_unused=True)
        for (name, _), a, b in zip([("x", None), *heads.named_parameters()], g_ours, g_expected):
            if name == "D":
                continue
            assert relative_error(a, b) < tolerance, (mode, name)


def test_fixed_rotation_frequencies_in_the_model_dtype() -> None:
    """A float64 layer rotates by 10000^(-j/M) in float64, not by float32-rounded frequencies
    (whose angle error grows as t · 1e-9)."""
    layer = SSMLayer(preset("mamba3", d_model=4, d_state=16, rotation="fixed", a_source="learned")).double()
    x = torch.zeros(1, 1, 4, dtype=torch.float64)
    M = layer.heads.M
    exact = 10000.0 ** (-torch.arange(M, dtype=torch.float64) / M)
    assert M > 1 and torch.equal(layer.heads.rope_frequencies(x), exact)
    assert layer.heads.rope_frequencies(x.float()).dtype == torch.float32
