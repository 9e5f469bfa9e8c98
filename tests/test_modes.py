"""Every compute mode computes the same function as the step-by-step recurrence (float64)."""

from __future__ import annotations

import copy

import pytest
import torch

from models import SSMLayer, preset
from models.scan import linear_scan

from helpers import outputs_and_grads, randomize_, relative_error, triton_device, valid_modes

CONFIGS = {
    "s5": preset("s5", d_model=6, d_state=8, blocks=2),
    "s5_bilinear_bidirectional": preset("s5", d_model=6, d_state=8, discretization="bilinear", bidirectional=True),
    "s5_no_conj_sym": preset("s5", d_model=4, d_state=4, conj_sym=False, c_init="complex_normal"),
    "s5_clip_eigs_rescaled": preset("s5", d_model=6, d_state=8, clip_eigs=True, step_rescale=2.0),
    "s5_exact_gelu_log_storage": preset("s5", d_model=6, d_state=8, gelu="exact", a_param="log", clip_eigs=True),
    "s4d": preset("s4d", d_model=6, d_state=8),
    "s4d_rescaled_tanh": preset("s4d", d_model=4, d_state=4, step_rescale=0.5, gelu="tanh"),
    "s4d_inv_bidirectional": preset("s4d", d_model=6, d_state=8, init="s4d_inv", bidirectional=True),
    "mamba": preset("mamba", d_model=6, d_state=4),
    "mamba_bidirectional_dt_B": preset("mamba", d_model=4, d_state=4, selective="dt,B", bidirectional=True),
    "mamba2_block": preset("mamba2", d_model=4, d_state=4, headdim=2, ngroups=2),
    "mamba2_block_B_only_h3": preset("mamba2", d_model=4, d_state=4, headdim=2, selective="dt,B", gate="h3",
                                     gate_norm=False),
    "project_from_u_mamba1": preset("mamba", d_model=4, d_state=4, project_from="u", gate_norm=True),
    "gate_norm_mamba1": preset("mamba", d_model=6, d_state=4, gate_norm=True),
    "selective_mimo": preset("s5", d_model=6, d_state=8, selective="dt,B,C"),
    "gated_mimo": preset("s5", d_model=6, d_state=8, gate="silu", expand=1, conv=3),
    "h3_gated_siso": preset("s4d", d_model=4, d_state=4, gate="h3", expand=1, conv=2),
    "grouped_mimo": preset("s5", d_model=6, d_state=4, groups=3, selective="B,C"),
    "complex_selective_siso": preset("mamba", d_model=4, d_state=4, complex=True, init="s4d_lin",
                                     discretization="zoh"),
    "real_lti_siso": preset("s4d", d_model=4, d_state=4, complex=False, init="s4d_real", discretization="bilinear"),
    "siso_selective_B_only": preset("s4d", d_model=4, d_state=4, selective="B"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("length", [1, 23])
def test_every_mode_equals_recurrent(name: str, length: int) -> None:
    cfg = CONFIGS[name].with_(chunk_size=5)
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(cfg).double())
    u = torch.randn(2, length, cfg.d_model, dtype=torch.float64)
    y_ref, g_ref = outputs_and_grads(layer, u, "recurrent")
    for mode in valid_modes(cfg)[1:]:
        y, grads = outputs_and_grads(layer, u, mode)
        assert relative_error(y, y_ref) < 1e-10, (name, mode)
        for (pname, _), g, gr in zip([("input", None), *layer.named_parameters()], grads, g_ref):
            if gr.abs().max() > 0:
                assert relative_error(g, gr) < 1e-10, (name, mode, pname)
            else:
                assert g.abs().max() == 0, (name, mode, pname)


@pytest.mark.parametrize("complex_state", [False, True])
@pytest.mark.parametrize("time_invariant", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 64])
def test_scan_kernels_equal_loop(complex_state: bool, time_invariant: bool, chunk_size: int | None) -> None:
    dtype = torch.complex128 if complex_state else torch.float64
    g = torch.Generator().manual_seed(3)
    for length in (1, 2, 3, 8, 31):
        b = torch.randn(2, length, 3, dtype=dtype, generator=g).requires_grad_()
        shape = (1, 1, 3) if time_invariant else (2, length, 3)
        a = (0.95 * torch.randn(shape, dtype=dtype, generator=g) / 1.5).requires_grad_()
        ref = linear_scan(a, b, "recurrent")
        w = torch.randn(ref.shape, dtype=dtype, generator=g)
        ref_grads = torch.autograd.grad((ref * w).real.sum(), [a, b])
        for mode in ("scan", "chunked") if chunk_size is None else ("chunked",):  # scan has no chunks
            h = linear_scan(a, b, mode, chunk_size)
            grads = torch.autograd.grad((h * w).real.sum(), [a, b])
            assert relative_error(h, ref) < 1e-12
            for got, want in zip(grads, ref_grads):
                assert relative_error(got, want) < 1e-12


def test_recurrence_matches_definition() -> None:
    """The reference loop itself against h_t written out by hand."""
    a = torch.tensor([[[0.5], [2.0], [-1.0]]], dtype=torch.float64)
    b = torch.tensor([[[1.0], [1.0], [3.0]]], dtype=torch.float64)
    h = linear_scan(a, b, "recurrent")
    assert h.flatten().tolist() == [1.0, 3.0, 0.0]  # 1; 2*1+1; -1*3+3


@pytest.mark.skipif(triton_device() is None, reason="the Triton kernels need a GPU, or TRITON_INTERPRET=1 on a CPU")
@pytest.mark.parametrize("name", ["mamba", "s4d", "selective_mimo", "gated_mimo"])
def test_triton_mode_under_bf16_autocast(name: str) -> None:
    """Under autocast (the trainer's bf16 on a GPU) the bf16 tensors go to the kernels as they are
    (read in bf16, accumulated in fp32, y written in bf16; complex ones stay complex64): the
    output is bf16 and about as close to the fp32 output as the chunked mode's (the kernels'
    bf16 writes add at most one rounding, truncation under triton's interpreter)."""
    torch.manual_seed(0)
    device = triton_device()
    layer = randomize_(SSMLayer(CONFIGS[name].with_(mode="triton"))).to(device)
    u = torch.randn(2, 9, layer.cfg.d_model).to(device)
    y = layer(u)
    errors = {}
    for mode in ("triton", "chunked"):
        layer.cfg.mode = mode
        with torch.autocast(device, dtype=torch.bfloat16):
            y_bf16 = layer(u)
        errors[mode] = relative_error(y_bf16.float(), y)
    assert errors["triton"] < 2e-2 and errors["triton"] < 2 * errors["chunked"] + 1e-3, errors


def test_time_invariant_chunked_scan_in_float32_is_as_accurate_as_the_loop() -> None:
    """A time-invariant complex a near the unit circle at an angle near π (a bilinear Ā at a large Δ),
    float32: the chunked scan stays within 10x the loop's error. Its chunk product a ** T was
    exp(T log a), whose rounded angle T·arg a the L/T carries compounded (67x the loop's error here)."""
    L, modes = 4096, 8
    radius = 1 - torch.logspace(-4, -2, modes, dtype=torch.float64)
    a = torch.polar(radius, torch.linspace(2.5, 3.1, modes, dtype=torch.float64)).to(torch.complex64).view(1, 1, modes)
    b = torch.randn(1, L, modes, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    exact = linear_scan(a.to(torch.complex128), b.to(torch.complex128), "recurrent")
    errors = {mode: relative_error(linear_scan(a, b, mode).to(exact.dtype), exact) for mode in ("recurrent", "chunked")}
    assert errors["chunked"] < 10 * errors["recurrent"], errors


FLOAT32_FFT = {
    "s4d_bilinear": preset("s4d", d_model=4, d_state=16, discretization="bilinear"),
    "heads_complex_bilinear": preset("mamba2", d_model=4, d_state=16, selective="B,C", complex=True, init="s4d_lin",
                                     discretization="bilinear", project_from="x", skip_per="channel",
                                     gate_norm=False, headdim=4),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_FFT))
def test_fft_mode_in_float32_is_as_accurate_as_the_recurrence(name: str) -> None:
    """Bilinear at Δ = 10 puts the high-frequency Ā near the unit circle at an angle near π, L = 4096,
    float32 against the float64 recurrence: mode fft's output and input gradient stay within 3x the
    float32 recurrence's error. Ā^l = exp(l log Ā) in float32 rounded arg Ā and then l·arg Ā, a phase
    error growing with the lag (13x to 14x the recurrence's error here)."""
    cfg = FLOAT32_FFT[name]
    torch.manual_seed(0)
    layer = SSMLayer(cfg)
    with torch.no_grad():  # Δ = 10: log_dt = log 10
        (layer.heads if layer.heads is not None else layer).log_dt.fill_(2.302585092994046)
    u = torch.randn(1, 4096, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(u.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def output_and_input_gradient(module: SSMLayer, mode: str, dtype: torch.dtype):
        module.cfg.mode = mode
        x = u.to(dtype).requires_grad_(True)
        y = module(x)
        return y.detach().double(), torch.autograd.grad((y * weights.to(dtype)).sum(), x)[0].double()

    exact = output_and_input_gradient(copy.deepcopy(layer).double(), "recurrent", torch.float64)
    errors = {}
    for mode in ("recurrent", "fft"):
        got = output_and_input_gradient(layer, mode, torch.float32)
        errors[mode] = [relative_error(g, e) for g, e in zip(got, exact)]
    assert all(errors["fft"][i] < 3 * errors["recurrent"][i] for i in (0, 1)), errors
