"""State-tracking tasks (parity, modular arithmetic without and with brackets): each label is
checked against an independent computation (hand-computed examples, Python's own arithmetic, a
recursive-descent parser of the bracket grammar); the length curriculum, the evaluation lengths
and scaled accuracy; the trainer's stage-wise batches are a function of the step alone and a
resumed run ends where an uninterrupted one does; a run goes end to end through the CLI."""

from __future__ import annotations

import glob
import os
import random
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

import models
from ablate.config import TrainerConfig
from ablate.tasks import IGNORE, build
from ablate.tasks.base import SPLITS
from ablate.tasks.modular_arithmetic import (ModularArithmetic, ModularArithmeticConfig, bracket_expression, decode,
                                             encode, evaluate_flat, token_ids)
from ablate.tasks.parity import Parity, ParityConfig, parity_sequences, scaled_accuracy
from ablate.trainer import Trainer

from learning import CONF, train

ROOT = os.path.dirname(CONF)
TINY = dict(min_length=3, curriculum=[6, 10, 14], eval_length=20, test_lengths=[9, 16, 30],
            n_train=40, n_val=12, n_test=12, n_extrapolation=10)


def parity(label: str = "end", data_seed: int = 0, **overrides) -> Parity:
    return Parity(ParityConfig(**{**TINY, "label": label, **overrides}), data_seed=data_seed)


def arithmetic(brackets: bool, data_seed: int = 0, **overrides) -> ModularArithmetic:
    return ModularArithmetic(ModularArithmeticConfig(**{**TINY, "brackets": brackets, **overrides}), data_seed=data_seed)


def every_set(task) -> dict:
    """Every data set a task makes: its splits, each curriculum stage and each length test."""
    sets = {s: task.split(s) for s in SPLITS}
    sets |= {f"stage_{s}": task.train_split(s) for s in range(len(task.cfg.curriculum))}
    return sets | task.extra_evaluations()


def real_length(row: list[int], pad: int) -> int:
    n = row.index(pad) if pad in row else len(row)
    assert all(t == pad for t in row[n:])  # padding only on the right
    return n


# --- parity -------------------------------------------------------------------------------

def test_parity_labels_by_hand() -> None:
    bits = torch.tensor([[1, 0, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    lengths = torch.tensor([4, 3, 1, 3])
    end = parity_sequences(bits, lengths, "end")
    assert end.x.tolist() == [[1, 0, 1, 1], [1, 0, 1, 2], [0, 2, 2, 2], [1, 1, 1, 2]]
    N = IGNORE
    assert end.y.tolist() == [[N, N, N, 1], [N, N, 0, N], [0, N, N, N], [N, N, 1, N]]
    every = parity_sequences(bits, lengths, "every")
    assert torch.equal(every.x, end.x)
    assert every.y.tolist() == [[1, 1, 0, 1], [1, 1, 0, N], [0, N, N, N], [1, 0, 1, N]]


@pytest.mark.parametrize("label", ["end", "every"])
def test_parity_is_the_count_of_ones_mod_2(label: str) -> None:
    task = parity(label)
    for name, data in every_set(task).items():
        for x, y in zip(data.x.tolist(), data.y.tolist()):
            n = real_length(x, Parity.PAD)
            assert set(x[:n]) <= {0, 1} and n >= 1, name
            running = [sum(x[: t + 1]) % 2 for t in range(n)]
            expected = running if label == "every" else [IGNORE] * (n - 1) + running[-1:]
            assert y == expected + [IGNORE] * (len(x) - n), name
    spec = task.spec
    assert (spec.io.vocab_size, spec.io.d_output, spec.loss_on, spec.causal, spec.length) == (3, 2, "marked", True, 14)


# --- modular arithmetic without brackets ----------------------------------------------------

def flat_value(text: str, modulus: int = 5) -> int:
    """The task's vectorised evaluation of one bracket-free expression such as '1+2*3'."""
    tokens = encode(text, modulus)
    digits = torch.tensor([tokens[0::2]])
    ops = torch.tensor([[0] + [t - modulus for t in tokens[1::2]]])
    return int(evaluate_flat(digits, ops, torch.tensor([len(tokens[0::2])]), modulus)[0])


@pytest.mark.parametrize("text, value", [
    ("1+2*3", 2), ("1-1-1", 4), ("0*1+4*3-2", 0),  # Delétang et al.'s examples (mod 5)
    ("4", 4), ("2*3*4", 4), ("3-4*2", 0), ("2-3", 4), ("4*4-1*3+2", 0), ("1-2*2*2+3", 1),
])
def test_flat_expressions_by_hand(text: str, value: int) -> None:
    assert flat_value(text) == value


def test_flat_expressions_agree_with_python() -> None:
    task = arithmetic(brackets=False)
    ids = token_ids(5)
    for name, data in every_set(task).items():
        for x, y in zip(data.x.tolist(), data.y.tolist()):
            n = real_length(x, ids["<pad>"])
            assert n % 2 == 0 and x[n - 1] == ids["="], name  # d op d ... d =: an even length
            expression = x[: n - 1]
            assert all(t < 5 for t in expression[0::2]) and all(5 <= t <= 7 for t in expression[1::2])
            assert y == [IGNORE] * (n - 1) + [eval(decode(expression)) % 5] + [IGNORE] * (len(x) - n), name
    assert task.spec.io.vocab_size == 10 and task.spec.io.d_output == 5


def test_flat_lengths_are_even_and_cover_the_range() -> None:
    task = arithmetic(brackets=False, n_train=400, curriculum=[9], test_lengths=[9, 10], n_extrapolation=50)
    pad = token_ids(5)["<pad>"]
    lengths = {real_length(row, pad) for row in task.split("train").x.tolist()}
    assert lengths == {4, 6, 8}  # the even lengths in min_length 3 .. 9
    extras = task.extra_evaluations()
    for name in ("test_len_9", "test_len_10"):  # an odd length test L: sequences of length L - 1
        assert {real_length(row, pad) for row in extras[name].x.tolist()} == {{"test_len_9": 8}.get(name, 10)}


# --- modular arithmetic with brackets -------------------------------------------------------

def parse(text: str, i: int = 0) -> tuple[int, int]:
    """Recursive descent over E -> d | -d | (d) | (-d) | (E op E), op in + - *: (exact
    integer value, index after E); raises on anything outside the grammar."""
    if text[i].isdigit():
        return int(text[i]), i + 1
    if text[i] == "-" and text[i + 1].isdigit():
        return -int(text[i + 1]), i + 2
    assert text[i] == "(", (text, i)
    if text[i + 1].isdigit() and text[i + 2] == ")":
        return int(text[i + 1]), i + 3
    if text[i + 1] == "-" and text[i + 2].isdigit() and text[i + 3] == ")":
        return -int(text[i + 2]), i + 4
    a, j = parse(text, i + 1)
    op = text[j]
    b, k = parse(text, j + 1)
    assert op in "+-*" and text[k] == ")", (text, j, k)
    return (a + b if op == "+" else a - b if op == "-" else a * b), k + 1


@pytest.mark.parametrize("length, shape", [(1, "d"), (2, "-d"), (3, "(d)"), (4, "(-d)")])
def test_short_bracket_expressions_by_hand(length: int, shape: str) -> None:
    ids, rng = token_ids(5), random.Random(0)
    for _ in range(20):
        out: list[int] = []
        value = bracket_expression(rng, length, 5, ids, out)
        text = decode(out)
        assert len(text) == length and "".join("d" if ch.isdigit() else ch for ch in text) == shape
        digit = int(next(ch for ch in text if ch.isdigit()))
        assert value == (-digit if "-" in text else digit) % 5


def test_bracket_expressions_parse_and_agree_with_python() -> None:
    task = arithmetic(brackets=True)
    ids = token_ids(5)
    seen = set()
    for name, data in every_set(task).items():
        for x, y in zip(data.x.tolist(), data.y.tolist()):
            n = real_length(x, ids["<pad>"])
            assert x[n - 1] == ids["="] and ids["="] not in x[: n - 1], name
            text = decode(x[: n - 1])
            assert len(text) == n - 1  # one token per symbol
            value, end = parse(text)
            assert end == len(text), text  # the whole expression is one E of the grammar
            depth = 0
            for ch in text:  # brackets balance
                depth += (ch == "(") - (ch == ")")
                assert depth >= 0
            assert depth == 0
            assert y == [IGNORE] * (n - 1) + [value % 5] + [IGNORE] * (len(x) - n), text
            assert eval(text) % 5 == value % 5  # Python's arithmetic agrees (unary minus binds to the number)
            seen |= set(text)
    assert set("()+-*") <= seen and task.spec.io.vocab_size == 12


def test_modulus_sets_the_vocabulary_and_classes() -> None:
    task = arithmetic(brackets=True, modulus=7)
    data = task.split("test")
    assert task.spec.io.d_output == 7 and task.spec.io.vocab_size == 14
    labelled = data.y[data.y != IGNORE]
    assert labelled.min() >= 0 and labelled.max() < 7 and data.x.max() < 14


# --- the length curriculum and the evaluation lengths ---------------------------------------

@pytest.mark.parametrize("make", [parity, lambda **kw: arithmetic(True, **kw), lambda **kw: arithmetic(False, **kw)])
def test_stages_evaluation_and_length_tests_have_their_lengths(make) -> None:
    task = make()
    pad = task.PAD if isinstance(task, Parity) else token_ids(5)["<pad>"]
    flat = isinstance(task, ModularArithmetic) and not task.cfg.brackets
    for stage, top in enumerate(task.cfg.curriculum):
        data = task.train_split(stage)
        lengths = [real_length(row, pad) for row in data.x.tolist()]
        assert data.x.shape == (task.cfg.n_train, top)  # each stage padded to its own maximum
        assert min(lengths) >= 3 and max(lengths) <= top and max(lengths) >= top - 2
    assert task.train_split(0) is task.split("train")
    for split in ("val", "test"):  # exactly eval_length (even: also for the flat expressions)
        assert {real_length(row, pad) for row in task.split(split).x.tolist()} == {20}
    for length in task.cfg.test_lengths:
        data = task.extra_evaluations()[f"test_len_{length}"]
        expected = length - 1 if flat and length % 2 else length
        assert data.x.shape == (10, length) and {real_length(row, pad) for row in data.x.tolist()} == {expected}
    ranged = make(eval_min_length=12)  # Grazzi et al.'s protocol: evaluation lengths in a range
    assert {real_length(row, pad) for row in ranged.split("test").x.tolist()} <= set(range(12, 21))


def test_stage_of_each_step() -> None:
    fixed = parity(stage_steps=5)
    assert [fixed.train_stage(s, 100) for s in (0, 4, 5, 9, 10, 99)] == [(0, 0), (0, 0), (1, 5), (1, 5), (2, 10), (2, 10)]
    even = parity()  # stage_steps null: the run's steps split evenly over the stages
    stages = [even.train_stage(s, 10) for s in range(10)]
    assert [s for s, _ in stages] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(first == min(t for t in range(10) if stages[t][0] == s) for s, first in stages)


def test_data_are_seeded() -> None:
    a, b, other = parity(), parity(), parity(data_seed=1)
    for name, data in every_set(a).items():
        assert torch.equal(data.x, every_set(b)[name].x)
        assert not torch.equal(data.x, every_set(other)[name].x)
    assert not torch.equal(a.split("val").x, a.split("test").x)
    assert not torch.equal(a.train_split(1).x[:, :6], a.train_split(0).x)


def test_scaled_accuracy_is_zero_at_chance_and_one_when_perfect() -> None:
    assert scaled_accuracy(0.5, 2) == 0.0 and scaled_accuracy(1.0, 2) == 1.0 and scaled_accuracy(0.75, 2) == 0.5
    assert scaled_accuracy(0.2, 5) == pytest.approx(0.0) and scaled_accuracy(0.6, 5) == pytest.approx(0.5)
    assert parity().derived_metrics({"loss": 1.0, "accuracy": 0.25}) == {"scaled_accuracy": -0.5}
    assert arithmetic(True).derived_metrics({"loss": 1.0, "accuracy": 1.0}) == {"scaled_accuracy": 1.0}


# --- the trainer with a curriculum ----------------------------------------------------------

def tiny_model(task):
    torch.manual_seed(0)
    return models.build(models.model_preset("mamba", n_layers=1, d_model=8, d_state=4), task.spec.io)


def test_stage_batches_are_a_function_of_the_step() -> None:
    """What the trainer draws at a step depends on (seed, step) alone, across stage changes,
    so a run resumed at any step sees the batches an uninterrupted run would have seen."""
    task = parity(stage_steps=4)
    trainer = Trainer(TrainerConfig(batch_size=8, device="cpu"), seed=3)

    def batch(step: int, cache: dict) -> torch.Tensor:
        stage, first = task.train_stage(step, 20)
        return trainer._batch(task.train_split(stage), step - first, cache, stage)[0]

    cache: dict = {}
    sequential = [batch(s, cache) for s in range(20)]
    for s in (0, 3, 4, 7, 9, 12, 19):
        assert torch.equal(batch(s, {}), sequential[s])
    assert [b.shape[1] for b in sequential] == [6] * 4 + [10] * 4 + [14] * 12  # each stage's own data


def test_resumed_curriculum_run_ends_like_an_uninterrupted_one(tmp_path, monkeypatch) -> None:
    saved = Trainer._save

    def save_and_keep(self: Trainer, state: dict) -> None:
        saved(self, state)
        shutil.copy(self.checkpoint_path, f"{self.checkpoint_path}.{state['step']}")

    monkeypatch.setattr(Trainer, "_save", save_and_keep)
    task = parity(stage_steps=4)
    cfg = TrainerConfig(max_steps=12, batch_size=8, eval_every=3, warmup_steps=2, device="cpu", progress=False)
    whole = Trainer(cfg, seed=0, checkpoint_path=str(tmp_path / "a.pt"))
    model_a = tiny_model(task)
    a = whole.fit(model_a, task)
    shutil.copy(tmp_path / "a.pt.6", tmp_path / "b.pt")  # the run as it was at step 6 (stage 1)
    model_b = tiny_model(task)
    b = Trainer(cfg, seed=0, checkpoint_path=str(tmp_path / "b.pt")).fit(model_b, task)
    assert a.steps == b.steps == 12
    for name, value in model_a.state_dict().items():
        assert torch.allclose(value, model_b.state_dict()[name], atol=1e-6), name
    for key in ("test_accuracy", "test_loss", "test_scaled_accuracy", "test_len_30_scaled_accuracy"):
        assert a.metrics[key] == pytest.approx(b.metrics[key], abs=1e-6), key
    assert [row["val_scaled_accuracy"] for row in a.curve] == pytest.approx([row["val_scaled_accuracy"] for row in b.curve])


# --- configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("parity", ParityConfig), ("modular_arithmetic", ModularArithmeticConfig)])
def test_yaml_lists_the_defaults(name: str, cls: type) -> None:
    with open(os.path.join(CONF, "task", f"{name}.yaml")) as f:
        node = yaml.safe_load(f)
    assert build(node).cfg == cls()
    assert build(node).spec.length == 160 and cls().eval_length == 256


@pytest.mark.parametrize("cls, bad, match", [
    (ParityConfig, dict(label="last"), r"task\.label='last' .*\['end', 'every'\]"),
    (ParityConfig, dict(min_length=0), r"task\.min_length=0"),
    (ParityConfig, dict(curriculum=[]), r"task\.curriculum=\[\]"),
    (ParityConfig, dict(curriculum=[80, 40]), r"task\.curriculum=\[80, 40\] .*non-decreasing"),
    (ParityConfig, dict(curriculum=[2, 40]), r"task\.curriculum=\[2, 40\] .*min_length \(3\)"),
    (ParityConfig, dict(curriculum=[40.5]), r"task\.curriculum=\[40\.5\]"),
    (ParityConfig, dict(stage_steps=0), r"task\.stage_steps=0"),
    (ParityConfig, dict(eval_length=0), r"task\.eval_length=0"),
    (ParityConfig, dict(eval_min_length=300), r"task\.eval_min_length=300 .*eval_length \(256\)"),
    (ParityConfig, dict(test_lengths=[64, 64]), r"task\.test_lengths=\[64, 64\] .*distinct"),
    (ParityConfig, dict(test_lengths=[0]), r"task\.test_lengths=\[0\]"),
    (ParityConfig, dict(n_train=0), r"task\.n_train=0"),
    (ParityConfig, dict(n_extrapolation=1.5), r"task\.n_extrapolation=1\.5 .*integer"),
    (ModularArithmeticConfig, dict(modulus=1), r"task\.modulus=1 .*>= 2"),
    (ModularArithmeticConfig, dict(modulus="5"), r"task\.modulus='5'"),
    (ModularArithmeticConfig, dict(brackets="yes"), r"task\.brackets='yes'"),
    (ModularArithmeticConfig, dict(min_length=1), r"task\.min_length=1 .*>= 2"),
    (ModularArithmeticConfig, dict(test_lengths=[1, 64]), r"task\.test_lengths=\[1, 64\]"),
])
def test_bad_config_names_the_field(cls: type, bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**bad)


# --- end to end -------------------------------------------------------------------------------

SMALL_RUN = ["model=mamba", "model.n_layers=1", "model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=6",
             "trainer.eval_every=3", "trainer.batch_size=8", "task.n_train=32", "task.n_val=8", "task.n_test=8",
             "task.n_extrapolation=8", "task.curriculum=[8,16]", "task.eval_length=24", "task.test_lengths=[16,48]"]


def test_parity_runs_end_to_end_through_the_cli(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ablate", "task=parity", *SMALL_RUN, "trainer.progress=false",
                           f"results_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [path] = glob.glob(str(tmp_path / "runs" / "*.parquet"))
    row = pd.read_parquet(path).iloc[0]
    assert row["status"] == "ok" and row["steps"] == 6 and row["task"] == "parity"
    for length in ("", "len_16_", "len_48_"):
        accuracy, scaled = row[f"test_{length}accuracy"], row[f"test_{length}scaled_accuracy"]
        assert 0 <= accuracy <= 1 and scaled == pytest.approx(2 * accuracy - 1)
    curve = pd.read_parquet(glob.glob(str(tmp_path / "curves" / "*.parquet"))[0])
    assert list(curve["step"]) == [3, 6] and (curve["val_scaled_accuracy"] == 2 * curve["val_accuracy"] - 1).all()
    assert row["final_val_scaled_accuracy"] == curve["val_scaled_accuracy"].iloc[-1]
    assert row["best_val_scaled_accuracy"] == 2 * row["best_val_accuracy"] - 1 == curve["val_scaled_accuracy"].max()


@pytest.mark.parametrize("brackets", ["false", "true"])
def test_modular_arithmetic_trains_in_process(tmp_path, brackets: str) -> None:
    row = train(tmp_path, "task=modular_arithmetic", f"task.brackets={brackets}", *SMALL_RUN)
    assert row["status"] == "ok" and row["task"] == "modular_arithmetic"
    assert row["test_scaled_accuracy"] == pytest.approx((row["test_accuracy"] - 0.2) / 0.8)
    assert "test_len_48_scaled_accuracy" in row
