"""Every run row records ``resolved_mode``: the compute mode its SSM layers ran in (what
``model.ssm.mode=auto`` picked on the trainer's device). It is an outcome column: not part of
the run's identity, and not a configuration axis to the analysis."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from analysis_fixtures import run_row, write_runs
from learning import resolved_run, train
from torch import nn

import models
from ablate import run as ablate_run
from ablate.results import identity_columns, run_id
from analysis.axes import config_columns, swept_axes
from analysis.load import load_results

TINY = ["model.ssm.d_model=8", "model.ssm.d_state=4", "model.n_layers=2", "trainer.max_steps=2",
        "trainer.eval_every=2", "trainer.batch_size=4"]


def cpu_mode(preset: str) -> str:
    """What ``SSMLayer.resolve_mode`` gives on the CPU for one layer of ``preset`` in mode auto."""
    return models.SSMLayer(models.preset(preset, d_model=8, d_state=4)).resolve_mode(torch.device("cpu"))


@pytest.mark.parametrize("preset, expected", [("s4d", "fft"), ("mamba", "recurrent")])
def test_auto_run_records_the_mode_the_layers_resolved_to(tmp_path, preset: str, expected: str) -> None:
    assert cpu_mode(preset) == expected
    row = train(tmp_path, f"model={preset}", *TINY)
    assert row["status"] == "ok" and row["model.ssm.mode"] == "auto"
    assert row["resolved_mode"] == expected
    written = pd.read_parquet(tmp_path / "runs" / f"{row['run_id']}.parquet")
    assert written["resolved_mode"].iloc[0] == expected


def test_explicit_mode_is_recorded_as_itself(tmp_path) -> None:
    row = train(tmp_path, "model=s4d", "model.ssm.mode=chunked", *TINY)
    assert row["status"] == "ok" and row["resolved_mode"] == "chunked"


def test_failed_run_row_carries_the_resolved_mode(tmp_path, monkeypatch) -> None:
    def fail(self, model, task, label=""):
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(ablate_run.Trainer, "fit", fail)
    row = train(tmp_path, "model=mamba", *TINY)
    assert row["status"] == "failed" and row["resolved_mode"] == "recurrent"


def test_resolved_mode_is_not_part_of_the_run_id(tmp_path) -> None:
    """The id hashes the run's identity alone, and the identity has no ``resolved_mode``: a
    row's id is the one :func:`run_id` gives for its configuration, as before the column."""
    for preset in ("s4d", "mamba"):
        identity = resolved_run(tmp_path, f"model={preset}", *TINY).identity
        assert "resolved_mode" not in identity and "resolved_mode" not in identity_columns(identity)
        row = train(tmp_path / preset, f"model={preset}", *TINY)
        assert row["resolved_mode"] == cpu_mode(preset)
        assert row["run_id"] == run_id(identity)


def test_helper_lists_distinct_modes_in_layer_order() -> None:
    cpu = torch.device("cpu")
    s4d = models.preset("s4d", d_model=8, d_state=4)
    chunked = s4d.with_(mode="chunked")
    mixed = nn.Sequential(models.SSMLayer(s4d), models.SSMLayer(chunked), models.SSMLayer(s4d))
    assert models.resolved_mode(mixed, cpu) == "fft,chunked"
    assert models.resolved_mode(nn.Sequential(models.SSMLayer(s4d), models.SSMLayer(s4d)), cpu) == "fft"
    assert models.resolved_mode(nn.Linear(2, 2), cpu) == ""


def test_analysis_loads_rows_without_the_column_and_never_splits_on_it(tmp_path) -> None:
    """Old rows lack the column; new rows may differ in it (one machine with a GPU): neither
    makes a configuration of its own."""
    rows = [run_row("sdigits", "siso", "glu", seed) for seed in (0, 1, 2)]
    rows[1]["resolved_mode"] = "fft"
    rows[2]["resolved_mode"] = "triton"
    write_runs(tmp_path, rows)
    runs = load_results([str(tmp_path)]).runs
    assert len(runs) == 3 and set(runs["resolved_mode"].dropna()) == {"fft", "triton"}
    assert "resolved_mode" not in config_columns(runs)
    assert "resolved_mode" not in swept_axes(runs)
