"""Multi-query associative recall, MQAR (Arora, Eyuboglu et al. 2023, "Zoology").

The sequence opens with key-value pairs; later, keys come back as queries and at each
query the model must output that key's value. Many queries per sequence, at power-law
distributed distances from the pairs, as bigrams recur in natural text.

The layout follows Zoology's reference generator (``zoology/data/multiquery_ar.py``,
``num_passes=1``; re-implemented here in vectorised torch). With ``V = vocab_size``,
``T = length``, ``K = num_kv`` and ``S = (T - 2K) / 2`` query slots:

* keys: ``K`` distinct tokens drawn uniformly without replacement from ``1 .. V/2 - 1``
  (``V/2`` is ``V // 2``); values: ``K`` distinct tokens drawn uniformly without
  replacement from ``V/2 .. V-1``; pair ``i`` is ``(key_i, value_i)``;
* ``x[2i] = key_i``, ``x[2i+1] = value_i`` for ``i = 0 .. K-1`` (positions ``0 .. 2K-1``);
* query slots: ``K`` distinct gaps ``g_0 .. g_{K-1}`` are drawn without replacement from
  ``0 .. S-1`` with probability proportional to ``(g + 1) ** (power_a - 1)`` (Zoology's
  power law; ``power_a = 1`` is uniform, small values put queries near the pairs); key
  ``i`` is queried at position ``2K + 2 g_i``, i.e. ``x[2K + 2 g_i] = key_i``;
* every other position ``>= 2K`` holds a token drawn uniformly from ``0 .. V-1`` when
  ``random_non_queries`` (Zoology's default; such filler may coincide with a key and is
  then not a query), else ``0``;
* ``y`` is ``IGNORE`` everywhere except ``y[2K + 2 g_i] = value_i``: the target at a query
  position is the value paired with that key (Zoology's labels, already shifted to the
  position at which they are predicted).

Constraints (Zoology's): ``T`` even, ``V > T`` and ``4K <= T``. Zoology's sweep uses
``V = 8192`` and ``(T, K)`` in ``{(64, 4), (128, 8), (256, 16), (512, 64)}``; our defaults
are the first point with a laptop-sized vocabulary. Chance accuracy is about ``2 / V``
(``1 / K`` for a model that knows the values but not the bindings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import IOSpec

from .base import IGNORE, Split, Task, TaskSpec, check_ints, validate_fields


@dataclass
class MQARConfig:
    vocab_size: int = 128
    length: int = 64
    num_kv: int = 4
    power_a: float = 0.01
    random_non_queries: bool = True
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500

    def __post_init__(self) -> None:
        fields = ("vocab_size", "length", "num_kv", "n_train", "n_val", "n_test")
        check_ints(self, fields)
        validate_fields(self, {
            "vocab_size": (5, None),
            "length": (4, None),
            "num_kv": (1, None),
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
        })
        if self.length % 2:
            raise ValueError(f"task.length={self.length!r} is not valid; expected an even length")
        if self.vocab_size <= self.length:
            raise ValueError(
                f"task.vocab_size={self.vocab_size!r} is not valid with task.length={self.length!r}; "
                f"MQAR needs vocab_size > length"
            )
        if 4 * self.num_kv > self.length:
            raise ValueError(
                f"task.num_kv={self.num_kv!r} is not valid with task.length={self.length!r}; "
                f"MQAR needs 4 * num_kv <= length (num_kv <= {self.length // 4})"
            )
        if not isinstance(self.power_a, (int, float)) or isinstance(self.power_a, bool) or not 0 < self.power_a <= 1:
            raise ValueError(f"task.power_a={self.power_a!r} is not valid; expected > 0 and <= 1")
        if not isinstance(self.random_non_queries, bool):
            raise ValueError(
                f"task.random_non_queries={self.random_non_queries!r} is not valid; expected true or false"
            )


def _distinct(n: int, pool: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(n, k) int64: per row, k distinct integers from 0 .. pool-1, a uniformly random
    k-subset in uniformly random order."""
    if k * (k - 1) > 4 * pool:  # collisions likely: rank i.i.d. uniform keys, O(n pool)
        return torch.rand(n, pool, generator=generator).topk(k, dim=1).indices
    # Rejection: i.i.d. draws conditioned on being distinct are a uniform ordered k-subset.
    # A row is accepted with probability >= about exp(-k^2 / 2 pool) >= exp(-2).
    out = torch.randint(0, pool, (n, k), generator=generator)
    redo = torch.arange(n)
    while True:
        rows = out[redo].sort(dim=1).values
        redo = redo[(rows[:, 1:] == rows[:, :-1]).any(dim=1)]
        if len(redo) == 0:
            return out
        out[redo] = torch.randint(0, pool, (len(redo), k), generator=generator)


class MQAR(Task):
    name = "mqar"
    Config = MQARConfig

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        io = IOSpec(vocab_size=c.vocab_size, d_output=c.vocab_size, readout="all")
        return TaskSpec(name=self.name, io=io, length=c.length, causal=True, loss_on="marked")

    def generate(self, split: str, generator: torch.Generator) -> Split:
        c = self.cfg
        n = {"train": c.n_train, "val": c.n_val, "test": c.n_test}[split]
        k, half, context = c.num_kv, c.vocab_size // 2, 2 * c.num_kv
        slots = (c.length - context) // 2
        keys = _distinct(n, half - 1, k, generator) + 1
        values = _distinct(n, c.vocab_size - half, k, generator) + half
        weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (c.power_a - 1)
        gaps = torch.multinomial(weights.expand(n, slots), k, replacement=False, generator=generator)

        if c.random_non_queries:
            x = torch.randint(0, c.vocab_size, (n, c.length), generator=generator)
        else:
            x = torch.zeros(n, c.length, dtype=torch.int64)
        x[:, 0:context:2] = keys
        x[:, 1:context:2] = values
        query_pos = context + 2 * gaps
        x.scatter_(1, query_pos, keys)
        y = torch.full_like(x, IGNORE)
        y.scatter_(1, query_pos, values)
        return Split(x, y)
