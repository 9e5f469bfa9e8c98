"""The analysis of state-tracking runs: rows as the runner writes them (run ids, identity
columns that leave out later layer fields at their defaults, scaled accuracy), from the real
state_tracking configurations, read back by the report: scaled accuracy beside accuracy, one
task per variant (``modular_arithmetic (brackets)``, no brackets column for parity), and rows
told apart by rotation and eigenvalue range."""

from __future__ import annotations

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import models
from ablate.config import register, resolve
from ablate.results import identity_columns, run_id, write_run
from analysis.load import LATER_DEFAULTS, load_results
from analysis.report import analyse, make_tables
from analysis.tables import to_markdown
from models.config import LATER_FIELDS

from learning import CONF

ROWS = ("mamba", "mamba_negeig", "mamba3", "{ssm:{rotation:data}}", "{ssm:{rotation:fixed}}",
        "{ssm:{eig_range:[-1,1]}}", "s4d")
TASKS = ("parity", "modular_arithmetic", "{brackets:true}")


def state_tracking_rows(tmp_path) -> None:
    """One ok row per (row, task, seed 0..2) of state_tracking, written as the runner writes it."""
    register()
    for model in ROWS:
        for task in TASKS:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=CONF, version_base="1.3"):
                cfg = compose("config", overrides=["+experiment=state_tracking", f"model={model}", f"task={task}",
                                                   f"results_dir={tmp_path}"])
            run = resolve(cfg)
            spec = run.task.spec
            for seed in range(3):
                score = 0.5 + 0.05 * ROWS.index(model) + 0.01 * seed
                scaled = (score - 1 / spec.io.d_output) / (1 - 1 / spec.io.d_output)
                row = {"run_id": run_id({**run.identity, "seed": seed}), "experiment": run.experiment, "seed": seed,
                       "preset": run.preset, "task": spec.name, "metric": "accuracy", "higher_is_better": True,
                       "status": "ok", "steps": run.trainer.max_steps, "tuned": "none", **run.match, **run.budget,
                       "param_count": models.param_count(run.model, spec.io), "state_size": models.state_size(run.model),
                       "best_val_accuracy": score, "final_val_accuracy": score, "test_accuracy": score,
                       "best_val_scaled_accuracy": scaled, "final_val_scaled_accuracy": scaled,
                       "test_scaled_accuracy": scaled, "test_loss": 1 - score, **identity_columns(run.identity)}
                write_run(str(tmp_path), row, [])


def test_state_tracking_report_shows_scaled_accuracy_variants_and_rows(tmp_path) -> None:
    state_tracking_rows(tmp_path)
    an = analyse(load_results([str(tmp_path)]))
    assert sorted(an.metric_by_task) == ["modular_arithmetic", "modular_arithmetic (brackets)", "parity"]
    assert not any(axis.startswith("task.") for axis in an.label_axes)  # brackets is in the task, not a column
    assert {"model.ssm.rotation", "model.ssm.eig_range"} <= set(an.label_axes)
    tables = make_tables(an)
    assert "results_modular_arithmetic_brackets" in tables  # a file name without spaces
    for task in an.metric_by_task:
        labels = an.labels_frame(task)
        assert len(labels) == len(ROWS) and not labels.duplicated().any()  # every row its own label
        keyed = {(p, r, e) for p, r, e in zip(labels["preset"], labels["rotation"], labels["eig_range"])}
        assert {("mamba3", "none", "0,1"), ("mamba3", "data", "0,1"), ("mamba3", "fixed", "0,1"),
                ("mamba3", "none", "-1,1"), ("mamba", "none", "-1,1"), ("mamba", "none", "0,1")} <= keyed
        header = to_markdown(tables[f"results_{task.replace(' (brackets)', '_brackets')}"]).split("\n")[2]
        titles = [t.strip() for t in header.split("|")]
        assert titles.index("Test scaled accuracy ↑") > titles.index("Test accuracy ↑")  # beside it
        assert titles.index("Best val. scaled accuracy ↑") == titles.index("Best val. accuracy ↑") + 1
        assert "brackets" not in header
    agg = an.agg.loc["parity"]["test_scaled_accuracy"]["mean"]
    assert agg.min() >= 0 and agg.max() <= 1 and len(agg) == len(ROWS)


def test_analysis_defaults_of_later_fields_are_the_models() -> None:
    """The defaults the analysis fills in for a row that left a later field out are the ones
    models.config leaves out, for every such field with a default (headdim's None is "not
    recorded" either way): an old S5 row (exact GELU) must not pool with a new one (tanh)."""
    for column, value in LATER_DEFAULTS.items():
        default = LATER_FIELDS[column.split(".")[-1]]
        assert value == (",".join(map(str, default)) if isinstance(default, tuple) else default), column
    assert set(LATER_DEFAULTS) == {f"model.ssm.{name}" for name, default in LATER_FIELDS.items() if default is not None}


def test_task_variants_fold_only_a_varying_boolean_option() -> None:
    from analysis.load import label_task_variants
    frame = pd.DataFrame({"task": ["m", "m", "p", "s", "s"], "task.brackets": [False, True, None, None, None],
                          "task.permute": [None, None, None, True, True], "task.modulus": [5, 7, None, None, None]})
    assert list(label_task_variants(frame)["task"]) == ["m", "m (brackets)", "p", "s", "s"]
