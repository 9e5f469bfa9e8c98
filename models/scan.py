"""The diagonal linear recurrence  h_t = a_t ⊙ h_{t-1} + b_t,  h_{-1} = 0,  along dim 1.

Shapes: b is (B, L, *S); a is (B or 1, L or 1, *S) — a length-1 time axis means a
time-invariant transition (LTI SSMs), which every kernel exploits. Real or complex.

Three ways to compute the same h (tests check they agree in float64 to ~1e-15):

* :func:`scan_recurrent` — the step-by-step loop, differentiated by autograd. The
  reference every other mode is tested against.
* ``scan`` — the parallel associative scan over the pairs (a, b) with the operator
  (a1, b1) • (a2, b2) = (a2 a1, a2 b1 + b2) (Blelloch 1990; S5 §2.2), in its work-efficient
  odd–even form: pair up neighbours, solve the half-length recurrence, fill in the even
  positions. log2(L) levels, O(L) work.
* ``chunked`` — split L into chunks of T; run the recurrence inside all chunks at once
  (T vectorised steps), then carry the chunk-end states across chunks (L/T steps) and
  add  cumprod(a) · carry  to every position. ~2·sqrt(L) Python steps, 3 passes of memory.

``scan`` and ``chunked`` share one hand-written backward. With g_t = ∂loss/∂h_t through
the recurrence (the adjoint state),
    g_t = ∂ℓ/∂h_t + conj(a_{t+1}) g_{t+1}        (a reversed scan of the same form)
    ∂ℓ/∂b_t = g_t,     ∂ℓ/∂a_t = g_t conj(h_{t-1})
(PyTorch's convention for complex gradients: the conjugate Wirtinger derivative.) No
graph of the intermediate levels is kept: memory is that of a and h.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def scan_recurrent(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Step-by-step loop (autograd), the reference. a: (B|1, L|1, *S), b: (B, L, *S)."""
    steps = b.unbind(1)
    transitions = a.unbind(1) if a.shape[1] > 1 else [a[:, 0]] * len(steps)
    h = torch.zeros_like(steps[0])
    out = []
    for a_t, b_t in zip(transitions, steps):
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out, 1)


def _odd_even(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Work-efficient associative scan (no autograd). a: (·, L|1, *S), b: (B, L, *S)."""
    L = b.shape[1]
    if L == 1:
        return b.clone()
    m = L // 2
    b_even, b_odd = b[:, 0 : 2 * m : 2], b[:, 1 : 2 * m : 2]
    if a.shape[1] == 1:  # time-invariant: every pair has transition a·a
        a_even = a_odd = a_rest = a
    else:
        a_even, a_odd, a_rest = a[:, 0 : 2 * m : 2], a[:, 1 : 2 * m : 2], a[:, 2::2]
    # (a_even, b_even) • (a_odd, b_odd): the recurrence over pairs gives h at odd positions.
    h_odd = _odd_even(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even))
    h = torch.empty_like(b)
    h[:, 1 : 2 * m : 2] = h_odd
    h[:, 0] = b[:, 0]
    rest = (L - 1) // 2  # even positions 2, 4, ... each one step after an odd position
    if rest:
        h[:, 2::2] = torch.addcmul(b[:, 2::2], a_rest, h_odd[:, :rest])
    return h


def default_chunk_size(length: int) -> int:
    """About sqrt(L), which balances the in-chunk steps against the carry steps; a divisor
    of L near it when there is one (no padding needed)."""
    root = math.sqrt(length)
    divisors = [d for d in range(max(1, int(root / 2)), int(2 * root) + 1) if length % d == 0]
    if divisors:
        return min(divisors, key=lambda d: abs(d - root))
    return max(1, int(round(root)))


def _chunked(a: torch.Tensor, b: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Chunk-parallel scan (no autograd). a: (·, L|1, *S), b: (B, L, *S).

    Pass 1, all chunks at once: local states with a zero start, and each chunk's product
    of transitions P_k. Carries: s_k = P_{k-1} s_{k-1} + (local end state of chunk k-1).
    Pass 2: h_t += (a_{start}···a_t) s_k, the running product kept per step.
    """
    batch, L, *S = b.shape
    T = min(chunk_size or default_chunk_size(L), L)
    K = -(-L // T)
    pad = K * T - L
    invariant = a.shape[1] == 1
    if pad:
        b = torch.cat([b, b.new_zeros(batch, pad, *S)], 1)
        if not invariant:
            a = torch.cat([a, a.new_ones(a.shape[0], pad, *S)], 1)
    b_c = b.reshape(batch, K, T, *S)
    a_c = a.unsqueeze(1) if invariant else a.reshape(a.shape[0], K, T, *S)  # (·, K|1, T|1, *S)
    a_steps = [a_c[:, :, 0]] * T if invariant else a_c.unbind(2)
    b_steps = b_c.unbind(2)
    h = torch.empty_like(b_c)
    current = b_steps[0]
    h[:, :, 0] = current
    # the chunk's transition product by the same multiplications as the loop (a time-invariant
    # a ** T is exp(T log a): its angle T·arg(a) rounded once, an error the K carries compound)
    product = a_steps[0]
    for t in range(1, T):
        current = torch.addcmul(b_steps[t], a_steps[t], current)
        h[:, :, t] = current
        product = product * a_steps[t]
    if K > 1:
        start = torch.zeros_like(b_c[:, 0, 0])
        starts = [start]
        for k in range(1, K):
            start = torch.addcmul(h[:, k - 1, -1], product[:, 0 if invariant else k - 1], start)
            starts.append(start)
        running = torch.stack(starts, 1)  # (B, K, *S): the state entering each chunk
        for t in range(T):
            running = running * a_steps[t]
            h[:, :, t] += running
    return h.reshape(batch, K * T, *S)[:, :L]


def _reverse(kernel: Kernel, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t h_{t+1} + b_t, run right to left."""
    a_flipped = a if a.shape[1] == 1 else a.flip(1)
    return kernel(a_flipped, b.flip(1)).flip(1)


class _LinearScan(torch.autograd.Function):
    """Forward by a no-autograd kernel; backward by the adjoint recurrence (module docstring)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, kernel: Kernel) -> torch.Tensor:
        h = kernel(a, b)
        ctx.save_for_backward(a, h)
        ctx.kernel = kernel
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        a, h = ctx.saved_tensors
        a_conj = a.conj()
        if a.shape[1] == 1:
            a_next = a_conj  # the first reversed step multiplies a zero state: its value is unused
        else:
            a_next = torch.cat([a_conj[:, 1:], torch.zeros_like(a_conj[:, :1])], 1)
        g = _reverse(ctx.kernel, a_next, grad_h.to(h.dtype))
        grad_a = None
        if ctx.needs_input_grad[0]:
            h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
            grad_a = (g * h_prev.conj()).sum_to_size(a.shape)
            if not a.is_complex() and grad_a.is_complex():
                grad_a = grad_a.real
        return grad_a, g, None


def scan_associative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Parallel (odd–even) associative scan with the adjoint backward."""
    return _LinearScan.apply(a, b, _odd_even)


def scan_chunked(a: torch.Tensor, b: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Chunk-parallel scan with the adjoint backward."""
    return _LinearScan.apply(a, b, lambda a_, b_: _chunked(a_, b_, chunk_size))


def linear_scan(a: torch.Tensor, b: torch.Tensor, mode: str, chunk_size: int | None = None) -> torch.Tensor:
    """h for  h_t = a_t h_{t-1} + b_t  by the named mode ("recurrent", "scan", "chunked")."""
    if a.dtype != b.dtype:
        a = a.to(b.dtype)
    if mode == "recurrent":
        return scan_recurrent(a, b)
    if mode == "scan":
        return scan_associative(a, b)
    if mode == "chunked":
        return scan_chunked(a, b, chunk_size)
    raise ValueError(f"scan mode={mode!r} is not valid; expected one of ['recurrent', 'scan', 'chunked']")


def widened(t: torch.Tensor) -> torch.Tensor:
    """t in float64 (complex128 when complex): exact for a float32 tensor."""
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def power_tables(length: int) -> tuple[int, int]:
    """(T, Q): the entries of the two tables of :func:`powers`, Ā^r for r < T and Ā^{qT} for q < Q."""
    T = max(1, math.ceil(math.sqrt(length)))
    return T, -(-length // T)


def powers(log_a: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Ā^l = exp(l log Ā) for l = 0..length-1 along a new last dim: (*log_a.shape, length), in the
    real ``dtype`` (its complex counterpart for a complex log Ā).

    Formed as Ā^{qT} · Ā^r (l = qT + r, T about sqrt(length)) from two small tables computed in
    float64 and rounded once: every power is good to a few units of ``dtype``. exp(l log Ā) in
    float32 rounds log Ā and then the angle l·arg Ā, a phase error that grows as l·eps: with a
    bilinear Ā near the unit circle (a large Δ) the kernel was ten times less accurate than the
    float32 recurrence at L = 4096. A complex table is built from its modulus and angle
    (torch.polar), several times faster than a complex exp.
    """
    T, Q = power_tables(length)
    wide = widened(log_a).unsqueeze(-1)
    steps = torch.arange(max(T, Q), device=log_a.device, dtype=torch.float64)

    def table(lags: torch.Tensor) -> torch.Tensor:
        if not wide.is_complex():
            return torch.exp(lags * wide)
        return torch.polar(torch.exp(lags * wide.real), lags * wide.imag)

    out = torch.promote_types(dtype, torch.complex64) if wide.is_complex() else dtype
    low, high = table(steps[:T]).to(out), table(steps[:Q] * T).to(out)
    return (high.unsqueeze(-1) * low.unsqueeze(-2)).flatten(-2)[..., :length]


def state_convolution(log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """States of a time-invariant recurrence as a convolution: h_t = Σ_k Ā^k b_{t-k}.

    log_a: (G, n) with Ā = exp(log_a); b: (B, L, G, n). By FFT at length 2L.
    """
    L = b.shape[1]
    n = 2 * L
    real = torch.promote_types(b.real.dtype if b.is_complex() else b.dtype, torch.float32)
    kernel = powers(log_a, L, real).movedim(-1, 0)  # (L, G, n)
    if not b.is_complex() and not kernel.is_complex():
        return torch.fft.irfft(torch.fft.rfft(b, n=n, dim=1) * torch.fft.rfft(kernel, n=n, dim=0), n=n, dim=1)[:, :L]
    cdtype = b.dtype if b.is_complex() else kernel.dtype
    spectrum = torch.fft.fft(b.to(cdtype), n=n, dim=1) * torch.fft.fft(kernel.to(cdtype), n=n, dim=0)
    h = torch.fft.ifft(spectrum, n=n, dim=1)[:, :L]
    return h if b.is_complex() else h.real  # a real state under a complex log Ā stays real
