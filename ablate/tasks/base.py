"""The task interface shared by every task: a spec, seeded splits, a loss and a metric.

A task owns its data and its scoring; the model and trainer never look inside it.

Data layout of one batch (a :class:`Batch`):
* ``x``: token ids ``(B, L)`` int64, or features ``(B, L, d_input)`` float32;
* ``y``: targets. ``loss_on='all'`` or ``'marked'``: ``(B, L)`` int64 class ids, with
  ``IGNORE`` (-100) at positions that carry no loss (every position of a 'marked' task but
  the marked ones); ``loss_on='pooled'``: ``(B,)`` int64 class ids. Regression tasks use
  float targets of the same shapes (``(B,)`` or ``(B, L)``) and the mean squared error.

Variable lengths: sequences shorter than their tensor are padded on the right with a pad
token whose targets are ``IGNORE``, so a causal model's outputs at the real positions never
see the padding (save through batch statistics: ``norm=batch`` in training mode averages over
the pad positions too; its running statistics, used in evaluation, carry them). A length curriculum changes the training data in stages
(:meth:`Task.train_stage`, :meth:`Task.train_split`); each stage may have its own width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from models import IOSpec

IGNORE = -100
SPLITS = ("train", "val", "test")
LOSS_ON = ("all", "marked", "pooled")


@dataclass
class TaskSpec:
    """What a task feeds the model and how it is scored.

    io: the model's input/output spec (vocab or feature size, classes or outputs, readout);
    length: training sequence length; causal: False allows bidirectional models;
    loss_on: 'all' positions, 'marked' positions (others are IGNORE), or 'pooled'
    (one target per sequence); metric: 'accuracy' (classification) or 'mse' (regression).
    """

    name: str
    io: IOSpec
    length: int
    causal: bool
    loss_on: str
    metric: str = "accuracy"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.x.to(device), self.y.to(device))

    @property
    def tokens(self) -> int:
        return self.x.shape[0] * self.x.shape[1]


@dataclass
class Split:
    """A whole split held in memory: x (N, L[, d]) and y (N[, L])."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int, shuffle: bool, seed: int = 0) -> Iterator[Batch]:
        """One pass in minibatches; the order is a function of ``seed`` alone."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield Batch(self.x[idx], self.y[idx])


class Task:
    """Base class. Subclasses set ``Config`` (a dataclass of their options, validated in
    ``__post_init__``) and implement :meth:`spec_for` and :meth:`generate`.

    Splits are generated once per (task config, data seed) and cached on the instance;
    each split has its own seed, derived from the data seed (1_000_003 × seed + the split's
    index), so train, val and test are independent draws: a sample recurs in two splits only
    by chance, which short sequences make likely (parity has 2^l sequences of length l).
    """

    name: str = ""
    Config: type = object
    # Options that make it a different task rather than a different size of it, named beside
    # the task's name when off their defaults (plan lines, the analysis' task labels).
    variant_options: tuple[str, ...] = ()

    def __init__(self, cfg: Any, data_seed: int = 0):
        self.cfg = cfg
        self.data_seed = data_seed
        self._splits: dict[str, Split] = {}

    # --- to implement -------------------------------------------------------------
    @property
    def spec(self) -> TaskSpec:
        raise NotImplementedError

    def generate(self, split: str, generator: torch.Generator) -> Split:
        """All samples of one split, drawn from ``generator``."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------
    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is not valid; expected one of {list(SPLITS)}")
        if name not in self._splits:
            seed = 1_000_003 * self.data_seed + SPLITS.index(name)
            self._splits[name] = self.generate(name, torch.Generator().manual_seed(seed))
        return self._splits[name]

    def load(self) -> None:
        """Read or generate the train, validation and test splits now (each is kept), so that
        data that cannot be read fail (ValueError, FileNotFoundError) before any training."""
        for name in SPLITS:
            self.split(name)

    def extra_evaluations(self) -> dict[str, Split]:
        """Named extra test sets (e.g. longer lengths for extrapolation). Default: none."""
        return {}

    @property
    def val_is_test(self) -> bool:
        """Whether the validation split is the test split itself (e.g. LRA text, as in LRA):
        selecting on validation would then select on test. Default: no."""
        return False

    # --- a training curriculum (e.g. over lengths); default: one stage ------------------
    def train_stage(self, step: int, total_steps: int) -> tuple[int, int]:
        """``(stage, first step of that stage)`` at training ``step`` of a run of
        ``total_steps``. A task whose training data change during a run (a length
        curriculum) has several stages; the trainer draws the batches of a stage from
        :meth:`train_split` of that stage. Default: one stage, the whole run."""
        return 0, 0

    def train_split(self, stage: int) -> Split:
        """The training data of a curriculum stage. Default: the train split."""
        return self.split("train")

    @property
    def train_stages(self) -> int:
        """The number of curriculum stages. Default: one."""
        return 1

    def train_length(self, stage: int) -> int:
        """The length of the batches of a curriculum stage (positions per sequence, padding
        included), known without building its data. Default: the task's length."""
        return self.spec.length

    def derived_metrics(self, scores: dict[str, float]) -> dict[str, float]:
        """Metrics computed from one evaluation's ``{'loss': ..., metric: ...}`` that are
        recorded beside the metric (e.g. ``scaled_accuracy``). Default: none."""
        return {}

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss over the positions that carry one."""
        if self.spec.metric == "mse":
            return F.mse_loss(output.squeeze(-1).float(), y.float())
        return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), y.reshape(-1), ignore_index=IGNORE)

    def score(self, output: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """(sum of the metric over scored items, number of scored items) for one batch."""
        if self.spec.metric == "mse":
            err = (output.squeeze(-1).float() - y.float()) ** 2
            return err.sum().item(), err.numel()
        pred = output.argmax(-1)
        keep = y != IGNORE
        return (pred[keep] == y[keep]).sum().item(), int(keep.sum().item())


def check_ints(cfg: Any, names: tuple[str, ...]) -> None:
    """Each named field is an integer (not a bool, float or string)."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"task.{name}={value!r} is not valid; expected an integer")


def validate_fields(cfg: Any, rules: dict[str, tuple]) -> None:
    """Check dataclass fields: rules maps a field name to (min, max) inclusive (None = open)."""
    for name, (low, high) in rules.items():
        value = getattr(cfg, name)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{'' if low is None else f'>= {low}'}{' and ' if low is not None and high is not None else ''}{'' if high is None else f'<= {high}'}"
            raise ValueError(f"task.{name}={value!r} is not valid; expected {bounds}")


def config_from_dict(config_cls: type, values: dict[str, Any], task_name: str) -> Any:
    """Build a task's config dataclass, naming unknown keys and the valid ones."""
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for task {task_name!r}; expected some of {valid}")
    return config_cls(**values)
