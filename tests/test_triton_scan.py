"""The Triton scans (models.triton_scan) against their step-by-step PyTorch references.

float64 at tiny sizes that exercise every masked tail: L = 21 in chunks of T = 8 (three
chunks, the last one partial), K = 5 channels in blocks of 4, n = 3 states (padded to 4).
Without CUDA the kernels run under Triton's interpreter (TRITON_INTERPRET=1, which must be set
before triton is imported); on a GPU the same tests run the compiled kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from models import triton_scan as ts  # TRITON_INTERPRET is set by conftest.py without a GPU

from helpers import relative_error

BATCH, LENGTH, CHANNELS, STATES = 2, 21, 5, 3
TILING = dict(chunk_size=8, block_k=4)
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture
def device() -> str:
    if ts.triton is None:
        pytest.skip("triton is not installed")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not ts.runs_on(device):
        pytest.skip(f"the Triton kernels cannot run on {device} here (on a CPU they need TRITON_INTERPRET=1)")
    return device


class Case(NamedTuple):
    """One point of the selective_scan input space."""

    discretization: str
    complex_A: bool
    B: str  # "none", "shared" (complex with A), "shared_real"
    C: str  # "shared" (Bt, L, n) or "fixed" (K, n)
    delta: str  # "step" (Bt, L, K) + bias + softplus, "step_plain" (Bt, L, K) > 0, "const" (K,) > 0,
    #             "const_softplus" (K,) + bias + softplus
    D: bool
    z: bool
    scale: float = 1.0


CASES = {
    "mamba": Case("zoh_euler", False, "shared", "shared", "step", True, True),
    "s4d": Case("zoh", True, "none", "fixed", "const", True, False, 2.0),
    "bilinear_real_fixed_C": Case("bilinear", False, "none", "fixed", "step", False, False),
    "bilinear_complex_gated": Case("bilinear", True, "shared", "shared", "const_softplus", True, True),
    "zoh_real_fixed_C_gated": Case("zoh", False, "shared", "fixed", "const", False, True),
    "zoh_complex_selective": Case("zoh", True, "shared", "shared", "step", False, False),
    "zoh_euler_complex_const": Case("zoh_euler", True, "none", "shared", "const", True, False),
    "zoh_real_plain_delta": Case("zoh", False, "none", "shared", "step_plain", True, True),
    "bilinear_complex_real_B": Case("bilinear", True, "shared_real", "fixed", "step", False, True),
    "zoh_euler_real_const_softplus": Case("zoh_euler", False, "shared", "fixed", "const_softplus", True, False, 0.5),
}


def _A(shape: tuple[int, ...], complex_A: bool, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Stable A: real part in [-1.2, -0.2], imaginary part ~ N(0, 1)."""
    real = -0.2 - torch.rand(shape, generator=gen, dtype=dtype)
    return torch.complex(real, torch.randn(shape, generator=gen, dtype=dtype)) if complex_A else real


def selective_inputs(case: Case, device: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> dict:
    """Keyword arguments of selective_scan for a case (random, fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    Bt, L, K, n = BATCH, LENGTH, CHANNELS, STATES

    def randn(*shape, dtype=dtype):
        return torch.randn(shape, generator=gen, dtype=dtype)

    A = _A((K, n), case.complex_A, gen, dtype)
    kwargs = dict(u=randn(Bt, L, K), A=A, discretization=case.discretization, scale=case.scale)
    if case.delta in ("step", "const_softplus"):
        kwargs.update(delta=0.5 * randn(*((Bt, L, K) if case.delta == "step" else (K,))),
                      delta_bias=0.3 * randn(K), delta_softplus=True)
    else:
        shape = (Bt, L, K) if case.delta == "step_plain" else (K,)
        kwargs.update(delta=0.1 + 0.6 * torch.rand(shape, generator=gen, dtype=dtype))
    if case.B != "none":
        kwargs["B"] = randn(Bt, L, n, dtype=A.dtype if case.B == "shared" else dtype)
    kwargs["C"] = randn(Bt, L, n, dtype=A.dtype) if case.C == "shared" else randn(K, n, dtype=A.dtype)
    if case.D:
        kwargs["D"] = randn(K)
    if case.z:
        kwargs["z"] = randn(Bt, L, K)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def output_and_grads(fn, kwargs: dict, seed: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """fn(**kwargs) and the gradients of a fixed random linear functional of it, Re Σ w ⊙ out,
    with respect to every tensor argument."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    out = fn(**{**kwargs, **leaves})
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.complex128 if out.is_complex()
                    else torch.float64).to(device=out.device, dtype=out.dtype)  # the same w in every precision
    loss = (out * w).real.sum() if out.is_complex() else (out * w).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out.detach(), dict(zip(leaves, grads))


def assert_same(kernel: tuple, reference: tuple, **tol) -> None:
    out, grads = kernel
    out_ref, grads_ref = reference
    torch.testing.assert_close(out, out_ref, **tol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == grads_ref[name].dtype, name
        torch.testing.assert_close(grads[name], grads_ref[name], **tol, msg=lambda m: f"grad of {name}: {m}")


# ---------------------------------------------------------------------------------------
# selective_scan
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_selective_scan_matches_reference(name: str, device: str) -> None:
    kwargs = selective_inputs(CASES[name], device)
    kernel = output_and_grads(lambda **kw: ts.selective_scan(**kw, **TILING), kwargs)
    reference = output_and_grads(ts.selective_scan_reference, kwargs)
    assert kernel[0].shape == (BATCH, LENGTH, CHANNELS) and kernel[0].dtype == torch.float64
    assert_same(kernel, reference, **TOL)


@pytest.mark.parametrize("name", ["mamba", "s4d"])
def test_selective_scan_float32(name: str, device: str) -> None:
    """float32 kernel against the float64 reference, to float32 accuracy, with default tiling."""
    kwargs = selective_inputs(CASES[name], device, dtype=torch.float32)
    kernel = output_and_grads(ts.selective_scan, kwargs)
    wide = {k: v.to(torch.complex128 if v.is_complex() else torch.float64) if isinstance(v, torch.Tensor) else v
            for k, v in kwargs.items()}
    reference = output_and_grads(ts.selective_scan_reference, wide)
    assert kernel[0].dtype == torch.float32
    assert relative_error(kernel[0].double(), reference[0]) < 1e-5
    for name_ in kernel[1]:
        assert kernel[1][name_].dtype == kwargs[name_].dtype
        assert relative_error(kernel[1][name_].to(reference[1][name_].dtype), reference[1][name_]) < 1e-4, name_


def test_reference_matches_closed_form() -> None:
    """Time-invariant real zoh:  y_t[k] = Σ_j C[k,j] Σ_{s≤t} Ā[k,j]^{t-s} F[k,j] B_s[j] u_s[k],
    with Ā = exp(ΔA), F = (Ā - 1)/A, as one sum over (s, t) instead of a recurrence."""
    kwargs = selective_inputs(Case("zoh", False, "shared", "fixed", "const", False, False), "cpu")
    u, delta, A, B, C = (kwargs[k] for k in ("u", "delta", "A", "B", "C"))
    A_bar = torch.exp(delta[:, None] * A)
    F = (A_bar - 1) / A
    lag = torch.arange(LENGTH)[:, None] - torch.arange(LENGTH)[None, :]  # t - s
    powers = A_bar ** lag.clamp(min=0)[..., None, None].double()  # (L, L, K, n)
    powers = powers * (lag >= 0)[..., None, None]
    expected = torch.einsum("kj,tskj,bsj,bsk->btk", C * F, powers, B, u)
    torch.testing.assert_close(ts.selective_scan_reference(**kwargs), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# selective_state_step
# ---------------------------------------------------------------------------------------


def steps_of(kwargs: dict) -> list[dict]:
    """The arguments of selective_state_step for each step of a selective_scan call."""
    per_step = {key: value.unbind(1) for key, value in kwargs.items() if isinstance(value, torch.Tensor)
                and value.dim() == 3}  # u, z, B; delta per step; C shared
    return [{**kwargs, **{key: values[t] for key, values in per_step.items()}} for t in range(LENGTH)]


@pytest.mark.parametrize("name", ["mamba", "s4d", "bilinear_complex_real_B"])
def test_state_step_matches_reference(name: str, device: str) -> None:
    kwargs = steps_of(selective_inputs(CASES[name], device))[4]
    h = torch.randn(BATCH, CHANNELS, STATES, generator=torch.Generator().manual_seed(2),
                    dtype=kwargs["A"].dtype).to(device)
    fixed_C = CASES[name].C == "fixed"
    y, h_new = ts.selective_state_step(h, **kwargs, fixed_C=fixed_C, block_k=4)
    y_ref, h_ref = ts.selective_state_step_reference(h, **kwargs, fixed_C=fixed_C)
    assert y.shape == (BATCH, CHANNELS) and h_new.shape == h.shape and h_new.dtype == h.dtype
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(h_new, h_ref, **TOL)


@pytest.mark.parametrize("name", ["mamba", "s4d"])
def test_state_steps_reproduce_scan(name: str, device: str) -> None:
    """Iterating the step kernel from h = 0 gives the scan kernel's output."""
    kwargs = selective_inputs(CASES[name], device)
    with torch.no_grad():
        y_scan = ts.selective_scan(**kwargs, **TILING)
    h = torch.zeros(BATCH, CHANNELS, STATES, dtype=kwargs["A"].dtype, device=device)
    ys = []
    for step in steps_of(kwargs):
        y, h = ts.selective_state_step(h, **step, fixed_C=CASES[name].C == "fixed", block_k=4)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), y_scan, **TOL)


# ---------------------------------------------------------------------------------------
# diagonal_scan
# ---------------------------------------------------------------------------------------

DIAGONAL_CASES = {  # discretization, complex A, complex u, gain, delta per step (with bias + softplus)
    "zoh_real_gain_step": ("zoh", False, False, True, True),
    "zoh_complex_gain_const": ("zoh", True, True, True, False),
    "bilinear_complex_real_u_step": ("bilinear", True, False, False, True),
    "bilinear_real_const": ("bilinear", False, False, False, False),
    "zoh_euler_complex_gain_step": ("zoh_euler", True, True, True, True),
}


@pytest.mark.parametrize("name", list(DIAGONAL_CASES))
def test_diagonal_scan_matches_reference(name: str, device: str) -> None:
    discretization, complex_A, complex_u, gain, per_step = DIAGONAL_CASES[name]
    gen = torch.Generator().manual_seed(3)
    Bt, L, K = BATCH, LENGTH, CHANNELS
    A = _A((K,), complex_A, gen, torch.float64)
    kwargs = dict(u=torch.randn(Bt, L, K, generator=gen, dtype=A.dtype if complex_u else torch.float64), A=A,
                  discretization=discretization)
    if per_step:
        kwargs.update(delta=0.5 * torch.randn(Bt, L, K, generator=gen, dtype=torch.float64),
                      delta_bias=0.3 * torch.randn(K, generator=gen, dtype=torch.float64), delta_softplus=True)
    else:
        kwargs["delta"] = 0.1 + 0.6 * torch.rand(K, generator=gen, dtype=torch.float64)
    if gain:
        kwargs["gain"] = torch.randn(Bt, L, K, generator=gen, dtype=torch.float64)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    kernel = output_and_grads(lambda **kw: ts.diagonal_scan(**kw, **TILING), kwargs)
    reference = output_and_grads(ts.diagonal_scan_reference, kwargs)
    assert kernel[0].dtype == A.dtype
    assert_same(kernel, reference, **TOL)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def _bad_selective(**changes) -> dict:
    kwargs = selective_inputs(CASES["mamba"], "cpu")
    kwargs.update(changes)
    return kwargs


F64, C128 = torch.float64, torch.complex128
BAD_SELECTIVE = {
    "complex_u": (dict(u=torch.zeros(BATCH, LENGTH, CHANNELS, dtype=C128)), r"u must be a real \(Bt, L, K\)"),
    "delta_shape": (dict(delta=torch.zeros(BATCH, LENGTH, CHANNELS + 1, dtype=F64)),
                    r"delta has shape \(2, 21, 6\); expected \(Bt, L, K\) = \(2, 21, 5\) or \(K,\) = \(5,\)"),
    "A_channels": (dict(A=-torch.ones(CHANNELS + 1, STATES, dtype=F64)), r"A must be a \(K, n\) tensor with K = 5"),
    "complex_B_real_A": (dict(B=torch.zeros(BATCH, LENGTH, STATES, dtype=C128)),
                         r"B must be a tensor of shape \(Bt, L, n\) = \(2, 21, 3\) and dtype torch.float64; got"),
    "C_missing": (dict(C=None), r"C is required"),
    "C_shape": (dict(C=torch.zeros(CHANNELS, STATES + 1, dtype=F64)),
                r"C has shape \(5, 4\); expected \(Bt, L, n\) = \(2, 21, 3\) or \(K, n\) = \(5, 3\)"),
    "D_shape": (dict(D=torch.zeros(CHANNELS, 1, dtype=F64)), r"D has shape \(5, 1\); expected \(K,\) = \(5,\)"),
    "discretization": (dict(discretization="euler"),
                       r"discretization='euler' is not valid; expected one of \['zoh', 'bilinear', 'zoh_euler'\]"),
    "scale": (dict(scale="2"), r"scale must be a real number"),
}


@pytest.mark.parametrize("name", list(BAD_SELECTIVE))
@pytest.mark.parametrize("fn", [ts.selective_scan, ts.selective_scan_reference], ids=["kernel", "reference"])
def test_selective_scan_rejects_bad_input(name: str, fn) -> None:
    changes, message = BAD_SELECTIVE[name]
    with pytest.raises(ValueError, match=message):
        fn(**_bad_selective(**changes))


def test_selective_scan_rejects_bad_tiling() -> None:
    with pytest.raises(ValueError, match=r"chunk_size=12 is not valid; expected a power of two >= 2"):
        ts.selective_scan(**_bad_selective(), chunk_size=12)
    with pytest.raises(ValueError, match=r"block_k=3 is not valid; expected None or a power of two >= 1"):
        ts.selective_scan(**_bad_selective(), block_k=3)


DIAGONAL = dict(u=torch.zeros(1, 3, 2, dtype=F64), delta=torch.ones(2, dtype=F64), A=-torch.ones(2, dtype=F64))
BAD_DIAGONAL = {
    "complex_u_real_A": (dict(u=torch.zeros(1, 3, 2, dtype=C128)), r"u is complex \(torch.complex128\) but A is real"),
    "complex_gain": (dict(gain=torch.ones(1, 3, 2, dtype=C128)),
                     r"gain must be a tensor of shape \(Bt, L, K\) = \(1, 3, 2\) and dtype torch.float64"),
    "A_shape": (dict(A=-torch.ones(2, 1, dtype=F64)), r"A must be a \(K,\) tensor with K = 2"),
    "discretization": (dict(discretization="foh"), r"discretization='foh' is not valid"),
}


@pytest.mark.parametrize("name", list(BAD_DIAGONAL))
@pytest.mark.parametrize("fn", [ts.diagonal_scan, ts.diagonal_scan_reference], ids=["kernel", "reference"])
def test_diagonal_scan_rejects_bad_input(name: str, fn) -> None:
    changes, message = BAD_DIAGONAL[name]
    with pytest.raises(ValueError, match=message):
        fn(**{**DIAGONAL, **changes})


@pytest.mark.parametrize("fn", [ts.selective_state_step, ts.selective_state_step_reference],
                         ids=["kernel", "reference"])
def test_state_step_rejects_bad_input(fn) -> None:
    square = dict(h=torch.zeros(3, 3, 2, dtype=F64), u=torch.zeros(3, 3, dtype=F64), delta=torch.ones(3, dtype=F64),
                  A=-torch.ones(3, 2, dtype=F64), C=torch.ones(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"ambiguous when Bt = K = 3: pass fixed_C=True"):
        fn(**square)
    with pytest.raises(ValueError, match=r"h must be a tensor of shape \(Bt, K, n\) = \(3, 3, 2\)"):
        fn(**{**square, "h": torch.zeros(3, 3, 2, dtype=C128)}, fixed_C=True)
    with pytest.raises(ValueError, match=r"C has shape \(3, 3\); expected \(Bt, n\) = \(2, 2\) or \(K, n\) = \(3, 2\)"):
        fn(**{**square, "h": torch.zeros(2, 3, 2, dtype=F64), "u": torch.zeros(2, 3, dtype=F64),
              "C": torch.ones(3, 3, dtype=F64)})
