"""The shared trainer's pieces: parameter groups, schedule, data order."""

from __future__ import annotations

import math

import pytest
import torch

import models
from ablate.config import TrainerConfig
from ablate.memory import RunMemory
from ablate.run import execute
from ablate.trainer import Trainer, parameter_groups, warmup_cosine
from ablate.tasks import Split, build
from models import IOSpec

from learning import resolved_run

DYNAMICS = ("A_log", "A_imag", "log_dt", "dt_proj.weight", "dt_proj.bias", "mixer.B", "mixer.C", "mixer.D",
            "C_backward")


@pytest.mark.parametrize("name, overrides", [
    ("s5", {}), ("s4d", {}), ("mamba", {}), ("s5", {"selective": "dt,B,C", "bidirectional": True}),
])
def test_ssm_dynamics_never_get_weight_decay(name: str, overrides: dict) -> None:
    cfg = models.model_preset(name, n_layers=2, d_model=16, d_state=8, **overrides)
    model = models.build(cfg, IOSpec(d_input=3, d_output=4))
    groups, names = parameter_groups(model, TrainerConfig(lr=3e-3, ssm_lr=1e-3, weight_decay=0.1))
    by_name = {n: g for g in groups for n in names[g["name"]]}
    dynamics = [n for n, _ in model.named_parameters() if n.endswith(DYNAMICS)]
    assert dynamics, "no dynamics parameters found"
    for n in dynamics:
        assert by_name[n]["weight_decay"] == 0.0 and by_name[n]["lr"] == 1e-3, n
    decayed = [n for n in names.get("decay", [])]
    assert decayed and all(p.ndim >= 2 for n, p in model.named_parameters() if n in decayed)
    assert not any(n in decayed for n in dynamics)
    assert sum(len(v) for v in names.values()) == len(list(model.parameters()))


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_batch_order_depends_on_seed_and_epoch_only() -> None:
    split = Split(torch.arange(100).view(100, 1, 1).float(), torch.arange(100))
    cfg = TrainerConfig(batch_size=10, device="cpu")
    a, b, c = Trainer(cfg, seed=0), Trainer(cfg, seed=0), Trainer(cfg, seed=1)
    order = lambda t, steps: [t._batch(split, s, {})[1].tolist() for s in steps]  # noqa: E731
    assert order(a, range(25)) == order(b, range(25))  # same seed: same batches, also out of order (resume)
    assert order(a, [23]) == [order(a, range(25))[23]]
    assert order(a, range(10)) != order(c, range(10))
    epoch = sorted(sum(order(a, range(10)), []))
    assert epoch == list(range(100))  # one epoch sees every sample once


def test_evaluation_means_over_scored_positions_not_sequences() -> None:
    """Parity labelled at every bit, lengths 3 to 64: batches score different numbers of
    positions. The loss and accuracy evaluate() reports in small batches equal those of the
    whole split at once, over every scored position."""
    task = build({"name": "parity", "label": "every", "eval_length": 64, "eval_min_length": 3})
    split = task.split("val")
    scored = (split.y != -100).sum(1)
    assert scored.min() < scored.max() / 4  # the batches do differ
    torch.manual_seed(0)
    model = models.build(models.model_preset("s4d", n_layers=1, d_model=8, d_state=4), task.spec.io)
    trainer = Trainer(TrainerConfig(eval_batch_size=4, device="cpu"), seed=0)
    got = trainer.evaluate(model, task, split)
    with torch.no_grad():
        model.eval()
        out = model(split.x)
    keep = split.y != -100
    expected_loss = torch.nn.functional.cross_entropy(out[keep].float(), split.y[keep]).item()
    expected_accuracy = (out.argmax(-1)[keep] == split.y[keep]).float().mean().item()
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(expected_accuracy, rel=1e-6)


def test_a_checkpoint_loads_onto_the_cpu_whatever_the_device(tmp_path) -> None:
    """The RNG state in a checkpoint must come back as a CPU tensor (torch.set_rng_state takes no
    other): a GPU run maps the checkpoint to the CPU, and load_state_dict moves the weights. On a
    machine without CUDA, mapping it to 'cuda' as the device would fail to load at all."""
    path = str(tmp_path / "run.pt")
    trainer = Trainer(TrainerConfig(device="cpu"), seed=0, checkpoint_path=path)
    trainer._save({"rng": torch.get_rng_state(), "step": 3})
    trainer.device = torch.device("cuda")  # as on a GPU machine
    saved = trainer._load()
    assert saved is not None and saved["step"] == 3
    assert saved["rng"].device.type == "cpu" and saved["rng"].dtype == torch.uint8
    torch.set_rng_state(saved["rng"])


def test_a_run_that_fails_keeps_its_checkpoint(tmp_path, monkeypatch) -> None:
    """A run stopped by an error is recorded as failed and keeps the checkpoint it had written,
    so that the same command resumes it once the cause is mended; a run that finishes drops it."""
    run = resolved_run(tmp_path, "trainer.max_steps=20", "trainer.eval_every=5", "model.n_layers=1")
    fit = Trainer.fit

    def failing_fit(self, model, task, label=""):
        self._save({"step": 5})  # what a checkpoint at step 5 leaves, then an error
        raise RuntimeError("a bug hit at step 6")

    monkeypatch.setattr(Trainer, "fit", failing_fit)
    row = execute(run, [])
    assert row["status"] == "failed" and "a bug hit at step 6" in row["error"]
    checkpoints = list((tmp_path / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1 and torch.load(checkpoints[0])["step"] == 5
    checkpoints[0].unlink()  # the stand-in is no real checkpoint to resume from
    monkeypatch.setattr(Trainer, "fit", fit)
    row = execute(run, [])  # a failed row is trained again
    assert row["status"] == "ok" and not list((tmp_path / "checkpoints").glob("*.pt"))


def test_a_run_that_fails_after_training_records_its_steps(tmp_path, monkeypatch) -> None:
    """A failure in the final evaluations comes after every optimiser step: the failed row says
    how many were taken, not 0."""
    run = resolved_run(tmp_path, "trainer.max_steps=6", "trainer.eval_every=3", "model.n_layers=1")
    evaluate = Trainer.evaluate

    def failing_test(self, model, task, split, *rest):
        if split is task.split("test"):
            raise RuntimeError("the test split cannot be scored")
        return evaluate(self, model, task, split, *rest)

    monkeypatch.setattr(Trainer, "evaluate", failing_test)
    row = execute(run, [])
    assert row["status"] == "failed" and "cannot be scored" in row["error"] and row["steps"] == 6


def test_memory_is_profiled_once_per_curriculum_stage_and_survives_a_resume(monkeypatch) -> None:
    """Each stage of a length curriculum allocates its own shapes: the first step of each stage
    is profiled. A resumed run starts from the peaks its checkpoint carries."""
    profiled: list[str] = []
    measure = RunMemory.measure

    def recording(self, kind, fn, held):
        if self.will_profile(kind):
            profiled.append(kind)
        return measure(self, kind, fn, held)

    monkeypatch.setattr(RunMemory, "measure", recording)
    task = build({"name": "parity", "curriculum": [8, 32], "eval_length": 32, "n_train": 64, "n_val": 16,
                  "n_test": 16, "test_lengths": []})
    torch.manual_seed(0)
    model = models.build(models.model_preset("s4d", n_layers=1, d_model=8, d_state=4), task.spec.io)
    result = Trainer(TrainerConfig(max_steps=4, eval_every=4, batch_size=8, device="cpu"), seed=0).fit(model, task)
    assert profiled == ["train, stage 0", "train, stage 1", "eval"]
    assert result.metrics["peak_memory_mb"] > 0

    first = RunMemory(torch.device("cpu"))
    first.measure("train, stage 0", lambda: torch.zeros(1000).sum(), lambda: 100)
    resumed = RunMemory(torch.device("cpu"), first.state())
    assert not resumed.will_profile("train, stage 0") and resumed.record() == first.record()
    assert not math.isnan(resumed.record()["peak_memory_mb"])


@pytest.mark.parametrize("keep, says", [(True, "checkpoint saved, the same command resumes it"),
                                        (False, "no checkpoint kept (trainer.checkpoint=false), the same command "
                                                "starts it over")])
def test_an_interrupted_run_says_whether_it_can_resume(tmp_path, monkeypatch, caplog, keep: bool, says: str) -> None:
    """Ctrl-C at a step boundary: the message promises a resume only when a checkpoint was written."""
    import signal

    from ablate import preemption

    def interrupted(self) -> bool:
        self.received = self.received or signal.SIGINT
        return True

    monkeypatch.setattr(preemption.PreemptionWatcher, "requested", property(interrupted))
    run = resolved_run(tmp_path, "trainer.max_steps=4", "model.n_layers=1", f"trainer.checkpoint={keep}")
    with pytest.raises(SystemExit) as stop:
        execute(run, [])
    assert stop.value.code == 130
    assert says in caplog.text
    assert bool(list((tmp_path / "checkpoints").glob("*.pt"))) == keep
