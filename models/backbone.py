"""Block and Backbone: the SSM layer inside a residual network.

Block (pre-norm, as S4/S5/Mamba):  v = u + Dropout(SSMLayer(Norm(u)));  with a feed-forward
network,  v = v + Dropout(FFN(Norm(v))),  FFN = Linear(H, eH) -> GELU -> Linear(eH, H).
(``prenorm=False`` applies each norm after its residual sum instead.)

Backbone: encoder (token embedding or a linear map of features) -> blocks -> final norm ->
readout (last position / mean over positions / every position) -> head Linear(H, d_output)
(no head when d_output is None: the features are the output).

The feed-forward network's GELU is the exact one whatever ``ssm.gelu`` says: that field is the
official S5 layer's gate GELU (flax's tanh form); the official S5 and S4D layers have no such network.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import IOSpec, ModelConfig
from .layer import SSMLayer


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class BatchNormSeq(nn.BatchNorm1d):
    """BatchNorm over channels of (B, L, H) or (B, H) inputs (S5's LRA setting)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return super().forward(x)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return BatchNormSeq(width)
    if kind == "rms":
        return RMSNorm(width)
    return nn.Identity()


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H = cfg.d_model
        self.prenorm = cfg.prenorm
        self.norm = make_norm(cfg.norm, H)
        self.mixer = SSMLayer(cfg.ssm)
        self.dropout = nn.Dropout(cfg.dropout)
        self.ffn = None
        if cfg.ffn_hidden:
            self.ffn_norm = make_norm(cfg.norm, H)
            self.ffn = nn.Sequential(
                nn.Linear(H, cfg.ffn_hidden), nn.GELU(), nn.Linear(cfg.ffn_hidden, H), nn.Dropout(cfg.dropout)
            )

    def _add(self, u: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        return u + fn(norm(u)) if self.prenorm else norm(u + fn(u))

    def _feed_forward(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.ffn is None else self._add(v, self.ffn_norm, self.ffn)

    def forward(self, u: torch.Tensor, return_state: bool = False):
        """u: (B, L, H) -> (B, L, H); with ``return_state``, (output, the mixer's final state)."""
        if not return_state:
            return self._feed_forward(self._add(u, self.norm, lambda x: self.dropout(self.mixer(x))))
        state: dict = {}

        def mix(x: torch.Tensor) -> torch.Tensor:
            y, final = self.mixer(x, return_state=True)
            state.update(final)
            return self.dropout(y)

        return self._feed_forward(self._add(u, self.norm, mix)), state

    def step(self, u_t: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """u_t: (B, H) -> (B, H), new state."""
        new_state: dict = {}

        def mix(x: torch.Tensor) -> torch.Tensor:
            y, updated = self.mixer.step(x, state)
            new_state.update(updated)
            return self.dropout(y)

        return self._feed_forward(self._add(u_t, self.norm, mix)), new_state


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: IOSpec):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        H = cfg.d_model
        if spec.vocab_size is not None:
            self.encoder = nn.Embedding(spec.vocab_size, H)
        else:
            self.encoder = nn.Linear(spec.d_input, H)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg.norm, H)
        self.head = nn.Linear(H, spec.d_output) if spec.d_output is not None else None

    @property
    def output_size(self) -> int:
        return self.spec.d_output if self.spec.d_output is not None else self.cfg.d_model

    def set_step_rescale(self, value: float) -> None:
        """Evaluate at another sampling rate without retraining (S5's step_rescale): every layer's
        Δ = value · exp(log_dt), e.g. 2.0 on a signal sampled at half the training rate."""
        self.cfg = dataclasses.replace(self.cfg, ssm=self.cfg.ssm.with_(step_rescale=value))
        for block in self.blocks:
            block.mixer.set_step_rescale(value)

    def check_input(self, x: torch.Tensor, step: bool = False) -> None:
        """ValueError naming the expected shape and dtype, before any work is done."""
        spec = self.spec
        tokens = spec.vocab_size is not None
        if tokens:
            expected = "(batch,)" if step else "(batch, length)"
            rank = 1 if step else 2
        else:
            expected = f"(batch, {spec.d_input})" if step else f"(batch, length, {spec.d_input})"
            rank = 2 if step else 3
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a tensor of shape {expected}, got {type(x).__name__}")
        if x.dim() != rank or (not tokens and x.shape[-1] != spec.d_input):
            raise ValueError(f"expected input of shape {expected}, got {tuple(x.shape)}")
        if not step and x.shape[1] == 0:
            raise ValueError(f"expected input of shape {expected} with length >= 1, got length 0")
        if tokens and x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"expected token ids (torch.int64) of shape {expected}, got dtype {x.dtype}")
        if tokens and x.numel():
            low, high = int(x.min()), int(x.max())
            if low < 0 or high >= spec.vocab_size:
                raise ValueError(f"token ids from {low} to {high} are not valid; expected ids in "
                                 f"[0, {spec.vocab_size}) (vocab_size {spec.vocab_size})")
        param_dtype = self.encoder.weight.dtype
        if not tokens and (x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type)):
            raise ValueError(f"expected input of dtype {param_dtype} and shape {expected}, got dtype {x.dtype}")

    def features(self, x: torch.Tensor, return_state: bool = False):
        """x -> (B, L, H) after the final norm; with ``return_state``, also each block's final
        state (a list, as :meth:`init_state` holds them)."""
        self.check_input(x)
        h = self.encoder(x)
        states = []
        for block in self.blocks:
            if return_state:
                h, final = block(h, return_state=True)
                states.append(final)
            else:
                h = block(h)
        return (self.final_norm(h), states) if return_state else self.final_norm(h)

    def forward(self, x: torch.Tensor, return_state: bool = False):
        """x: (B, L) token ids or (B, L, d_input) features.
        Returns (B, L, d_out) for readout 'all', else (B, d_out) (d_out = d_output or H).

        ``return_state`` (prefill): (output, state), the state :meth:`step` would hold after
        the last position, so generation continues with ``step`` without stepping the prompt."""
        h, states = self.features(x, return_state=True) if return_state else (self.features(x), None)
        state = {"blocks": states}
        if self.spec.readout == "mean" and return_state:
            state["sum"], state["count"] = h.sum(1), h.shape[1]
        if self.spec.readout == "last":
            h = h[:, -1]
        elif self.spec.readout == "mean":
            h = h.mean(1)
        out = self.head(h) if self.head is not None else h
        return (out, state) if return_state else out

    def init_state(self, batch: int) -> dict:
        """State for :meth:`step`: one per block, plus the running sum for a mean readout."""
        state = {"blocks": [block.mixer.init_state(batch) for block in self.blocks]}
        if self.spec.readout == "mean":
            p = self.encoder.weight
            state["sum"] = torch.zeros(batch, self.cfg.d_model, dtype=p.dtype, device=p.device)
            state["count"] = 0
        return state

    def step(self, x_t: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One position: x_t (B,) token ids or (B, d_input) -> (B, d_out), new state.

        The output is what :meth:`forward` would return for the sequence so far (for the
        ``all`` readout: its newest position). A BatchNorm model steps in eval mode only: in
        training mode BatchNorm would normalise each step by that step's batch statistics (not
        forward's over the whole sequence) and move its running statistics."""
        self.check_input(x_t, step=True)
        if self.training and any(isinstance(m, BatchNormSeq) for m in self.modules()):
            raise ValueError("step() is not valid in training mode with norm='batch' (BatchNorm would use one step's "
                             "batch statistics and update its running ones); expected model.eval() first")
        h = self.encoder(x_t)
        new_blocks = []
        for block, block_state in zip(self.blocks, state["blocks"]):
            h, new = block.step(h, block_state)
            new_blocks.append(new)
        h = self.final_norm(h)
        new_state = {"blocks": new_blocks}
        if self.spec.readout == "mean":
            new_state["sum"] = state["sum"] + h
            new_state["count"] = state["count"] + 1
            h = new_state["sum"] / new_state["count"]
        return (self.head(h) if self.head is not None else h), new_state


def resolved_mode(module: nn.Module, device: torch.device) -> str:
    """The compute mode the SSM layers of ``module`` run in on ``device``
    (:meth:`SSMLayer.resolve_mode`: what ``auto`` picks, or the configured mode): one name
    when every layer agrees (``fft``, ``chunked``, ``recurrent``, ``scan``, ``triton``,
    ``cuda``), else the distinct names in layer order joined by ","; "" without SSM layers."""
    modes = [m.resolve_mode(device) for m in module.modules() if isinstance(m, SSMLayer)]
    return ",".join(dict.fromkeys(modes))
