"""The copying memory task (Arjovsky, Shah & Bengio 2016; Hochreiter & Schmidhuber 1997).

A short random string is shown, followed by a long stretch of blanks and a delimiter;
after the delimiter the model must reproduce the string. It tests memory over a fixed,
content-independent lag (selective copying is the content-dependent variant).

Our exact layout, with ``n = n_copy``, ``A = n_symbols`` and ``lag`` blanks:

* vocabulary: ``0`` is the blank, ``1 .. A`` are the symbols, ``A+1`` is the delimiter
  (``vocab_size = A + 2``);
* ``x`` has ``2n + lag + 1`` positions: positions ``0 .. n-1`` hold symbols drawn i.i.d.
  uniformly from ``1 .. A``; positions ``n .. n+lag-1`` are blanks; position ``n+lag`` is
  the delimiter; the last ``n`` positions ``n+lag+1 .. 2n+lag`` are blanks (the answer
  slots);
* ``y`` at answer slot ``n+lag+1+i`` is the ``i``-th symbol ``x[i]`` (``i = 0 .. n-1``).
  With ``loss_on = 'marked'`` (default) ``y`` is ``IGNORE`` elsewhere; with
  ``loss_on = 'all'`` it is the blank ``0`` elsewhere, Arjovsky et al.'s original scoring
  (whose memoryless baseline has cross-entropy ``n log A / (2n + lag + 1)``).

Arjovsky et al.'s ``T`` is ``lag + 1`` (``T - 1`` blanks, then the delimiter); their setting is
``n = 10``, ``A = 8``, ``T`` in ``{100, 200, 300, 500}``. Chance accuracy on the answer slots
is ``1 / A``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import IOSpec

from .base import IGNORE, Split, Task, TaskSpec, check_ints, validate_fields


@dataclass
class CopyingConfig:
    n_copy: int = 10
    n_symbols: int = 8
    lag: int = 100
    loss_on: str = "marked"
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500

    def __post_init__(self) -> None:
        fields = ("n_copy", "n_symbols", "lag", "n_train", "n_val", "n_test")
        check_ints(self, fields)
        validate_fields(self, {
            "n_copy": (1, None),
            "n_symbols": (1, None),
            "lag": (0, None),
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
        })
        if self.loss_on not in ("marked", "all"):
            raise ValueError(f"task.loss_on={self.loss_on!r} is not valid; expected one of ['marked', 'all']")


class Copying(Task):
    name = "copying"
    Config = CopyingConfig

    BLANK = 0

    @property
    def vocab_size(self) -> int:
        return self.cfg.n_symbols + 2

    @property
    def delimiter(self) -> int:
        return self.cfg.n_symbols + 1

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        io = IOSpec(vocab_size=self.vocab_size, d_output=self.vocab_size, readout="all")
        return TaskSpec(name=self.name, io=io, length=2 * c.n_copy + c.lag + 1, causal=True, loss_on=c.loss_on)

    def generate(self, split: str, generator: torch.Generator) -> Split:
        c = self.cfg
        n = {"train": c.n_train, "val": c.n_val, "test": c.n_test}[split]
        symbols = torch.randint(1, c.n_symbols + 1, (n, c.n_copy), generator=generator)
        x = torch.full((n, 2 * c.n_copy + c.lag + 1), self.BLANK, dtype=torch.int64)
        x[:, : c.n_copy] = symbols
        x[:, c.n_copy + c.lag] = self.delimiter
        y = torch.full_like(x, IGNORE if c.loss_on == "marked" else self.BLANK)
        y[:, -c.n_copy :] = symbols
        return Split(x, y)
