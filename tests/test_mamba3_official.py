"""The mamba3 preset equals mamba-ssm's own ``Mamba3`` (SISO), run on the CPU: its Triton
kernels (``ops/triton/mamba3/``: angle cumsum, chunked forward, the four backward kernels) in
Triton's interpreter, which conftest.py selects on machines without CUDA. Our layer loaded from
Mamba3's parameters (models.peers.mamba3_from_official) gives its output, the gradients of the
input and of every Mamba3 parameter, and, token by token through step(), the output and the
decoding state (h, the trapezoid's last B x term, the angle) its prefill returns.

Test-side stand-ins (monkeypatched, undone after each test), none of them our code:
- B_norm, C_norm: mamba-ssm's own ``rms_norm_ref`` for its Triton RMSNorm, whose wrapper
  enters ``torch.cuda.device`` (no CUDA here);
- ``cos_approx``, ``sin_approx``, ``tanh_approx``, ``sech2_approx``: PTX inline assembly, which
  the interpreter refuses; replaced by tl.cos, tl.sin and tanh through tl.sigmoid;
- each autotuned kernel keeps its first config (the interpreter has no benchmarker);
- ``compute_dzdo`` and ``compute_dqkv`` without their ``assert t.is_cuda`` lines (the same
  code compiled with asserts off);
- float32 throughout: the interpreter computes bfloat16 arithmetic on the raw bit patterns
  (Triton documents bf16 as unsupported there; a bf16 input gives outputs of ~1e10), so Q, K,
  V, Trap, Angles, Z go to mamba-ssm's ``_Mamba3Function`` without the public wrapper's bf16
  casts, and the per-chunk states the forward keeps for the backward are float32, not bf16.
What cannot run here: ``Mamba3.step`` (CuTe-DSL ``mamba3_step_fn``, absent without the GPU
build), the MIMO path (TileLang), and the unused Triton step kernel (a bf16 ``tl.dot``).
"""

from __future__ import annotations

import inspect
import types

import pytest
import torch

from models import SSMLayer, preset
from models.peers import mamba3_from_official

from helpers import mamba3_class, randomize_, relative_error

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
if mamba3_class() is None:
    pytest.skip("mamba-ssm is not installed", allow_module_level=True)

from mamba_ssm.modules import mamba3 as mamba3_module  # noqa: E402
from mamba_ssm.ops.triton import layernorm_gated  # noqa: E402
from mamba_ssm.ops.triton.mamba3 import (angle_dt, mamba3_siso_bwd, mamba3_siso_combined,  # noqa: E402
                                         mamba3_siso_fwd)
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

pytestmark = pytest.mark.skipif(
    not isinstance(mamba3_siso_fwd.mamba3_siso_fwd_kernel.fn, InterpretedFunction),
    reason="runs mamba-ssm's Mamba3 kernels in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py "
           "where there is no CUDA); compiled, they compute in bf16")

# d_inner 16: two heads of 8; chunks of 8 over 13 tokens: a state passed between chunks and a padded last chunk
SIZES = dict(d_model=8, d_state=16, headdim=8)
CHUNK, LENGTH = 8, 13
# float32 (eps 1.2e-7), measured relative errors: output <= 2.1e-7, gradients <= 8.7e-7 (dt_bias),
# step outputs and states <= 4.6e-7 (chunked vs sequential sums); 5e-6 leaves ~6x. A convention slip
# is >= 5e-3 here: angles zeroed 0.27 / 5.8e-3 (the two cases), MIMO's pairing (i, i + N/2) in place
# of SISO's (2j, 2j + 1) 0.20 / 1.3e-2.
TOLERANCE = 5e-6


@triton.jit
def _cos(x):
    return tl.cos(x)


@triton.jit
def _sin(x):
    return tl.sin(x)


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _sech2(x):
    t = 2.0 * tl.sigmoid(2.0 * x) - 1.0
    return 1.0 - t * t


class _TorchWithFloat32States(types.ModuleType):
    """``torch`` for mamba3_siso_fwd's wrapper, whose only bf16 is the dtype of the chunk states
    it keeps for the backward."""
    bfloat16 = torch.float32

    def __getattr__(self, name: str):
        return getattr(torch, name)


def _in_float32(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, Input_States=None,
                chunk_size=64, return_final_states=False, cu_seqlens=None):
    """``mamba3_siso_combined`` without its casts of Q, K, V, Trap, Angles, Z to bf16."""
    states = Input_States if Input_States is not None else (None,) * 4
    return mamba3_siso_combined._Mamba3Function.apply(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z, *states,
                                                      cu_seqlens, chunk_size, return_final_states)


def _without_asserts(module: types.ModuleType) -> dict[str, types.CodeType]:
    code = compile(inspect.getsource(module), module.__file__, "exec", optimize=1)
    return {c.co_name: c for c in code.co_consts if isinstance(c, types.CodeType)}


@pytest.fixture
def Mamba3(monkeypatch):
    """mamba-ssm's Mamba3 class with the stand-ins of the module docstring in place."""
    monkeypatch.setattr(layernorm_gated, "rmsnorm_fn", lambda x, weight, bias, z=None, eps=1e-6, group_size=None,
                        norm_before_gate=True: layernorm_gated.rms_norm_ref(
                            x, weight, bias, z=z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate))
    exact = {"cos_approx": _cos, "sin_approx": _sin, "tanh_approx": _tanh, "sech2_approx": _sech2}
    for module in (angle_dt, mamba3_siso_fwd, mamba3_siso_bwd):
        for name, value in vars(module).items():
            if name in exact:
                monkeypatch.setattr(module, name, exact[name])
            elif isinstance(value, Autotuner):
                monkeypatch.setattr(value, "configs", value.configs[:1])
    stripped = _without_asserts(mamba3_siso_bwd)
    for name in ("compute_dzdo", "compute_dqkv"):
        monkeypatch.setattr(getattr(mamba3_siso_bwd, name), "__code__", stripped[name])
    monkeypatch.setattr(mamba3_module, "mamba3_siso_combined", _in_float32)
    monkeypatch.setattr(mamba3_siso_fwd, "torch", _TorchWithFloat32States("torch"))
    return mamba3_module.Mamba3


def _theirs(Mamba3, rope_fraction: float, ngroups: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_(Mamba3(**SIZES, ngroups=ngroups, rope_fraction=rope_fraction, chunk_size=CHUNK, **kwargs),
                      scale=0.3, seed=1)


CASES = [(0.5, 1), (1.0, 2)]  # rope_fraction, ngroups (two heads sharing B, C; one head per group)


@pytest.mark.parametrize("rope_fraction, ngroups", CASES)
def test_forward_and_gradients_equal_mamba_ssm_mamba3(Mamba3, rope_fraction: float, ngroups: int) -> None:
    """Both rotation forms of ours (B, C rotated; the complex state) against one run of theirs."""
    theirs = _theirs(Mamba3, rope_fraction, ngroups)
    state = dict(theirs.named_parameters())
    u = torch.randn(2, LENGTH, SIZES["d_model"]).requires_grad_()
    weights = torch.randn(2, LENGTH, SIZES["d_model"])
    expected = theirs(u)
    g_expected = torch.autograd.grad((expected * weights).sum(), [u, *state.values()])
    for form in ("rotate_bc", "complex"):
        cfg = preset("mamba3", **SIZES, ngroups=ngroups, rope_fraction=rope_fraction, rotation_form=form)
        ours = torch.func.functional_call(SSMLayer(cfg), mamba3_from_official(state, cfg), (u,))
        assert relative_error(ours, expected) < TOLERANCE, form
        g_ours = torch.autograd.grad((ours * weights).sum(), [u, *state.values()])
        for name, a, b in zip(["u", *state], g_ours, g_expected):
            assert relative_error(a, b) < TOLERANCE, (form, name)


@pytest.mark.parametrize("rope_fraction, ngroups", CASES)
def test_step_equals_mamba3_and_carries_its_prefill_state(Mamba3, rope_fraction: float, ngroups: int) -> None:
    """step() token by token gives Mamba3's forward, and ends in the state Mamba3's prefill
    (forward with InferenceParams) hands its decoder: ssm_state (B, E, P, N) is our h
    (B, E·P, N); k_state ⊗ v_state (rotated, biased B_{t-1}; x_{t-1}) our v; angle_state our
    phi modulo 2π (theirs is wrapped)."""
    from mamba_ssm.utils.generation import InferenceParams

    theirs = _theirs(Mamba3, rope_fraction, ngroups, layer_idx=0)
    cfg = preset("mamba3", **SIZES, ngroups=ngroups, rope_fraction=rope_fraction)
    layer = SSMLayer(cfg)
    with torch.no_grad():
        layer.load_state_dict(mamba3_from_official(dict(theirs.named_parameters()), cfg))
        u = torch.randn(2, LENGTH, SIZES["d_model"])
        cache = InferenceParams(max_seqlen=LENGTH, max_batch_size=2)
        expected = theirs(u, inference_params=cache)
        angle, ssm, k, v = cache.key_value_memory_dict[0]
        state, steps = layer.init_state(2), []
        for t in range(LENGTH):
            y_t, state = layer.step(u[:, t], state)
            steps.append(y_t)
    assert relative_error(torch.stack(steps, 1), expected) < TOLERANCE
    E, P, N = cfg.n_heads, cfg.headdim, cfg.d_state
    assert relative_error(state["h"], ssm.reshape(2, E * P, N)) < TOLERANCE
    last_input = torch.einsum("bep,ben->bepn", v.view(2, E, P), k[:, 0]).reshape(2, E * P, N)
    assert relative_error(state["v"], last_input) < TOLERANCE
    wrapped = torch.remainder(state["phi"][:, 0] - angle + torch.pi, 2 * torch.pi) - torch.pi
    assert wrapped.abs().max() < 1e-5 * state["phi"].abs().max().clamp_min(1.0)
