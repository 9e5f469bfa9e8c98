"""The model benchmark runs end to end at tiny sizes (a smoke run; it asserts no timing)."""

from __future__ import annotations

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
