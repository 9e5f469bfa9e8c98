"""Synthetic tasks: specs agree with the data, each task's defining property holds (checked
by an independent, loop-based computation on tiny sizes), data are seeded, and bad
configurations fail with a message naming the field."""

from __future__ import annotations

import pytest
import torch

from ablate.tasks.adding import Adding, AddingConfig
from ablate.tasks.base import IGNORE, SPLITS, Task
from ablate.tasks.copying import Copying, CopyingConfig
from ablate.tasks.induction_heads import InductionHeads, InductionHeadsConfig
from ablate.tasks.mqar import MQAR, MQARConfig
from ablate.tasks.selective_copying import SelectiveCopying, SelectiveCopyingConfig

SMALL = dict(n_train=48, n_val=16, n_test=16)

TINY: dict[str, tuple[type[Task], dict]] = {
    "selective_copying": (SelectiveCopying, dict(vocab_size=10, n_memorize=5, length=23, **SMALL)),
    "induction_heads": (InductionHeads, dict(vocab_size=6, length=20, test_lengths=[20, 40], n_extrapolation=8, **SMALL)),
    "mqar": (MQAR, dict(vocab_size=40, length=32, num_kv=6, **SMALL)),
    "copying": (Copying, dict(n_copy=4, n_symbols=5, lag=7, **SMALL)),
    "adding": (Adding, dict(length=17, **SMALL)),
}


def make(name: str, data_seed: int = 0, **overrides) -> Task:
    cls, values = TINY[name]
    return cls(cls.Config(**{**values, **overrides}), data_seed=data_seed)


# --- spec versus data -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_spec_matches_data(name: str) -> None:
    task = make(name)
    spec = task.spec
    assert spec.name == task.name == name
    for split in SPLITS:
        data = task.split(split)
        n = getattr(task.cfg, f"n_{split}")
        assert len(data) == n
        if spec.io.vocab_size is not None:
            assert data.x.shape == (n, spec.length) and data.x.dtype == torch.int64
            assert 0 <= data.x.min() and data.x.max() < spec.io.vocab_size
        else:
            assert data.x.shape == (n, spec.length, spec.io.d_input) and data.x.dtype == torch.float32
        if spec.loss_on == "pooled":
            assert data.y.shape == (n,)
        else:
            assert data.y.shape == (n, spec.length) and data.y.dtype == torch.int64
            labelled = data.y[data.y != IGNORE]
            assert labelled.numel() > 0
            assert 0 <= labelled.min() and labelled.max() < spec.io.d_output
        if spec.metric == "mse":
            assert data.y.dtype == torch.float32 and spec.io.d_output == 1
        # The shared loss and score accept the data with an output of the spec's shape.
        batch = next(data.batches(4, shuffle=False))
        out_shape = (4, spec.io.d_output) if spec.loss_on == "pooled" else (4, spec.length, spec.io.d_output)
        out = torch.randn(out_shape)
        assert torch.isfinite(task.loss(out, batch.y))
        total, count = task.score(out, batch.y)
        assert count > 0 and total >= 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_seeding(name: str) -> None:
    a, b, c = make(name, 0), make(name, 0), make(name, 1)
    for split in SPLITS:
        assert torch.equal(a.split(split).x, b.split(split).x) and torch.equal(a.split(split).y, b.split(split).y)
        assert not torch.equal(a.split(split).x, c.split(split).x)
    n = len(a.split("val"))
    assert not torch.equal(a.split("train").x[:n], a.split("val").x)
    assert not torch.equal(a.split("val").x, a.split("test").x)
    assert not torch.equal(a.split("train").x[:n], a.split("test").x)


# --- defining properties ----------------------------------------------------------------

def test_selective_copying_targets_are_the_data_tokens_in_order() -> None:
    task = make("selective_copying")
    c = task.cfg
    noise, marker = 0, c.vocab_size - 1
    total = c.length + 2 * c.n_memorize
    data = task.split("train")
    for x, y in zip(data.x.tolist(), data.y.tolist()):
        context = x[: c.length + c.n_memorize]
        data_tokens = [t for t in context if t != noise]
        assert len(data_tokens) == c.n_memorize
        assert context.count(noise) == c.length
        assert all(1 <= t <= c.vocab_size - 2 for t in data_tokens)
        assert x[c.length + c.n_memorize :] == [marker] * c.n_memorize
        marked = [i for i in range(total) if y[i] != IGNORE]
        assert marked == [i for i in range(total) if x[i] == marker]
        assert [y[i] for i in marked] == data_tokens
    # Positions vary across samples (not a fixed prefix as in plain copying).
    assert len({tuple((row != noise).nonzero().flatten().tolist()) for row in data.x[:, : c.length + c.n_memorize]}) > 1
    spec = task.spec
    assert (spec.loss_on, spec.io.readout, spec.causal, spec.length) == ("marked", "all", True, total)


def test_induction_heads_answer_follows_first_trigger() -> None:
    task = make("induction_heads")
    trigger = task.cfg.vocab_size - 1
    splits = {s: task.split(s) for s in SPLITS} | task.extra_evaluations()
    for name, data in splits.items():
        for x, y in zip(data.x.tolist(), data.y.tolist()):
            length = len(x)
            where = [i for i, t in enumerate(x) if t == trigger]
            assert len(where) == 2 and where[1] == length - 1, name
            answer = x[where[0] + 1]
            assert answer != trigger
            assert y[-1] == answer and all(t == IGNORE for t in y[:-1])


def test_induction_heads_extrapolation_sets() -> None:
    task = make("induction_heads", test_lengths=[20, 40, 64])
    extras = task.extra_evaluations()
    assert sorted(extras) == ["test_len_20", "test_len_40", "test_len_64"]
    for length in (20, 40, 64):
        data = extras[f"test_len_{length}"]
        assert data.x.shape == data.y.shape == (task.cfg.n_extrapolation, length)
    again = make("induction_heads", test_lengths=[64]).extra_evaluations()["test_len_64"]
    assert torch.equal(again.x, extras["test_len_64"].x)  # seeded by (data_seed, length) alone
    other = make("induction_heads", data_seed=1, test_lengths=[64]).extra_evaluations()["test_len_64"]
    assert not torch.equal(other.x, extras["test_len_64"].x)
    # The extrapolation set at the training length is not the test split.
    assert not torch.equal(extras["test_len_20"].x, task.split("test").x[: task.cfg.n_extrapolation])
    assert make("induction_heads").spec.length == 20


@pytest.mark.parametrize("random_non_queries", [True, False])
@pytest.mark.parametrize("sizes", [{}, dict(vocab_size=66, length=64, num_kv=16)])  # sparse / dense key pools
def test_mqar_queries_recall_the_paired_values(random_non_queries: bool, sizes: dict) -> None:
    task = make("mqar", random_non_queries=random_non_queries, **sizes)
    c = task.cfg
    half, k = c.vocab_size // 2, c.num_kv
    data = task.split("train")
    for x, y in zip(data.x.tolist(), data.y.tolist()):
        keys, values = x[0 : 2 * k : 2], x[1 : 2 * k : 2]
        assert len(set(keys)) == k and len(set(values)) == k
        assert all(1 <= t < half for t in keys) and all(half <= t < c.vocab_size for t in values)
        pairs = dict(zip(keys, values))
        labelled = [i for i, t in enumerate(y) if t != IGNORE]
        assert len(labelled) == k
        assert all(i >= 2 * k and (i - 2 * k) % 2 == 0 for i in labelled)
        assert sorted(x[i] for i in labelled) == sorted(keys)  # each key queried once
        for i in labelled:
            assert x[i] in pairs and y[i] == pairs[x[i]]
        if not random_non_queries:
            assert all(x[i] == 0 for i in range(2 * k, c.length) if i not in labelled)


def test_mqar_power_law_prefers_short_gaps() -> None:
    near = make("mqar", vocab_size=300, length=256, num_kv=4, power_a=0.01, n_train=400)
    flat = make("mqar", vocab_size=300, length=256, num_kv=4, power_a=1.0, n_train=400)

    def mean_gap(task: Task) -> float:
        data = task.split("train")
        pos = (data.y != IGNORE).nonzero()[:, 1].float()
        return ((pos - 2 * task.cfg.num_kv) / 2).mean().item()

    slots = (256 - 8) // 2
    assert mean_gap(near) < 0.5 * mean_gap(flat)
    assert abs(mean_gap(flat) - (slots - 1) / 2) < 0.1 * slots  # uniform over 0 .. slots-1


def test_copying_targets_are_the_first_tokens() -> None:
    task = make("copying")
    c = task.cfg
    total = 2 * c.n_copy + c.lag + 1
    delimiter = c.n_symbols + 1
    for x, y in zip(task.split("train").x.tolist(), task.split("train").y.tolist()):
        assert len(x) == total
        assert all(1 <= t <= c.n_symbols for t in x[: c.n_copy])
        assert x[c.n_copy :] == [0] * c.lag + [delimiter] + [0] * c.n_copy
        assert y[-c.n_copy :] == x[: c.n_copy]
        assert y[: -c.n_copy] == [IGNORE] * (total - c.n_copy)
    assert task.spec.io.vocab_size == c.n_symbols + 2
    full = make("copying", loss_on="all")
    assert full.spec.loss_on == "all"
    y = full.split("train").y
    assert (y[:, : -c.n_copy] == 0).all() and torch.equal(y[:, -c.n_copy :], full.split("train").x[:, : c.n_copy])


def test_adding_target_is_the_sum_of_the_marked_values() -> None:
    task = make("adding")
    length = task.cfg.length
    half = length // 2
    data = task.split("train")
    for x, y in zip(data.x.tolist(), data.y.tolist()):
        marked = [i for i in range(length) if x[i][1] != 0.0]
        assert len(marked) == 2 and marked[0] < half <= marked[1]
        assert all(x[i][1] == 1.0 for i in marked)
        assert all(0.0 <= x[i][0] < 1.0 for i in range(length))
        assert y == pytest.approx(x[marked[0]][0] + x[marked[1]][0], abs=1e-6)
    spec = task.spec
    assert (spec.metric, spec.loss_on, spec.io.readout, spec.io.d_input, spec.io.d_output) == ("mse", "pooled", "last", 2, 1)
    assert not spec.higher_is_better


# --- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("cls, bad, match", [
    (SelectiveCopyingConfig, dict(vocab_size=2), r"task\.vocab_size=2 .*>= 3"),
    (SelectiveCopyingConfig, dict(n_memorize=0), r"task\.n_memorize=0"),
    (SelectiveCopyingConfig, dict(length=-1), r"task\.length=-1"),
    (SelectiveCopyingConfig, dict(n_train=0), r"task\.n_train=0"),
    (SelectiveCopyingConfig, dict(length=12.5), r"task\.length=12\.5.*integer"),
    (InductionHeadsConfig, dict(vocab_size=2), r"task\.vocab_size=2"),
    (InductionHeadsConfig, dict(length=2), r"task\.length=2"),
    (InductionHeadsConfig, dict(test_lengths=[256, 1]), r"task\.test_lengths=\[256, 1\]"),
    (InductionHeadsConfig, dict(test_lengths=[64, 64]), r"task\.test_lengths=.*distinct"),
    (InductionHeadsConfig, dict(n_extrapolation=0), r"task\.n_extrapolation=0"),
    (MQARConfig, dict(vocab_size=64, length=64), r"task\.vocab_size=64.*vocab_size > length"),
    (MQARConfig, dict(num_kv=17, length=64), r"task\.num_kv=17.*4 \* num_kv <= length"),
    (MQARConfig, dict(length=63), r"task\.length=63.*even"),
    (MQARConfig, dict(num_kv=0), r"task\.num_kv=0"),
    (MQARConfig, dict(power_a=0.0), r"task\.power_a=0\.0"),
    (MQARConfig, dict(power_a=1.5), r"task\.power_a=1\.5"),
    (MQARConfig, dict(random_non_queries="yes"), r"task\.random_non_queries='yes'"),
    (CopyingConfig, dict(n_copy=0), r"task\.n_copy=0"),
    (CopyingConfig, dict(n_symbols=0), r"task\.n_symbols=0"),
    (CopyingConfig, dict(lag=-3), r"task\.lag=-3"),
    (CopyingConfig, dict(loss_on="pooled"), r"task\.loss_on='pooled'.*\['marked', 'all'\]"),
    (AddingConfig, dict(length=1), r"task\.length=1 .*>= 2"),
    (AddingConfig, dict(n_test=0), r"task\.n_test=0"),
])
def test_bad_config_names_the_field(cls: type, bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**bad)


def test_defaults_are_valid_and_small() -> None:
    for cls in (SelectiveCopying, InductionHeads, MQAR, Copying, Adding):
        task = cls(cls.Config())
        assert 64 <= task.spec.length <= 256
        assert task.cfg.n_train <= 10_000
