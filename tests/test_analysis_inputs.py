"""analysis/ inputs: parquet files of other tools are skipped, benchmark series keep how they were measured.

Tiny synthetic frames (tests/analysis_fixtures.py); each test takes a second or two.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import analysis.__main__ as analysis_cli
import analysis_fixtures as fx
from analysis import bench
from analysis.bench import speed_table
from analysis.load import load_results
from analysis.report import build_report
from test_analysis import parse_markdown_table


def write_foreign(path) -> None:
    """A parquet file another tool wrote: no column of this suite's schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4], "notes": ["a", "b"]}).to_parquet(path, index=False)


def test_foreign_parquet_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog) -> None:
    root = tmp_path / "r"
    fx.write_runs(root, [fx.run_row("sdigits", "siso", "glu", s) for s in (0, 1)])
    for kind in ("runs", "curves", "bench"):
        write_foreign(root / kind / f"other_{kind}.parquet")
    with caplog.at_level("WARNING"):
        results = load_results([root])
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for kind in ("runs", "curves", "bench"):
        assert f"{kind}/other_{kind}.parquet" in warned
    assert sorted(p.name for p in results.skipped) == ["other_bench.parquet", "other_curves.parquet",
                                                       "other_runs.parquet"]
    assert len(results.runs) == 2 and set(results.runs["status"]) == {"ok"} and results.bench.empty
    build_report([root], formats=("png",))
    summary = (root / "report" / "summary.md").read_text()
    assert "2 runs: 2 ok." in summary and "failed" not in summary
    assert "`runs/other_runs.parquet`" in summary


def test_old_runner_files_still_count_as_ours(tmp_path) -> None:
    row = fx.run_row("sdigits", "siso", "glu", 0)
    for column in ("status", "schema_version", "metric"):
        row.pop(column)
    fx.write_runs(tmp_path / "r", [row])
    results = load_results([tmp_path / "r"])
    assert len(results.runs) == 1 and results.runs["status"].iloc[0] == "ok" and not results.skipped


def test_a_directory_with_only_foreign_parquet_is_a_one_line_error(tmp_path, capsys, caplog) -> None:
    write_foreign(tmp_path / "r" / "runs" / "table.parquet")
    with caplog.at_level("WARNING"):
        assert analysis_cli.main([str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("WARNING")]
    assert len(errors) == 1 and errors[0].startswith("error: no readable results in "), err
    assert "Traceback" not in "\n".join(err)
    assert any("runs/table.parquet" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.parametrize("args, message", [
    (["--formats", "svgx,png"], "error: --formats='svgx,png' is not valid (svgx); expected a comma-separated list of "),
    (["--formats", ","], "error: --formats='' is not valid; expected"),
    (["--out", "/proc/no-such-folder/report"], "error: --out='/proc/no-such-folder/report' cannot be created"),
])
def test_bad_output_options_are_one_line_errors_before_anything_is_written(tmp_path, capsys, args, message) -> None:
    """A bad figure format or an output folder that cannot be made is refused up front: no
    report file is written (a report that stopped half-way would look complete)."""
    results = fx.make_results(tmp_path / "r", bench=False, damaged=False, tasks=("sdigits",))
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    assert analysis_cli.main([str(results), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before
    published = tmp_path / "published.csv"
    published.write_text("label,task,metric,value\nsiso,sdigits,accuracy,0.9\n")
    if args[0] == "--formats":  # the comparison refuses it the same way
        assert analysis_cli.main(["--compare", str(results), str(published), *args]) == 2
        assert capsys.readouterr().err.startswith(message)
        assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


def bench_frame(threads: tuple[int, ...] = (1, 2), batch: int = 4, device: str = "cpu") -> pd.DataFrame:
    """S5 scan at two lengths, measured once per thread count; more threads are faster."""
    rows = [{"name": "S5", "mode": "scan", "batch": batch, "device": device, "threads": t, "length": length,
             "fwd_ms": length / 100 / t, "fwdbwd_ms": 3 * length / 100 / t, "peak_memory_mb": 10.0, "status": "ok"}
            for t in threads for length in (256, 512)]
    return pd.DataFrame(rows)


def test_bench_jobs_with_different_threads_are_separate_series(tmp_path) -> None:
    table = speed_table(bench_frame(threads=(1, 2)), "fwdbwd_ms")
    rows = {row[0].text: [c.markdown() for c in row[1:]] for row in table.rows}
    assert set(rows) == {"S5 / scan / threads=1", "S5 / scan / threads=2"}
    assert rows["S5 / scan / threads=1"] == ["7.68", "15.4"] and rows["S5 / scan / threads=2"][0] == "**3.84**"
    assert "±" not in " ".join(" ".join(r) for r in rows.values())  # nothing averaged across thread counts
    assert "on cpu, batch 4" in table.caption  # what they share is said once


def test_bench_series_label_names_device_and_batch_when_they_vary() -> None:
    frame = pd.concat([bench_frame(threads=(1,), batch=4, device="cpu"),
                       bench_frame(threads=(1,), batch=8, device="cuda")], ignore_index=True)
    table = speed_table(frame, "fwd_ms")
    assert [row[0].text for row in table.rows] == ["S5 / scan / batch=4 / device=cpu",
                                                   "S5 / scan / batch=8 / device=cuda"]
    assert "1 thread" in table.caption


def test_bench_jobs_under_different_malloc_settings_are_separate_series() -> None:
    defaults = bench_frame(threads=(1,))  # rows written before the setting was recorded: no column
    tuned = bench_frame(threads=(1,)).assign(glibc_tunables="glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=9",
                                             fwdbwd_ms=lambda f: f["fwdbwd_ms"] / 2)
    table = speed_table(pd.concat([defaults, tuned], ignore_index=True), "fwdbwd_ms")
    rows = {row[0].text: [c.markdown() for c in row[1:]] for row in table.rows}
    assert set(rows) == {"S5 / scan / malloc=defaults", "S5 / scan / malloc=hugetlb=1:trim_threshold=9"}
    assert rows["S5 / scan / malloc=defaults"] == ["7.68", "15.4"]  # not averaged with the other setting


def test_repeated_measurements_of_one_series_say_they_are_averaged(tmp_path) -> None:
    root = tmp_path / "b"
    (root / "bench").mkdir(parents=True)
    bench_frame(threads=(1,)).to_parquet(root / "bench" / "job1.parquet")
    slower = bench_frame(threads=(1,)).assign(fwdbwd_ms=lambda f: f["fwdbwd_ms"] * 1.1)
    slower.to_parquet(root / "bench" / "job2.parquet")
    build_report([root], formats=("png",))
    header, body = parse_markdown_table(root / "report" / "speed_time.md")
    assert body[0][0] == "S5 / scan" and body[0][1].endswith("(2)")
    caption = (root / "report" / "speed_time.md").read_text().splitlines()[0]
    assert "on cpu, 1 thread, batch 4" in caption and "mean ± std (n)" in caption


def test_a_mode_has_one_style_in_every_speed_panel_and_the_legend(tmp_path, monkeypatch) -> None:
    fft = bench_frame(threads=(1,)).assign(name="S4D", mode="fft", fwdbwd_ms=np.nan)  # measured forward only
    seen = {}
    monkeypatch.setattr(bench, "save_figure", lambda fig, stem, formats=(): seen.update({stem.name: (
        {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)},
        [[(l.get_color(), l.get_marker(), l.get_linestyle()) for l in ax.lines if len(l.get_xdata()) > 1]
         for ax in fig.axes])}) or [])
    bench.plot_speed(pd.concat([fft, bench_frame(threads=(1,))], ignore_index=True), tmp_path / "speed_time",
                     tmp_path / "speed_memory")
    legend, panels = seen["speed_time"]
    scan = (legend["scan"].get_marker(), legend["scan"].get_linestyle())
    assert scan != (legend["fft"].get_marker(), legend["fft"].get_linestyle())
    for lines in panels:  # forward: S4D fft and S5 scan; forward + backward: S5 scan alone
        assert [(m, ls) for colour, m, ls in lines if colour == legend["S5"].get_color()] == [scan]


def test_speed_summary_counts_add_up_to_the_benchmark_rows(tmp_path) -> None:
    root = tmp_path / "b"
    (root / "bench").mkdir(parents=True)
    rows = fx.bench_rows()  # 25 rows of the length sweep (2 not measured) and a per-step row without a length
    rows.to_parquet(root / "bench" / "cpu.parquet")
    build_report([root], formats=("png",))
    line = next(l for l in (root / "report" / "summary.md").read_text().splitlines() if l.startswith("- Benchmarked"))
    counts = [int(n) for n in re.findall(r"(\d+) (?:measured|over budget|OOM|outside)", line)]
    assert f"{len(rows)} rows" in line and sum(counts) == len(rows) and "1 outside the length sweep" in line
