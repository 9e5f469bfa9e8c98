"""The summary's headline statements: ties named as ties, the same ≥ 3 seeds rule and the same
test as the tables, p-values printed on the right side of 0.05, the recorded metric direction."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import analysis_fixtures as fx
from analysis.report import build_report, table_columns
from analysis.significance import p_format
from analysis.stats import aggregate, welch_test
from analysis.summary import headline


def _headline(cells: dict[str, list[float]], higher: bool = True) -> list[str]:
    """summary.headline on configurations -> their seeds' test accuracies (table order as given)."""
    ok = pd.DataFrame([{"config": config, "status": "ok", "test_accuracy": value}
                       for config, values in cells.items() for value in values])
    agg = aggregate(ok, ["config"], ["test_accuracy"])
    return headline("t", "accuracy", higher, ok, agg, list(cells), [])


def test_configurations_with_equal_means_are_named_as_tied() -> None:
    same = [0.5, 0.6, 0.7]
    lines = _headline({"a": same, "b": same, "c": same})
    assert lines == ["- All 3 configurations tie on test accuracy: a 0.600 ± 0.100 (n=3); b 0.600 ± 0.100 (n=3); "
                     "c 0.600 ± 0.100 (n=3)."]
    lines = _headline({"a": [0.1, 0.2, 0.3], "b": same, "c": same, "d": [0.9, 0.2, 0.65]})
    assert lines[0].startswith("- Best, 2 tied on test accuracy: **b** 0.600")
    assert "; **c** 0.600" in lines[0]
    assert lines[1].startswith("- Runner-up: d 0.583") and lines[1].endswith(", d against b).")
    assert lines[2].startswith("- Worst: a 0.200")
    lines = _headline({"a": [0.9, 0.8, 0.7], "b": [0.1, 0.2, 0.3], "c": [0.3, 0.2, 0.1], "d": [0.5, 0.5, 0.6]})
    assert lines[0] == "- Best: **a** with test accuracy 0.800 ± 0.100 (n=3)."
    assert lines[1].startswith("- Runner-up: d ")
    assert lines[2].startswith("- Worst, 2 tied: b 0.200 ± 0.100 (n=3); c 0.200 ± 0.100 (n=3); difference +0.600 (")
    assert lines[2].endswith(", b against a).")


def test_ties_keep_the_table_order_whatever_the_direction() -> None:
    same = [0.5, 0.6, 0.7]
    assert _headline({"z": same, "a": same, "m": [0.9, 0.9, 0.8]}, higher=False)[0].startswith(
        "- Best, 2 tied on test accuracy: **z** 0.600 ± 0.100 (n=3); **a**")


def test_summary_tests_only_with_three_seeds_a_side_as_the_tables_do() -> None:
    lines = _headline({"a": [0.9, 0.8], "b": [0.1, 0.2]})
    assert lines[1].endswith("difference +0.700 (no test: fewer than 3 seeds).")
    lines = _headline({"a": [0.9, 0.8, 0.85], "b": [0.1, 0.2, 0.15]})
    p = welch_test([0.9, 0.8, 0.85], [0.1, 0.2, 0.15])
    assert lines[1].endswith(f"difference +0.700 (Welch t-test p = {p_format(p)}).") and p < 1e-3


def test_constant_seeds_get_the_tables_test_not_a_seed_count_excuse() -> None:
    a, b = [1.0, 1.0, 0.9], [0.9, 0.9, 0.9]
    lines = _headline({"a": a, "b": b})
    p = welch_test(a, b)
    assert "fewer than 3 seeds" not in lines[1]
    assert lines[1].endswith(f"(Welch t-test p = {p_format(p)}).")
    lines = _headline({"a": [0.9, 0.9, 0.9], "b": [0.9, 0.9, 0.9], "c": [0.1, 0.2, 0.3]})
    assert lines[0].startswith("- Best, 2 tied")
    assert lines[1].startswith("- Runner-up: c ") and len(lines) == 2  # c is also the worst: one line


@pytest.mark.parametrize("p, text", [(0.04970, "0.0497"), (0.05030, "0.05"), (0.0312, "0.031"), (0.63, "0.63"),
                                     (0.049999, "0.049999"), (0.05, "0.05"), (1.2e-7, "1.2e-07")])
def test_p_values_never_print_on_the_wrong_side_of_the_level(p: float, text: str) -> None:
    assert p_format(p) == text
    assert (float(p_format(p)) < 0.05) == (p < 0.05)


def test_a_task_scored_by_its_loss_has_one_loss_column() -> None:
    assert table_columns("loss").count("test_loss") == 1
    assert table_columns("accuracy", ["scaled_accuracy"])[:4] == ["test_accuracy", "test_scaled_accuracy",
                                                                   "best_val_accuracy", "best_val_scaled_accuracy"]


def test_the_summary_follows_the_recorded_direction_of_a_metric(tmp_path) -> None:
    """A metric the name rules do not know (f1), recorded as higher-is-better: the summary calls
    the configuration with the highest f1 the best and says higher is better, as the table does."""
    rows = []
    for row in fx.all_rows(seeds=fx.SEEDS, tasks=("sdigits",), damaged=False):
        renamed = {k.replace("accuracy", "f1"): v for k, v in row.items()}
        rows.append({**renamed, "metric": "f1", "higher_is_better": True})
    fx.write_runs(tmp_path / "f1", rows)
    build_report([tmp_path / "f1"], tmp_path / "report", formats=("png",))
    summary = (tmp_path / "report" / "summary.md").read_text()
    means = pd.DataFrame(rows).groupby(["model.ssm.structure", "model.ssm.gate"])["test_f1"].mean()
    best = ", ".join(means.idxmax())
    assert "sdigits (f1, higher is better)" in summary
    assert f"- Best: **{best}** with test f1" in summary
    table = (tmp_path / "report" / "results_sdigits.md").read_text()
    structure, gate = means.idxmax()
    assert re.search(rf"^\| {structure} \| {gate} \| \*\*", table, re.M)  # the table's bold row is the same
