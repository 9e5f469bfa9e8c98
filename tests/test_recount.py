"""``python -m ablate.recount``: a finished row's FLOPs per token recounted from the
configuration it names, the rest of the row untouched; rows it cannot reproduce left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from ablate.__main__ import CONF
from ablate.config import register, resolve
from ablate.recount import override_text, recount, recount_row
from ablate.results import identity_columns, run_id

ROOT = Path(__file__).resolve().parents[1]


def resolved(overrides: list[str], folder: Path):
    register()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return resolve(compose("config", overrides + [f"results_dir={folder}"]))


def count_of(overrides: list[str], folder: Path) -> float:
    """Today's FLOPs per token of the run ``overrides`` compose to."""
    return resolved(overrides, folder).flops_per_token()


def write_row(folder: Path, overrides: list[str], flops: float, **columns) -> Path:
    """A run row as ablate.run writes its configuration part (the metrics are beside the point),
    recorded with ``flops`` FLOPs per token; ``columns`` replace recorded config columns (as if
    the experiment's defaults had moved since)."""
    run = resolved(overrides, folder)
    rid = run_id(run.identity)
    row = {"run_id": rid, "experiment": run.experiment, "seed": run.seed, "preset": run.preset,
           "overrides": " ".join(overrides + ["results_dir=elsewhere/old"]), "flops_per_token": flops,
           "test_accuracy": 0.5, **identity_columns(run.identity), **columns}
    path = folder / "runs" / f"{rid}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_parquet(path, index=False)
    return path


SMOKE = ["+experiment=smoke", "model=s4d", "seed=1"]


def test_a_stale_count_is_rewritten_and_nothing_else(tmp_path) -> None:
    path, count = write_row(tmp_path, SMOKE, flops=123.0), count_of(SMOKE, tmp_path)
    before = pd.read_parquet(path)
    assert count != 123.0
    lines = recount(tmp_path)
    assert lines == [f"recounted {before.run_id[0]} (s4d on sdigits): 123 -> {count:,.0f}"]
    after = pd.read_parquet(path)
    assert after.flops_per_token[0] == count
    pd.testing.assert_frame_equal(after.drop(columns="flops_per_token"), before.drop(columns="flops_per_token"))
    assert recount(tmp_path) == [f"unchanged {before.run_id[0]}: {count:,.0f}"]
    assert [p.name for p in tmp_path.rglob("*")] == ["runs", path.name], "no temporary left behind"


def test_a_default_that_moved_is_taken_from_the_row(tmp_path) -> None:
    """The row was recorded when the experiment's d_state and batch differed: its own columns
    say what ran, and the count is that configuration's."""
    moved = {"model.ssm.d_state": 24, "trainer.batch_size": 4}
    path = write_row(tmp_path, SMOKE, flops=1.0, **moved)
    count = count_of(SMOKE + [f"{key}={value}" for key, value in moved.items()], tmp_path)
    assert count != count_of(SMOKE, tmp_path), "the moved column changes the count"
    recount(tmp_path)
    assert pd.read_parquet(path).flops_per_token[0] == count


def test_a_row_it_cannot_reproduce_is_left_byte_for_byte(tmp_path) -> None:
    path = write_row(tmp_path, SMOKE, flops=1.0, **{"model.ssm.flux": 3})
    before = path.read_bytes()
    (line,) = recount(tmp_path)
    assert line.startswith(f"left {path.stem}: its configuration does not compose today") and "flux" in line
    assert path.read_bytes() == before


def test_a_damaged_or_foreign_file_is_left_and_the_rest_recounted(tmp_path) -> None:
    path = write_row(tmp_path, SMOKE, flops=3.0)
    (tmp_path / "runs" / "0000000000000000.parquet").write_bytes(b"PAR1 torn")
    pd.DataFrame([{"a": 1}, {"a": 2}]).to_parquet(tmp_path / "runs" / "1111111111111111.parquet")
    lines = recount(tmp_path)
    assert lines[0] == "left 0000000000000000.parquet: not a readable parquet file (ArrowInvalid)"
    assert lines[1] == "left 1111111111111111.parquet: not a run row (one row with overrides and flops_per_token)"
    assert lines[2].startswith(f"recounted {path.stem} (s4d on sdigits): 3 -> ")


def test_dry_run_writes_nothing(tmp_path) -> None:
    path, count = write_row(tmp_path, SMOKE, flops=7.0), count_of(SMOKE, tmp_path)
    before = path.read_bytes()
    assert recount(tmp_path, dry_run=True)[0].endswith(f"7 -> {count:,.0f}")
    assert path.read_bytes() == before


def test_list_values_become_hydra_lists() -> None:
    assert override_text("task.curriculum", "40,80", [10]) == "task.curriculum=[40,80]"
    assert override_text("task.test_lengths", "none", [64]) == "task.test_lengths=[]"
    assert override_text("model.ssm.selective", "dt,B", ["dt"]) == "model.ssm.selective=['dt','B']"
    assert override_text("model.ssm.dt_rank", None, 4) == "model.ssm.dt_rank=null"
    assert override_text("task.label", "it's", "every") == "task.label='it\\'s'"


@pytest.mark.parametrize("text", ["C:\\data", "ends\\", "it's", "x\\'y", "a,b[c]=d", "\\\\srv\\share\\"])
def test_a_string_value_composes_back_to_itself(text: str) -> None:
    """What Hydra reads from override_text is the row's value, backslashes and quotes included."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_overrides([override_text("task.data_dir", text, None)])[0].value() == text


def test_a_folder_without_rows_is_refused_before_any_folder_is_rewritten(tmp_path) -> None:
    path = write_row(tmp_path / "good", SMOKE, flops=5.0)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not a results folder with run rows"):
        recount(tmp_path / "empty")
    result = subprocess.run([sys.executable, "-m", "ablate.recount", str(tmp_path / "good"), str(tmp_path / "nowhere")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {str(tmp_path / 'nowhere')!r} is not a results folder with run rows; expected a folder holding "
        "runs/<run_id>.parquet (an experiment's results_dir)"]
    assert path.read_bytes() == before


def test_the_committed_rows_hold_todays_count() -> None:
    """One row of each preset on each task of each committed results folder: a change to the
    FLOP count has to be followed by ``python -m ablate.recount`` over results/reference."""
    picked: dict[tuple, Path] = {}
    for path in sorted((ROOT / "results" / "reference").glob("*/runs/*.parquet")):
        row = pd.read_parquet(path, columns=["preset", "task"]).iloc[0]
        picked.setdefault((path.parents[1].name, row.preset, row.task), path)
    assert len(picked) >= 20
    register()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        lines = [recount_row(path, path.parents[1], dry_run=True) for path in picked.values()]
    assert [line for line in lines if not line.startswith("unchanged")] == []


def test_a_folder_whose_name_hydra_would_parse_is_recounted(tmp_path) -> None:
    """results_dir='runs[lr=1e-3]' is a folder the runner writes to: DIR is passed to Hydra quoted."""
    import shutil

    write_row(tmp_path / "plain", SMOKE, flops=123.0)
    for name in ("sweep[lr=1e-3]", "a,b"):
        shutil.copytree(tmp_path / "plain", tmp_path / name)
        (line,) = recount(tmp_path / name, dry_run=True)
        assert line.startswith("recounted"), line
