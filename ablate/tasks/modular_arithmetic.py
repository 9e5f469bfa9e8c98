"""Modular arithmetic without and with brackets (Delétang et al. 2023; Grazzi et al. 2025;
the Mamba-3 paper's state tracking).

Why it is in the suite: evaluating an expression modulo 5 left to right needs a state that
cycles through 5 values (and, with brackets, a stack of them); real transitions in (0, 1)
cannot, rotations (complex states) and negative eigenvalues help. The papers' numbers:
Mamba-3 (arXiv 2603.15569) Table 5b, scaled accuracy in %, without / with brackets:
Mamba-3 98.51 / 87.75, without its rotation (real) 1.49 / 0.72, with a fixed rotation
20.70 / 2.62, Mamba-2 47.81 / 0.88. Grazzi et al. (arXiv 2411.12537) report both tasks for
Mamba and DeltaNet with eigenvalues in [0, 1] and [-1, 1].

Definitions (Delétang et al., arXiv 2207.02098, tasks "modular_arithmetic" (regular) and
"modular_arithmetic_brackets" (deterministic context-free); Grazzi et al. use the same
generators, via Beck et al.'s xLSTM code, with multiplication in both):

* numbers are ``0 .. m-1`` with modulus ``m = 5`` (``modulus``); operators ``+``, ``-``, ``*``;
  the answer is the value of the expression modulo ``m`` (in ``0 .. m-1``; ``m`` classes);
* without brackets: numbers and operators alternate, ``d op d op ... d`` (an odd number of
  tokens), each number and each operator drawn uniformly; the usual precedence holds
  (``*`` before ``+`` and ``-``, left to right), e.g. modulo 5: ``1+2*3 = 2``,
  ``1-1-1 = 4``, ``0*1+4*3-2 = 0`` (Delétang et al.'s examples);
* with brackets: an expression of exactly ``e`` tokens from the grammar
  ``E(1) = d``, ``E(2) = -d``, ``E(3) = (d)``, ``E(4) = (-d)`` and, for ``e >= 5``,
  ``E(e) = ( E(a) op E(e-a-3) )`` with ``a`` uniform in ``1 .. e-4`` and ``op`` uniform over
  ``+ - *``; ``d`` uniform in ``0 .. m-1``; ``-d`` is the negation of one number (a unary
  minus only ever stands directly before a number). Every binary operation is bracketed,
  so the value needs no precedence rule.

Our layout (a choice: the papers feed one-hot vectors, Delétang et al. without a terminator,
Grazzi et al. with ``=`` and the answer as the next token):

* vocabulary: ``0 .. m-1`` the numbers, ``m`` ``+``, ``m+1`` ``-``, ``m+2`` ``*``,
  ``m+3`` ``=``, ``m+4`` the pad token, and with brackets ``m+5`` ``(`` and ``m+6`` ``)``;
* a sequence of length ``n`` is an expression of ``n - 1`` tokens followed by ``=``; then pad
  tokens up to the width of its tensor. ``y`` is ``IGNORE`` everywhere except at ``=``, where
  it is the answer;
* without brackets the expression has an odd number of tokens, so ``n`` is even: lengths
  are drawn uniformly from the even numbers in ``low .. high``, and where there is none (an
  odd length test ``L``) the sequences have length ``L - 1``. With the default minimum 3 the
  shortest training sequence is ``d op d =``;
* with brackets any ``n >= 2`` is possible (``d =``).

The length curriculum, evaluation lengths, length tests and scaled accuracy (here
``(accuracy - 1/m) / (1 - 1/m)``, chance taken as ``1/m`` as in Grazzi et al.'s code) are
those of :class:`~.parity.StateTrackingTask`. The answers are not uniform with brackets: a
product with a 0 anywhere is 0, so about 31% of the answers at length 256 are 0 (26% in
the first training stage) and always answering 0 scores a scaled accuracy of about 0.14;
without brackets they are close to uniform (each class 19 to 21%).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import IGNORE, Split, validate_fields
from .parity import StateTrackingConfig, StateTrackingTask, uniform_lengths

OPERATORS = ("+", "-", "*")
SYMBOLS = ("+", "-", "*", "=", "<pad>", "(", ")")  # token m + i is SYMBOLS[i]


@dataclass
class ModularArithmeticConfig(StateTrackingConfig):
    modulus: int = 5
    brackets: bool = False

    shortest = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.modulus, int) or isinstance(self.modulus, bool):
            raise ValueError(f"task.modulus={self.modulus!r} is not valid; expected an integer")
        validate_fields(self, {"modulus": (2, None)})
        if not isinstance(self.brackets, bool):
            raise ValueError(f"task.brackets={self.brackets!r} is not valid; expected true or false")


def token_ids(modulus: int) -> dict[str, int]:
    """Token id of each symbol: numbers ``'0' .. 'm-1'`` and ``SYMBOLS``."""
    return {str(d): d for d in range(modulus)} | {s: modulus + i for i, s in enumerate(SYMBOLS)}


def encode(text: str, modulus: int = 5) -> list[int]:
    """Token ids of a string such as ``'(1+-2)='`` (single-digit numbers; spaces ignored)."""
    ids = token_ids(modulus)
    return [ids[ch] for ch in text.replace(" ", "")]


def decode(tokens: list[int], modulus: int = 5) -> str:
    """The string of a token sequence; pad tokens are dropped."""
    names = {v: k for k, v in token_ids(modulus).items()}
    return "".join(names[t] for t in tokens if names[t] != "<pad>")


def evaluate_flat(digits: torch.Tensor, ops: torch.Tensor, n_terms: torch.Tensor, modulus: int) -> torch.Tensor:
    """Values modulo ``m`` of bracket-free expressions ``d_0 op_1 d_1 ... op_{k-1} d_{k-1}``.

    digits: (N, K) numbers; ops: (N, K) operator indices into ``OPERATORS`` (``ops[:, j]`` is
    the operator before ``d_j``; ``ops[:, 0]`` is unused); n_terms: (N,) how many numbers
    each row has (``k``). ``*`` binds first: left to right, a product ``term`` grows until
    a ``+`` or ``-`` adds it (with its sign) to ``total``. Returns (N,) int64.
    """
    minus, times = OPERATORS.index("-"), OPERATORS.index("*")
    total = torch.zeros_like(digits[:, 0])
    term, sign = digits[:, 0] % modulus, torch.ones_like(total)
    for j in range(1, digits.shape[1]):
        active = j < n_terms
        d, op = digits[:, j], ops[:, j]
        multiply = active & (op == times)
        close = active & (op != times)
        term_closed = (total + sign * term) % modulus
        total = torch.where(close, term_closed, total)
        sign = torch.where(close, torch.where(op == minus, -1, 1), sign)
        term = torch.where(multiply, (term * d) % modulus, torch.where(close, d, term))
    return (total + sign * term) % modulus


def bracket_expression(rng: random.Random, length: int, modulus: int, ids: dict[str, int],
                       out: list[int]) -> int:
    """Append an expression of exactly ``length`` tokens of Delétang et al.'s bracket grammar
    (module docstring) to ``out``; return its value modulo ``modulus``."""
    if length < 5:
        d = rng.randrange(modulus)
        body = {1: [d], 2: [ids["-"], d], 3: [ids["("], d, ids[")"]], 4: [ids["("], ids["-"], d, ids[")"]]}[length]
        out.extend(body)
        return (-d if length in (2, 4) else d) % modulus
    left = rng.randint(1, length - 4)
    out.append(ids["("])
    a = bracket_expression(rng, left, modulus, ids, out)
    op = OPERATORS[rng.randrange(3)]
    out.append(ids[op])
    b = bracket_expression(rng, length - left - 3, modulus, ids, out)
    out.append(ids[")"])
    return (a + b if op == "+" else a - b if op == "-" else a * b) % modulus


class ModularArithmetic(StateTrackingTask):
    name = "modular_arithmetic"
    Config = ModularArithmeticConfig
    variant_options = ("brackets", "modulus")

    @property
    def ids(self) -> dict[str, int]:
        return token_ids(self.cfg.modulus)

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return self.cfg.modulus + (len(SYMBOLS) if self.cfg.brackets else len(SYMBOLS) - 2)

    @property
    def n_classes(self) -> int:  # type: ignore[override]
        return self.cfg.modulus

    def lengths(self, n: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
        """Sequence lengths (expression + ``=``) in ``low .. high``; even without brackets."""
        if self.cfg.brackets:
            return uniform_lengths(n, low, high, generator)
        first = low + low % 2
        if first > high:  # no even length in range (low == high, odd): one shorter
            return torch.full((n,), high - 1, dtype=torch.int64)
        return first + 2 * uniform_lengths(n, 0, (high - first) // 2, generator)

    def sample(self, n: int, low: int, high: int, generator: torch.Generator) -> Split:
        lengths = self.lengths(n, low, high, generator)
        if self.cfg.brackets:
            return self._sample_brackets(lengths, high, generator)
        return self._sample_flat(lengths, high, generator)

    def _finish(self, x: torch.Tensor, lengths: torch.Tensor, answers: torch.Tensor) -> Split:
        """Put ``=`` after each expression, pad after it, the answer at ``=``."""
        n, width = x.shape
        rows, eq = torch.arange(n), lengths - 1
        positions = torch.arange(width)
        x = torch.where(positions < eq[:, None], x, torch.full_like(x, self.ids["<pad>"]))
        x[rows, eq] = self.ids["="]
        y = torch.full_like(x, IGNORE)
        y[rows, eq] = answers
        return Split(x, y)

    def _sample_flat(self, lengths: torch.Tensor, width: int, generator: torch.Generator) -> Split:
        n, m = lengths.shape[0], self.cfg.modulus
        k = (width + 1) // 2  # numbers in the widest expression (width - 1 tokens, rounded up)
        digits = torch.randint(0, m, (n, k), generator=generator)
        ops = torch.randint(0, len(OPERATORS), (n, k), generator=generator)
        x = torch.empty((n, 2 * k), dtype=torch.int64)
        x[:, 0::2] = digits
        x[:, 1::2] = m + ops.roll(-1, dims=1)  # the operator before d_j sits at 2j - 1 (the last column: filler)
        n_terms = lengths // 2  # an expression of n - 1 = 2k - 1 tokens has k numbers
        answers = evaluate_flat(digits, ops, n_terms, m)
        return self._finish(x[:, :width].clone(), lengths, answers)

    def _sample_brackets(self, lengths: torch.Tensor, width: int, generator: torch.Generator) -> Split:
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        ids, m = self.ids, self.cfg.modulus
        x = torch.full((lengths.shape[0], width), ids["<pad>"], dtype=torch.int64)
        answers = torch.empty(lengths.shape[0], dtype=torch.int64)
        for row, n in enumerate(lengths.tolist()):
            tokens: list[int] = []
            answers[row] = bracket_expression(rng, n - 1, m, ids, tokens)
            x[row, : n - 1] = torch.tensor(tokens, dtype=torch.int64)
        return self._finish(x, lengths, answers)
