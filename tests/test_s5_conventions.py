"""S5's conventions (lindermanlab/S5 ``s5/ssm.py``, ``s5/layers.py``): clip_eigs, step_rescale,
the tanh GELU and Re Λ stored directly (float64)."""

from __future__ import annotations

import math

import pytest
import torch

import models
from models import IOSpec, SSMConfig, SSMLayer, model_preset, preset, triton_scan
from models.official import s5_from_official

from helpers import randomize_, relative_error, stepped_outputs, valid_modes

H, P = 4, 8  # channels, states (P/2 stored with conjugate symmetry)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """flax's nn.gelu (approximate=True), written out."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def official_s5_layer(p: dict[str, torch.Tensor], u: torch.Tensor, clip_eigs: bool, step_rescale: float) -> torch.Tensor:
    """The official S5SSM (ZOH, conjugate symmetry) + SequenceLayer's half_glu1 with nn.gelu,
    from an official-layout parameter tree, as a plain loop. u: (B, L, H)."""
    re = p["Lambda_re"].clamp(max=-1e-4) if clip_eigs else p["Lambda_re"]
    Lambda = torch.complex(re, p["Lambda_im"])
    step = step_rescale * torch.exp(p["log_step"][:, 0])
    Lambda_bar = torch.exp(Lambda * step)
    B_tilde = torch.view_as_complex(p["B"])  # (P/2, H)
    C_tilde = torch.view_as_complex(p["C"])  # (H, P/2)
    B_bar = ((Lambda_bar - 1) / Lambda)[:, None] * B_tilde
    x = torch.zeros(u.shape[0], Lambda.shape[0], dtype=torch.complex128)
    ys = []
    for k in range(u.shape[1]):
        x = Lambda_bar * x + u[:, k].to(torch.complex128) @ B_bar.T
        ys.append(2 * (x @ C_tilde.T).real + p["D"] * u[:, k])
    g = gelu_tanh(torch.stack(ys, 1))
    return g * torch.sigmoid(g @ p["out2_kernel"] + p["out2_bias"])


def official_params(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small official-layout tree with entries of Re Λ on both sides of -1e-4 (and >= 0)."""
    g = torch.Generator().manual_seed(seed)
    n = P // 2
    return {"Lambda_re": torch.tensor([-0.5, 0.3, 0.0, -5e-5], dtype=torch.float64),
            "Lambda_im": torch.randn(n, generator=g, dtype=torch.float64),
            "B": torch.randn(n, H, 2, generator=g, dtype=torch.float64) / 2,
            "C": torch.randn(H, n, 2, generator=g, dtype=torch.float64) / 2,
            "D": torch.randn(H, generator=g, dtype=torch.float64),
            "log_step": torch.log(torch.tensor([[0.01], [0.05], [0.1], [0.03]], dtype=torch.float64)),
            "out2_kernel": torch.randn(H, H, generator=g, dtype=torch.float64) / 2,
            "out2_bias": torch.randn(H, generator=g, dtype=torch.float64)}


def ours_from_official(p: dict[str, torch.Tensor], **overrides) -> SSMLayer:
    """The official loader (models.official): A_real = Lambda_re (a_param='direct'), or, with
    a_param='log' under clip_eigs, A_log = log(max(-Lambda_re, 1e-4)) (the same function)."""
    tree = {k: v for k, v in p.items() if not k.startswith("out2_")}
    tree["out2"] = {"kernel": p["out2_kernel"], "bias": p["out2_bias"]}
    return s5_from_official(tree, activation="half_glu1", **overrides)


@pytest.mark.parametrize("a_param", ["direct", "log"])
@pytest.mark.parametrize("step_rescale", [1.0, 2.0])
def test_official_s5_with_clip_eigs_is_the_same_function(a_param: str, step_rescale: float) -> None:
    """Entries with Re Λ >= -1e-4 (0.3, 0, -5e-5) included, in every mode and in step()."""
    p = official_params()
    u = torch.randn(2, 9, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = official_s5_layer(p, u, clip_eigs=True, step_rescale=step_rescale)
    layer = ours_from_official(p, clip_eigs=True, step_rescale=step_rescale, a_param=a_param)
    for mode in valid_modes(layer.cfg):
        layer.cfg.mode = mode
        assert relative_error(layer(u), expected) < 1e-12, mode
    assert relative_error(stepped_outputs(layer, u), expected) < 1e-12


def test_without_clip_eigs_direct_storage_keeps_unstable_entries() -> None:
    """Without clip_eigs an official Re Λ >= 0 is kept as it is (only a_param='direct' can hold it)."""
    p = official_params()
    u = torch.randn(2, 9, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = official_s5_layer(p, u, clip_eigs=False, step_rescale=1.0)
    layer = ours_from_official(p)
    assert layer.cfg.a_param == "direct" and not layer.cfg.clip_eigs
    assert relative_error(layer(u), expected) < 1e-12


def test_clipped_entries_get_no_gradient() -> None:
    """As in the official code (a_param='direct'). With a_param='log' an official clipped entry can
    only be mapped onto the bound itself, where it is not clipped: same function, but a gradient."""
    layer = ours_from_official(official_params(), clip_eigs=True)
    u = torch.randn(2, 9, H, dtype=torch.float64)
    layer(u).square().sum().backward()
    grad = layer.A_real.grad[0]
    assert torch.all(grad[1:] == 0) and grad[0] != 0  # Re Λ = -0.5 moves; 0.3, 0, -5e-5 are clipped
    assert torch.equal(layer.A_real[0], official_params()["Lambda_re"])  # stored values kept


def zoh_held_pairs(cfg: SSMConfig, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer on a coarse signal with step_rescale=2 and on the same signal at twice the rate
    (each coarse sample held over two fine steps) with step_rescale=1, at the shared times."""
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(cfg.with_(mode=mode)).double(), scale=0.1)
    coarse = torch.randn(2, 12, cfg.d_model, dtype=torch.float64)
    fine = coarse.repeat_interleave(2, dim=1)
    y_fine = layer(fine)[:, 1::2]  # fine step 2k+1 ends the hold of coarse sample k
    layer.set_step_rescale(2.0)
    return layer(coarse), y_fine, layer, coarse


RESOLUTION_POINTS = {"s5": preset("s5", d_model=H, d_state=P, blocks=2),
                     "s5_clip_eigs": preset("s5", d_model=H, d_state=P, clip_eigs=True),
                     "s4d": preset("s4d", d_model=H, d_state=P)}


@pytest.mark.parametrize("name", sorted(RESOLUTION_POINTS))
def test_step_rescale_two_at_half_the_sampling_rate(name: str) -> None:
    """Change of resolution (S5 §6.3, its zero-shot 8 kHz Speech Commands): ZOH is exact for an
    input held constant over each step, so two fine steps of Δ with the same input are one step
    of 2Δ: exp(2AΔ) = exp(AΔ)², (exp(2AΔ) - 1)/A = (exp(AΔ) + 1)(exp(AΔ) - 1)/A. The outputs
    at the shared times then agree to float64 rounding (1e-12), in every mode and in step()."""
    cfg = RESOLUTION_POINTS[name]
    for mode in valid_modes(cfg):
        y_coarse, y_fine, layer, coarse = zoh_held_pairs(cfg, mode)
        assert relative_error(y_coarse, y_fine) < 1e-12, mode
    assert relative_error(stepped_outputs(layer, coarse), y_fine) < 1e-12
    layer.set_step_rescale(1.0)
    assert relative_error(layer(coarse), y_coarse) > 1e-3  # the rescale is what makes them agree


def test_step_rescale_on_a_smooth_signal_is_approximate() -> None:
    """A smooth input sampled at half the rate (not held): the outputs agree to the order of the
    change of the input over one fine step: 6e-3 of the output here, 0.26 without the rescale
    (ZOH holds each coarse sample over 2Δ where the fine grid sees the signal move)."""
    torch.manual_seed(0)
    layer = SSMLayer(preset("s5", d_model=H, d_state=P)).double()
    t = torch.arange(0, 400, dtype=torch.float64)
    fine = torch.stack([torch.sin(2 * math.pi * (k + 1) * t / 400) for k in range(H)], -1)[None]
    y_fine = layer(fine)[:, ::2]
    layer.set_step_rescale(2.0)
    assert relative_error(layer(fine[:, ::2]), y_fine) < 2e-2
    layer.set_step_rescale(1.0)
    assert relative_error(layer(fine[:, ::2]), y_fine) > 0.1


def test_backbone_set_step_rescale_sets_every_layer() -> None:
    cfg = model_preset("s5", n_layers=2, d_model=H, d_state=P)
    spec = IOSpec(d_input=3, d_output=2)
    torch.manual_seed(0)
    model = models.build(cfg, spec).double()
    torch.manual_seed(0)
    rescaled = models.build(model_preset("s5", n_layers=2, d_model=H, d_state=P, step_rescale=2.0), spec).double()
    u = torch.randn(2, 7, 3, dtype=torch.float64)
    model.set_step_rescale(2.0)
    assert all(block.mixer.cfg.step_rescale == 2.0 for block in model.blocks) and model.cfg.ssm.step_rescale == 2.0
    torch.testing.assert_close(model(u), rescaled(u), rtol=0, atol=0)
    with pytest.raises(ValueError, match="step_rescale=0"):
        model.set_step_rescale(0)


def test_gelu_tanh_is_flax_default_and_per_preset() -> None:
    assert preset("s5").gelu == "tanh" and preset("s4d").gelu == "exact" and preset("mamba").gelu == "exact"
    torch.manual_seed(0)
    layer = SSMLayer(preset("s5", d_model=H, d_state=P, gate="none")).double()
    u = torch.randn(2, 5, H, dtype=torch.float64)
    layer.cfg.gelu = "exact"
    y = layer._mix(u, "recurrent")
    torch.testing.assert_close(layer._output(y, None), torch.nn.functional.gelu(y), rtol=0, atol=0)
    layer.cfg.gelu = "tanh"
    torch.testing.assert_close(layer._output(y, None), gelu_tanh(y), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("overrides,message", [
    ({"gelu": "erf"}, "gelu='erf' is not valid; expected one of ['exact', 'tanh']"),
    ({"a_param": "linear"}, "a_param='linear' is not valid; expected one of ['log', 'direct']"),
    ({"clip_eigs": "yes"}, "clip_eigs='yes' is not valid; expected true or false"),
    ({"step_rescale": 0}, "step_rescale=0 is not valid; expected a number > 0"),
    ({"step_rescale": True}, "step_rescale=True is not valid; expected a number > 0"),
    ({"step_rescale": 2.0, "selective": "dt"}, "step_rescale=2.0 is not valid with selective=['dt']"),
])
def test_bad_values_fail_with_one_line(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        preset("s5", **overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name,overrides,message", [
    ("mamba2", {"a_param": "direct"}, "a_param='direct' is not valid with headdim="),
    ("mamba3", {"clip_eigs": True}, "clip_eigs=True is not valid with headdim="),
])
def test_conventions_refused_where_they_do_nothing(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        preset(name, **overrides)


def test_gelu_is_unused_by_gates_without_one() -> None:
    """Like c_init or blocks: an s5 preset moved to gate=silu validates and has no GELU."""
    torch.manual_seed(0)
    tanh = SSMLayer(preset("s5", d_model=H, d_state=P, gate="silu", expand=1)).double()
    exact = SSMLayer(tanh.cfg.with_(gelu="exact")).double()
    exact.load_state_dict(tanh.state_dict())
    u = torch.randn(2, 5, H, dtype=torch.float64)
    torch.testing.assert_close(tanh(u), exact(u), rtol=0, atol=0)


def test_identity_keeps_earlier_run_ids() -> None:
    """At their defaults the new fields are not part of a run's identity; S5's official values are."""
    ident = preset("s4d").identity()
    assert not {"gelu", "a_param", "clip_eigs", "step_rescale"} & set(ident)
    s5 = preset("s5", clip_eigs=True, step_rescale=2).identity()
    assert (s5["gelu"], s5["a_param"], s5["clip_eigs"], s5["step_rescale"]) == ("tanh", "direct", True, 2.0)
    assert "gelu" not in preset("s5", gelu="exact", a_param="log").identity()


@pytest.mark.skipif(not triton_scan.runs_on("cpu"), reason="the Triton kernels need TRITON_INTERPRET=1 on a CPU")
def test_triton_mode_rescales_and_clips() -> None:
    p = official_params()
    u = torch.randn(2, 9, H, dtype=torch.float64)
    layer = ours_from_official(p, clip_eigs=True, step_rescale=2.0, mode="triton").float()
    expected = official_s5_layer(p, u, clip_eigs=True, step_rescale=2.0)
    assert relative_error(layer(u.float()).double(), expected) < 1e-5
