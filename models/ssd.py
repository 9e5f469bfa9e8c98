"""The chunked state-space-dual (SSD) form of a recurrence with one real decay per head.

Per head e, for P channels and N states (Mamba-2 §6, "SSD"; any number J of input terms and R of
readouts, so the trapezoidal rule and the rank-R MIMO of Mamba-3 fit too):

    h_t = α_t h_{t-1} + Σ_j X_t[j] ⊗ B_t[j],      h_t ∈ R^{P×N}, X_t[j] ∈ R^P, B_t[j] ∈ R^N
    y_t[r] = h_t C_t[r],                          y_t[r] ∈ R^P,  C_t[r] ∈ R^N

with α_t = exp(ℓ_t), or α_t = (-1)^{f_t} exp(ℓ_t) with a flip f_t ∈ {0, 1} where the decay may
be negative (eigenvalues in [-1, 1]: ℓ_t = log|α_t|). Unrolled,
y_t[r] = Σ_{s≤t} α_{s+1}···α_t Σ_j (C_t[r]·B_s[j]) X_s[j], with
α_{s+1}···α_t = (-1)^{f_{s+1} + ... + f_t} exp(ℓ_{s+1} + ... + ℓ_t): a masked, decay-weighted
attention. In chunks of T steps:

* inside a chunk, that sum over its own steps is two matmuls per (batch, chunk, head): the
  (T·R × T·J) scores C·Bᵀ times the decays, then times X;
* the state a chunk leaves, S_k = Σ_s exp(ℓ_{s+1} + ... + ℓ_end) X_s ⊗ B_s, is one more;
* the states carried across chunks run the recurrence H_{k+1} = (α over the chunk) H_k + S_k,
  L/T steps of (P × N) per head, and each step t reads (α_start···α_t) H_k C_t.

The decay of a pair (t, s) is the exponential of a sum of the ℓ between them, taken as that sum
(a cumulative sum of masked copies, "segsum"), not as the difference of two running sums, which
would cancel in float32; its sign is the parity of the flips between them, summed the same way
(small integers: exact). No (B, L, P, N) tensor of states is formed: the work is in matmuls, and
autograd differentiates them. Equal to the step-by-step recurrence in float64 to rounding
(tests/test_frontier.py, tests/test_modes.py).
"""

from __future__ import annotations

import torch


def _segment_sums(v: torch.Tensor, above: float = float("-inf")) -> torch.Tensor:
    """(..., T) -> (..., T, T): [t, s] = v_{s+1} + ... + v_t for s <= t (0 on the diagonal), ``above`` above it."""
    T = v.shape[-1]
    repeated = v.unsqueeze(-1).expand(*v.shape, T)  # [t, s] = v_t
    below = torch.ones(T, T, dtype=torch.bool, device=v.device).tril(-1)
    sums = repeated.masked_fill(~below, 0).cumsum(-2)
    return sums.masked_fill(~below.logical_or(torch.eye(T, dtype=torch.bool, device=v.device)), above)


def _sign(flips: torch.Tensor) -> torch.Tensor:
    """(-1)^k for counts k of sign flips (whole numbers in a float dtype)."""
    return 1 - 2 * torch.remainder(flips, 2)


def chunked_dual(log_a: torch.Tensor, X: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 chunk_size: int, flips: torch.Tensor | None = None) -> torch.Tensor:
    """y (batch, L, R, E, P) of the recurrence in the module docstring, from h_{-1} = 0.

    log_a: ℓ (batch|1, L|1, E), real; X: (batch, L, J, E, P); B: (batch, L, J, E, N);
    C: (batch, L, R, E, N); all real, of one dtype. ``chunk_size``: T (at most L is used).
    ``flips``: f, 1 where α_t is negative and 0 elsewhere, shaped as ``log_a`` and of its dtype
    (None: every α_t is positive).
    """
    batch, L, J, E, P = X.shape
    R = C.shape[2]
    T = min(chunk_size, L)
    K = -(-L // T)
    pad = K * T - L
    log_a = log_a.expand(batch, L, E)
    flips = None if flips is None else flips.expand(batch, L, E)
    if pad:  # padded steps: α = 1 and no input, after the last real step (nothing reads them)
        log_a, X, B, C = (torch.cat([t, t.new_zeros(batch, pad, *t.shape[2:])], 1) for t in (log_a, X, B, C))
        flips = None if flips is None else torch.cat([flips, flips.new_zeros(batch, pad, E)], 1)
    log_a = log_a.view(batch, K, T, E).transpose(2, 3)  # (batch, K, E, T)
    X, B, C = (t.reshape(batch, K, T, *t.shape[2:]) for t in (X, B, C))
    decay = torch.exp(_segment_sums(log_a))  # (batch, K, E, T, T)
    if flips is not None:
        flips = flips.view(batch, K, T, E).transpose(2, 3)
        decay = decay * _sign(_segment_sums(flips, above=0.0))

    # inside each chunk: y_t[r] = Σ_s decay[t, s] Σ_j (C_t[r]·B_s[j]) X_s[j]
    scores = torch.einsum("bktren,bksjen->bketrsj", C, B) * decay.view(batch, K, E, T, 1, T, 1)
    y = torch.einsum("bketrsj,bksjep->bktrep", scores, X)

    # the state each chunk leaves, from a zero start: S_k = Σ_s decay[end, s] Σ_j X_s[j] ⊗ B_s[j]
    leaving = torch.einsum("bkes,bksjep,bksjen->bkepn", decay[..., -1, :], X, B)
    if K == 1:
        return y.reshape(batch, T, R, E, P)[:, :L]
    # across chunks: H_0 = 0, H_{k+1} = (α over chunk k) H_k + S_k; step t of chunk k reads
    # (α_start···α_t) C_t[r] · H_k
    chunk_decay = torch.exp(log_a.sum(-1))  # (batch, K, E)
    from_start = torch.exp(log_a.cumsum(-1))  # (batch, K, E, T)
    if flips is not None:
        chunk_decay = chunk_decay * _sign(flips.sum(-1))
        from_start = from_start * _sign(flips.cumsum(-1))
    chunk_decay = chunk_decay.unsqueeze(-1).unsqueeze(-1)  # (batch, K, E, 1, 1)
    state = torch.zeros_like(leaving[:, 0])
    entering = [state]
    for k in range(K - 1):
        state = chunk_decay[:, k] * state + leaving[:, k]
        entering.append(state)
    entering = torch.stack(entering, 1)  # (batch, K, E, P, N)
    carried = torch.einsum("bktren,bkepn->bktrep", C, entering) * from_start.transpose(2, 3).view(batch, K, T, 1, E, 1)
    return (y + carried).reshape(batch, K * T, R, E, P)[:, :L]
