"""The chunked state-space-dual (SSD) form of a recurrence with one real decay per head.

Per head e, for P channels and N states (Mamba-2 §6, "SSD"; any number J of input terms and R of
readouts, so the trapezoidal rule and the rank-R MIMO of Mamba-3 fit too):

    h_t = α_t h_{t-1} + Σ_j X_t[j] ⊗ B_t[j],      h_t ∈ R^{P×N}, X_t[j] ∈ R^P, B_t[j] ∈ R^N
    y_t[r] = h_t C_t[r],                          y_t[r] ∈ R^P,  C_t[r] ∈ R^N

with α_t = exp(ℓ_t). Unrolled, y_t[r] = Σ_{s≤t} exp(ℓ_{s+1} + ... + ℓ_t) Σ_j (C_t[r]·B_s[j]) X_s[j]:
a masked, decay-weighted attention. In chunks of T steps:

* inside a chunk, that sum over its own steps is two matmuls per (batch, chunk, head): the
  (T·R × T·J) scores C·Bᵀ times the decays, then times X;
* the state a chunk leaves, S_k = Σ_s exp(ℓ_{s+1} + ... + ℓ_end) X_s ⊗ B_s, is one more;
* the states carried across chunks run the recurrence H_{k+1} = exp(Σ_chunk ℓ) H_k + S_k,
  L/T steps of (P × N) per head, and each step t reads exp(ℓ_start + ... + ℓ_t) H_k C_t.

The decay of a pair (t, s) is the exponential of a sum of the ℓ between them, taken as that sum
(a cumulative sum of masked copies, "segsum"), not as the difference of two running sums, which
would cancel in float32. No (B, L, P, N) tensor of states is formed: the work is in matmuls, and
autograd differentiates them. Equal to the step-by-step recurrence in float64 to rounding
(tests/test_frontier.py, tests/test_modes.py).
"""

from __future__ import annotations

import torch


def _segment_sums(log_a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): [t, s] = ℓ_{s+1} + ... + ℓ_t for s <= t (0 on the diagonal), -inf above."""
    T = log_a.shape[-1]
    repeated = log_a.unsqueeze(-1).expand(*log_a.shape, T)  # [t, s] = ℓ_t
    below = torch.ones(T, T, dtype=torch.bool, device=log_a.device).tril(-1)
    sums = repeated.masked_fill(~below, 0).cumsum(-2)
    return sums.masked_fill(~below.logical_or(torch.eye(T, dtype=torch.bool, device=log_a.device)), float("-inf"))


def chunked_dual(log_a: torch.Tensor, X: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 chunk_size: int) -> torch.Tensor:
    """y (batch, L, R, E, P) of the recurrence in the module docstring, from h_{-1} = 0.

    log_a: ℓ (batch|1, L|1, E), real; X: (batch, L, J, E, P); B: (batch, L, J, E, N);
    C: (batch, L, R, E, N); all real, of one dtype. ``chunk_size``: T (at most L is used).
    """
    batch, L, J, E, P = X.shape
    R = C.shape[2]
    T = min(chunk_size, L)
    K = -(-L // T)
    pad = K * T - L
    log_a = log_a.expand(batch, L, E)
    if pad:  # padded steps: α = 1 and no input, after the last real step (nothing reads them)
        log_a, X, B, C = (torch.cat([t, t.new_zeros(batch, pad, *t.shape[2:])], 1) for t in (log_a, X, B, C))
    log_a = log_a.view(batch, K, T, E).transpose(2, 3)  # (batch, K, E, T)
    X, B, C = (t.reshape(batch, K, T, *t.shape[2:]) for t in (X, B, C))
    decay = torch.exp(_segment_sums(log_a))  # (batch, K, E, T, T)

    # inside each chunk: y_t[r] = Σ_s decay[t, s] Σ_j (C_t[r]·B_s[j]) X_s[j]
    scores = torch.einsum("bktren,bksjen->bketrsj", C, B) * decay.view(batch, K, E, T, 1, T, 1)
    y = torch.einsum("bketrsj,bksjep->bktrep", scores, X)

    # the state each chunk leaves, from a zero start: S_k = Σ_s decay[end, s] Σ_j X_s[j] ⊗ B_s[j]
    leaving = torch.einsum("bkes,bksjep,bksjen->bkepn", decay[..., -1, :], X, B)
    if K == 1:
        return y.reshape(batch, T, R, E, P)[:, :L]
    # across chunks: H_0 = 0, H_{k+1} = exp(Σ_chunk ℓ) H_k + S_k; step t of chunk k reads
    # exp(ℓ_start + ... + ℓ_t) C_t[r] · H_k
    chunk_decay = torch.exp(log_a.sum(-1)).unsqueeze(-1).unsqueeze(-1)  # (batch, K, E, 1, 1)
    state = torch.zeros_like(leaving[:, 0])
    entering = [state]
    for k in range(K - 1):
        state = chunk_decay[:, k] * state + leaving[:, k]
        entering.append(state)
    entering = torch.stack(entering, 1)  # (batch, K, E, P, N)
    from_start = torch.exp(log_a.cumsum(-1))  # (batch, K, E, T)
    carried = torch.einsum("bktren,bkepn->bktrep", C, entering) * from_start.transpose(2, 3).view(batch, K, T, 1, E, 1)
    return (y + carried).reshape(batch, K * T, R, E, P)[:, :L]
