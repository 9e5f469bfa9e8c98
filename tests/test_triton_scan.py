"""The Triton scans (models.triton_scan) against their step-by-step PyTorch references.

float64 at tiny sizes that exercise every masked tail: L = 21 in chunks of T = 8 (three
chunks, the last one partial), K = 5 channels in blocks of 4, n = 3 states (padded to 4).
Without CUDA the kernels run under Triton's interpreter (TRITON_INTERPRET=1, which must be set
before triton is imported); on a GPU the same tests run the compiled kernels.

bf16 and fp16 per-step tensors (the section "Low-precision inputs") are held to the float32
kernel run on the same (rounded) values: the kernels widen them to fp32 in registers, so only
the rounding of what they write differs.
"""

from __future__ import annotations

import itertools
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


def selective_inputs(case: Case, device: str, dtype: torch.dtype = torch.float64, seed: int = 0,
                     length: int = LENGTH) -> dict:
    """Keyword arguments of selective_scan for a case (random, fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    Bt, L, K, n = BATCH, length, CHANNELS, STATES

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


def output_and_grads(fn, kwargs: dict, seed: int = 1,
                     weight_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """fn(**kwargs) and the gradients of a fixed random linear functional of it, Re Σ w ⊙ out,
    with respect to every tensor argument. weight_dtype: a real w is first rounded to it (so
    that a float32 run sees the w of a bf16 run)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    out = fn(**{**kwargs, **leaves})
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.complex128 if out.is_complex()
                    else torch.float64)
    if weight_dtype is not None and not out.is_complex():
        w = w.to(weight_dtype)
    w = w.to(device=out.device, dtype=out.dtype)  # the same w in every precision
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


@pytest.mark.parametrize("name", ["mamba", "bilinear_real_fixed_C", "zoh_real_fixed_C_gated", "zoh_complex_selective",
                                  "zoh_euler_real_const_softplus"])
def test_the_adjoint_scanned_forward_over_reversed_inputs_computes_the_same(name: str, device: str,
                                                                             monkeypatch) -> None:
    # FLIP_ADJOINT, the backward triton before 3.9 runs: chunks of 8 over 21 steps (the last
    # one padded), per-step and time-invariant Δ, shared and fixed C, real and complex A
    monkeypatch.setattr(ts, "_FLIP_ADJOINT", True)
    case = CASES[name]
    assert ts.flip_adjoint(case.complex_A, case.delta.startswith("step"))
    kwargs = selective_inputs(case, device)
    kernel = output_and_grads(lambda **kw: ts.selective_scan(**kw, **TILING), kwargs)
    assert_same(kernel, output_and_grads(ts.selective_scan_reference, kwargs), **TOL)


@pytest.mark.parametrize("name, channels_first", [("mamba", False), ("mamba", True), ("s4d", False),
                                                   ("zoh_complex_selective", False), ("bilinear_real_fixed_C", False)])
@pytest.mark.parametrize("flip", [False, True], ids=["reversed_scan", "flipped"])
def test_whole_chunks_and_channel_blocks_run_without_masks(name: str, channels_first: bool, flip: bool, device: str,
                                                           monkeypatch) -> None:
    # EVEN: 16 steps in chunks of 8, 5 channels in blocks of 1, forward and backward
    monkeypatch.setattr(ts, "_FLIP_ADJOINT", flip)
    tiling = dict(chunk_size=8, block_k=1, channels_first=channels_first)
    assert ts._even(16, CHANNELS, ts.Tile(8, 1, 4, 1)) and not ts._even(LENGTH, CHANNELS, ts.Tile(8, 1, 4, 1))
    assert not ts._even(16, CHANNELS, ts.Tile(8, 1, 4, 1), masked=True)  # a launch that keeps the masks
    kwargs = selective_inputs(CASES[name], device, length=16)
    kernel = output_and_grads(lambda **kw: ts.selective_scan(**kw, **tiling), kwargs)
    assert_same(kernel, output_and_grads(ts.selective_scan_reference, kwargs), **TOL)


@pytest.mark.parametrize("name, channels_first, length, block_k", [
    ("mamba", False, LENGTH, 4), ("mamba", True, LENGTH, 4), ("mamba", True, 16, 1), ("s4d", False, LENGTH, 4),
    ("zoh_complex_selective", False, LENGTH, 4), ("bilinear_real_fixed_C", False, LENGTH, 4),
    ("zoh_real_fixed_C_gated", False, LENGTH, 4)])
@pytest.mark.parametrize("prefetch, unroll, flip", [(True, 1, False), (True, 1, True), (False, 2, False), (True, 2, True)],
                         ids=["ahead", "ahead_flipped", "unrolled", "ahead_unrolled_flipped"])
def test_the_loop_over_states_loading_ahead_or_unrolled_computes_the_same(
        name: str, channels_first: bool, length: int, block_k: int, prefetch: bool, unroll: int, flip: bool,
        device: str, monkeypatch) -> None:
    # PREFETCH and UNROLL, forward and backward: 3 states (the loads after the last state read
    # state 0's again; unrolled by 2, a remainder of 1), chunks of 8 over 21 steps (the last one
    # padded) or 16 (EVEN, one channel a block)
    every = list(itertools.product((False, True), repeat=4))
    monkeypatch.setattr(ts, "_PREFETCH", frozenset(every if prefetch else ()))
    monkeypatch.setattr(ts, "_UNROLL", dict.fromkeys(every, unroll))
    monkeypatch.setattr(ts, "_FLIP_ADJOINT", flip)
    case = CASES[name]
    launch = ts._launch_settings("selective", case.discretization, True, 8, block_k, CHANNELS, STATES, case.complex_A,
                                 case.delta.startswith("step"), channels_first=channels_first)
    assert {(t.prefetch, t.unroll) for t in (launch.forward, launch.backward)} == {(prefetch, unroll)}
    kwargs = selective_inputs(case, device, length=length)
    tiling = dict(chunk_size=8, block_k=block_k, channels_first=channels_first)
    kernel = output_and_grads(lambda **kw: ts.selective_scan(**kw, **tiling), kwargs)
    assert_same(kernel, output_and_grads(ts.selective_scan_reference, kwargs), **TOL)


def test_the_default_tiles_load_ahead_and_unroll_where_the_tables_say(monkeypatch) -> None:
    tile = ts.default_tile("selective_bwd", 16, False, True, channels_first=True)
    assert (tile.prefetch, tile.unroll) == (False, 1)  # none timed yet
    monkeypatch.setattr(ts, "_PREFETCH", frozenset({(False, True, True, True), (True, False, False, False)}))
    monkeypatch.setattr(ts, "_UNROLL", {(False, True, True, False): 2})
    tile = ts.default_tile("selective_bwd", 16, False, True, channels_first=True)
    assert (tile.prefetch, tile.unroll) == (True, 1)
    tile = ts.default_tile("selective_fwd", 16, False, True, channels_first=True)
    assert (tile.prefetch, tile.unroll) == (False, 2)
    assert [ts.default_tile(kind, 32, True, False).prefetch for kind in ("selective_fwd", "selective_inference",
                                                                          "selective_bwd")] == [True, True, False]
    # many states: the backward's own tiles, neither
    every = list(itertools.product((False, True), repeat=4))
    monkeypatch.setattr(ts, "_PREFETCH", frozenset(every))
    monkeypatch.setattr(ts, "_UNROLL", dict.fromkeys(every, 2))
    tile = ts.default_tile("selective_bwd", 64, False, True)
    assert (tile.prefetch, tile.unroll) == (False, 1)


def test_the_adjoint_is_scanned_forward_only_with_triton_before_3_9(monkeypatch) -> None:
    triton = pytest.importorskip("triton")
    assert ts._FLIP_ADJOINT == (tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 9))
    monkeypatch.setattr(ts, "_FLIP_ADJOINT", True)
    assert [ts.flip_adjoint(c, s) for c, s in [(False, False), (False, True), (True, False), (True, True)]] \
        == [True, True, False, True]
    monkeypatch.setattr(ts, "_FLIP_ADJOINT", False)
    assert not any(ts.flip_adjoint(c, s) for c in (False, True) for s in (False, True))


def test_a_flipped_adjoint_is_flipped_back_by_a_gather_for_a_real_A_on_one_warp_in_whole_chunks() -> None:
    one_warp, four_warps = ts.Tile(64, 1, 16, 1), ts.Tile(64, 4, 256, 4)
    assert ts.flip_gather(False, one_warp, True)
    assert not any([ts.flip_gather(True, one_warp, True), ts.flip_gather(False, four_warps, True),
                    ts.flip_gather(False, one_warp, False)])


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


def test_a_forward_takes_its_own_tile_and_stores_the_backward_s_states(device: str) -> None:
    # the Mamba entry's forward walks longer chunks than its backward and stores the state
    # entering each of the backward's: at L 150 each walks several chunks, the last one short;
    # (Bt, L, K) here, (Bt, K, L) in test_channels_first_kernels_compute_the_same
    settings = dict(kind="selective", discretization="zoh_euler", softplus=True, chunk_size=None, block_k=None,
                    K=CHANNELS, n=STATES, is_complex=False, selective=True, channels_first=False)
    launch = ts._launch_settings(**settings)
    T, block_k, warps = ts._FORWARD_TILES[False, True]
    assert (launch.forward.chunk_size, launch.forward.block_k, launch.forward.num_warps) == (T, min(block_k, 8), warps)
    assert launch.backward.chunk_size == ts._SELECTIVE_TILES[False, True][0] < T
    assert T % launch.backward.chunk_size == 0
    kwargs = selective_inputs(CASES["mamba"], device, length=150)
    reference = output_and_grads(ts.selective_scan_reference, kwargs)
    with torch.no_grad():
        fast = ts.selective_scan(**kwargs, channels_first=False)
    assert_same((fast, {}), (reference[0], {}), **TOL)
    assert_same(output_and_grads(lambda **kw: ts.selective_scan(**kw, channels_first=False), kwargs), reference, **TOL)


@pytest.mark.parametrize("name", ["mamba", "s4d", "bilinear_complex_real_B"])
@pytest.mark.parametrize("tiling", [TILING, {}], ids=["tiled", "default"])
def test_channels_first_kernels_compute_the_same(name: str, tiling: dict, device: str) -> None:
    # u, δ and z copied to (Bt, K, L) for the kernels: out, every gradient as on (Bt, L, K); at
    # the Mamba entry's own tiles L 300 walks several chunks of the training and no-grad forward
    length = 300 if not tiling and name == "mamba" else 40
    kwargs = selective_inputs(CASES[name], device, length=length)
    reference = output_and_grads(ts.selective_scan_reference, kwargs)
    first = output_and_grads(lambda **kw: ts.selective_scan(**kw, **tiling, channels_first=True), kwargs)
    assert first[0].shape == (BATCH, length, CHANNELS)
    assert_same(first, reference, **TOL)
    with torch.no_grad():
        fast = ts.selective_scan(**kwargs, **tiling, channels_first=True)
    assert_same((fast, {}), (reference[0], {}), **TOL)


def test_the_channels_first_layout_takes_its_own_entries_where_there_are_some() -> None:
    settings = dict(kind="selective", discretization="zoh_euler", softplus=True, chunk_size=None, block_k=None,
                    K=1024, n=16, is_complex=False, selective=True, channels_first=True)
    T, _, _, bwd_k, bwd_warps = ts._CHANNELS_FIRST_TILES[False, True]
    launch = ts._launch_settings(**settings)
    assert launch.channels_first and (launch.backward.chunk_size, launch.backward.block_k,
                                      launch.backward.num_warps) == (T, bwd_k, bwd_warps)
    forward = launch.forward
    assert (forward.chunk_size, forward.block_k, forward.num_warps) == ts._CHANNELS_FIRST_FORWARD_TILES[False, True]
    # an entry with none of its own: the (Bt, L, K) layout's
    assert ts.default_tile("selective_bwd", 32, True, False, channels_first=True) == ts.default_tile(
        "selective_bwd", 32, True, False)
    # by default a scan takes the channels-first layout where it has entries, for up to 32 states
    del settings["channels_first"]
    assert ts._launch_settings(**settings) == launch
    assert not ts._launch_settings(**{**settings, "n": 64}).channels_first
    assert not ts._launch_settings(**{**settings, "is_complex": True, "selective": False}).channels_first
    assert not ts._launch_settings(**{**settings, "kind": "diagonal", "n": 1}).channels_first


@pytest.mark.parametrize("name, channels_first", [("mamba", False), ("mamba", True), ("zoh_complex_selective", True)])
def test_atomic_sums_of_the_shared_B_and_C_gradients_compute_the_same(name: str, channels_first: bool, device: str,
                                                                      monkeypatch) -> None:
    # one channel per program: five blocks add into each batch element's (n, L) gradient of B and C
    launches = []
    backward = ts._selective_backward
    monkeypatch.setattr(ts, "_selective_backward", lambda *args: launches.append(args[-1]) or backward(*args))
    kwargs = selective_inputs(CASES[name], device)
    tiling = dict(chunk_size=8, block_k=1, channels_first=channels_first)
    reference = output_and_grads(ts.selective_scan_reference, kwargs)
    atomic = output_and_grads(lambda **kw: ts.selective_scan(**kw, **tiling, atomic_sums=True), kwargs)
    assert [(launch.atomic_sums, launch.backward.block_k) for launch in launches] == [(True, 1)]
    assert_same(atomic, reference, **TOL)


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for the test, restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def test_atomic_sums_follow_their_table(monkeypatch) -> None:
    settings = dict(kind="selective", discretization="zoh_euler", softplus=True, chunk_size=None, block_k=None,
                    K=1024, n=16, is_complex=False, selective=True, channels_first=False)
    assert ts._launch_settings(**settings).atomic_sums == ((False, True, False) in ts._ATOMIC_SUMS)
    monkeypatch.setattr(ts, "_ATOMIC_SUMS", frozenset({(False, True, False)}))
    assert ts._launch_settings(**settings).atomic_sums
    assert not ts._launch_settings(**{**settings, "channels_first": True}).atomic_sums  # another key
    assert not ts._launch_settings(**settings, atomic_sums=False).atomic_sums
    assert not ts._launch_settings(**{**settings, "kind": "diagonal", "n": 1}).atomic_sums


def test_atomic_sums_never_run_under_deterministic_algorithms(monkeypatch, deterministic) -> None:
    settings = dict(kind="selective", discretization="zoh_euler", softplus=True, chunk_size=None, block_k=None,
                    K=1024, n=16, is_complex=False, selective=True)
    monkeypatch.setattr(ts, "_ATOMIC_SUMS", frozenset({(False, True, False), (False, True, True)}))
    assert not ts._launch_settings(**settings).atomic_sums
    assert not ts._launch_settings(**settings, channels_first=False).atomic_sums
    with pytest.raises(ValueError, match=r"atomic_sums=True is not valid under torch.use_deterministic_algorithms"
                                         r"\(True\).*expected None or False"):
        ts.selective_scan(**_bad_selective(), atomic_sums=True)


def test_entries_without_a_forward_tile_run_the_forward_at_the_pair_s_tile(monkeypatch) -> None:
    for n, is_complex, selective in [(16, True, False), (32, True, True), (16, False, False)]:
        assert (is_complex, selective) not in ts._FORWARD_TILES
        T, fwd_k, fwd_warps, _, _ = ts._SELECTIVE_TILES[is_complex, selective]
        for kind in ("selective_fwd", "selective_inference"):
            assert ts.default_tile(kind, n, is_complex, selective) == ts.Tile(T, fwd_k, ts._next_power_of_2(n),
                                                                              fwd_warps)
    # a chosen chunk_size is the forward's and the backward's
    launch = ts._launch_settings("selective", "zoh_euler", True, 8, None, 1024, 16, False, True)
    assert launch.forward.chunk_size == launch.backward.chunk_size == 8
    # a forward entry whose T is not a multiple of the backward's is not taken
    monkeypatch.setattr(ts, "_FORWARD_TILES", {(False, True): (16, 4, 1)})
    monkeypatch.setitem(ts._SELECTIVE_TILES, (False, True), (32, 2, 1, 2, 1))
    assert ts.default_tile("selective_fwd", 16, False, True) == ts.Tile(32, 2, 16, 1)


def test_every_forward_entry_is_taken() -> None:
    # its T a multiple of its backward's, so the forward stores the state entering each backward chunk
    for own, pairs in [(ts._FORWARD_TILES, ts._SELECTIVE_TILES), (ts._CHANNELS_FIRST_FORWARD_TILES,
                                                                  ts._CHANNELS_FIRST_TILES)]:
        for key, (T, block_k, warps) in own.items():
            assert T % pairs[key][0] == 0, key
            assert ts.default_tile("selective_fwd", 16, *key, channels_first=pairs is ts._CHANNELS_FIRST_TILES) \
                == ts.Tile(T, block_k, 16, warps)


def test_a_forward_takes_its_entry_s_tile_for_any_state_size() -> None:
    # the forward holds no tile with an n axis (the carried state goes through memory); the
    # backward's carried tiles set its tile from _LARGE_STATE states
    for kind in ("selective_fwd", "selective_inference"):
        small, large = (ts.default_tile(kind, n, False, True) for n in (16, 256))
        assert (small.chunk_size, small.block_k, small.num_warps) == (large.chunk_size, large.block_k, large.num_warps)
    assert ts.default_tile("selective_bwd", 256, False, True).block_k != ts.default_tile("selective_bwd", 16, False,
                                                                                           True).block_k


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


def diagonal_inputs(name: str, device: str, dtype: torch.dtype = torch.float64) -> dict:
    """Keyword arguments of diagonal_scan for a case of DIAGONAL_CASES (random, fixed seed)."""
    discretization, complex_A, complex_u, gain, per_step = DIAGONAL_CASES[name]
    gen = torch.Generator().manual_seed(3)
    Bt, L, K = BATCH, LENGTH, CHANNELS
    A = _A((K,), complex_A, gen, dtype)
    kwargs = dict(u=torch.randn(Bt, L, K, generator=gen, dtype=A.dtype if complex_u else dtype), A=A,
                  discretization=discretization)
    if per_step:
        kwargs.update(delta=0.5 * torch.randn(Bt, L, K, generator=gen, dtype=dtype),
                      delta_bias=0.3 * torch.randn(K, generator=gen, dtype=dtype), delta_softplus=True)
    else:
        kwargs["delta"] = 0.1 + 0.6 * torch.rand(K, generator=gen, dtype=dtype)
    if gain:
        kwargs["gain"] = torch.randn(Bt, L, K, generator=gen, dtype=dtype)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


@pytest.mark.parametrize("name", list(DIAGONAL_CASES))
def test_diagonal_scan_matches_reference(name: str, device: str) -> None:
    kwargs = diagonal_inputs(name, device)
    kernel = output_and_grads(lambda **kw: ts.diagonal_scan(**kw, **TILING), kwargs)
    reference = output_and_grads(ts.diagonal_scan_reference, kwargs)
    assert kernel[0].dtype == kwargs["A"].dtype
    assert_same(kernel, reference, **TOL)


# ---------------------------------------------------------------------------------------
# Low-precision inputs: bf16 / fp16 per-step tensors, fp32 accumulation
# ---------------------------------------------------------------------------------------
#
# The kernels read a bf16 or fp16 per-step tensor (u, δ, B_t, C_t, z, gains) in its dtype and
# widen it to fp32 in registers; A, D, the bias, a (K,) δ or C and the states stay fp32. So a
# call on bf16 tensors computes, in registers, exactly what the fp32 kernel computes on the
# same values widened, and differs only where it writes a per-step tensor (y, and the gradients
# of u, δ, z, B, C, gain) in that tensor's dtype: each such element is the fp32 value rounded,
# within one unit in the last place, |x_low - x| <= eps·|x| (eps = 2^-7 for bf16, 2^-10 for
# fp16: the GPU rounds to nearest, within eps/2; triton's interpreter truncates, within eps).
# Gradients of fp32 tensors are the fp32 kernel's (the same arithmetic on the same values).
# A relative tolerance of eps per element bounds the relative norm error by eps too
# (0.8% for bf16). atol only absorbs fp32 reassociation by the GPU compiler near zero.

LOW_PRECISION = [torch.bfloat16, torch.float16]


def low_precision_cases(names: list[str], fp16: list[str]) -> list:
    """(name, dtype) pairs: bf16 for every name (autocast's dtype), fp16 for a few."""
    return ([pytest.param(name, torch.bfloat16, id=f"{name}-bf16") for name in names]
            + [pytest.param(name, torch.float16, id=f"{name}-fp16") for name in fp16])
_FP32_RTOL = 1e-5  # gradients that stay fp32: the same arithmetic (exact under the interpreter)


def narrowed(kwargs: dict, dtypes: dict[str, torch.dtype]) -> tuple[dict, dict]:
    """(low, wide): kwargs with the tensors named in dtypes rounded to those dtypes, and the same
    rounded values in float32."""
    low = {**kwargs, **{name: kwargs[name].to(dtype) for name, dtype in dtypes.items()}}
    wide = {**kwargs, **{name: low[name].float() for name in dtypes}}
    return low, wide


def per_step_names(kwargs: dict, ndim: int) -> list[str]:
    """The real per-step tensors of a call: real, of ndim axes and not a parameter (A, a fixed C)."""
    return [name for name, value in kwargs.items() if isinstance(value, torch.Tensor) and not value.is_complex()
            and value.dim() == ndim and name not in ("A", "h") and not (name == "C" and value.shape[0] == CHANNELS)]


def assert_rounded(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> float:
    """got (dtype, a low-precision run) is want (float32, the same values) rounded to dtype, or
    both are float32 and equal to fp32 accuracy; returns the relative norm error."""
    assert got.dtype == dtype, (what, got.dtype, dtype)
    got, want = got.to(want.dtype), want
    if dtype in LOW_PRECISION:
        rtol, atol = torch.finfo(dtype).eps, 1e-6 * want.abs().max().item()
    else:
        rtol, atol = _FP32_RTOL, 1e-6 * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
    return relative_error(got, want)


def assert_low_matches_wide(fn, kwargs: dict, dtypes: dict[str, torch.dtype], out_dtype: torch.dtype) -> dict:
    """fn on kwargs with the `dtypes` tensors rounded to low precision, against fn on the same
    values in float32: the output (out_dtype) and every gradient (each in its input's dtype);
    returns the relative norm errors."""
    low, wide = narrowed(kwargs, dtypes)
    weight = out_dtype if out_dtype in LOW_PRECISION else None
    out, grads = output_and_grads(fn, low, weight_dtype=weight)
    out_wide, grads_wide = output_and_grads(fn, wide, weight_dtype=weight)
    errors = {"out": assert_rounded(out, out_wide, out_dtype, "out")}
    for name, grad in grads.items():
        errors[name] = assert_rounded(grad, grads_wide[name], low[name].dtype, f"grad of {name}")
    return errors


@pytest.mark.parametrize("name, dtype", low_precision_cases(
    ["mamba", "s4d", "zoh_complex_selective", "bilinear_complex_real_B", "zoh_real_fixed_C_gated"],
    ["mamba", "zoh_complex_selective"]))
def test_selective_scan_low_precision(name: str, dtype: torch.dtype, device: str) -> None:
    kwargs = selective_inputs(CASES[name], device, dtype=torch.float32)
    names = per_step_names(kwargs, 3)
    assert "u" in names
    assert_low_matches_wide(lambda **kw: ts.selective_scan(**kw, **TILING), kwargs, dict.fromkeys(names, dtype), dtype)


def test_selective_scan_mixed_dtypes(device: str) -> None:
    """Each per-step tensor in its own dtype: read as it is, its gradient written in it."""
    kwargs = selective_inputs(CASES["mamba"], device, dtype=torch.float32)
    dtypes = dict(u=torch.bfloat16, B=torch.float16, C=torch.bfloat16, z=torch.float16)  # delta stays fp32
    errors = assert_low_matches_wide(lambda **kw: ts.selective_scan(**kw, **TILING), kwargs, dtypes, torch.bfloat16)
    assert set(errors) == {"out", "u", "delta", "A", "B", "C", "D", "z", "delta_bias"}


@pytest.mark.parametrize("name, dtype", low_precision_cases(
    list(DIAGONAL_CASES), ["zoh_real_gain_step", "zoh_euler_complex_gain_step"]))
def test_diagonal_scan_low_precision(name: str, dtype: torch.dtype, device: str) -> None:
    kwargs = diagonal_inputs(name, device, dtype=torch.float32)
    names = per_step_names(kwargs, 3)
    out_dtype = kwargs["A"].dtype if kwargs["A"].is_complex() else dtype  # complex bf16 does not exist
    assert_low_matches_wide(lambda **kw: ts.diagonal_scan(**kw, **TILING), kwargs, dict.fromkeys(names, dtype),
                            out_dtype)


@pytest.mark.parametrize("name, dtype", low_precision_cases(["mamba", "s4d", "bilinear_complex_real_B"], ["mamba"]))
def test_state_step_low_precision(name: str, dtype: torch.dtype, device: str) -> None:
    """y in u's dtype, rounded from the fp32 kernel's; the state h stays fp32 (or complex64)."""
    kwargs = steps_of(selective_inputs(CASES[name], device, dtype=torch.float32))[4]
    fixed_C = CASES[name].C == "fixed"
    h = torch.randn(BATCH, CHANNELS, STATES, generator=torch.Generator().manual_seed(2),
                    dtype=kwargs["A"].dtype).to(device)
    names = [key for key in per_step_names(kwargs, 2) if key != "C" or not fixed_C]
    low, wide = narrowed(kwargs, dict.fromkeys(names, dtype))
    y, h_new = ts.selective_state_step(h, **low, fixed_C=fixed_C, block_k=4)
    y_wide, h_wide = ts.selective_state_step(h, **wide, fixed_C=fixed_C, block_k=4)
    assert_rounded(y, y_wide, dtype, "y")
    assert_rounded(h_new, h_wide, h.dtype, "h")


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


def test_parameters_must_stay_at_the_accumulation_dtype() -> None:
    """Per-step tensors may be bf16 or fp16; A, D, the bias, a (K,) δ and a fixed C may not."""
    kwargs = selective_inputs(CASES["zoh_euler_real_const_softplus"], "cpu", dtype=torch.float32)  # real A, fixed C
    low = {**kwargs, "u": kwargs["u"].bfloat16()}
    with pytest.raises(ValueError, match=r"D must be a tensor of shape \(K,\) = \(5,\) and dtype torch.float32"):
        ts.selective_scan_reference(**{**low, "D": kwargs["D"].bfloat16()})
    with pytest.raises(ValueError, match=r"C of shape \(K, n\) = \(5, 3\) must have dtype torch.float32; got"):
        ts.selective_scan(**{**low, "C": kwargs["C"].bfloat16()})
    with pytest.raises(ValueError, match=r"A must be a \(K, n\) tensor with K = 5 and dtype torch.float32"):
        ts.selective_scan(**{**low, "A": kwargs["A"].bfloat16()})
    with pytest.raises(ValueError, match=r"delta of shape \(K,\) = \(5,\) must have dtype torch.float32; got"):
        ts.selective_scan(**{**low, "delta": kwargs["delta"].bfloat16()})
    wide = selective_inputs(CASES["mamba"], "cpu")  # float64: no low-precision tensor at all
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(Bt, L, K\) = \(2, 21, 5\) and dtype "
                                         r"torch.float64; got"):
        ts.selective_scan(**{**wide, "z": wide["z"].bfloat16()})


def test_selective_scan_rejects_a_bad_layout() -> None:
    with pytest.raises(ValueError, match=r"channels_first='yes' is not valid; expected None, True or False"):
        ts.selective_scan(**_bad_selective(), channels_first="yes")


def test_selective_scan_rejects_a_bad_atomic_sums() -> None:
    with pytest.raises(ValueError, match=r"atomic_sums=1 is not valid; expected None, True or False"):
        ts.selective_scan(**_bad_selective(), atomic_sums=1)


def test_selective_scan_rejects_bad_tiling() -> None:
    with pytest.raises(ValueError, match=r"chunk_size=12 is not valid; expected a power of two >= 2"):
        ts.selective_scan(**_bad_selective(), chunk_size=12)
    with pytest.raises(ValueError, match=r"block_k=3 is not valid; expected None or a power of two >= 1"):
        ts.selective_scan(**_bad_selective(), block_k=3)


def test_selective_scan_rejects_a_batch_past_the_grid(device) -> None:
    batch = 65536
    u = torch.zeros((), dtype=F64, device=device).expand(batch, 2, 1)
    with pytest.raises(ValueError, match=r"Bt = 65536 is too large: the batch is the second axis of the kernels' "
                                         r"grid, expected <= 65535; call it on smaller batches"):
        ts.selective_scan(u, u, -torch.ones(1, 2, dtype=F64, device=device),
                          C=torch.zeros((), dtype=F64, device=device).expand(batch, 2, 2))


@pytest.mark.parametrize("states, is_complex, message", [
    (1, False, r"L·K = 2147483648 is too large: one batch element is indexed in 32 bits, expected < 2\^31 "
               r"\(call it on fewer channels, or use another mode for L = 65536\)"),
    (32768, True, r"L·n = 4294967296 \(two planes\) is too large"),
])
def test_selective_scan_rejects_a_batch_element_past_32_bit_offsets(states, is_complex, message, device) -> None:
    # zero-stride views: the shapes of a 2^31-element batch element, with no memory behind them
    length, K = 2 ** 16, 2 ** 15 if states == 1 else 1
    real = torch.zeros((), dtype=F64, device=device)
    A = -torch.ones(K, states, dtype=C128 if is_complex else F64, device=device)
    with pytest.raises(ValueError, match=message):
        ts.selective_scan(real.expand(1, length, K), real.expand(1, length, K), A, B=None,
                          C=torch.zeros((), dtype=A.dtype, device=device).expand(1, length, states))


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
