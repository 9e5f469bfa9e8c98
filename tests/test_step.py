"""Token-by-token step() equals forward() (float32, tolerance 1e-5)."""

from __future__ import annotations

import pytest
import torch

import models
from models import IOSpec, SSMLayer, model_preset, preset

from helpers import randomize_, stepped_outputs, triton_device

LAYERS = {
    "s5": preset("s5", d_model=8, d_state=8),
    "s5_clip_eigs_rescaled": preset("s5", d_model=8, d_state=8, clip_eigs=True, step_rescale=2.0),
    "s4d": preset("s4d", d_model=8, d_state=8),
    "s4d_rescaled": preset("s4d", d_model=8, d_state=8, step_rescale=0.5),
    "mamba": preset("mamba", d_model=8, d_state=4),
    "mamba2_block": preset("mamba2", d_model=8, d_state=4, headdim=4, ngroups=2),
    "project_from_u_mamba1": preset("mamba", d_model=8, d_state=4, project_from="u", gate_norm=True),
    "gate_norm_mamba1": preset("mamba", d_model=8, d_state=4, gate_norm=True),
    "selective_mimo": preset("s5", d_model=8, d_state=8, selective="dt,B,C"),
    "gated_mimo": preset("s5", d_model=8, d_state=8, gate="silu", expand=1, conv=4),
    "h3_gated_selective": preset("mamba", d_model=8, d_state=4, gate="h3"),
    "bilinear_real": preset("s4d", d_model=8, d_state=4, complex=False, init="s4d_real", discretization="bilinear"),
}


TRITON_DEVICE = triton_device()  # the interpreter on the CPU without a GPU (conftest.py), else natively on CUDA
TRITON = ["triton"] if TRITON_DEVICE else []


@pytest.mark.parametrize("name, mode", [(name, mode) for name in sorted(LAYERS) for mode in ["auto", *TRITON]
                                        if mode != "triton" or LAYERS[name].supports_triton])
def test_layer_step_equals_forward(name: str, mode: str) -> None:
    """mode triton (the points it covers): forward() by the fused scan, step() by the fused
    single-step kernel (SISO)."""
    torch.manual_seed(0)
    device = TRITON_DEVICE if mode == "triton" else "cpu"
    layer = randomize_(SSMLayer(LAYERS[name].with_(mode=mode)), scale=0.1).to(device)
    u = torch.randn(3, 17, 8).to(device)
    with torch.no_grad():
        y = layer(u)
    torch.testing.assert_close(stepped_outputs(layer, u), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["s5", "s4d", "mamba"])
@pytest.mark.parametrize("readout", ["last", "mean", "all"])
def test_backbone_step_equals_forward(name: str, readout: str) -> None:
    torch.manual_seed(0)
    cfg = model_preset(name, n_layers=2, d_model=8, d_state=8, ffn_expand=2)
    model = models.build(cfg, IOSpec(vocab_size=11, d_output=5, readout=readout)).eval()
    x = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        y = model(x)
        state = model.init_state(2)
        outs = []
        for t in range(x.shape[1]):
            out, state = model.step(x[:, t], state)
            outs.append(out)
    expected = y[:, -1] if readout == "all" else y
    torch.testing.assert_close(outs[-1], expected, rtol=1e-5, atol=1e-5)
    if readout == "all":
        torch.testing.assert_close(torch.stack(outs, 1), y, rtol=1e-5, atol=1e-5)


def test_step_is_constant_memory() -> None:
    """The state does not grow with the number of steps taken."""
    layer = SSMLayer(preset("mamba", d_model=8, d_state=4))
    state = layer.init_state(1)
    sizes = {k: v.shape for k, v in state.items()}
    with torch.no_grad():
        for _ in range(50):
            _, state = layer.step(torch.randn(1, 8), state)
    assert {k: v.shape for k, v in state.items()} == sizes


def test_bidirectional_step_is_refused() -> None:
    layer = SSMLayer(preset("s5", d_model=4, d_state=4, bidirectional=True))
    with pytest.raises(ValueError, match="bidirectional"):
        layer.init_state(1)


def test_batchnorm_steps_in_eval_mode_only() -> None:
    """In training mode BatchNorm normalises by the batch's statistics: a step would use one
    position's and move the running statistics, so step() is refused; in eval mode it agrees."""
    model = models.build(model_preset("s5", n_layers=1, d_model=8, d_state=8, norm="batch"),
                         IOSpec(d_input=3, d_output=2, readout="all"))
    running = model.blocks[0].norm.running_mean.clone()
    with pytest.raises(ValueError, match="norm='batch'.*expected model.eval"):
        model.step(torch.randn(2, 3), model.init_state(2))
    assert torch.equal(model.blocks[0].norm.running_mean, running)
    model.eval()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        y = model(x)
        state = model.init_state(2)
        for t in range(x.shape[1]):
            out, state = model.step(x[:, t], state)
            torch.testing.assert_close(out, y[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [
    preset("mamba", d_model=8, d_state=4, complex=True, init="s4d_lin"),
    preset("mamba", d_model=8, d_state=4, complex=True, init="s4d_lin", discretization="zoh", headdim=2, a_source="data"),
], ids=["complex_selective_siso", "complex_heads"])
def test_one_token_of_one_sequence_with_complex_selective_B_C(cfg) -> None:
    """Batch 1, length 1: the (real, imaginary) parts of B_t, C_t are a slice of x_proj's output
    at an odd offset (dt_rank 1), which a complex view cannot take."""
    torch.manual_seed(0)
    layer = SSMLayer(cfg)
    u = torch.randn(1, 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(stepped_outputs(layer, u), layer(u), rtol=1e-5, atol=1e-6)
