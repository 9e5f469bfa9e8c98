"""The shipped configs: model YAMLs equal their presets; every experiment's every sweep cell
composes and validates (no training)."""

from __future__ import annotations

import glob
import itertools
import os

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import models
from ablate.config import register, resolve

from learning import CONF, train


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_model_yaml_lists_the_preset(name: str) -> None:
    with open(os.path.join(CONF, "model", f"{name}.yaml")) as f:
        node = yaml.safe_load(f)
    assert node["preset"] == name
    assert models.SSMConfig(**node["ssm"]) == models.preset(name)


def split_values(text: str) -> list[str]:
    """Hydra sweep values: comma-separated, commas inside [] and {} kept."""
    values, depth, current = [], 0, ""
    for ch in str(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    return values + [current]


def test_split_values_keeps_lists_and_dicts_whole() -> None:
    """A sweep row may be a dict holding a list or several keys: one value each, as Hydra reads it."""
    text = "mamba,{ssm:{eig_range:[-1,1]}},{ssm:{rotation:data,d_state:8}},[1,2],{}"
    assert split_values(text) == ["mamba", "{ssm:{eig_range:[-1,1]}}", "{ssm:{rotation:data,d_state:8}}", "[1,2]", "{}"]


def compose_with(overrides: list[str], hydra_node: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_node)


EXPERIMENTS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONF, "experiment", "*.yaml")))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_cell_validates(tmp_path, experiment: str) -> None:
    register()
    base = [f"+experiment={experiment}", f"results_dir={tmp_path}"]
    cfg = compose_with(base, hydra_node=True)
    params = dict(cfg.hydra.sweeper.params or {})
    assert params, f"{experiment} defines no sweep"
    keys = [k for k in params if k != "seed"]
    grid = list(itertools.product(*(split_values(params[k]) for k in keys)))
    for values in grid:
        overrides = base + [f"{k}={v}" for k, v in zip(keys, values)]
        run = resolve(compose_with(overrides))
        assert run.experiment == experiment
        if run.model.ssm.mode == "auto" and "_paper" not in experiment:
            assert models.param_count(run.model, run.task.spec.io) > 0


@pytest.mark.parametrize("kind, value", [("tokens", 64_000), ("flops", 5e10)])
def test_budget_is_equal_across_configurations(tmp_path, kind: str, value: float) -> None:
    """Runs of different models and sizes get the same tokens (or FLOPs) for training."""
    register()
    spent = []
    for model, width in (("s4d", 16), ("s5", 32), ("mamba", 16)):
        run = resolve(compose_with([f"model={model}", f"model.ssm.d_model={width}", f"budget.kind={kind}",
                                    f"budget.value={value}", f"results_dir={tmp_path}"]))
        tokens = run.trainer.max_steps * run.trainer.batch_size * run.task.spec.length
        cost = tokens if kind == "tokens" else 3 * models.flops_per_token(
            run.model, run.task.spec.io, length=run.task.spec.length, batch=run.trainer.batch_size) * tokens
        per_step = cost / run.trainer.max_steps
        assert value <= cost < value + per_step  # the smallest whole number of steps reaching the budget
        spent.append(run.trainer.max_steps)
    assert run.budget == {"budget_kind": kind, "budget_value": value}
    if kind == "tokens":
        assert len(set(spent)) == 1
    with pytest.raises(ValueError, match="budget.kind='epochs'"):
        resolve(compose_with(["budget.kind=epochs", f"results_dir={tmp_path}"]))


@pytest.mark.parametrize("kind", ["tokens", "flops"])
def test_a_budget_on_a_length_curriculum_counts_each_stage_at_its_length(tmp_path, kind: str) -> None:
    """Parity trained on lengths 8 then 16: a token (FLOP) budget is met by the positions the run
    actually trains on, stage by stage, not by max_steps at the longest length."""
    task = ["task=parity", "task.curriculum=[8,16]", "task.eval_length=16", "task.test_lengths=[]",
            "task.n_train=64", "task.n_val=16", "task.n_test=16", "trainer.batch_size=4", "trainer.eval_every=1000",
            "model.n_layers=1", "model.ssm.d_model=8", "model.ssm.d_state=4",
            "model.ssm.mode=scan"]  # FLOPs per token the same at every length (no FFT kernel)
    register()
    run = resolve(compose_with([*task, f"budget.kind={kind}", "budget.value=500", f"results_dir={tmp_path}"]))
    steps = run.trainer.max_steps
    flops = 3 * models.flops_per_token(run.model, run.task.spec.io, length=16, batch=4)
    if kind == "flops":  # 500 tokens' worth of FLOPs
        run = resolve(compose_with([*task, "budget.kind=flops", f"budget.value={500 * flops}",
                                    f"results_dir={tmp_path}"]))
        steps = run.trainer.max_steps
    assert steps > 500 // (4 * 16) + 1  # more steps than the longest length alone would give
    row = train(tmp_path, *task, f"trainer.max_steps={steps}")
    assert 500 <= row["tokens_seen"] < 500 + 4 * 16  # reached, and by less than one step


def test_a_trainer_time_limit_is_recorded_as_the_budget(tmp_path) -> None:
    """trainer.time_budget_s stops the runs on time: the row must not say a step budget was held
    equal (budget_kind=steps, budget_value=max_steps) while the runs stopped at different steps."""
    register()
    run = resolve(compose_with(["trainer.time_budget_s=60", f"results_dir={tmp_path}"]))
    assert run.budget == {"budget_kind": "time", "budget_value": 60.0}
    for kind, value in (("steps", 50), ("tokens", 64_000), ("flops", 5e10)):
        with pytest.raises(ValueError, match=f"trainer.time_budget_s=60.0 is not valid with budget.kind={kind}"):
            resolve(compose_with([f"budget.kind={kind}", f"budget.value={value}", "trainer.time_budget_s=60",
                                  f"results_dir={tmp_path}"]))
    run = resolve(compose_with(["budget.kind=time", "budget.value=30", "trainer.time_budget_s=60",
                                f"results_dir={tmp_path}"]))
    assert run.budget == {"budget_kind": "time", "budget_value": 30.0}


def test_tuning_is_refused_where_validation_is_the_test_split(tmp_path) -> None:
    """LRA text validates on the test reviews (as LRA does): a tuned run would be selected on test."""
    from test_tasks_lra import write_release

    write_release(tmp_path / "data")
    lra = ["task=lra", f"task.data_dir={tmp_path / 'data'}", f"results_dir={tmp_path / 'r'}"]
    register()
    with pytest.raises(ValueError, match="its validation split is its test split"):
        resolve(compose_with([*lra, "task.subtask=text", "tuned=[trainer.lr]"]))
    assert resolve(compose_with([*lra, "task.subtask=text"])).tuned == []
    assert resolve(compose_with([*lra, "task.subtask=listops", "tuned=[trainer.lr]"])).tuned == ["trainer.lr"]


@pytest.mark.parametrize("value, message", [
    (0.5, "budget.value=0.5 is not valid for budget.kind=steps; expected a whole number of steps >= 1 or null"),
    (7.9, "budget.value=7.9 is not valid for budget.kind=steps; expected a whole number"),
    (True, "budget.value=True is not valid; expected a number > 0 or null"),
])
def test_a_step_budget_is_a_whole_number_of_steps(tmp_path, value, message: str) -> None:
    register()
    with pytest.raises(ValueError) as err:
        resolve(compose_with(["budget.kind=steps", f"budget.value={value}", f"results_dir={tmp_path}"]))
    assert str(err.value).startswith(message), str(err.value)
    run = resolve(compose_with(["budget.kind=steps", "budget.value=7.0", f"results_dir={tmp_path}"]))
    assert run.trainer.max_steps == 7


@pytest.mark.parametrize("experiment", ["mimo_vs_siso", "gating", "selectivity", "mamba_table1"])
def test_comparison_experiments_tune_a_grid_by_default(tmp_path, experiment: str) -> None:
    """Each configuration is trained at >= 2 points of a learning-rate grid (every tuned key is
    swept, or follows a swept key), the run records what was tuned, and the GPU-scale variant
    tunes a larger grid."""
    register()

    def grid(name: str) -> tuple[list[str], int]:
        cfg = compose_with([f"+experiment={name}", f"results_dir={tmp_path}"], hydra_node=True)
        params = dict(cfg.hydra.sweeper.params)
        tuned = list(cfg.tuned)
        swept = [k for k in tuned if k in params]
        assert swept and "trainer.lr" in tuned, f"{name} tunes nothing"
        for key in tuned:  # a key not swept must follow a swept one (e.g. ssm_lr: ${trainer.lr})
            assert key in params or cfg.trainer[key.split(".")[1]] == cfg.trainer.lr, key
        points = 1
        for key in swept:
            points *= len(split_values(params[key]))
        run = resolve(compose_with([f"+experiment={name}", f"results_dir={tmp_path}"]))
        assert run.tuned == tuned
        return tuned, points

    _, small = grid(experiment)
    _, large = grid(f"{experiment}_paper")
    assert 2 <= small < large


def test_committed_reference_runs_keep_their_run_ids() -> None:
    """Run ids hash the config (SSMConfig.identity leaves out later fields at their defaults):
    the committed mamba_table1 sweep is still recognised as finished, run by run."""
    import subprocess
    import sys
    reference = os.path.join(os.path.dirname(CONF), "results", "reference", "mamba_table1")
    result = subprocess.run([sys.executable, "-m", "ablate", "+experiment=mamba_table1", f"results_dir={reference}",
                             "+plan=true", "-m"], cwd=os.path.dirname(CONF), capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("[done (skip)]") == 36 and "[to run]" not in result.stdout
