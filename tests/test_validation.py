"""Bad configurations and bad inputs fail early with a message naming the value; every
combination of the headline axes (structure × selective × gate) builds and trains."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import models
from ablate.config import register, resolve
from models import IOSpec, ModelConfig, SSMConfig, SSMLayer, preset

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


@pytest.mark.parametrize("bad, match", [
    (dict(structure="diag"), r"structure='diag'.*\['mimo', 'siso'\]"),
    (dict(gate="relu"), r"gate='relu'.*'silu'"),
    (dict(selective="dt,A"), r"'A'.*\['dt', 'B', 'C'\]"),
    (dict(d_state=0), r"d_state=0.*>= 1"),
    (dict(d_model=-3), r"d_model=-3"),
    (dict(gate="silu", expand=0), r"gate='silu'.*expand"),
    (dict(complex=False, init="hippo"), r"init='hippo'.*complex=False"),
    (dict(d_state=5), r"d_state=5.*even"),
    (dict(structure="siso", groups=2), r"groups=2.*siso"),
    (dict(structure="mimo", groups=5), r"groups=5.*divide"),
    (dict(mode="fft", selective="dt"), r"mode='fft'.*time-invariant"),
    (dict(mode="cuda"), r"mode='cuda'.*Mamba point"),
    (dict(mode="gpu"), r"mode='gpu'.*'chunked'"),
    (dict(dt_min=0.5, dt_max=0.1), r"dt_min"),
    (dict(init="hippo", blocks=3, d_state=8), r"blocks=3"),
    (dict(conj_sym="yes"), r"conj_sym='yes' is not valid; expected true or false"),
    (dict(bidirectional=1), r"bidirectional=1 is not valid; expected true or false"),
    (dict(complex="false"), r"complex='false' is not valid; expected true or false"),
])
def test_bad_config_names_the_value(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SSMConfig(**bad)


def test_bad_model_config_and_spec() -> None:
    with pytest.raises(ValueError, match="n_layers=0"):
        ModelConfig(n_layers=0)
    with pytest.raises(ValueError, match="dropout=1.5"):
        ModelConfig(dropout=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        IOSpec(d_input=3, vocab_size=4)
    with pytest.raises(ValueError, match="preset='s6'"):
        preset("s6")


@pytest.mark.parametrize("u, match", [
    (torch.randn(2, 5), r"\(batch, length, 4\).*\(2, 5\)"),
    (torch.randn(2, 5, 3), r"\(batch, length, 4\).*\(2, 5, 3\)"),
    (torch.randn(2, 0, 4), r"length >= 1.*length 0"),
    (torch.randn(2, 5, 4, dtype=torch.float64), r"dtype torch.float32.*\(batch, length, 4\)"),
    (torch.ones(2, 5, 4, dtype=torch.int64), r"dtype torch.float32"),
])
def test_bad_layer_input(u: torch.Tensor, match: str) -> None:
    layer = SSMLayer(preset("s5", d_model=4, d_state=4))
    with pytest.raises(ValueError, match=match):
        layer(u)


def test_bad_step_and_backbone_input() -> None:
    layer = SSMLayer(preset("mamba", d_model=4, d_state=4))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        layer.step(torch.randn(2, 1, 4), layer.init_state(2))
    model = models.build(models.model_preset("s4d", d_model=4, d_state=4), IOSpec(vocab_size=5, d_output=2))
    with pytest.raises(ValueError, match=r"\(batch, length\).*\(2, 3, 4\)"):
        model(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="int64"):
        model(torch.randn(2, 3))
    features = models.build(models.model_preset("s4d", d_model=4, d_state=4), IOSpec(d_input=3, d_output=2))
    with pytest.raises(ValueError, match=r"\(batch, length, 3\)"):
        features(torch.randn(2, 3, 5))


@pytest.mark.parametrize("name", ["mamba", "mamba3", "s5"])
def test_a_state_of_another_batch_is_refused_by_step(name: str) -> None:
    layer = SSMLayer(preset(name, d_model=4, d_state=4))
    state = layer.init_state(2)
    with pytest.raises(ValueError, match=r"^state=\{'.*\} is not valid for an input of batch 3; expected the state "
                                         r"of init_state\(3\)"):
        layer.step(torch.randn(3, 4), state)
    with pytest.raises(ValueError, match=r"^state=list is not valid; expected the dict of init_state\(2\)"):
        layer.step(torch.randn(2, 4), [state])
    layer.step(torch.randn(2, 4), state)  # the right batch steps


@pytest.mark.parametrize("tokens, low, high", [([[1, 2, 5]], 1, 5), ([[-1, 0]], -1, 0), ([[0, 4, 4]], None, None)])
def test_token_ids_outside_the_vocabulary_are_refused(tokens: list, low, high) -> None:
    model = models.build(models.model_preset("s4d", d_model=4, d_state=4), IOSpec(vocab_size=5, d_output=2))
    x = torch.tensor(tokens)
    if low is None:
        assert model(x).shape[0] == 1  # ids 0..4 are the vocabulary
        return
    message = rf"^token ids from {low} to {high} are not valid; expected ids in \[0, 5\) \(vocab_size 5\)$"
    with pytest.raises(ValueError, match=message):
        model(x)
    with pytest.raises(ValueError, match=r"^token ids from 5 to 5 are not valid"):
        model.step(torch.tensor([5]), model.init_state(1))


def test_cuda_mode_on_cpu_is_refused() -> None:
    layer = SSMLayer(preset("mamba", d_model=4, d_state=4, mode="cuda"))
    with pytest.raises(ValueError, match="mode='cuda' needs"):
        layer(torch.randn(1, 3, 4))


def test_triton_mode_without_a_gpu_or_the_interpreter_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # a CPU tensor, and triton not interpreting
    layer = SSMLayer(preset("s5", d_model=4, d_state=4, mode="triton"))
    with pytest.raises(ValueError, match=r"mode='triton' needs .*got device cpu"):
        layer(torch.randn(1, 3, 4))


def composed(results_dir, *overrides: str):
    """The config ``python -m ablate OVERRIDES`` composes (no training)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[*overrides, f"results_dir={results_dir}"])


@pytest.mark.parametrize("overrides, match", [
    (["model=mamba", "model.ssm.mode=cuda"], r"model.ssm.mode='cuda' needs mamba-ssm's CUDA kernels .*device cpu"),
    (["model.ssm.mode=triton"], r"model.ssm.mode='triton' needs triton .*device cpu"),
    (["model=mamba", "model.ssm.mode=triton"], r"model.ssm.mode='triton' needs triton .*device cpu"),
])
def test_mode_that_cannot_run_on_the_device_is_refused_before_training(tmp_path, monkeypatch, overrides,
                                                                       match: str) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=match):
        resolve(composed(tmp_path, *overrides, "trainer.device=cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_device_without_one_is_refused_before_training(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"trainer.device='cuda:1' is not valid: no CUDA device"):
        resolve(composed(tmp_path, "trainer.device=cuda:1"))


def test_bf16_precision_on_the_cpu_is_refused_not_run_in_fp32(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^trainer.precision='bf16' is not valid on device cpu \(bf16 autocast runs "
                                         r"on a GPU only\); expected 'auto' or 'fp32'$"):
        resolve(composed(tmp_path, "trainer.precision=bf16"))
    assert resolve(composed(tmp_path, "trainer.precision=fp32")).trainer.precision == "fp32"


def test_triton_mode_on_the_cpu_under_the_interpreter_is_valid(tmp_path, monkeypatch) -> None:
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # models.triton_scan.runs_on: CPU tensors, interpreted
    run = resolve(composed(tmp_path, "model.ssm.mode=triton", "trainer.device=cpu"))
    assert run.model.ssm.mode == "triton"


COMBINATIONS = list(itertools.product(["mimo", "siso"], ["", "dt", "B", "C", "dt,B,C"], ["none", "glu", "silu", "h3"]))


@pytest.mark.parametrize("structure, selective, gate", COMBINATIONS)
def test_every_headline_combination_trains(structure: str, selective: str, gate: str) -> None:
    """A few AdamW steps on a fixed batch of a tiny regression task reduce the loss."""
    torch.manual_seed(0)
    cfg = SSMConfig(d_model=8, d_state=8, structure=structure, selective=selective, gate=gate,
                    expand=1 if gate in ("silu", "h3") else 0, init="s4d_lin")
    model = models.build(ModelConfig(ssm=cfg, n_layers=1), IOSpec(d_input=3, d_output=2, readout="all"))
    x = torch.randn(4, 12, 3)
    target = torch.cumsum(x[..., :2], dim=1) / 4  # needs memory of the past
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("seed", [10**14, -(10**13), 2**64])
def test_a_seed_outside_the_range_of_the_derived_generator_seeds_is_refused_by_name(tmp_path, seed: int) -> None:
    """The task's splits and the batch order are drawn from generators seeded by 1_000_003 × seed
    (plus small offsets), which torch takes only within 64 bits: a seed beyond that is refused
    by resolve (so also by +plan=true), naming it and the valid range, not later by the task's
    data loading as 'Overflow when unpacking long long'."""
    with pytest.raises(ValueError, match=rf"^seed={seed} is not valid; expected an integer from -\d+ to \d+$"):
        resolve(composed(tmp_path, f"seed={seed}"))


def test_the_extreme_valid_seeds_load_their_data(tmp_path) -> None:
    from ablate.config import SEED_LIMIT

    for seed in (SEED_LIMIT, -SEED_LIMIT):
        run = resolve(composed(tmp_path, f"seed={seed}", "task=parity", "task.n_train=8", "task.n_val=4",
                               "task.n_test=4", "task.n_extrapolation=2", "task.test_lengths=[300]"))
        run.task.load()
