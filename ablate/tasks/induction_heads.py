"""Induction heads (Olsson et al. 2022; the Mamba paper's extrapolation test, Gu & Dao 2023).

A random token sequence contains a special trigger token twice; at the second occurrence
(the last position) the model must output the token that followed the first occurrence.
Models are trained at one length and tested at longer ones (:meth:`extra_evaluations`).

Our exact layout, with ``V = vocab_size`` and a sequence of ``L`` positions:

* vocabulary: ``0 .. V-2`` are ordinary tokens, ``V-1`` is the trigger;
* ``x[t]`` for every ``t`` is drawn i.i.d. uniformly from the ordinary tokens ``0 .. V-2``;
  then a position ``p`` is drawn uniformly from ``0 .. L-3`` and ``x[p] = V-1`` (first
  trigger), and ``x[L-1] = V-1`` (second trigger, the last position). The answer is the
  ordinary token ``x[p+1]`` (``p+1 <= L-2``, so it is never overwritten by a trigger);
* the trigger therefore occurs exactly twice (at ``p`` and ``L-1``) and the answer is never
  the trigger;
* ``y`` is ``IGNORE`` everywhere except ``y[L-1] = x[p+1]``.

Training, validation and test splits use ``length``; ``extra_evaluations()`` returns
``{"test_len_<L>": Split}`` for every ``L`` in ``test_lengths``, ``n_extrapolation`` samples
each, drawn from generators seeded by ``(data_seed, L)`` alone. Chance accuracy is
``1 / (V - 1)``. The paper's setting is ``V = 16``, train length 256, test lengths
``2^6 .. 2^20``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from models import IOSpec

from .base import IGNORE, Split, Task, TaskSpec, check_ints, validate_fields

MAX_LENGTH = 2**20


@dataclass
class InductionHeadsConfig:
    vocab_size: int = 16
    length: int = 256
    test_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500
    n_extrapolation: int = 256

    def __post_init__(self) -> None:
        fields_ = ("vocab_size", "length", "n_train", "n_val", "n_test", "n_extrapolation")
        check_ints(self, fields_)
        validate_fields(self, {
            "vocab_size": (3, None),  # the trigger + at least two ordinary tokens
            "length": (3, MAX_LENGTH),  # first trigger, its successor, final trigger
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
            "n_extrapolation": (1, None),
        })
        lengths = self.test_lengths
        ok = isinstance(lengths, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) and 3 <= v <= MAX_LENGTH for v in lengths
        )
        if not ok or len(set(lengths)) != len(lengths):
            raise ValueError(
                f"task.test_lengths={lengths!r} is not valid; expected a list of distinct integers "
                f">= 3 and <= {MAX_LENGTH}"
            )
        self.test_lengths = list(lengths)


class InductionHeads(Task):
    name = "induction_heads"
    Config = InductionHeadsConfig

    def __init__(self, cfg: InductionHeadsConfig, data_seed: int = 0):
        super().__init__(cfg, data_seed)
        self._extras: dict[str, Split] | None = None

    @property
    def trigger(self) -> int:
        return self.cfg.vocab_size - 1

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        io = IOSpec(vocab_size=c.vocab_size, d_output=c.vocab_size, readout="all")
        return TaskSpec(name=self.name, io=io, length=c.length, causal=True, loss_on="marked")

    def _sample(self, n: int, length: int, generator: torch.Generator) -> Split:
        x = torch.randint(0, self.cfg.vocab_size - 1, (n, length), generator=generator)
        p = torch.randint(0, length - 2, (n,), generator=generator)
        rows = torch.arange(n)
        x[rows, p] = self.trigger
        x[:, -1] = self.trigger
        y = torch.full_like(x, IGNORE)
        y[:, -1] = x[rows, p + 1]
        return Split(x, y)

    def generate(self, split: str, generator: torch.Generator) -> Split:
        c = self.cfg
        n = {"train": c.n_train, "val": c.n_val, "test": c.n_test}[split]
        return self._sample(n, c.length, generator)

    def extra_evaluations(self) -> dict[str, Split]:
        if self._extras is None:
            self._extras = {}
            for length in self.cfg.test_lengths:
                digest = hashlib.sha256(f"induction_heads:{self.data_seed}:{length}".encode()).digest()
                generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
                self._extras[f"test_len_{length}"] = self._sample(self.cfg.n_extrapolation, length, generator)
        return self._extras
