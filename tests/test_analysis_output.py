"""analysis/ output: intervals inside the metric's range and named, readable figures, reproducible
reports, stale files removed, extrapolation columns named apart.

Tiny synthetic frames (tests/analysis_fixtures.py); each test takes a few seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from scipy import stats

import analysis_fixtures as fx
from analysis import plots, report
from analysis.load import load_results
from analysis.outputs import MANIFEST
from analysis.report import analyse, build_report
from analysis.stats import aggregate
from test_analysis import parse_markdown_table

FIGURE_STEMS = ("final", "curves", "params", "heatmap")


def near_bounds_rows() -> list[dict]:
    """Two seeds per configuration: accuracies near 1 and mse near 0, whose Student-t intervals
    (t = 12.7 for two seeds) leave the valid range unless clipped."""
    rows = []
    for task, values in (("sdigits", (0.95, 0.99)), ("adding", (0.002, 0.03))):
        for structure in fx.STRUCTURES:
            for gate in fx.GATES:
                for seed, value in enumerate(values):
                    row = fx.run_row(task, structure, gate, seed)
                    metric = fx.TASKS[task]
                    row.update({f"test_{metric}": value, f"best_val_{metric}": value, f"final_val_{metric}": value})
                    rows.append(row)
    return rows


@pytest.fixture(scope="module")
def near_bounds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bounds") / "r"
    fx.write_runs(root, near_bounds_rows())
    build_report([root], formats=("png",))
    return root


def ci_bounds(text: str) -> tuple[float, float]:
    low, high = re.fullmatch(r"\[(-?[\d.]+), (-?[\d.]+)\]", text).groups()
    return float(low), float(high)


def test_table_intervals_stay_in_the_metric_range_and_say_so(near_bounds) -> None:
    report = near_bounds / "report"
    for task, (floor, ceiling) in (("sdigits", (0.0, 1.0)), ("adding", (0.0, np.inf))):
        header, body = parse_markdown_table(report / f"results_{task}.md")
        bounds = [ci_bounds(cells[header.index("95% CI")]) for cells in body]
        assert all(floor <= low <= high <= ceiling for low, high in bounds), bounds
        assert (max(h for _, h in bounds) == ceiling) if task == "sdigits" else (min(l for l, _ in bounds) == floor)
        caption = (report / f"results_{task}.md").read_text().splitlines()[0]
        assert "95% CI: Student-t interval of the mean over seeds" in caption
        assert f"clipped to the metric's range {'[0, 1]' if task == 'sdigits' else '[0, ∞)'}" in caption
    flat = pd.read_csv(report / "aggregate.csv")
    assert (flat["test_ci95_low"] >= 0).all()
    assert (flat.loc[flat["task"] == "sdigits", "test_ci95_high"] <= 1).all()


def test_figure_bands_and_error_bars_stay_in_the_metric_range(near_bounds) -> None:
    curve = pd.DataFrame({"config": "a", "seed": [0, 1, 0, 1], "step": [10, 10, 20, 20],
                          "val_accuracy": [0.9, 1.0, 0.95, 0.99], "train_loss": [0.01, 0.2, 0.0, 0.1]})
    for column, (floor, ceiling) in (("val_accuracy", (0, 1)), ("train_loss", (0, np.inf))):
        band = plots.mean_band(curve, "step", column, column)
        assert (band["low"] >= floor).all() and (band["high"] <= ceiling).all()
        raw = plots.t_interval(curve.loc[curve["step"] == 10, column])
        assert raw[0] < floor or raw[1] > ceiling  # unclipped, it would leave the range
    low, high = stats.t.interval(0.95, 1, loc=0.97, scale=stats.sem([0.95, 0.99]))
    assert high > 1 and plots.bounded_interval("test_accuracy")([0.95, 0.99]) == pytest.approx((low, 1.0))
    an = analyse(load_results([near_bounds]))
    for task, metric in an.metric_by_task.items():
        points = plots.param_points(an.agg.loc[task], an.ok[an.ok["task"] == task], f"test_{metric}", an.order[task])
        assert points and all(low >= 0 and (metric != "accuracy" or high <= 1) for *_, (_, _, low, high) in points)


def test_every_figure_says_what_its_marks_and_intervals_are(near_bounds) -> None:
    summary = (near_bounds / "report" / "summary.md").read_text()
    for stem in FIGURE_STEMS:
        caption = re.search(rf"!\[{stem}\]\({stem}\.png\)\n\n\*Figure {stem}: (.*)\*", summary)
        assert caption, stem
        assert ("95% CI of the mean over seeds (Student t), clipped to the metric's range" in caption.group(1)
                if stem != "heatmap" else "no interval" in caption.group(1))
    for stem, note in plots.NOTES.items():
        assert note in summary or stem == "extrapolation"


def test_heatmap_colour_scale_is_anchored_to_the_metric_range() -> None:
    assert plots.colour_limits("accuracy", np.array([0.215, 0.243])) == (0.0, 1.0)
    assert plots.colour_limits("mse", np.array([0.02, 0.05, np.nan])) == (0.0, 0.05)


def test_identical_curves_are_drawn_once_and_lines_differ_beyond_colour() -> None:
    base = pd.DataFrame({"seed": [0, 0, 1, 1], "step": [10, 20, 10, 20], "val_accuracy": [0.2, 0.5, 0.3, 0.6]})
    data = pd.concat([base.assign(config="s4d, param_count"), base.assign(config="s4d, state_size"),
                      base.assign(config="s5, state_size", val_accuracy=base["val_accuracy"] + 0.1)])
    labels = ["s4d, param_count", "s4d, state_size", "s5, state_size"]
    groups = plots.identical_groups(data, "step", "val_accuracy", labels)
    assert groups == {"s4d, param_count": "s4d, param_count = s4d, state_size", "s5, state_size": "s5, state_size"}
    styles = plots.line_styles([f"c{i}" for i in range(6)])
    assert len(set(styles.values())) == 6 and len({m for m, _ in styles.values()}) == 6
    assert plots.BAND_ALPHA <= 0.15


def test_params_panels_share_one_readable_scale(tmp_path) -> None:
    rows = [fx.run_row(task, s, g, seed) for task in ("sdigits", "adding") for s in fx.STRUCTURES for g in fx.GATES
            for seed in (0, 1)]
    for row in rows:  # one task spans 6x in parameters, the other 1.2x: one log scale for both
        row["param_count"] = {"sdigits": 1, "adding": 5}[row["task"]] * row["param_count"] + (
            100000 if row["model.ssm.structure"] == "mimo" and row["task"] == "sdigits" else 0)
    fx.write_runs(tmp_path / "r", rows)
    an = analyse(load_results([tmp_path / "r"]))
    with plots.style():
        fig = plots.params_figure(an.agg, an.ok, an.metric_by_task, an.order, an.palette)
        FigureCanvasAgg(fig)
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel()]
        assert len(panels) == 2 and {ax.get_xscale() for ax in panels} == {"log"}
        for ax in panels:
            low, high = ax.get_xlim()
            labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
                      if t.get_visible() and t.get_text() and low <= t.get_position()[0] <= high]
            assert labels and all(re.fullmatch(r"[\d.]+[kM]?", t.get_text()) for t in labels), \
                [t.get_text() for t in labels]
            boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
            assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), "tick labels overlap"
    assert plots.compact_number(7000) == "7k" and plots.compact_number(12500) == "12.5k"
    assert plots.compact_number(2e6) == "2M" and plots.compact_number(900) == "900"


def test_a_regenerated_report_is_byte_identical(tmp_path) -> None:
    root = fx.make_results(tmp_path / "r", damaged=False, seeds=(0, 1, 2), tasks=("sdigits", "induction_heads"))
    first, second = tmp_path / "one", tmp_path / "two"
    build_report([root], first, formats=("png", "pdf"))
    build_report([root], second, formats=("png", "pdf"))
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"final.png", "final.pdf", "curves.png", "speed_time.pdf"} <= set(names)
    changed = [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()]
    assert not changed, changed
    assert b"CreationDate" not in (first / "final.pdf").read_bytes()
    assert b"Matplotlib" not in (first / "final.png").read_bytes()


def test_stale_report_files_are_removed_and_nothing_else(tmp_path) -> None:
    two_axes = [fx.run_row("sdigits", s, g, seed) for s in fx.STRUCTURES for g in fx.GATES for seed in (0, 1)]
    fx.write_runs(tmp_path / "r", two_axes)
    out = tmp_path / "mine"
    out.mkdir()
    user_files = {"notes.txt": "keep me", "extrapolation.png": "a user's own figure", "results_old.md": "mine"}
    for name, text in user_files.items():
        (out / name).write_text(text)
    written = build_report([tmp_path / "r"], out, formats=("png", "pdf"))
    assert (out / "heatmap.png").is_file() and (out / "heatmap.pdf").is_file()
    for path in (tmp_path / "r" / "runs").glob("*.parquet"):  # the sweep loses its second axis
        path.unlink()
    fx.write_runs(tmp_path / "r", [fx.run_row("sdigits", s, "glu", seed) for s in fx.STRUCTURES for seed in (0, 1)])
    build_report([tmp_path / "r"], out, formats=("png",))
    assert not (out / "heatmap.png").exists() and not (out / "heatmap.pdf").exists()
    assert not (out / "final.pdf").exists() and (out / "final.png").is_file()
    for name, text in user_files.items():
        assert (out / name).read_text() == text
    assert set((out / MANIFEST).read_text().split()) == {p.name for p in written if p.suffix != ".pdf"} - {
        "heatmap.png"}


def test_extrapolation_columns_at_the_training_length_are_named_apart(tmp_path) -> None:
    rows = [fx.run_row("induction_heads", s, g, seed) for s in fx.STRUCTURES for g in fx.GATES for seed in (0, 1)]
    for row in rows:  # trained at 256, which is also the first length-test set
        row.update({"task.length": 256, "task.n_test": 500, "task.n_extrapolation": 128})
    fx.write_runs(tmp_path / "r", rows)
    build_report([tmp_path / "r"], formats=("png",))
    path = tmp_path / "r" / "report" / "extrapolation_induction_heads.md"
    header, _ = parse_markdown_table(path)
    assert header[2:] == ["L=256 (test split) ↑", "L=256 (length test) ↑", "L=512 ↑", "L=1024 ↑"]
    assert len(set(header)) == len(header)
    caption = path.read_text().splitlines()[0]
    assert "test split at the training length (500 sequences)" in caption and "(128 sequences each)" in caption


def drawn(monkeypatch, module, inspect) -> dict:
    """{figure stem: inspect(figure)} for every figure ``module`` saves, filled as it saves them."""
    seen, save = {}, module.save_figure
    monkeypatch.setattr(module, "save_figure", lambda fig, stem, formats: seen.update({stem.name: inspect(fig)})
                        or save(fig, stem, formats))
    return seen


def test_configurations_with_the_same_seeds_are_one_params_point() -> None:
    values = (0.924791, 0.910864, 0.935933)  # in another row order the std differs in its last bits
    runs = pd.DataFrame([{"config": config, "seed": seed, "param_count": 6986, "test_accuracy": values[seed]}
                         for config, seeds in (("a", (0, 1, 2)), ("b", (2, 0, 1)), ("c", (1, 2, 0)))
                         for seed in seeds] + [{"config": "d", "seed": 0, "param_count": 7000, "test_accuracy": 0.5}])
    agg = aggregate(runs.assign(status="ok"), ["config"], ["param_count", "test_accuracy"])
    assert agg.loc["a", ("test_accuracy", "std")] != agg.loc["b", ("test_accuracy", "std")]
    points = plots.param_points(agg, runs, "test_accuracy", ["a", "b", "c", "d"])
    assert [(label, first) for label, first, _ in points] == [("a = b = c", "a"), ("d", "d")]
    assert points[1][2] == (7000.0, 0.5, None, None)


def ranked_rows(ranks: dict[tuple[str, str], tuple[int, ...]]) -> list[dict]:
    """sdigits runs, two seeds, per (structure, gate) the given MIMO ranks; rank r adds 0.1 r."""
    rows = []
    for (structure, gate), rs in ranks.items():
        for rank in rs:
            for seed in (0, 1):
                row = fx.run_row("sdigits", structure, gate, seed)
                row.update({"run_id": f"{structure}{gate}{rank}{seed}", "model.ssm.mimo_rank": rank,
                            "test_accuracy": 0.1 * rank + 0.01 * seed + (0.5 if gate == "silu" else 0.0)})
                rows.append(row)
    return rows


def test_heatmap_cells_average_only_settings_run_in_every_cell(tmp_path, monkeypatch) -> None:
    crossed = {(s, g): (1, 2) for s in fx.STRUCTURES for g in fx.GATES}
    fx.write_runs(tmp_path / "crossed", ranked_rows(crossed))
    fx.write_runs(tmp_path / "one_off", ranked_rows({**crossed, ("mimo", "silu"): (2,)}))
    fx.write_runs(tmp_path / "disjoint", ranked_rows({("siso", "glu"): (1, 2), ("mimo", "glu"): (1,),
                                                      ("mimo", "silu"): (3,)}))
    axes = ["model.ssm.structure", "model.ssm.gate"]
    cells = {name: report.heatmap_means(analyse(load_results([tmp_path / name])), axes)["sdigits"]
             for name in ("crossed", "one_off", "disjoint")}
    assert cells["crossed"].means.loc["siso", "glu"] == pytest.approx(0.155)  # ranks 1 and 2
    assert (cells["crossed"].n.to_numpy() == 2).all() and cells["crossed"].note == "averaged over mimo_rank"
    # mimo/silu ran rank 2 only: every cell averages rank 2 alone, not {1, 2} beside {2}
    assert cells["one_off"].means.loc["siso", "glu"] == pytest.approx(0.205)
    assert cells["one_off"].means.loc["mimo", "silu"] == pytest.approx(0.705)
    assert (cells["one_off"].n.to_numpy() == 1).all() and "mimo_rank=2" in cells["one_off"].note
    assert cells["disjoint"].means.empty and cells["disjoint"].note == "no setting of mimo_rank is run in every cell"
    texts = drawn(monkeypatch, plots, lambda fig: ([t.get_text() for ax in fig.axes for t in ax.texts],
                                                   fig.get_supxlabel()))
    plots.plot_heatmap({"crossed": cells["crossed"], "disjoint": cells["disjoint"]}, {}, tmp_path / "heatmap")
    annotations, note = texts["heatmap"]
    assert "0.155\nn=2" in annotations and "no setting of mimo_rank is run in every cell" in annotations
    assert "n: configurations" in note.replace("\n", " ")


def test_the_extrapolation_note_names_the_training_length_only_where_drawn(tmp_path, monkeypatch) -> None:
    notes = drawn(monkeypatch, plots, lambda fig: fig.get_supxlabel().replace("\n", " "))
    for trained in (True, False):
        rows = [fx.run_row("induction_heads", s, g, seed) for s in fx.STRUCTURES for g in fx.GATES for seed in (0, 1)]
        for row in rows:
            row["task.length"] = 64 if trained else None  # a curriculum task has no single training length
        fx.write_runs(tmp_path / str(trained), rows)
        build_report([tmp_path / str(trained)], formats=("png",))
        caption = re.search(r"\*Figure extrapolation: (.*)\*", (tmp_path / str(trained) / "report" /
                                                                 "summary.md").read_text()).group(1)
        assert ("dotted: the training length" in caption) == trained
        assert ("dotted: the training length" in notes["extrapolation"]) == trained


def test_final_bars_have_the_palette_colours(near_bounds, monkeypatch) -> None:
    an = analyse(load_results([near_bounds]))
    bars = drawn(monkeypatch, plots, lambda fig: [
        ([t.get_text() for t in ax.get_xticklabels()], [(p.get_x() + p.get_width() / 2, p.get_facecolor())
                                                          for p in ax.patches]) for ax in fig.axes if ax.get_visible()])
    plots.plot_final(an.runs, an.metric_by_task, an.order, an.palette, near_bounds / "final")
    for labels, colours in bars["final"]:
        assert len(labels) == len(colours)
        for x, colour in colours:
            assert np.allclose(colour[:3], an.palette[labels[round(x)]])
