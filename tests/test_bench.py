"""The model benchmark runs end to end at tiny sizes (a smoke run; it asserts no timing)."""

from __future__ import annotations

import pytest

from models import bench


def test_quick_benchmark_measures_every_section() -> None:
    rows = bench.main(["--quick", "--steps", "5"])
    sections = {r["section"] for r in rows}
    assert {"s5-peer", "mamba-ref", "throughput", "step"} <= sections, sections
    assert all(set(r) == set(bench.RESULT_KEYS) for r in rows)
    peers = [r for r in rows if r["peer"]]
    assert {r["section"] for r in peers} == {"s5-peer", "mamba-ref"}  # both peers ran: s5-pytorch and mamba-ssm's reference
    for r in rows:
        if r["status"] == "ok" and r["section"] in ("s5-peer", "mamba-ref", "throughput"):
            assert r["fwdbwd_ms"] > 0 and r["tokens_per_s_fwdbwd"] > 0
    steps = [r for r in rows if r["section"] == "step"]
    assert sorted(r["name"] for r in steps) == ["models.Mamba", "models.S4D", "models.S5"]
    assert all(r["step_ms"] > 0 for r in steps)


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats=0 is not valid; expected an integer >= 1"),
    (["--warmup", "-2"], "--warmup=-2 is not valid; expected an integer >= 0"),
    (["--budget", "-5"], "--budget=-5.0 is not valid; expected a number of seconds > 0"),
    (["--budget", "nan"], "--budget=nan is not valid"),
    (["--steps", "0"], "--steps=0 is not valid; expected an integer >= 1"),
    (["--max-length", "100"], "--max-length=100 is not valid; expected an integer >= 256"),
])
def test_bad_arguments_are_refused_before_anything_runs(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(args)
    assert exit_.value.code == 2
    out = capsys.readouterr()
    assert message in out.err and out.out == ""  # no section started


def test_quick_keeps_the_counts_given_on_the_command_line() -> None:
    """--quick shrinks the sizes; --steps, --warmup and --repeats given with it still count."""
    quick = bench.settings_from_args(bench.parse_args(["--quick", "--steps", "5", "--warmup", "0", "--repeats", "3"]))
    assert (quick.step_count, quick.warmup, quick.repeats) == (5, 0, 3)
    defaults = bench.settings_from_args(bench.parse_args(["--quick"]))
    assert (defaults.step_count, defaults.warmup, defaults.repeats) == (20, 2, 1)
    full = bench.settings_from_args(bench.parse_args([]))
    assert (full.step_count, full.warmup, full.repeats) == (200, 1, 5)
