"""ListOps (Nangia & Bowman 2018; the Long Range Arena version, Tay et al. 2021): evaluate a
nested prefix expression of list operators over single digits; 10 classes.

What is generated (re-implemented from the definition in LRA's ``lra_benchmarks/data/
listops.py``; the random stream is ours, so the samples are not LRA's):

* Expressions: an operator node is ``[OP a_1 ... a_k ]`` with ``OP`` one of ``MIN``,
  ``MAX``, ``MED``, ``SM`` (uniform) and ``k`` arguments, ``k`` uniform in
  ``min_args .. max_args`` (LRA: 2..10); each argument is a sub-expression. A leaf is a
  digit ``0 .. 9`` (uniform).
* Trees (LRA's ``generate_tree``): the root has depth 1; a node at depth ``< max_depth`` is
  a leaf with probability ``leaf_prob`` (LRA: 0.75), else an operator node; a node at
  depth ``max_depth`` is always a leaf (LRA: ``max_depth = 10``). Whole trees are drawn
  until their token count lies in ``min_length .. max_length`` (inclusive; LRA keeps
  ``500 < length < 2000``); a tree is abandoned as soon as it passes ``max_length``, which
  does not change the distribution of accepted trees. Trees are distinct within a split
  (LRA's are distinct over the whole data set; here two splits may share a tree by chance,
  which is rare for all but the smallest length ranges).
* Values (LRA's ``to_value``): ``MIN``/``MAX`` of the arguments, ``MED`` = the median as
  LRA computes it, ``int(numpy.median(args))``: the middle value for an odd count and the
  floor of the mean of the two middle values for an even count; ``SM`` = sum mod 10. The
  label is the root's value, ``0 .. 9``.

Tokenisation (LRA's ListOps pipeline: parentheses dropped, ``]`` its own token), fixed
vocabulary of :data:`VOCAB_SIZE` = 16 ids::

    0 pad | 1..10 digits '0'..'9' (id = digit + 1) | 11 '[MIN' | 12 '[MAX' | 13 '[MED'
    | 14 '[SM' | 15 ']'

LRA's release writes the tree with parentheses, e.g. ``( ( [MAX 2 ) 9 ) ]``; :func:`tokenize`
turns that string (or the parenthesis-free form) into ids, so the release reader
(:mod:`.lra`) and this generator share one vocabulary.

Layout and scoring: every sequence is padded with 0 to ``max_length`` (the spec's length,
as LRA pads to its ``max_length``). One label per sequence (``loss_on='pooled'``).
``readout='mean'`` (default, non-causal: bidirectional models allowed): tokens are
right-padded, as in LRA, and the model's mean readout averages over all ``max_length``
positions, the padding included (as LRA's mean-pooling classifier head does); the padding
is a constant input the model can learn to discount, and the share of padding varies
with the expression's length. ``readout='last'`` (causal): tokens are left-padded, so the
last position is always the expression's closing ``]`` and a causal model reads out after
it has seen the whole expression.

Defaults are laptop-sized (depth 4, 20..120 tokens, 2000 training trees); LRA's setting is
``max_depth=10, max_args=10, min_length=500, max_length=2000`` with 96K/2K/2K trees.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from models import IOSpec

from .base import Split, Task, TaskSpec, validate_fields

PAD = 0
DIGIT_OFFSET = 1  # id of digit d is d + 1
MIN, MAX, MED, SM, CLOSE = 11, 12, 13, 14, 15
OPERATORS = (MIN, MAX, MED, SM)
VOCAB_SIZE = 16
NUM_CLASSES = 10

#: The token text of every id (index = id); pad is written as '<pad>'.
TOKENS: tuple[str, ...] = ("<pad>",) + tuple(str(d) for d in range(10)) + ("[MIN", "[MAX", "[MED", "[SM", "]")
_TOKEN_ID = {text: i for i, text in enumerate(TOKENS) if i != PAD}


def tokenize(source: str) -> list[int]:
    """Token ids of one ListOps expression as LRA writes it: parentheses are dropped,
    whitespace separates tokens, ``]`` is a token of its own. Raises ValueError on any
    other token."""
    ids = []
    for text in source.replace("(", " ").replace(")", " ").replace("]", " ] ").split():
        try:
            ids.append(_TOKEN_ID[text])
        except KeyError:
            raise ValueError(
                f"ListOps token {text!r} is not valid; expected one of {list(TOKENS[1:])}"
            ) from None
    return ids


def detokenize(ids: list[int] | torch.Tensor) -> str:
    """The expression's text, without parentheses or padding (for reading samples)."""
    return " ".join(TOKENS[int(i)] for i in ids if int(i) != PAD)


def apply(op: int, args: list[int]) -> int:
    """Value of operator ``op`` (a token id) on digit arguments, as LRA's ``to_value``."""
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == SM:
        return sum(args) % 10
    if op == MED:
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    raise ValueError(f"ListOps operator id {op!r} is not valid; expected one of {list(OPERATORS)}")


def max_tree_length(max_depth: int, max_args: int) -> int:
    """The most tokens a tree can have: a full tree of ``max_args``-ary operators."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def pad(seqs: list[list[int]], length: int, left: bool) -> torch.Tensor:
    """(N, length) int64: each sequence (at most ``length`` long) padded with PAD on the
    left (``left``) or on the right."""
    out = torch.full((len(seqs), length), PAD, dtype=torch.int64)
    for i, s in enumerate(seqs):
        if s:
            row = torch.tensor(s, dtype=torch.int64)
            if left:
                out[i, length - len(s) :] = row
            else:
                out[i, : len(s)] = row
    return out


class _TooLong(Exception):
    pass


def _draw_tree(rng: random.Random, cfg: "ListOpsConfig") -> tuple[list[int], int] | None:
    """One tree as (token ids, value), or None if it passed ``max_length`` tokens."""
    out: list[int] = []
    limit, max_depth, leaf_prob = cfg.max_length, cfg.max_depth, cfg.leaf_prob
    lo, hi = cfg.min_args, cfg.max_args
    rand, randint = rng.random, rng.randint

    def node(depth: int) -> int:
        if depth >= max_depth or rand() < leaf_prob:
            value = randint(0, 9)
            out.append(value + DIGIT_OFFSET)
            if len(out) > limit:
                raise _TooLong
            return value
        op = OPERATORS[randint(0, 3)]
        out.append(op)
        args = [node(depth + 1) for _ in range(randint(lo, hi))]
        out.append(CLOSE)
        if len(out) > limit:
            raise _TooLong
        return apply(op, args)

    try:
        value = node(1)
    except _TooLong:
        return None
    return out, value


def sample(cfg: "ListOpsConfig", n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """``n`` distinct trees with ``min_length <= tokens <= max_length``: (token id lists,
    values). Deterministic in ``seed``."""
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    seqs: list[list[int]] = []
    values: list[int] = []
    budget = 2000 + 2000 * n
    for _ in range(budget):
        tree = _draw_tree(rng, cfg)
        if tree is None or len(tree[0]) < cfg.min_length:
            continue
        key = tuple(tree[0])
        if key in seen:
            continue
        seen.add(key)
        seqs.append(tree[0])
        values.append(tree[1])
        if len(seqs) == n:
            return seqs, values
    raise RuntimeError(
        f"ListOps drew {budget} trees but only {len(seqs)} of the {n} requested distinct trees had "
        f"{cfg.min_length}..{cfg.max_length} tokens (max_depth={cfg.max_depth}, args {cfg.min_args}.."
        f"{cfg.max_args}, leaf_prob={cfg.leaf_prob}); widen the length range or raise max_depth/max_args"
    )


def _check_int(cfg: object, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"task.{name}={value!r} is not valid; expected an integer")


@dataclass
class ListOpsConfig:
    max_depth: int = 4
    min_args: int = 2
    max_args: int = 10
    leaf_prob: float = 0.75
    min_length: int = 20
    max_length: int = 120
    n_train: int = 2000
    n_val: int = 250
    n_test: int = 250
    readout: str = "mean"

    def __post_init__(self) -> None:
        for name in ("max_depth", "min_args", "max_args", "min_length", "max_length", "n_train", "n_val", "n_test"):
            _check_int(self, name)
        validate_fields(self, {
            "max_depth": (2, 64),
            "min_args": (1, None),
            "max_args": (1, None),
            "min_length": (1, None),
            "max_length": (3, None),
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
        })
        if self.max_args < self.min_args:
            raise ValueError(
                f"task.max_args={self.max_args!r} is not valid with task.min_args={self.min_args!r}; "
                "expected max_args >= min_args"
            )
        leaf_prob = self.leaf_prob
        if not isinstance(leaf_prob, (int, float)) or isinstance(leaf_prob, bool) or not 0 <= leaf_prob < 1:
            raise ValueError(f"task.leaf_prob={self.leaf_prob!r} is not valid; expected >= 0 and < 1")
        if self.min_length > self.max_length:
            raise ValueError(
                f"task.min_length={self.min_length!r} is not valid with task.max_length={self.max_length!r}; "
                "expected min_length <= max_length"
            )
        longest = max_tree_length(self.max_depth, self.max_args)
        if self.min_length > longest:
            raise ValueError(
                f"task.min_length={self.min_length!r} is not valid; the longest tree with "
                f"max_depth={self.max_depth} and max_args={self.max_args} has {longest} tokens, "
                f"expected min_length <= {longest}"
            )
        if self.readout not in ("mean", "last"):
            raise ValueError(f"task.readout={self.readout!r} is not valid; expected one of ['mean', 'last']")


class ListOps(Task):
    name = "listops"
    Config = ListOpsConfig

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        io = IOSpec(vocab_size=VOCAB_SIZE, d_output=NUM_CLASSES, readout=c.readout)
        return TaskSpec(name=self.name, io=io, length=c.max_length, causal=c.readout == "last", loss_on="pooled")

    def generate(self, split: str, generator: torch.Generator) -> Split:
        c = self.cfg
        n = {"train": c.n_train, "val": c.n_val, "test": c.n_test}[split]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        seqs, values = sample(c, n, seed)
        x = pad(seqs, c.max_length, left=c.readout == "last")
        return Split(x, torch.tensor(values, dtype=torch.int64))
