"""Selective copying (Mamba, Gu & Dao 2023, App. E.1; the "denoising" task of Jing et al. 2019).

A handful of data tokens is scattered at random positions among noise tokens; after a run
of marker tokens the model must emit the data tokens in their order of appearance, which
requires selecting content and ignoring the (position-varying) noise.

The paper's generator was not released. Our exact layout, with ``V = vocab_size``,
``M = n_memorize`` and ``L = length``:

* vocabulary: ``0`` is the noise token, ``1 .. V-2`` are the data tokens (``V - 2`` of
  them), ``V-1`` is the marker token (the layout of the S4 repository's copying generator);
* ``x`` has ``L + 2M`` positions. Positions ``0 .. L+M-1`` form the "context": ``M``
  distinct positions, drawn uniformly without replacement, hold data tokens drawn
  i.i.d. uniformly from ``1 .. V-2``; the other ``L`` positions hold the noise token ``0``.
  Positions ``L+M .. L+2M-1`` hold the marker token ``V-1``;
* ``y`` is ``IGNORE`` at positions ``0 .. L+M-1``; at marker position ``L+M+i`` it is the
  ``i``-th data token in order of appearance in the context (``i = 0 .. M-1``): the model,
  reading causally, answers the ``i``-th token while it reads the ``i``-th marker.

The spec's ``length`` is therefore ``L + 2M`` (the paper's setting is ``V = 16``,
``M = 16``, ``L = 4096``; our default ``L`` is small enough for a laptop CPU). Loss and
accuracy are over the ``M`` marked positions only; chance accuracy is ``1 / (V - 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import IOSpec

from .base import IGNORE, Split, Task, TaskSpec, check_ints, validate_fields


@dataclass
class SelectiveCopyingConfig:
    vocab_size: int = 16
    n_memorize: int = 16
    length: int = 128
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500

    def __post_init__(self) -> None:
        fields = ("vocab_size", "n_memorize", "length", "n_train", "n_val", "n_test")
        check_ints(self, fields)
        validate_fields(self, {
            "vocab_size": (3, None),  # noise + marker + at least one data token
            "n_memorize": (1, None),
            "length": (0, None),
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
        })


class SelectiveCopying(Task):
    name = "selective_copying"
    Config = SelectiveCopyingConfig

    NOISE = 0

    @property
    def marker(self) -> int:
        return self.cfg.vocab_size - 1

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        io = IOSpec(vocab_size=c.vocab_size, d_output=c.vocab_size, readout="all")
        return TaskSpec(name=self.name, io=io, length=c.length + 2 * c.n_memorize, causal=True, loss_on="marked")

    def generate(self, split: str, generator: torch.Generator) -> Split:
        c = self.cfg
        n = {"train": c.n_train, "val": c.n_val, "test": c.n_test}[split]
        m, context = c.n_memorize, c.length + c.n_memorize
        tokens = torch.randint(1, c.vocab_size - 1, (n, m), generator=generator)
        # M distinct positions per sample, uniform without replacement (top-M of i.i.d. keys), sorted.
        positions = torch.rand(n, context, generator=generator).topk(m, dim=1).indices.sort(dim=1).values
        x = torch.full((n, context + m), self.NOISE, dtype=torch.int64)
        x.scatter_(1, positions, tokens)
        x[:, context:] = self.marker
        y = torch.full_like(x, IGNORE)
        y[:, context:] = tokens
        return Split(x, y)
