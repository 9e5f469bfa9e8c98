"""Prefill: ``forward(..., return_state=True)`` returns the state ``step`` would hold after the
prompt, so generation continues with ``step`` without stepping the prompt token by token.
Checked against stepping from the start, in float64, in every CPU mode of each point, the
Mamba-2/3 points (heads, groups, rotation, rank-R MIMO, the conv over B and C) included."""

from __future__ import annotations

import pytest
import torch

from models import IOSpec, SSMLayer, build, model_preset, preset

from helpers import randomize_, stepped_outputs

POINTS = {
    "mamba": lambda: preset("mamba", d_model=8, d_state=4),
    "s4d": lambda: preset("s4d", d_model=6, d_state=8),
    "s5": lambda: preset("s5", d_model=6, d_state=8, blocks=2),
    "s5_bilinear_selective": lambda: preset("s5", d_model=6, d_state=8, discretization="bilinear", selective="dt,B,C"),
    "h3_gate": lambda: preset("mamba", d_model=8, d_state=4, gate="h3"),
    "trapezoidal": lambda: preset("mamba", d_model=8, d_state=4, discretization="trapezoidal", trapezoid=0.5),
    "siso_conv_selective_dt": lambda: preset("s4d", d_model=6, d_state=8, conv=3, selective="dt"),
    "mamba2_two_groups": lambda: preset("mamba2", d_model=8, d_state=4, headdim=4, ngroups=2),
    "mamba3": lambda: preset("mamba3", d_model=8, d_state=8, headdim=4),
    "mamba3_mimo": lambda: preset("mamba3_mimo", d_model=8, d_state=8, headdim=4, mimo_rank=2),
    "mamba3_conv_complex_rotation": lambda: preset("mamba3", d_model=8, d_state=8, headdim=4, conv=3,
                                                   rotation_form="complex", eig_range=(-1, 1)),
    "heads_fixed_rotation_fixed_dt": lambda: preset("mamba3", d_model=8, d_state=8, headdim=4, rotation="fixed",
                                                    selective="B,C", a_source="learned"),
}


def _modes(cfg) -> list[str]:
    return ["recurrent", "scan", "chunked"] + (["fft"] if cfg.supports_fft else [])


def _continued(layer: SSMLayer, u: torch.Tensor, prompt: int) -> tuple[torch.Tensor, dict]:
    """Prefill on u[:, :prompt], then step over the rest: the outputs (B, L, H), final state."""
    with torch.no_grad():
        y, state = layer(u[:, :prompt], return_state=True)
        outputs = [y]
        for t in range(prompt, u.shape[1]):
            y_t, state = layer.step(u[:, t], state)
            outputs.append(y_t.unsqueeze(1))
    return torch.cat(outputs, 1), state


@pytest.mark.parametrize("name", sorted(POINTS))
def test_prefill_then_step_equals_stepping(name: str) -> None:
    """Prompts shorter and longer than the conv window (2 and 9 tokens), every CPU mode."""
    cfg = POINTS[name]()
    layer = randomize_(SSMLayer(cfg), seed=3).double()
    u = torch.randn(2, 14, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    stepped = stepped_outputs(layer, u)
    for mode in _modes(cfg):
        layer.cfg.mode = mode
        for prompt in (2, 9):
            continued, _ = _continued(layer, u, prompt)
            torch.testing.assert_close(continued, stepped, rtol=1e-12, atol=1e-12, msg=f"{name} {mode} {prompt}")


def test_mamba_prefill_state_is_steps_state() -> None:
    """The mamba preset: the returned state itself (conv window, oldest first, and h) equals
    the one stepping leaves, as a structure and in value."""
    layer = randomize_(SSMLayer(preset("mamba", d_model=8, d_state=4)), seed=1).double()
    u = torch.randn(3, 11, 8, dtype=torch.float64)
    with torch.no_grad():
        state = layer.init_state(3)
        for t in range(11):
            _, state = layer.step(u[:, t], state)
        for mode in ("recurrent", "scan", "chunked"):
            layer.cfg.mode = mode
            _, prefilled = layer(u, return_state=True)
            assert prefilled.keys() == state.keys() == {"conv", "h"}
            for key in state:
                assert prefilled[key].shape == state[key].shape and prefilled[key].dtype == state[key].dtype
                torch.testing.assert_close(prefilled[key], state[key], rtol=1e-13, atol=1e-13)


def test_prefill_output_is_forward_output() -> None:
    layer = randomize_(SSMLayer(preset("mamba", d_model=8, d_state=4))).double()
    u = torch.randn(2, 6, 8, dtype=torch.float64)
    y, _ = layer(u, return_state=True)
    torch.testing.assert_close(y, layer(u), rtol=0, atol=1e-14)


@pytest.mark.parametrize("readout", ["all", "mean", "last"])
def test_backbone_prefill_then_step(readout: str) -> None:
    """A two-block Mamba language model: prefill a prompt, then step; the same outputs as
    stepping from the first token (what step returns: the newest position's readout)."""
    torch.manual_seed(0)
    model = randomize_(build(model_preset("mamba", d_model=8, d_state=4),
                             IOSpec(vocab_size=11, d_output=11, readout=readout))).double()
    tokens = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        state = model.init_state(2)
        expected = []
        for t in range(10):
            y_t, state = model.step(tokens[:, t], state)
            expected.append(y_t)
        for mode in ("recurrent", "scan", "chunked"):
            for block in model.blocks:
                block.mixer.cfg.mode = mode
            out, prefilled = model(tokens[:, :6], return_state=True)
            torch.testing.assert_close(out, model(tokens[:, :6]), rtol=0, atol=1e-13)
            last = out[:, -1] if readout == "all" else out
            torch.testing.assert_close(last, expected[5], rtol=1e-12, atol=1e-12)
            for t in range(6, 10):
                y_t, prefilled = model.step(tokens[:, t], prefilled)
                torch.testing.assert_close(y_t, expected[t], rtol=1e-12, atol=1e-12)


def test_prefill_is_refused_where_no_state_continues() -> None:
    bidirectional = SSMLayer(preset("s5", d_model=4, d_state=4, bidirectional=True))
    with pytest.raises(ValueError, match="return_state=True is not valid for a bidirectional layer"):
        bidirectional(torch.randn(1, 3, 4), return_state=True)


def test_prefill_in_fused_mode_continues_with_the_fused_step() -> None:
    """Mode triton: the kernels keep no states, so prefill takes the scan; step() then runs the
    Triton single-step kernel from that state (on the CPU under Triton's interpreter)."""
    from models import triton_scan
    if not triton_scan.runs_on("cpu"):
        pytest.skip("triton is not installed (the interpreter runs the kernels on the CPU)")
    layer = randomize_(SSMLayer(preset("mamba", d_model=8, d_state=4)))
    u = torch.randn(2, 9, 8, generator=torch.Generator().manual_seed(0))
    stepped = stepped_outputs(layer, u)
    layer.cfg.mode = "triton"
    continued, _ = _continued(layer, u, 6)
    torch.testing.assert_close(continued, stepped, rtol=1e-5, atol=1e-6)
