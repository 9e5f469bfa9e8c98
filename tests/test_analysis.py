"""analysis/: parquet -> tables, plots, summary, comparison, notebooks.

Everything runs on a synthetic results directory (tests/analysis_fixtures.py) with diverged and
failed runs, a truncated file, a file from an "older runner" and benchmark rows. The numbers in
the tables are checked against an independent pandas computation on the same parquet files.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

import analysis.__main__ as analysis_cli
import analysis_fixtures as fx
from analysis.compare import run_compare
from analysis.load import load_results
from analysis.notebook import results_inputs
from analysis.report import analyse, build_report
from analysis.summary import main_effect

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "analysis" / "notebooks"
CELL = re.compile(r"^(\*\*)?(-?[\d.]+)(?: ± ([\d.]+))?(\*\*)?†?(?: \((\d+)\))?$")  # † marks significance
FIGURES = ("final", "curves", "extrapolation", "params", "heatmap", "speed_time", "speed_memory")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "analysis", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return fx.make_results(tmp_path_factory.mktemp("analysis") / "synthetic")


@pytest.fixture(scope="module")
def small_results_dir(tmp_path_factory) -> Path:
    """Two tasks, two seeds, benchmark rows, and the damaged files: what the notebooks run on."""
    return fx.make_results(tmp_path_factory.mktemp("analysis_small") / "small", seeds=(0, 1),
                           tasks=("sdigits", "induction_heads"))


@pytest.fixture(scope="module")
def report_dir(results_dir) -> Path:
    out = results_dir / "report"
    build_report([results_dir], out)
    return out


@pytest.fixture(scope="module")
def an(results_dir):
    return analyse(load_results([results_dir]))


def independent_rows(results_dir: Path) -> pd.DataFrame:
    """Every readable run row, read with plain pandas; a missing status means the run finished."""
    frames = []
    for path in sorted(glob.glob(str(results_dir / "runs" / "*.parquet"))):
        try:
            frames.append(pd.read_parquet(path))
        except Exception:
            continue
    rows = pd.concat(frames, ignore_index=True)
    rows["status"] = rows["status"].fillna("ok")
    return rows


def parse_markdown_table(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
    split = [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]
    return split[0], split[2:]


# --- loading -----------------------------------------------------------------------------------

def test_analysis_never_imports_torch_or_ablate() -> None:
    code = ("import sys, analysis, analysis.report, analysis.compare, analysis.notebook, analysis.__main__; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ablate', 'models')); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_truncated_file_is_skipped_with_a_warning_naming_it(results_dir, caplog) -> None:
    with caplog.at_level("WARNING"):
        results = load_results([results_dir])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"runs/{fx.TRUNCATED}.parquet" in m for m in warned), warned
    assert any(f"curves/{fx.TRUNCATED}.parquet" in m for m in warned), warned
    assert {p.name for p in results.skipped} == {f"{fx.TRUNCATED}.parquet"} and len(results.skipped) == 2
    assert len(results.runs) == len(fx.all_rows())


def test_old_file_loads_and_joins_its_configuration(an) -> None:
    task, structure, gate, seed = fx.OLD_RUN
    old = an.runs[(an.runs["task"] == task) & (an.runs["seed"] == seed) & (an.runs["model.ssm.structure"] == structure)
                  & (an.runs["model.ssm.gate"] == gate)]
    assert len(old) == 1
    row = old.iloc[0]
    assert row["status"] == "ok" and row["metric"] == "accuracy"  # inferred: it has a test accuracy
    assert set(fx.OLD_MISSING) <= set(row["_absent"])
    assert row["config"] == f"{structure}, {gate}"  # not split off by its missing columns
    assert an.agg.loc[(task, f"{structure}, {gate}"), ("test_accuracy", "n")] == 3
    assert an.agg.loc[(task, f"{structure}, {gate}"), ("best_val_accuracy", "n")] == 2


def test_swept_axes_are_the_varying_config_columns(an) -> None:
    assert an.label_axes == ["model.ssm.structure", "model.ssm.gate"]
    assert set(an.axes) == {"model.ssm.structure", "model.ssm.gate", "model.ssm.d_state", "model.ssm.init"}
    # seed, host, timing and per-task settings vary too, but are not axes
    for column in ("seed", "hostname", "finished_at", "train_time_s", "task.length", "task.name", "match_by"):
        assert column not in an.axes


# --- tables ------------------------------------------------------------------------------------

def test_table_numbers_equal_an_independent_pandas_computation(results_dir, report_dir, an) -> None:
    rows = independent_rows(results_dir)
    ok = rows[rows["status"] == "ok"]
    keys = ["task", "model.ssm.structure", "model.ssm.gate"]
    for task, metric in fx.TASKS.items():
        columns = [f"test_{metric}", f"best_val_{metric}", "test_loss", "tokens_per_s", "peak_memory_mb"]
        expected = ok[ok["task"] == task].groupby(keys)[columns].agg(["mean", "std", "count"])
        header, body = parse_markdown_table(report_dir / f"results_{task}.md")
        assert len(body) == len(expected)
        for cells in body:
            structure, gate = cells[0], cells[1]
            want = expected.loc[(task, structure, gate)]
            for column in columns:
                mean, std, n = want[(column, "mean")], want[(column, "std")], int(want[(column, "count")])
                got = an.agg.loc[(task, f"{structure}, {gate}"), column]
                assert got["n"] == n
                assert got["mean"] == pytest.approx(mean, rel=1e-12)
                assert got["std"] == pytest.approx(std, rel=1e-9, nan_ok=True)
                title = next(h for h in header if h.startswith(
                    {"test_loss": "Test loss", "tokens_per_s": "Tokens/s", "peak_memory_mb": "Peak RSS/process"}.get(
                        column, ("Test " if column.startswith("test_") else "Best val. ") + metric)))
                text = cells[header.index(title)]
                match = CELL.match(text)
                assert match, text
                decimals = len(match.group(2).split(".")[1]) if "." in match.group(2) else 0
                assert float(match.group(2)) == pytest.approx(mean, abs=0.51 * 10 ** -decimals)
                assert float(match.group(3)) == pytest.approx(std, abs=0.51 * 10 ** -decimals)
                assert int(match.group(5)) == n


def test_caption_and_header_say_what_peak_memory_measured(report_dir) -> None:
    """The fixture's rows carry the process's max RSS: header and caption say it is not per run."""
    lines = next(iter((report_dir / f"results_{task}.md").read_text().splitlines() for task in fx.TASKS))
    assert "Peak mem.: the process's maximum resident set since it started" in lines[0]
    assert "not a per-run figure" in lines[0]
    assert "Peak RSS/process (MB)" in lines[2] and "Peak mem./run" not in lines[2]


def test_peak_memory_of_mixed_kinds_is_not_ranked(tmp_path) -> None:
    """Rows mixing per-run allocator peaks (newer runs) with per-process resident sets (older
    ones): the caption says so, the header has no arrow and no memory value is bold, though the
    per-run figures are far smaller; the other columns keep their best in bold."""
    rows = fx.all_rows(tasks=("sdigits",), damaged=False)
    for row in rows:
        if row["model.ssm.structure"] == "siso":
            row.update(peak_memory_mb=10.0 + row["seed"], peak_memory_kind="cpu_allocator_profiler")
    fx.write_runs(tmp_path / "mixed", rows)
    build_report([tmp_path / "mixed"], tmp_path / "report", formats=("png",))
    lines = (tmp_path / "report" / "results_sdigits.md").read_text().splitlines()
    assert "The rows mix per-run and per-process figures, which are not comparable" in lines[0]
    header, body = parse_markdown_table(tmp_path / "report" / "results_sdigits.md")
    memory = header.index("Peak mem. (MB, see caption)")
    assert float([cells[memory] for cells in body if cells[0] == "siso"][0].split()[0]) < 20  # per run, not RSS
    assert not any("**" in cells[memory] for cells in body)
    accuracy = next(i for i, h in enumerate(header) if h.startswith("Test accuracy"))
    assert sum(cells[accuracy].startswith("**") for cells in body) == 1


def test_tokens_per_s_under_mixed_malloc_settings_is_not_ranked(tmp_path) -> None:
    """Rows trained under glibc's defaults (no glibc_tunables column, older rows) beside rows
    under the tuned malloc: the caption says so and no Tokens/s value is in bold; a report of
    one setting only says nothing of it."""
    rows = fx.all_rows(tasks=("sdigits",), damaged=False)
    fx.write_runs(tmp_path / "one", rows)
    build_report([tmp_path / "one"], tmp_path / "report_one", formats=("png",))
    assert "malloc" not in (tmp_path / "report_one" / "results_sdigits.md").read_text()
    for row in rows:
        if row["model.ssm.structure"] == "siso":
            row.update(glibc_tunables="glibc.malloc.hugetlb=1", tokens_per_s=1e9)
    fx.write_runs(tmp_path / "mixed", rows)
    build_report([tmp_path / "mixed"], tmp_path / "report", formats=("png",))
    caption = (tmp_path / "report" / "results_sdigits.md").read_text().splitlines()[0]
    assert "the rows trained under different glibc malloc settings" in caption
    header, body = parse_markdown_table(tmp_path / "report" / "results_sdigits.md")
    speed = next(i for i, h in enumerate(header) if h.startswith("Tokens/s"))
    assert not any("**" in cells[speed] for cells in body)


def _main_effect(cells: dict[tuple[str, str], float], axis: str) -> str:
    """summary.main_effect on configurations (a, b) -> test accuracy, two seeds each (±0.01)."""
    ok = pd.DataFrame([{"config": f"{a}, {b}", "model.a": a, "model.b": b, "test_accuracy": value + delta}
                       for (a, b), value in cells.items() for delta in (-0.01, 0.01)])
    return main_effect(ok, "test_accuracy", axis, ["model.a", "model.b"], 2)


def test_main_effects_average_only_over_settings_run_at_every_level() -> None:
    crossed = {("x", "p"): 0.9, ("x", "q"): 0.1, ("y", "p"): 0.5, ("y", "q"): 0.3}
    assert _main_effect(crossed, "model.a") == "- Main effect of a (averaged over b): x 0.50, y 0.40."
    # without (y, q), averaging x over p and q against y over p alone would show no effect of a
    # (0.50 vs 0.50): only b = p is run at both levels of a, and only a = x at both levels of b
    one_off = {k: v for k, v in crossed.items() if k != ("y", "q")}
    assert _main_effect(one_off, "model.a") == ("- Main effect of a, over the settings of b run at every level "
                                                "(b=p; the design is not crossed): x 0.90, y 0.50.")
    assert _main_effect(one_off, "model.b").endswith("(a=x; the design is not crossed): p 0.90, q 0.10.")
    diagonal = {("x", "p"): 0.9, ("y", "q"): 0.3}
    assert _main_effect(diagonal, "model.a") == "- No main effect of a: no setting of b is run at every level."


def test_diverged_and_failed_runs_are_counted_never_averaged(results_dir, report_dir, an) -> None:
    rows = independent_rows(results_dir)
    bogus = rows[(rows["status"] != "ok")]
    assert (bogus["test_accuracy"] == 0.0).all()  # the fixture's trap
    for _, run in bogus.iterrows():
        config = f"{run['model.ssm.structure']}, {run['model.ssm.gate']}"
        assert an.agg.loc[("sdigits", config), ("test_accuracy", "n")] == 3
        assert an.counts.loc[("sdigits", config), run["status"]] == 1
    text = (report_dir / "results_sdigits.md").read_text()
    assert "1 diverged, 1 failed run(s)" in text  # caption
    assert "3 of 4 (1 diverged)" in text and "3 of 4 (1 failed)" in text  # Runs column
    summary = (report_dir / "summary.md").read_text()
    assert "1 diverged" in summary and "1 failed" in summary and "seed 3: diverged" in summary


def test_best_value_per_column_is_bold_in_the_right_direction(results_dir, report_dir) -> None:
    rows = independent_rows(results_dir)
    ok = rows[rows["status"] == "ok"]
    for task, metric in fx.TASKS.items():
        means = ok[ok["task"] == task].groupby(["model.ssm.structure", "model.ssm.gate"])[f"test_{metric}"].mean()
        best = means.idxmax() if metric == "accuracy" else means.idxmin()
        header, body = parse_markdown_table(report_dir / f"results_{task}.md")
        col = next(i for i, h in enumerate(header) if h.startswith(f"Test {metric}"))
        bold = [tuple(cells[:2]) for cells in body if cells[col].startswith("**")]
        assert bold == [best], (task, bold, best)
        assert header[col].endswith("↑" if metric == "accuracy" else "↓")
        params = header.index("Params")
        assert not any("**" in cells[params] for cells in body)  # sizes have no better direction


def assert_latex_shaped(text: str) -> None:
    """Balanced environments and braces, booktabs rules, escaped underscores, a consistent
    number of columns per row, ASCII only."""
    assert text.isascii()
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"unbalanced \\end{{{env}}}"
    assert not stack, stack
    assert not re.search(r"(?<!\\)_", text.replace("\\_", "")), "unescaped underscore"
    unescaped = text.replace("\\{", "").replace("\\}", "")
    assert unescaped.count("{") == unescaped.count("}")
    for table in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", text, flags=re.S):
        spec, body = table
        assert body.count("\\toprule") == body.count("\\midrule") == body.count("\\bottomrule") == 1
        rows = [l for l in body.splitlines() if l.strip().endswith("\\\\")]
        assert rows
        for row in rows:
            assert row.count("&") - row.count("\\&") == len(spec) - 1, row
            assert row.count("$") % 2 == 0, row
    for caption in re.findall(r"\\caption\{(.*)\}", text):
        assert caption.count("$") % 2 == 0


def test_latex_tables_are_compile_shaped(report_dir) -> None:
    files = sorted(report_dir.glob("*.tex"))
    assert {f.stem for f in files} >= {"results_sdigits", "results_adding", "extrapolation_induction_heads",
                                      "speed_time", "speed_memory", "tables"}
    for path in files:
        assert_latex_shaped(path.read_text())
    text = (report_dir / "results_induction_heads.tex").read_text()
    assert "induction\\_heads" in text and "\\label{tab:results-induction-heads}" in text
    assert "\\mathbf{" in text and "\\pm" in text
    if shutil.which("pdflatex"):
        doc = report_dir / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\\input{tables}\\end{document}")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=report_dir,
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout[-2000:]


def test_extrapolation_and_speed_tables(report_dir) -> None:
    header, body = parse_markdown_table(report_dir / "extrapolation_induction_heads.md")
    assert header[2:] == ["L=64 (test split) ↑", "L=256 ↑", "L=512 ↑", "L=1024 ↑"]
    header, body = parse_markdown_table(report_dir / "speed_time.md")
    assert header == ["Series", "L=256", "L=512", "L=1024", "L=2048", "L=4096"]
    by_series = {cells[0]: cells[1:] for cells in body}
    assert by_series["Mamba / scan"][-1] == "over budget" and by_series["Mamba / chunked"][-1] == "OOM"
    assert all(c.startswith("**") for c in by_series["S4D / fft"])  # fastest at every length
    assert float(by_series["S4D / fft"][0].strip("*")) == pytest.approx(3 * 0.004 * 256, rel=1e-2)


# --- plots and summary -------------------------------------------------------------------------

def assert_image(path: Path) -> None:
    assert path.is_file(), path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    rgb = pixels[..., :3].astype(float)
    if rgb.max() > 1:
        rgb = rgb / 255
    assert rgb.std() > 0.05, f"{path} looks blank"
    assert (rgb.mean(axis=-1) < 0.9).mean() > 0.01, f"{path} is nearly all white"


def assert_pdf(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF") and len(data) > 2000, path


def test_plots_exist_decode_and_are_not_blank(report_dir) -> None:
    for stem in FIGURES:
        assert_image(report_dir / f"{stem}.png")
        assert_pdf(report_dir / f"{stem}.pdf")


def test_summary_ties_the_report_together(report_dir) -> None:
    text = (report_dir / "summary.md").read_text()
    for needle in ("## What was compared", "structure ∈ {mimo, siso}", "gate ∈ {glu, silu}",
                   "## What was held equal", "Held equal: total state size (matched to s4d, 2048)",
                   "## Headline differences", "Best: **siso, silu**", "Main effect of gate",
                   f"runs/{fx.TRUNCATED}.parquet", "## Speed"):
        assert needle in text, needle
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (report_dir / link).is_file(), link
    assert (report_dir / "aggregate.csv").is_file()


# --- command line ------------------------------------------------------------------------------

def test_cli_writes_a_report_for_several_inputs_or_a_glob(results_dir, tmp_path) -> None:
    extra = fx.make_results(tmp_path / "more" / "extra", bench=False, damaged=False, seeds=(5, 6), tasks=("sdigits",))
    shutil.copytree(results_dir / "runs", tmp_path / "more" / "synthetic" / "runs")
    out = tmp_path / "combined"
    done = cli(str(tmp_path / "more" / "*"), "--out", str(out), "--formats", "png")
    assert done.returncode == 0, done.stderr
    assert f"{fx.TRUNCATED}.parquet" in done.stderr  # warned, named, skipped
    assert (out / "summary.md").is_file() and (out / "final.png").is_file() and not (out / "final.pdf").exists()
    header, body = parse_markdown_table(out / "results_sdigits.md")
    assert all(cells[header.index("Test accuracy ↑")].endswith("(5)") for cells in body)
    assert not (extra / "report").exists()


def test_cli_reads_a_directory_whose_name_has_glob_characters(results_dir, tmp_path) -> None:
    """The runner writes to any results_dir (results_dir='runs[lr=1e-3]'); a path that exists is
    read as it is, not as a pattern that matches nothing."""
    odd = tmp_path / "sweep[lr=1e-3]*"
    shutil.copytree(results_dir / "runs", odd / "runs")
    done = cli(str(odd), "--out", str(tmp_path / "report"), "--formats", "png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report" / "summary.md").is_file()


def test_cli_fails_in_one_line_on_a_missing_directory(tmp_path) -> None:
    done = cli(str(tmp_path / "nowhere"))
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: results directory {str(tmp_path / 'nowhere')!r} does not exist"


@pytest.mark.parametrize("make", ["empty", "no_parquet", "all_corrupt", "glob_without_match"])
def test_empty_input_is_a_one_line_error(tmp_path, make, capsys) -> None:
    target = tmp_path / "results"
    target.mkdir()
    if make == "no_parquet":
        (target / "runs").mkdir()
        (target / "runs" / "notes.txt").write_text("nothing here")
    if make == "all_corrupt":
        (target / "runs").mkdir()
        (target / "runs" / "broken.parquet").write_bytes(b"PAR1 not really")
    spec = str(target / "*") if make == "glob_without_match" else str(target)
    assert analysis_cli.main([spec]) == 2
    err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("WARNING")]
    assert len(err) == 1 and err[0].startswith("error: ") and str(target) in err[0], err


def test_report_without_bench_or_with_only_bench(tmp_path) -> None:
    runs_only = fx.make_results(tmp_path / "runs_only", bench=False, damaged=False, seeds=(0, 1), tasks=("sdigits",))
    written = {p.name for p in build_report([runs_only], formats=("png",))}
    assert "results_sdigits.md" in written and "final.png" in written
    assert not any(name.startswith("speed") for name in written)
    bench_only = tmp_path / "bench_only"
    (bench_only / "bench").mkdir(parents=True)
    fx.bench_rows().to_parquet(bench_only / "bench" / "b.parquet")
    written = {p.name for p in build_report([bench_only], formats=("png",))}
    assert {"speed_time.md", "speed_time.png", "speed_memory.png", "summary.md"} <= written
    assert not any(name.startswith("results_") for name in written)
    for link in re.findall(r"\]\(([^)]+)\)", (bench_only / "report" / "summary.md").read_text()):
        assert (bench_only / "report" / link).is_file(), link


def test_configuration_whose_runs_all_failed_is_shown(tmp_path) -> None:
    rows = [fx.run_row("sdigits", "siso", "glu", s) for s in (0, 1)]
    rows += [fx.run_row("sdigits", "mimo", "glu", s, status="failed") for s in (0, 1)]
    fx.write_runs(tmp_path / "r", rows)
    out = tmp_path / "r" / "report"
    build_report([tmp_path / "r"], out, formats=("png",))
    header, body = parse_markdown_table(out / "results_sdigits.md")
    mimo = next(cells for cells in body if cells[0] == "mimo")
    assert mimo[header.index("Test accuracy ↑")] == "—" and mimo[-1] == "0 of 2 (2 failed)"
    assert_image(out / "final.png")


# --- compare -----------------------------------------------------------------------------------

def test_compare_with_published_numbers(results_dir, an, tmp_path) -> None:
    csv = fx.make_csv(tmp_path / "paper.csv")
    written = {p.name for p in run_compare(str(results_dir), str(csv), tmp_path / "cmp")}
    assert {"compare.md", "compare.tex", "compare.csv", "compare.png", "compare.pdf"} <= written
    header, body = parse_markdown_table(tmp_path / "cmp" / "compare.md")
    assert header == ["Configuration", "synthetic", "paper", "Δ (synthetic − paper)"]
    rows = {cells[0]: cells[1:] for cells in body}
    ours = an.agg.loc[("sdigits", "siso, silu"), ("test_accuracy", "mean")]
    assert rows["siso, silu"][1] == "0.880 ± 0.005"  # percent converted
    assert float(rows["siso, silu"][2]) == pytest.approx(ours - 0.88, abs=6e-4)
    assert rows["mimo, none"][0] == "—" and rows["mimo, silu"][1] == "—"  # unmatched rows stay, marked
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "percent" in text and "2 of 5" in text
    assert_latex_shaped((tmp_path / "cmp" / "compare.tex").read_text())
    assert_image(tmp_path / "cmp" / "compare.png")


def test_compare_by_key_and_two_result_sets(results_dir, tmp_path) -> None:
    csv = tmp_path / "by_structure.csv"
    pd.DataFrame({"label": ["SISO", "mimo"], "value": [0.7, 0.6]}).to_csv(csv, index=False)
    done = cli("--compare", str(results_dir), str(csv), "--key", "model.ssm.structure", "--out", str(tmp_path / "k"),
               "--formats", "png")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "k" / "compare.md").read_text()
    assert "values of model.ssm.structure" in text
    merged = pd.read_csv(tmp_path / "k" / "compare.csv")
    assert merged["matched"].sum() == 2 * len(fx.TASKS)  # no task named: every task, its own metric
    other = fx.make_results(tmp_path / "other", bench=False, damaged=False, seeds=(0,), tasks=("sdigits",))
    run_compare(str(results_dir), str(other), tmp_path / "two", names=["ours", "rerun"], formats=("png",))
    header, body = parse_markdown_table(tmp_path / "two" / "compare.md")
    assert header[-3:] == ["ours", "rerun", "Δ (ours − rerun)"] and len(body) == 4 * len(fx.TASKS)


# --- notebooks ---------------------------------------------------------------------------------

def test_relative_results_are_read_from_the_repository_root(tmp_path, monkeypatch) -> None:
    root = tmp_path.resolve()
    (root / "analysis" / "notebooks").mkdir(parents=True)
    (root / "analysis" / "__init__.py").touch()
    monkeypatch.chdir(root / "analysis" / "notebooks")  # where `jupyter execute` runs a notebook
    monkeypatch.setenv("SSM_ABLATE_RESULTS", os.pathsep.join(["results/a", "/data/b"]))
    assert results_inputs("unused") == [str(root / "results" / "a"), "/data/b"]
    monkeypatch.delenv("SSM_ABLATE_RESULTS")
    assert results_inputs(["results/c"]) == [str(root / "results" / "c")]


@pytest.mark.parametrize("name", ["mimo_vs_siso", "gating_selectivity", "speed"])
def test_notebook_executes_headless(name, small_results_dir, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert any("parameters" in c.metadata.get("tags", []) for c in notebook.cells)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")  # committed without outputs
    # relative to the repository root, as the README runs it; the kernel runs in the notebook's folder
    monkeypatch.setenv("SSM_ABLATE_RESULTS", os.path.relpath(small_results_dir, ROOT))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on any cell error
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert any("text/markdown" in o.get("data", {}) for o in outputs)


def test_a_sweep_over_a_flops_budget_keeps_max_steps_as_its_axis() -> None:
    """Two flops budgets for one model: max_steps (converted from each) is what tells them apart."""
    import pandas as pd

    from analysis.axes import swept_axes

    rows = [{"task": "sdigits", "model.preset": "s4d", "trainer.max_steps": steps, "budget_kind": "flops",
             "budget_value": value, "seed": seed} for value, steps in ((1e12, 100), (1e13, 1000)) for seed in (0, 1)]
    assert swept_axes(pd.DataFrame(rows)) == ["trainer.max_steps"]
