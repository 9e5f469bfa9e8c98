"""The fair-comparison protocol of analysis/: selection on validation per configuration and seed,
equal budgets stated in every caption, and significance (95% CI, Welch's t-test marks) against a
baseline row.

Every number is checked against an independent computation (plain pandas on the parquet files,
scipy on the same values). The tuned fixture (tests/analysis_fixtures.py, :func:`tuned_rows`)
plants a grid point whose test score is the best of all and whose validation score is the
worst: selecting on test would pick it, selecting on validation never does.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analysis_fixtures as fx
from analysis.load import load_results
from analysis.report import analyse, build_report
from analysis.selection import select_runs, tuning_phrase
from test_analysis import CELL, assert_latex_shaped, cli, parse_markdown_table

SEEDS = (0, 1, 2)
CONFIG = ["model.ssm.structure", "model.ssm.gate"]
CI = re.compile(r"^\[(-?[\d.]+), (-?[\d.]+)\]$")


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fair") / "tuned"
    fx.write_runs(root, fx.tuned_rows(tasks=("sdigits", "adding")))
    return root


@pytest.fixture(scope="module")
def tuned_report(tuned_dir) -> Path:
    out = tuned_dir / "report"
    build_report([tuned_dir], out, formats=("png",))
    return out


@pytest.fixture(scope="module")
def tuned_an(tuned_dir):
    return analyse(load_results([tuned_dir]))


def read_rows(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(glob.glob(str(root / "runs" / "*.parquet")))],
                     ignore_index=True)


def select_independently(rows: pd.DataFrame, task: str, on: str) -> pd.DataFrame:
    """Per (configuration, seed), the ok run with the best ``on`` column (higher for accuracy)."""
    metric = fx.TASKS[task]
    ok = rows[(rows["task"] == task) & (rows["status"] == "ok")]
    pick = ok.groupby(CONFIG + ["seed"])[on].idxmax() if metric == "accuracy" else \
        ok.groupby(CONFIG + ["seed"])[on].idxmin()
    return ok.loc[pick.to_numpy()]


def number(text: str) -> tuple[float, int]:
    """(value, decimals) of a printed cell number."""
    match = CELL.match(text)
    assert match, text
    return float(match.group(2)), len(match.group(2).split(".")[1]) if "." in match.group(2) else 0


def table(report: Path, task: str) -> tuple[str, list[str], dict[str, list[str]]]:
    """(caption, header, {'structure, gate': cells})."""
    path = report / f"results_{task}.md"
    header, body = parse_markdown_table(path)
    caption = path.read_text().splitlines()[0]
    return caption, header, {f"{cells[0]}, {cells[1]}": cells for cells in body}


# --- selection ---------------------------------------------------------------------------------

def test_selection_never_picks_the_planted_test_best_validation_worst_run(tuned_dir, tuned_report, tuned_an) -> None:
    rows = read_rows(tuned_dir)
    structure, gate, lr, ssm_lr = fx.PLANTED
    for task, metric in (("sdigits", "accuracy"), ("adding", "mse")):
        planted = rows[(rows["task"] == task) & (rows["model.ssm.structure"] == structure)
                       & (rows["model.ssm.gate"] == gate) & (rows["trainer.lr"] == lr)
                       & (rows["trainer.ssm_lr"] == ssm_lr)]
        on_test = select_independently(rows, task, f"test_{metric}")
        assert set(planted["run_id"]) <= set(on_test["run_id"])  # the trap is real: test would choose it
        on_val = select_independently(rows, task, f"final_val_{metric}")
        on_best = select_independently(rows, task, f"best_val_{metric}")
        assert set(on_best["run_id"]) != set(on_val["run_id"])  # the best evaluation would choose otherwise
        chosen = tuned_an.runs[(tuned_an.runs["task"] == task) & (tuned_an.runs["status"] == "ok")]
        assert not set(planted["run_id"]) & set(chosen["run_id"])
        assert set(chosen["run_id"]) == set(on_val["run_id"])
        # the table reports the chosen runs' test metric
        caption, header, body = table(tuned_report, task)
        column = header.index(f"Test {metric} {'↑' if metric == 'accuracy' else '↓'}")
        for config, group in on_val.groupby(CONFIG):
            label = ", ".join(config)
            mean = group[f"test_{metric}"].mean()
            assert tuned_an.agg.loc[(task, label), (f"test_{metric}", "mean")] == pytest.approx(mean, rel=1e-12)
            value, decimals = number(body[label][column])
            assert value == pytest.approx(mean, abs=0.51 * 10 ** -decimals)
        assert ("Tuned over trainer.lr ∈ {0.001, 0.003}, trainer.ssm_lr ∈ {0.0003, 0.001} on validation" in caption
                and "per configuration and seed; test metric of the selected run" in caption)
        # the tuned keys are not configurations: one row per (structure, gate)
        assert len(body) == 4 and "trainer.lr" not in tuned_an.axes and "trainer.ssm_lr" not in tuned_an.axes


def test_selection_is_blind_to_test_columns(tuned_an) -> None:
    runs = tuned_an.all_runs.drop(columns=["config", "_selected"])
    rng = np.random.default_rng(0)
    scrambled = runs.copy()
    for col in [c for c in runs.columns if c.startswith("test_")]:
        scrambled[col] = rng.permutation(scrambled[col].to_numpy())
    dropped = runs.drop(columns=[c for c in runs.columns if c.startswith("test_")])
    reference = set(select_runs(runs, tuned_an.axes, tuned_an.tuned)["run_id"])
    assert set(select_runs(scrambled, tuned_an.axes, tuned_an.tuned)["run_id"]) == reference
    assert set(select_runs(dropped, tuned_an.axes, tuned_an.tuned)["run_id"]) == reference


def test_only_ok_runs_compete_and_an_all_failed_pair_counts_as_failed(tuned_an, tuned_report) -> None:
    structure, gate, seed, lr, ssm_lr = fx.DIVERGED_TRAP
    runs = tuned_an.runs
    pick = runs[(runs["task"] == "sdigits") & (runs["model.ssm.structure"] == structure)
                & (runs["model.ssm.gate"] == gate) & (runs["seed"] == seed)]
    assert len(pick) == 1 and pick.iloc[0]["status"] == "ok"
    assert (pick.iloc[0]["trainer.lr"], pick.iloc[0]["trainer.ssm_lr"]) != (lr, ssm_lr)
    structure, gate, seed = fx.ALL_FAILED
    failed = runs[(runs["task"] == "sdigits") & (runs["config"] == f"{structure}, {gate}") & (runs["seed"] == seed)]
    assert list(failed["status"]) == ["failed"] and failed.iloc[0]["_candidates"] == len(fx.LRS) * len(fx.SSM_LRS)
    assert tuned_an.counts.loc[("sdigits", f"{structure}, {gate}"), "failed"] == 1
    assert tuned_an.agg.loc[("sdigits", f"{structure}, {gate}"), ("test_accuracy", "n")] == 3
    caption, header, body = table(tuned_report, "sdigits")
    assert body[f"{structure}, {gate}"][-1] == "3 of 4 (1 failed)" and "Excluded from the means: 1 failed" in caption


def test_selected_hyperparameters_are_shown(tuned_dir, tuned_report) -> None:
    rows = read_rows(tuned_dir)
    chosen = select_independently(rows, "sdigits", "final_val_accuracy")
    caption, header, body = table(tuned_report, "sdigits")
    for key, title in (("trainer.lr", "Sel. lr"), ("trainer.ssm_lr", "Sel. ssm_lr")):
        for config, group in chosen.groupby(CONFIG):
            counts = group[key].value_counts()
            top = counts[counts == counts.max()].index.min()
            text = body[", ".join(config)][header.index(title)]
            assert float(text.split(" ")[0]) == pytest.approx(top)
            assert text.endswith(f"({counts.max()}/{len(group)})") == (counts.max() < len(group))
    flat = pd.read_csv(tuned_report / "aggregate.csv")
    assert {"selected_trainer.lr", "selected_trainer.ssm_lr"} <= set(flat.columns)


def test_ties_go_to_the_smaller_learning_rate() -> None:
    rows = [fx.tuned_row("sdigits", "siso", "glu", 0, lr, 0.001) for lr in (0.003, 0.001)]
    for row in rows:
        row["final_val_accuracy"] = 0.8
    runs = pd.DataFrame(rows).assign(_absent=[()] * 2)
    picked = select_runs(runs, [], ["trainer.lr", "trainer.ssm_lr"])
    assert len(picked) == 1 and picked.iloc[0]["trainer.lr"] == 0.001


def test_tied_tuning_keys_are_described_by_their_grid_points() -> None:
    """lr and ssm_lr swept together (ssm_lr = lr): the caption lists the 2 points tried, not a
    4-point product; independent keys keep the per-key form."""
    tied = pd.DataFrame([fx.tuned_row("sdigits", "siso", "glu", seed, lr, lr) for seed in SEEDS for lr in (0.001, 0.003)])
    phrase = tuning_phrase(tied, ["trainer.lr", "trainer.ssm_lr"], "accuracy")
    assert phrase.startswith("Tuned over (trainer.lr, trainer.ssm_lr) ∈ {(0.001, 0.001), (0.003, 0.003)} on validation")
    full = pd.DataFrame([fx.tuned_row("sdigits", "siso", "glu", 0, lr, s) for lr in (0.001, 0.003) for s in (0.01, 0.1)])
    assert tuning_phrase(full, ["trainer.lr", "trainer.ssm_lr"], "accuracy").startswith(
        "Tuned over trainer.lr ∈ {0.001, 0.003}, trainer.ssm_lr ∈ {0.01, 0.1} on validation")
    single = pd.DataFrame([fx.tuned_row("sdigits", "siso", "glu", seed, 0.003, 0.001) for seed in SEEDS])
    assert tuning_phrase(single, ["trainer.lr", "trainer.ssm_lr"], "accuracy") == (
        "Not tuned: a one-point grid (trainer.lr = 0.003, trainer.ssm_lr = 0.001) for every configuration.")


# --- significance and confidence intervals ------------------------------------------------------

def expected_significance(chosen: pd.DataFrame, metric: str, baseline: str) -> dict[str, float]:
    values = {", ".join(k): g[f"test_{metric}"].to_numpy(float) for k, g in chosen.groupby(CONFIG)}
    return {label: float(stats.ttest_ind(v, values[baseline], equal_var=False).pvalue)
            for label, v in values.items() if label != baseline}


@pytest.mark.parametrize("baseline", [None, "siso, silu", "structure=siso,gate=glu"])
def test_significance_marks_agree_with_scipy(tuned_dir, tmp_path, baseline) -> None:
    out = tmp_path / "report"
    args = [str(tuned_dir), "--out", str(out), "--formats", "png"] + (["--baseline", baseline] if baseline else [])
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    rows = read_rows(tuned_dir)
    base = {None: "mimo, glu", "siso, silu": "siso, silu", "structure=siso,gate=glu": "siso, glu"}[baseline]
    flat = pd.read_csv(out / "aggregate.csv")
    for task, metric in (("sdigits", "accuracy"), ("adding", "mse")):
        chosen = select_independently(rows, task, f"final_val_{metric}")
        want = expected_significance(chosen, metric, base)
        caption, header, body = table(out, task)
        assert f"against the baseline row ({base};" in caption and "Welch's t-test" in caption
        assert "equal_var=False" in caption and "† p < 0.05" in caption
        main = next(i for i, h in enumerate(header) if h.startswith(f"Test {metric}"))
        p_col = header.index("p vs baseline")
        assert body[base][p_col] == "baseline" and "†" not in body[base][main]
        for label, p in want.items():
            assert ("†" in body[label][main]) == (p < 0.05), (task, label, p)
            assert body[label][p_col] == f"{p:.2g}"
            got = flat[(flat["task"] == task) & (flat["config"] == label)].iloc[0]
            assert got["p_vs_baseline"] == pytest.approx(p, rel=1e-9)
            assert bool(got["significant"]) == (p < 0.05)
        assert any(p < 0.05 for p in want.values()) or task == "adding"  # the fixture has real gaps on sdigits
        tex = (out / f"results_{task}.tex").read_text()
        rows_tex = tex.split("\\midrule")[1]  # the caption explains the mark too
        assert rows_tex.count("^{\\dagger}") == sum(p < 0.05 for p in want.values())
        assert_latex_shaped(tex)


def test_significance_marks_on_the_untuned_fixture(tmp_path) -> None:
    root = fx.make_results(tmp_path / "plain", bench=False, damaged=False, tasks=("sdigits",))
    out = tmp_path / "plain" / "report"
    build_report([root], out, formats=("png",))
    rows = read_rows(root)
    rows = rows[rows["status"] == "ok"]
    want = expected_significance(rows, "accuracy", "mimo, glu")
    caption, header, body = table(out, "sdigits")
    main = header.index("Test accuracy ↑")
    for label, p in want.items():
        assert ("†" in body[label][main]) == (p < 0.05)
        assert body[label][header.index("p vs baseline")] == f"{p:.2g}"


def test_fewer_than_three_seeds_gives_no_marks(tmp_path) -> None:
    root = tmp_path / "two_seeds"
    fx.write_runs(root, fx.tuned_rows(seeds=(0, 1), traps=False))
    build_report([root], root / "report", formats=("png",))
    caption, header, body = table(root / "report", "sdigits")
    assert "No significance marks: significance needs ≥ 3 seeds per cell" in caption
    assert "p vs baseline" not in header and not any("†" in c for cells in body.values() for c in cells)
    assert "95% CI" in header  # a Student-t interval exists from two seeds on
    summary = (root / "report" / "summary.md").read_text()
    assert "significance needs ≥ 3 seeds per cell" in summary


def test_some_rows_with_fewer_seeds_are_not_tested(tmp_path) -> None:
    rows = fx.tuned_rows(traps=False)
    rows = [r for r in rows if not (r["model.ssm.gate"] == "silu" and r["model.ssm.structure"] == "siso"
                                    and r["seed"] == 2)]
    fx.write_runs(tmp_path / "r", rows)
    build_report([tmp_path / "r"], tmp_path / "r" / "report", formats=("png",))
    caption, header, body = table(tmp_path / "r" / "report", "sdigits")
    assert "Not tested (significance needs ≥ 3 seeds per cell): siso, silu." in caption
    assert body["siso, silu"][header.index("p vs baseline")] == "—"
    assert "†" not in body["siso, silu"][header.index("Test accuracy ↑")]


def test_confidence_intervals_equal_scipy_t_interval(tuned_dir, tuned_report) -> None:
    rows = read_rows(tuned_dir)
    flat = pd.read_csv(tuned_report / "aggregate.csv")
    for task, metric in (("sdigits", "accuracy"), ("adding", "mse")):
        chosen = select_independently(rows, task, f"final_val_{metric}")
        caption, header, body = table(tuned_report, task)
        assert "95% CI: Student-t interval of the mean over seeds" in caption
        ci_col = header.index("95% CI")
        assert header[ci_col - 1].startswith(f"Test {metric}")
        for config, group in chosen.groupby(CONFIG):
            values = group[f"test_{metric}"].to_numpy(float)
            low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
            low, high = max(low, 0.0), (min(high, 1.0) if metric == "accuracy" else high)  # the metric's range
            label = ", ".join(config)
            match = CI.match(body[label][ci_col])
            assert match, body[label][ci_col]
            decimals = len(match.group(1).split(".")[1])
            assert float(match.group(1)) == pytest.approx(low, abs=0.51 * 10 ** -decimals)
            assert float(match.group(2)) == pytest.approx(high, abs=0.51 * 10 ** -decimals)
            got = flat[(flat["task"] == task) & (flat["config"] == label)].iloc[0]
            assert got["test_ci95_low"] == pytest.approx(low, rel=1e-9)
            assert got["test_ci95_high"] == pytest.approx(high, rel=1e-9)


# --- budgets -----------------------------------------------------------------------------------

def test_caption_states_the_equal_budget_and_the_rows_share_it(tuned_dir, tuned_report) -> None:
    rows = read_rows(tuned_dir)
    for task in ("sdigits", "adding"):
        task_rows = rows[rows["task"] == task]
        kinds, values = set(task_rows["budget_kind"]), set(task_rows["budget_value"])
        assert len(kinds) == 1 and len(values) == 1  # every row of the table had the same budget
        caption, header, body = table(tuned_report, task)
        assert f"Budget held equal: {kinds.pop()} = {int(values.pop())}." in caption
        assert "budgets differ" not in caption
        for title in ("Params", "State size"):  # the size of every row is in the table
            assert all(re.fullmatch(r"\d+", cells[header.index(title)]) for cells in body.values())
    summary = (tuned_report / "summary.md").read_text()
    assert "- Budget held equal: steps = 50." in summary


@pytest.mark.parametrize("budget,text", [(("tokens", 819200), "tokens = 819200"), (("time", 600.0), "time = 600 s"),
                                         (("flops", 2.5e12), "flops = 2.5e+12")])
def test_budget_kinds_are_named(tmp_path, budget, text) -> None:
    fx.write_runs(tmp_path / "r", fx.tuned_rows(seeds=(0,), traps=False, budget=budget))
    build_report([tmp_path / "r"], tmp_path / "r" / "report", formats=("png",))
    caption, _, _ = table(tmp_path / "r" / "report", "sdigits")
    assert f"Budget held equal: {text}." in caption


def test_unequal_budgets_are_flagged(tmp_path) -> None:
    rows = fx.tuned_rows(traps=False)
    for row in rows:
        if (row["model.ssm.structure"], row["model.ssm.gate"]) == ("mimo", "silu"):
            row["budget_value"] = 100
    fx.write_runs(tmp_path / "r", rows)
    build_report([tmp_path / "r"], tmp_path / "r" / "report", formats=("png",))
    caption, header, body = table(tmp_path / "r" / "report", "sdigits")
    assert "Budget held equal" not in caption
    assert ("WARNING: budgets differ across rows: steps = 50 (mimo, glu; siso, glu; siso, silu), "
            "steps = 100 (mimo, silu).") in caption
    summary = (tmp_path / "r" / "report" / "summary.md").read_text()
    assert "WARNING: budgets differ across rows" in summary
    assert_latex_shaped((tmp_path / "r" / "report" / "results_sdigits.tex").read_text())



@pytest.mark.parametrize("kind", ["tokens", "flops"])
def test_tuning_the_batch_size_under_a_tokens_budget_selects_over_it(tmp_path, kind) -> None:
    """Under a tokens (flops) budget the runner converts the budget to trainer.max_steps per batch
    size: max_steps follows the tuned key and must not split a configuration into one row per
    batch size (one candidate each, nothing selected)."""
    rows = []
    for structure, gate, seed in ((s, g, seed) for s in fx.STRUCTURES for g in fx.GATES for seed in SEEDS):
        for batch in (8, 16):
            row = fx.tuned_row("sdigits", structure, gate, seed, 0.003, 0.001, budget=(kind, 8192))
            row.update({"run_id": f"{row['run_id'][:12]}b{batch:03d}", "trainer.batch_size": batch,
                        "trainer.max_steps": 8192 // (batch * 64), "tuned": "trainer.batch_size",
                        "final_val_accuracy": row["final_val_accuracy"] + (0.01 if batch == 8 else 0.0)})
            rows.append(row)
    fx.write_runs(tmp_path / "r", rows)
    an = analyse(load_results([tmp_path / "r"]))
    assert "trainer.max_steps" not in an.axes
    assert len(an.runs) == len(fx.STRUCTURES) * len(fx.GATES) * len(SEEDS)  # one per (configuration, seed)
    assert set(an.runs["trainer.batch_size"]) == {8}  # the better validation score
    assert sorted(an.order["sdigits"]) == ["mimo, glu", "mimo, silu", "siso, glu", "siso, silu"]

def test_bad_baseline_is_a_one_line_error(tuned_dir, tmp_path) -> None:
    for spec, words in (("gate=none", "names no configuration"), ("gate=silu", "fits 2 configurations"),
                        ("colour=red", "not a configuration column")):
        done = cli(str(tuned_dir), "--out", str(tmp_path / "x"), "--formats", "png", "--baseline", spec)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: --baseline") and words in done.stderr
