"""The adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015; S4 papers).

Each position carries a random number and a marker bit; exactly two positions are marked
and the model must output the sum of their numbers at the end of the sequence, a
regression that needs memory across the whole sequence.

Our exact layout, with ``L = length`` and ``h = L // 2``:

* ``x`` is float32 ``(N, L, 2)``; channel 0 holds values drawn i.i.d. uniformly from
  ``[0, 1)``; channel 1 is the marker, ``0`` except at two positions where it is ``1``: one
  drawn uniformly from the first half ``0 .. h-1`` and one uniformly from the second half
  ``h .. L-1``;
* ``y`` is float32 ``(N,)``: the sum of the two marked values (in ``[0, 2)``).

Scored by the mean squared error of one output read at the last position (pooled loss);
predicting the constant ``1`` gives an MSE of ``1/6 ≈ 0.167``, the usual baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import IOSpec

from .base import Split, Task, TaskSpec, check_ints, validate_fields


@dataclass
class AddingConfig:
    length: int = 200
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500

    def __post_init__(self) -> None:
        fields = ("length", "n_train", "n_val", "n_test")
        check_ints(self, fields)
        validate_fields(self, {
            "length": (2, None),
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
        })


class Adding(Task):
    name = "adding"
    Config = AddingConfig

    @property
    def spec(self) -> TaskSpec:
        io = IOSpec(d_input=2, d_output=1, readout="last")
        return TaskSpec(name=self.name, io=io, length=self.cfg.length, causal=True, loss_on="pooled", metric="mse")

    def generate(self, split: str, generator: torch.Generator) -> Split:
        c = self.cfg
        n = {"train": c.n_train, "val": c.n_val, "test": c.n_test}[split]
        half = c.length // 2
        values = torch.rand(n, c.length, generator=generator)
        first = torch.randint(0, half, (n,), generator=generator)
        second = torch.randint(half, c.length, (n,), generator=generator)
        marks = torch.zeros(n, c.length)
        rows = torch.arange(n)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        x = torch.stack([values, marks], dim=-1)
        y = values[rows, first] + values[rows, second]
        return Split(x, y)
