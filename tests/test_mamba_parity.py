"""The Mamba preset equals mamba-ssm's own Mamba (reference scan on the CPU), and the mamba2
preset its Mamba2 block (mamba-ssm's PyTorch references in place of its Triton kernels, see
models.peers.mamba2_reference): outputs, gradients and step. mamba-ssm is installed by
`make test`: these tests never skip."""

from __future__ import annotations

import pytest
import torch

import models
from models import SSMLayer, preset
from models.peers import copy_into_mamba, mamba2_from_official, mamba2_reference, mamba_reference

from helpers import assert_same_function, randomize_, relative_error


@pytest.fixture(scope="module")
def reference():
    found = mamba_reference()
    assert found is not None, "mamba-ssm is not installed: run `make test` (it installs mamba-ssm 2.3.2.post1)"
    return found


def _pair(reference, d_model=16, d_state=8, dtype=torch.float32):
    Mamba, _ = reference
    torch.manual_seed(0)
    layer = randomize_(SSMLayer(preset("mamba", d_model=d_model, d_state=d_state)), scale=0.05).to(dtype)
    theirs = Mamba(d_model=d_model, d_state=d_state, d_conv=4, expand=2, use_fast_path=False).to(dtype)
    copy_into_mamba(layer, theirs)
    return layer, theirs


def test_forward_and_gradients_match_mamba_ssm(reference) -> None:
    layer, theirs = _pair(reference)
    u = torch.randn(2, 37, 16)
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    y_ours, y_theirs = layer(u1), theirs(u2)
    assert relative_error(y_ours, y_theirs) < 1e-5
    w = torch.randn_like(y_ours)
    (y_ours * w).sum().backward()
    (y_theirs * w).sum().backward()
    assert relative_error(u1.grad, u2.grad) < 1e-5
    ours = dict(layer.named_parameters())
    for name, param in theirs.named_parameters():
        assert relative_error(ours[name].grad, param.grad) < 1e-5, name


def test_matches_in_float64(reference) -> None:
    """mamba-ssm computes A in float32 even in a float64 module: agreement at ~1e-8."""
    layer, theirs = _pair(reference, dtype=torch.float64)
    u = torch.randn(2, 19, 16, dtype=torch.float64)
    assert relative_error(layer(u), theirs(u)) < 1e-7


def test_step_matches_mamba_ssm_step(reference) -> None:
    layer, theirs = _pair(reference)
    u = torch.randn(3, 12, 16)
    state = layer.init_state(3)
    conv_state = torch.zeros(3, 32, 4)
    ssm_state = torch.zeros(3, 32, 8)
    with torch.no_grad():
        for t in range(u.shape[1]):
            y_ours, state = layer.step(u[:, t], state)
            y_theirs, conv_state, ssm_state = theirs.step(u[:, t : t + 1], conv_state, ssm_state)
            torch.testing.assert_close(y_ours, y_theirs[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state["conv"], conv_state)  # same layout: last k inputs, oldest first
    torch.testing.assert_close(state["h"], ssm_state, rtol=1e-5, atol=1e-6)


def test_cuda_mode_argument_mapping(reference, monkeypatch) -> None:
    """The cuda mode hands the kernel exactly mamba-ssm's arguments: with the reference scan
    standing in for the kernel, it equals the recurrent mode (forward and gradients)."""
    import models.layer as layer_module
    _, selective_scan_ref = reference
    layer, _ = _pair(reference, dtype=torch.float64)
    monkeypatch.setattr(layer_module, "selective_scan_kernel", lambda: selective_scan_ref)
    u = torch.randn(2, 9, 16, dtype=torch.float64)
    layer.cfg.mode = "recurrent"
    y_ref = layer(u)
    g_ref = torch.autograd.grad(y_ref.sum(), list(layer.parameters()))
    # the device check is the only CUDA-specific step: call the mode directly
    x, z = layer._branch(u)
    y = layer._output(layer._mix(layer._ssm_input(x, layer._conv), "cuda"), z)
    g = torch.autograd.grad(y.sum(), list(layer.parameters()))
    assert relative_error(y, y_ref) < 1e-7  # the reference scan computes A in float32
    for a, b in zip(g, g_ref):
        assert relative_error(a, b) < 1e-6


# ---------------------------------------------------------------------------- Mamba-2
@pytest.fixture(scope="module")
def reference2():
    found = mamba2_reference()
    assert found is not None, "mamba-ssm is not installed: run `make test` (it installs mamba-ssm 2.3.2.post1)"
    return found


def _mamba2_pair(Mamba2, ngroups: int, dtype: torch.dtype, d_model=8, d_state=4, headdim=4):
    """Our mamba2 layer and mamba-ssm's Mamba2 with random parameters (chunk 8: several chunks
    and a padded last one for the lengths used here)."""
    cfg = preset("mamba2", d_model=d_model, d_state=d_state, headdim=headdim, ngroups=ngroups)
    torch.manual_seed(0)
    theirs = randomize_(Mamba2(d_model=d_model, d_state=d_state, d_conv=cfg.conv, expand=cfg.expand, headdim=headdim,
                               ngroups=ngroups, chunk_size=8), scale=0.2).to(dtype)
    return SSMLayer(cfg).to(dtype), theirs


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_preset_equals_mamba_ssm_mamba2(reference2, ngroups: int, dtype: torch.dtype, tolerance: float) -> None:
    """Our layer loaded from Mamba2's parameters (models.peers.mamba2_from_official) computes
    Mamba2's forward: the output and the gradients of the input and of every Mamba2 parameter
    (through the mapping), in float64 and float32, one group of heads and two."""
    layer, theirs = _mamba2_pair(reference2, ngroups, dtype)
    state = dict(theirs.named_parameters())
    mapped = mamba2_from_official(state, layer.cfg)
    assert set(mapped) == set(dict(layer.named_parameters())), "every parameter of ours comes from Mamba2"
    u = torch.randn(2, 37, 8, dtype=torch.float64).to(dtype).requires_grad_()
    weights = torch.randn(2, 37, 8, dtype=torch.float64).to(dtype)
    ours = torch.func.functional_call(layer, mapped, (u,))
    assert_same_function(ours, theirs(u), {"u": u, **state}, tolerance, weights)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_step_matches_mamba_ssm_step(reference2, ngroups: int) -> None:
    """step() token by token against Mamba2.step (float32): the outputs, and the states in
    Mamba2's layouts (conv state over x, B, C oldest first; ssm state (B, E, P, N)). ngroups 1
    runs Mamba2.step's own PyTorch path (which asserts ngroups == 1); ngroups 2 its
    selective_state_update branch on mamba-ssm's selective_state_update_ref."""
    layer, theirs = _mamba2_pair(reference2, ngroups, torch.float32)
    with torch.no_grad():
        layer.load_state_dict(mamba2_from_official(dict(theirs.named_parameters()), layer.cfg))
    cfg = layer.cfg
    u = torch.randn(3, 12, 8)
    state = layer.init_state(3)
    conv_state, ssm_state = theirs.allocate_inference_cache(3, 12)
    with torch.no_grad():
        for t in range(u.shape[1]):
            y_ours, state = layer.step(u[:, t], state)
            y_theirs, conv_state, ssm_state = theirs.step(u[:, t : t + 1], conv_state, ssm_state)
            torch.testing.assert_close(y_ours, y_theirs[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([state["conv"], state["bc_conv"]], 1), conv_state)
    h = state["h"].view(3, cfg.n_heads, cfg.headdim, cfg.d_state)
    torch.testing.assert_close(h, ssm_state, rtol=1e-5, atol=1e-6)


def test_mamba2_preset_has_mamba2_s_parameter_count(reference2) -> None:
    """models.param_count of the mamba2 preset is Mamba2's own count (the layouts are the same)."""
    for kwargs in (dict(d_model=8, d_state=4, headdim=4, ngroups=2), dict(d_model=64, d_state=128)):
        cfg = preset("mamba2", **kwargs)
        theirs = reference2(d_model=cfg.d_model, d_state=cfg.d_state, headdim=cfg.headdim, ngroups=cfg.ngroups)
        assert models.param_count(cfg) == sum(p.numel() for p in theirs.parameters())
