"""Parity (Delétang et al. 2023; Grazzi et al. 2025; the Mamba-3 paper's state tracking),
and the length curriculum shared by the state-tracking tasks (:mod:`.modular_arithmetic`).

Why it is in the suite: a linear recurrence whose transitions are real and in (0, 1) cannot
flip the sign of its state, so it cannot count modulo 2 at every length; negative
eigenvalues (``eig_range [-1, 1]``, Grazzi et al.) or rotations (complex states, Mamba-3's
data-dependent rotation) can. The papers' numbers: Mamba-3 (arXiv 2603.15569) Table 5b,
scaled accuracy in %: Mamba-3 100.00, without its rotation (real) 2.27, with a fixed
rotation 1.56, Mamba-2 0.90. Grazzi et al. (arXiv 2411.12537) Fig. 1: Mamba with
eigenvalues in [0, 1] at chance, in [-1, 1] perfect.

Definition (Delétang et al., arXiv 2207.02098, task "parity_check"): the input is a string of
bits; the answer is the number of 1s modulo 2 (class 0 for even, 1 for odd). Our layout:

* vocabulary: ``0`` and ``1`` are the bits, ``2`` is the pad token; 2 classes;
* a sequence of length ``n`` is ``n`` bits drawn uniformly and independently, then pad
  tokens up to the width of its tensor (each split's widest length);
* ``label='end'`` (default; how Delétang et al. and Grazzi et al. score it): ``y`` is
  ``IGNORE`` everywhere except at the last bit, ``y[n-1] = (x[0] + ... + x[n-1]) mod 2``;
  ``label='every'``: the running parity ``y[t] = (x[0] + ... + x[t]) mod 2`` at every bit
  ``t < n`` (a denser training signal; the same function);
* pad positions are always ``IGNORE``.

Grazzi et al.'s generator (from Beck et al.'s xLSTM code) writes the answer as a token after
the bits and trains next-token prediction; predicting that token at the last bit is the same
task. Their "length" counts that answer token; ours counts the bits the model reads.

The length curriculum and evaluation (shared by every :class:`StateTrackingTask`; the
Mamba-3 paper, App. D, after Grazzi et al.):

* training runs in stages; in stage ``s`` the sequence lengths are drawn uniformly from
  ``min_length .. curriculum[s]`` (paper: minimum 3, maximum rising from 40 to 160; the
  paper gives 10^4 steps per stage but not the intermediate maxima: our default stages are
  40, 80, 120, 160). A stage lasts ``stage_steps`` steps (the last one until the end of the
  run); ``stage_steps: null`` splits the run's ``max_steps`` evenly over the stages;
* each stage has its own ``n_train`` sequences (drawn from a generator seeded by the data
  seed and the stage), padded to the stage's maximum; the trainer draws the stage's batches
  from them. ``spec.length`` is the last stage's maximum (what FLOP and token budgets use;
  the tokens a run counts include the padding of its batches);
* validation and test sequences have length ``eval_length`` (paper: 256); with
  ``eval_min_length`` set, their lengths are uniform in ``eval_min_length .. eval_length``
  instead (Grazzi et al. test on lengths 40 to 256);
* ``extra_evaluations()`` returns ``{"test_len_<L>": Split}`` for every ``L`` in
  ``test_lengths`` (all sequences of length ``L``; an extrapolation curve), ``n_extrapolation``
  sequences each, from generators seeded by ``(task, data_seed, L)`` alone.

Scaled accuracy (Grazzi et al.'s evaluation code, followed by the Mamba-3 paper's Table 5b):
``(accuracy - 1/C) / (1 - 1/C)`` with ``C`` the number of classes (chance is 1/2 for parity,
1/5 for arithmetic modulo 5): 0 is chance, 1 is perfect, below 0 worse than chance. The
accuracy is over every labelled position of the evaluated set (one per sequence with a label
at the end). It is recorded as ``scaled_accuracy`` beside ``accuracy`` for validation
(``val_scaled_accuracy`` in the curve), the test split and every length test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from models import IOSpec

from .base import IGNORE, Split, Task, TaskSpec, check_ints, validate_fields

MAX_LENGTH = 2**16
LABELS = ("end", "every")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class StateTrackingConfig:
    """The length curriculum and evaluation lengths shared by the state-tracking tasks.

    ``shortest`` (a class attribute, not an option) is the shortest sequence a task can
    build: every length option must be at least that.
    """

    min_length: int = 3
    curriculum: list[int] = field(default_factory=lambda: [40, 80, 120, 160])
    stage_steps: int | None = None
    eval_length: int = 256
    eval_min_length: int | None = None
    test_lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    n_train: int = 2000
    n_val: int = 256
    n_test: int = 512
    n_extrapolation: int = 128

    shortest = 1

    def __post_init__(self) -> None:
        check_ints(self, ("min_length", "eval_length", "n_train", "n_val", "n_test", "n_extrapolation"))
        validate_fields(self, {
            "min_length": (self.shortest, MAX_LENGTH),
            "eval_length": (self.shortest, MAX_LENGTH),
            "n_train": (1, None),
            "n_val": (1, None),
            "n_test": (1, None),
            "n_extrapolation": (1, None),
        })
        stages = self.curriculum
        ok = isinstance(stages, (list, tuple)) and len(stages) > 0 and all(_is_int(v) for v in stages)
        if not ok or any(not self.min_length <= v <= MAX_LENGTH for v in stages) or list(stages) != sorted(stages):
            raise ValueError(
                f"task.curriculum={stages!r} is not valid; expected a non-empty, non-decreasing list of maximum "
                f"lengths >= min_length ({self.min_length}) and <= {MAX_LENGTH}"
            )
        self.curriculum = list(stages)
        if self.stage_steps is not None and (not _is_int(self.stage_steps) or self.stage_steps < 1):
            raise ValueError(f"task.stage_steps={self.stage_steps!r} is not valid; expected an integer >= 1 or null")
        low = self.eval_min_length
        if low is not None and (not _is_int(low) or not self.shortest <= low <= self.eval_length):
            raise ValueError(
                f"task.eval_min_length={low!r} is not valid; expected null or an integer >= {self.shortest} "
                f"and <= eval_length ({self.eval_length})"
            )
        lengths = self.test_lengths
        ok = isinstance(lengths, (list, tuple)) and all(
            _is_int(v) and self.shortest <= v <= MAX_LENGTH for v in lengths
        )
        if not ok or len(set(lengths)) != len(lengths):
            raise ValueError(
                f"task.test_lengths={lengths!r} is not valid; expected a list of distinct integers "
                f">= {self.shortest} and <= {MAX_LENGTH}"
            )
        self.test_lengths = list(lengths)


def seeded_generator(*key: Any) -> torch.Generator:
    """A generator seeded by a hash of ``key`` alone (no global state)."""
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def uniform_lengths(n: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` lengths drawn uniformly from ``low .. high`` (inclusive), int64 ``(n,)``."""
    return torch.randint(low, high + 1, (n,), generator=generator)


def scaled_accuracy(accuracy: float, n_classes: int) -> float:
    """``(accuracy - 1/C) / (1 - 1/C)``: 0 at chance, 1 when perfect (Grazzi et al.)."""
    chance = 1.0 / n_classes
    return (accuracy - chance) / (1.0 - chance)


class StateTrackingTask(Task):
    """A state-tracking task with variable lengths, a length curriculum, a long evaluation
    length, length tests and scaled accuracy (see the module docstring).

    Subclasses implement :meth:`sample` (``n`` sequences with lengths in ``low .. high``,
    padded to width ``high``) and the spec properties ``vocab_size`` and ``n_classes``.
    """

    vocab_size: int
    n_classes: int

    def __init__(self, cfg: StateTrackingConfig, data_seed: int = 0):
        super().__init__(cfg, data_seed)
        self._stages: dict[int, Split] = {}
        self._extras: dict[str, Split] | None = None

    # --- to implement -------------------------------------------------------------
    def sample(self, n: int, low: int, high: int, generator: torch.Generator) -> Split:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------
    @property
    def spec(self) -> TaskSpec:
        io = IOSpec(vocab_size=self.vocab_size, d_output=self.n_classes, readout="all")
        return TaskSpec(name=self.name, io=io, length=self.cfg.curriculum[-1], causal=True, loss_on="marked")

    def generate(self, split: str, generator: torch.Generator) -> Split:
        """``train``: the first stage of the curriculum; ``val``/``test``: the evaluation lengths."""
        c = self.cfg
        if split == "train":
            return self.sample(c.n_train, c.min_length, c.curriculum[0], generator)
        n = c.n_val if split == "val" else c.n_test
        low = c.eval_length if c.eval_min_length is None else c.eval_min_length
        return self.sample(n, low, c.eval_length, generator)

    def train_stage(self, step: int, total_steps: int) -> tuple[int, int]:
        stages, per = len(self.cfg.curriculum), self.cfg.stage_steps
        if per is not None:
            stage = min(step // per, stages - 1)
            return stage, stage * per
        stage = min(step * stages // max(1, total_steps), stages - 1)
        return stage, -(-stage * total_steps // stages)  # the first step s with s * stages // total == stage

    @property
    def train_stages(self) -> int:
        return len(self.cfg.curriculum)

    def train_length(self, stage: int) -> int:
        return self.cfg.curriculum[stage]  # each stage's sequences are padded to its maximum length

    def train_split(self, stage: int) -> Split:
        if not 0 <= stage < len(self.cfg.curriculum):
            raise ValueError(f"stage={stage!r} is not valid; expected 0 .. {len(self.cfg.curriculum) - 1}")
        if stage == 0:
            return self.split("train")
        if stage not in self._stages:
            generator = seeded_generator(self.name, self.data_seed, "train_stage", stage)
            self._stages[stage] = self.sample(self.cfg.n_train, self.cfg.min_length, self.cfg.curriculum[stage],
                                              generator)
        return self._stages[stage]

    def extra_evaluations(self) -> dict[str, Split]:
        if self._extras is None:
            self._extras = {}
            for length in self.cfg.test_lengths:
                generator = seeded_generator(self.name, self.data_seed, length)
                self._extras[f"test_len_{length}"] = self.sample(self.cfg.n_extrapolation, length, length, generator)
        return self._extras

    def derived_metrics(self, scores: dict[str, float]) -> dict[str, float]:
        return {"scaled_accuracy": scaled_accuracy(scores["accuracy"], self.n_classes)}


@dataclass
class ParityConfig(StateTrackingConfig):
    label: str = "end"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label not in LABELS:
            raise ValueError(f"task.label={self.label!r} is not valid; expected one of {list(LABELS)}")


class Parity(StateTrackingTask):
    name = "parity"
    Config = ParityConfig
    variant_options = ("label",)
    vocab_size = 3
    n_classes = 2
    PAD = 2

    def sample(self, n: int, low: int, high: int, generator: torch.Generator) -> Split:
        lengths = uniform_lengths(n, low, high, generator)
        bits = torch.randint(0, 2, (n, high), generator=generator)
        return parity_sequences(bits, lengths, self.cfg.label)


def parity_sequences(bits: torch.Tensor, lengths: torch.Tensor, label: str = "end") -> Split:
    """Inputs and targets from bits ``(N, W)`` in {0, 1} and lengths ``(N,)`` (each <= W):
    ``x`` is the first ``lengths[i]`` bits of row ``i`` then ``Parity.PAD``; ``y`` the parity
    of the bits so far at the last bit (``label='end'``) or at every bit (``'every'``),
    ``IGNORE`` elsewhere."""
    n, width = bits.shape
    real = torch.arange(width) < lengths[:, None]
    x = torch.where(real, bits, torch.full_like(bits, Parity.PAD))
    running = torch.cumsum(bits * real, dim=1) % 2
    if label == "every":
        return Split(x, torch.where(real, running, torch.full_like(running, IGNORE)))
    y = torch.full_like(x, IGNORE)
    rows, last = torch.arange(n), lengths - 1
    y[rows, last] = running[rows, last]
    return Split(x, y)
