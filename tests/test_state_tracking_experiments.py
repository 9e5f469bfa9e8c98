"""The rows of the state-tracking, Mamba-3 component and MIMO experiments are the configurations
they name: each sweep value of a row key (a model file, or a {dict} merged into the default
model) resolves to the preset with exactly the stated axes moved; the MIMO ranks hold the
state size and, matched, the parameter count; the committed S5 runs keep their ids."""

from __future__ import annotations

import math
import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import models
from ablate.config import register, resolve
from ablate.results import finished_status, run_id

from learning import CONF

REFERENCE = os.path.join(os.path.dirname(CONF), "results", "reference")


def compose_with(overrides: list[str], hydra_node: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_node)


def values(text: str) -> list[str]:
    """The values of a sweep ``a,{b:c},...`` as Hydra reads them, each as an override string."""
    override = OverridesParser.create().parse_overrides([f"key={text}"])[0]
    return list(override.sweep_string_iterator())


def sweep(experiment: str, tmp_path) -> dict[str, list[str]]:
    """{key: [value, ...]} of the experiment's sweep."""
    cfg = compose_with([f"+experiment={experiment}", f"results_dir={tmp_path}"], hydra_node=True)
    return {key: values(text) for key, text in cfg.hydra.sweeper.params.items()}


def rows(table: dict) -> list[str]:
    return values(",".join(table))


def resolved(tmp_path, experiment: str, *overrides: str):
    register()
    return resolve(compose_with([f"+experiment={experiment}", f"results_dir={tmp_path}", *overrides]))


# --- state_tracking -----------------------------------------------------------------------------

STATE_TRACKING_ROWS = {  # sweep value of `model` -> (preset, moved axes)
    "mamba": ("mamba", {}),
    "mamba2": ("mamba2", {}),
    "mamba3": ("mamba3", {"rotation": "none"}),
    "{ssm:{rotation:data}}": ("mamba3", {}),
    "{ssm:{rotation:fixed}}": ("mamba3", {"rotation": "fixed"}),
    "{ssm:{eig_range:[-1,1]}}": ("mamba3", {"rotation": "none", "eig_range": (-1, 1)}),
    "mamba_negeig": ("mamba", {"eig_range": (-1, 1)}),  # Grazzi et al.'s point
    "s5": ("s5", {}),
    "s4d": ("s4d", {}),
}
STATE_TRACKING_TASKS = {"parity": ("parity", None, 1), "modular_arithmetic": ("modular_arithmetic", False, 3),
                        "{brackets:true}": ("modular_arithmetic", True, 3)}


def test_state_tracking_rows_are_the_intended_configurations(tmp_path) -> None:
    params = sweep("state_tracking", tmp_path)
    assert params["model"] == rows(STATE_TRACKING_ROWS) and params["task"] == rows(STATE_TRACKING_TASKS)
    assert params["seed"] == ["0", "1", "2"] and len(params["trainer.lr"]) >= 2
    ids = set()
    for row, (preset, moved) in STATE_TRACKING_ROWS.items():
        for task, (name, brackets, layers) in STATE_TRACKING_TASKS.items():
            run = resolved(tmp_path, "state_tracking", f"model={row}", f"task={task}")
            assert run.preset == preset
            assert run.model.ssm == models.preset(preset, d_model=32, d_state=64, **moved), (row, task)
            assert run.model.n_layers == layers and run.model.ffn_hidden == 0
            assert run.task.spec.name == name and run.task_cfg.get("brackets") == brackets
            assert run.task_cfg["eval_length"] == 256 and run.task_cfg["curriculum"] == [40, 80, 120, 160]
            assert run.match["match_by"] == "none"
            ids.add(run_id(run.identity))
    assert len(ids) == len(STATE_TRACKING_ROWS) * len(STATE_TRACKING_TASKS)  # 24 configurations, none trained twice


def test_state_tracking_rows_real_rotating_and_negative() -> None:
    """Which rows can leave the real, [0, 1] transitions: the point of the comparison."""
    def point(preset: str, moved: dict) -> models.SSMConfig:
        return models.preset(preset, d_model=32, d_state=64, **moved)

    kinds = {row: (point(*spec).rotation, point(*spec).eig_range, point(*spec).complex, point(*spec).time_invariant)
             for row, spec in STATE_TRACKING_ROWS.items()}
    assert kinds["{ssm:{rotation:data}}"] == ("data", (0, 1), False, False)
    assert kinds["{ssm:{rotation:fixed}}"] == ("fixed", (0, 1), False, False)
    assert kinds["mamba3"] == kinds["mamba"] == kinds["mamba2"] == ("none", (0, 1), False, False)
    assert kinds["{ssm:{eig_range:[-1,1]}}"] == ("none", (-1, 1), False, False)
    assert kinds["mamba_negeig"] == ("none", (-1, 1), False, False)
    assert kinds["s5"] == kinds["s4d"] == ("none", (0, 1), True, True)


def test_state_tracking_paper_is_appendix_d(tmp_path) -> None:
    params = sweep("state_tracking_paper", tmp_path)
    assert params["model"] == rows(STATE_TRACKING_ROWS) and params["task"] == rows(STATE_TRACKING_TASKS)
    lrs = [float(v) for v in params["trainer.lr"]]
    assert len(lrs) == 8 and lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    steps = [math.log10(b / a) for a, b in zip(lrs, lrs[1:])]
    assert steps == pytest.approx([2 / 7] * 7, abs=2e-3)  # log-spaced
    run = resolved(tmp_path, "state_tracking_paper", "model=mamba3", "task=parity")
    assert run.trainer.batch_size == 256 and run.task_cfg["stage_steps"] == 10_000
    assert run.trainer.max_steps == 10_000 * len(run.task_cfg["curriculum"])
    assert run.task_cfg["eval_length"] == 256 and run.tuned == ["trainer.lr", "trainer.ssm_lr"]
    assert run.trainer.ssm_lr == run.trainer.lr


# --- mamba3_components --------------------------------------------------------------------------

COMPONENT_ROWS = {"{}": {}, "{discretization:zoh_euler}": {"discretization": "zoh_euler"},
                  "{trapezoid:0.5}": {"trapezoid": 0.5}, "{bc_bias:false}": {"bc_bias": False},
                  "{bc_norm:false}": {"bc_norm": False}, "{conv:4}": {"conv": 4},
                  "{rotation:none}": {"rotation": "none"}, "{mimo_rank:4}": {"mimo_rank": 4}}


@pytest.mark.parametrize("experiment, width, d_state", [("mamba3_components", 64, 16),
                                                        ("mamba3_components_paper", 128, 128)])
def test_mamba3_components_move_one_piece_at_a_time(tmp_path, experiment: str, width: int, d_state: int) -> None:
    params = sweep(experiment, tmp_path)
    assert params["model.ssm"] == rows(COMPONENT_ROWS) and params["seed"] == ["0", "1", "2"]
    full = models.preset("mamba3", d_model=width, d_state=d_state)
    sizes = set()
    for row, moved in COMPONENT_ROWS.items():
        run = resolved(tmp_path, experiment, f"model.ssm={row}")
        assert run.preset == "mamba3" and run.model.ssm == full.with_(**moved), row
        differs = {k for k, v in full.as_dict().items() if run.model.ssm.as_dict()[k] != v}
        assert differs == set(moved), row  # exactly the named piece
        assert run.task.spec.name == "mqar" and len(params["trainer.lr"]) >= 2
        sizes.add(models.state_size(run.model))
    assert len(sizes) == 1  # the same state size in every row, MIMO rank 4 included


# --- mimo_vs_siso -------------------------------------------------------------------------------

MIMO_ROWS = {"mamba3": 1, "{ssm:{mimo_rank:2}}": 2, "{ssm:{mimo_rank:4}}": 4}


@pytest.mark.parametrize("task", ["sdigits", "listops"])
def test_mamba3_mimo_rows_hold_state_and_parameters(tmp_path, task: str) -> None:
    params = sweep("mimo_vs_siso", tmp_path)
    assert params["model"] == rows({"s4d": 0, "s5": 0, **MIMO_ROWS})
    runs = {(rank, by): resolved(tmp_path, "mimo_vs_siso", f"model={row}", f"model.match.by={by}", f"task={task}")
            for row, rank in MIMO_ROWS.items() for by in ("state_size", "param_count")}
    io = runs[1, "param_count"].task.spec.io
    count = {key: models.param_count(run.model, io) for key, run in runs.items()}
    base = runs[1, "param_count"]
    assert base.model.ssm == models.preset("mamba3", d_model=32, d_state=16) and base.model.ffn_hidden == 128
    for (rank, by), run in runs.items():
        assert run.preset == "mamba3" and run.model.ssm.mimo_rank == rank and run.model.ssm.gate == "silu"
        assert models.state_size(run.model) == models.state_size(base.model)  # equal state at every rank
        if by == "param_count" and rank > 1:
            assert run.match["match_by"] == "param_count" and run.match["match_reference"] == "mamba3"
            assert run.model.ffn_hidden < 128  # the MLP shrinks, as Mamba-3 matches its MIMO models
            assert abs(count[rank, by] - count[1, by]) <= 0.002 * count[1, by]
        else:  # nothing to resize: the reference itself, or a state-size match at equal state
            assert run.match["match_by"] == "none" and run.model.ffn_hidden == 128
            assert count[rank, by] > count[1, by] or rank == 1
    # rank 1 is the match reference: one run under both match modes
    assert run_id(runs[1, "state_size"].identity) == run_id(runs[1, "param_count"].identity)


def test_mimo_vs_siso_keeps_the_committed_s5_run_ids(tmp_path) -> None:
    """Adding the Mamba-3 rows moved nothing of the S5 rows: every S5 run of the sweep is the
    committed one (results/reference/mimo_vs_siso), with status ok. (The S4D reference runs were
    recorded under an older id, see README.)"""
    reference = os.path.join(REFERENCE, "mimo_vs_siso")
    params = sweep("mimo_vs_siso", tmp_path)
    found = 0
    for by in params["model.match.by"]:
        for task in params["task"]:
            for seed in params["seed"]:
                for lr in params["trainer.lr"]:
                    run = resolved(tmp_path, "mimo_vs_siso", "model=s5", f"model.match.by={by}", f"task={task}",
                                   f"seed={seed}", f"trainer.lr={lr}")
                    assert run.model.ssm.gate == "glu" and run.model.ffn_hidden == 0
                    assert finished_status(reference, run_id(run.identity)) == "ok", (by, task, seed, lr)
                    found += 1
    assert found == 24
