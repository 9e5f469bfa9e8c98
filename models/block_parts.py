"""Pieces of the Mamba block layouts (mamba-ssm's ``modules/mamba2.py``) used by the layer.

* :func:`causal_conv`: SiLU(causal depthwise conv) over (B, L, C), or one token of it against
  a window of the last k inputs (mamba-ssm's conv state layout, oldest first; after a whole
  sequence, :func:`last_window`): the layer's short conv over x, and with
  ``project_from='u'`` :class:`models.heads.HeadSSM` runs B_t and C_t through it, so that
  with the layer's conv over x it is Mamba-2's one conv over x, B and C together (a depthwise
  conv acts on each channel alone: two modules compute the same as one).
* :class:`GatedRMSNorm` (``gate_norm``): RMSNorm of the gated output y ⊙ SiLU(z), over groups
  of D / ngroups channels, with a learned weight (eps 1e-5): mamba-ssm's ``RMSNormGated``
  with ``norm_before_gate=False`` and ``group_size = d_ssm / ngroups``. The gate itself is
  applied before, by the layer (or inside the scan), so this module only normalises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_conv(conv: nn.Conv1d, x: torch.Tensor, window: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SiLU(causal depthwise conv(x)) for x (B, L, C) -> ((B, L, C), None); with ``window``
    (B, C, k), x is one token (B, 1, C) -> ((B, 1, C), the new window)."""
    if window is None:
        L = x.shape[1]
        return F.silu(conv(x.transpose(1, 2))[..., :L].transpose(1, 2)), None
    window = torch.cat([window[..., 1:], x.transpose(1, 2)], dim=-1)
    return F.silu((window * conv.weight.squeeze(1)).sum(-1) + conv.bias).unsqueeze(1), window


def last_window(x: torch.Tensor, k: int) -> torch.Tensor:
    """The conv state after x (B, L, C): its last k inputs as (B, C, k), oldest first,
    zero-padded on the left when L < k (what :func:`causal_conv` steps from)."""
    window = x[:, -k:].transpose(1, 2)
    return F.pad(window, (k - window.shape[-1], 0))


class GatedRMSNorm(nn.Module):
    """y (..., D) -> RMSNorm over each of ``groups`` groups of D / groups channels, times a
    learned weight (D,), initialised to 1."""

    def __init__(self, width: int, groups: int = 1, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.empty(width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        grouped = y.unflatten(-1, (self.groups, -1))
        normed = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.flatten(-2) * self.weight
