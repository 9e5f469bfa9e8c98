"""The tile tuner (models/triton_tune.py): its choice rule, and one tiny run under the interpreter.

Times here measure triton's interpreter, not a GPU: the run checks that every candidate is
timed, checked against the default tile and reported, not which tile is fastest.
"""

import re
from dataclasses import replace

import pytest
import torch

from models import triton_resources as resources
from models import triton_scan as ts
from models import triton_tune as tune


def _row(kind, T, block_k, ms, registers=100, spills=0, error=0.0):
    return tune.Timing("mamba", kind, ts.Tile(T, block_k, 16, 4), ms, registers, spills, error)


def test_best_takes_the_fastest_usable_backward_and_forward():
    rows = [
        _row("fwd", 16, 8, 1.0), _row("bwd", 16, 8, 5.0),
        _row("fwd", 32, 8, 2.0), _row("bwd", 32, 8, 3.0), _row("bwd", 32, 16, 1.0, registers=200),
        _row("fwd", 64, 8, 0.5, error=1e-2), _row("fwd", 64, 16, 1.5, spills=8), _row("bwd", 64, 8, 0.1),
    ]
    pair, backward, forward = tune.best(rows)
    # at one shared T: T 16 1 + 5; T 32 2 + 3 (the 1.0 ms backward takes 200 registers); T 64 no usable forward
    assert (pair.tile.chunk_size, pair.tile.block_k, backward.tile.block_k) == (32, 8, 8) and forward is pair
    assert tune.best([_row("fwd", 16, 8, 1.0)]) is None
    # a selective forward may take a multiple of the backward's T: at backward T 16 the fastest is
    # 1.0 (+ 5.0), at backward T 32 the new 1.5 at T 32 (+ 3.0: 4.5 in all)
    rows.append(_row("fwd", 32, 4, 1.5))
    pair, backward, forward = tune.best(rows, own_forward=True)
    assert (backward.tile.chunk_size, forward.tile.chunk_size, forward.tile.block_k) == (32, 32, 4)
    rows.append(_row("fwd", 128, 2, 0.5))
    pair, backward, forward = tune.best(rows, own_forward=True)
    assert (pair.tile.chunk_size, pair.tile.block_k, backward.tile.chunk_size) == (32, 4, 32)
    assert (forward.tile.chunk_size, forward.tile.block_k) == (128, 2)
    line = tune.entry("mamba", rows)
    assert line.startswith("mamba: _SELECTIVE_TILES (False, True): (32, 4, 4, 8, 4), _FORWARD_TILES (False, True): "
                           "(128, 2, 4),  # forward 1.5000 ms at T 32, 0.5000 ms at T 128, backward 3.0000 ms; "
                           "with a sum per block")
    assert "_PREFETCH" not in line and "_UNROLL" not in line  # no variant timed
    # a tile with each state's loads one state ahead competes with the others at its T
    ahead = [replace(r, tile=replace(r.tile, prefetch=True), ms=r.ms - 0.25) for r in rows[-2:]]
    pair, backward, forward = tune.best(rows + ahead, own_forward=True)
    assert forward.tile.prefetch and not backward.tile.prefetch
    assert "; (False, True, False, False) in _PREFETCH, (False, True, False, True) not in _PREFETCH, _UNROLL " \
        "(False, True, False, False): 1, (False, True, False, True): 1; with a sum per block" in tune.entry(
            "mamba", rows + ahead)
    # and one with its loop over states unrolled
    unrolled = [replace(r, tile=replace(r.tile, unroll=2), ms=r.ms - 0.5) for r in rows if r.kind == "bwd"]
    assert "_UNROLL (False, True, False, False): 1, (False, True, False, True): 2" in tune.entry(
        "mamba", rows + unrolled)
    # a backward with atomic sums competes with the others at its T
    pair, backward, forward = tune.best(rows + [_row("bwd-atomic", 32, 4, 2.5)])
    assert (backward.kind, backward.tile.block_k) == ("bwd-atomic", 4)
    assert "; with atomic sums: (False, True, False) in _ATOMIC_SUMS" in tune.entry(
        "mamba", rows + [_row("bwd-atomic", 32, 4, 2.5)])
    assert "; with a sum per block: (False, True, False) not in _ATOMIC_SUMS" in tune.entry("mamba", rows)
    assert tune.entry("mamba channels-first", [replace(r, point="mamba channels-first") for r in rows]).startswith(
        "mamba channels-first: _CHANNELS_FIRST_TILES (False, True): (32, 4, 4, 8, 4), _CHANNELS_FIRST_FORWARD_TILES "
        "(False, True): (128, 2, 4),")


def test_a_candidate_counts_the_worse_of_its_unspecialised_and_aligned_compiles(monkeypatch):
    measured = []

    def measure(case, tile):
        measured.append((case.name, case.aligned, tile))
        registers, spills, loop = (120, 4, 400) if case.aligned else (126, 0, 300)
        return resources.Usage(case.name, tile.chunk_size, tile.block_k, tile.block_n, tile.num_warps, registers,
                               0, 0, 0, 0, spills, spills, loop, 0)

    monkeypatch.setattr(resources, "measure", measure)
    tile = ts.Tile(16, 64, 1, 8)
    # the aligned compile spills: not timed; 400 instructions x 8 warps over 16 x 64 elements
    assert tune._registers("s5 selective dt,C", "fwd", tile) == (126, 4, 400 * 8 / (16 * 64))
    assert measured == [("s5 selective dt,C fwd", False, tile), ("s5 selective dt,C fwd", True, tile)]
    # the backward compiles with ATOMIC_SUMS as its kind says, whatever the tables' default
    assert [dict(tune._case("mamba", kind).flags)["ATOMIC_SUMS"] for kind in ("bwd", "bwd-atomic")] == [False, True]


def test_a_tiny_run_times_checks_and_reports_every_candidate(capsys):
    assert tune.main(["--batch", "1", "--channels", "4", "--length", "12", "--chunks", "8", "--block-k", "2,4",
                      "--warps", "4", "--repeats", "1", "--points", "mamba"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[1:] if line.startswith("mamba ")]
    assert [(r[1], r[3], r[5], r[6]) for r in rows] == [(kind, k, "no", "1") for k in ("2", "4")
                                                        for kind in ("fwd", "bwd", "bwd-atomic")]
    assert all(float(r[-1]) <= tune.ERROR_LIMIT for r in rows)  # atomic sums: against the sums per block
    assert out[-1].startswith("mamba: _SELECTIVE_TILES (False, True): (8, ")
    # then the scan end to end at the tables' tiles and the entry's (no mamba-ssm kernel here, nor at this point)
    whole = [line for line in out if line.startswith("end to end, mamba: ")]
    assert len(whole) == 1 and "; picked " in whole[0] and "mamba-ssm" not in whole[0]


def test_picked_is_the_launch_of_the_entry():
    rows = [_row("fwd", 16, 8, 1.0), _row("bwd", 16, 8, 5.0), _row("fwd", 32, 4, 0.5), _row("bwd-atomic", 16, 4, 2.0)]
    rows.append(replace(rows[2], tile=replace(rows[2].tile, unroll=2), ms=0.25))
    launch = tune.picked("mamba", rows)
    # the forward at T 32 (a multiple of the backward's 16), unrolled; the backward with atomic sums
    assert (launch.forward, launch.backward, launch.atomic_sums) == (rows[-1].tile, rows[3].tile, True)
    assert (launch.method, launch.softplus, launch.channels_first) == ("zoh_euler", True, False)
    assert tune.picked("mamba channels-first", [replace(r, point="mamba channels-first") for r in rows]).channels_first
    assert tune.picked("mamba", rows[:1]) is None


def _mamba_ssm_stand_in(u, delta, A, B, C, D, z=None, delta_bias=None, delta_softplus=False):
    """selective_scan_fn's arguments and layout, (Bt, K, L) and (Bt, n, L), on the step-by-step reference."""
    t = lambda x: None if x is None else x.transpose(1, 2)
    return t(ts.selective_scan_reference(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias, delta_softplus,
                                         "zoh_euler"))


def test_a_tiny_run_times_the_scan_end_to_end_beside_mamba_ssm(monkeypatch, capsys):
    monkeypatch.setattr(tune, "selective_scan_kernel", lambda: _mamba_ssm_stand_in)
    assert tune.main(["--batch", "1", "--channels", "4", "--length", "12", "--chunks", "8", "--block-k", "2",
                      "--warps", "1", "--repeats", "1", "--points", "mamba channels-first"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("end to end, "))
    found = re.fullmatch(r"end to end, mamba channels-first: forward\+backward / forward ms: default ([\d.]+) / "
                         r"([\d.]+); picked ([\d.]+) / ([\d.]+) \(error (\S+)\); mamba-ssm selective_scan_fn "
                         r"([\d.]+) / ([\d.]+) \(error (\S+)\)", line)
    assert found, line
    times, errors = [float(found[i]) for i in (1, 2, 3, 4, 6, 7)], [float(found[i]) for i in (5, 8)]
    assert all(ms > 0 for ms in times) and all(e <= tune.ERROR_LIMIT for e in errors)


def test_the_end_to_end_check_finds_a_scan_that_computes_otherwise():
    no_gate = lambda *args, z=None, **kwargs: _mamba_ssm_stand_in(*args, **kwargs)  # drops silu(z)
    rows = tune.end_to_end("mamba channels-first", 1, 4, 12, ts._launch_settings(
        "selective", "zoh_euler", True, 8, 2, 4, 16, False, True, channels_first=True), 1, torch.device("cpu"), no_gate)
    assert [r.name for r in rows] == ["default", "picked", "mamba-ssm selective_scan_fn"]
    assert rows[0].error == 0 and rows[1].error <= tune.ERROR_LIMIT < rows[2].error


@pytest.fixture
def no_end_to_end(monkeypatch):
    """The scan's end-to-end timing after each entry left out (the tests above run it)."""
    monkeypatch.setattr(tune, "end_to_end", lambda *args: [])


def test_a_tiny_run_times_the_variants_of_each_tile(capsys, no_end_to_end):
    assert tune.main(["--batch", "1", "--channels", "4", "--length", "12", "--chunks", "8", "--block-k", "4",
                      "--warps", "4", "--repeats", "1", "--points", "mamba", "--prefetch", "0,1", "--unroll", "1,2"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[1:] if line.startswith("mamba ")]
    assert [(r[1], r[5], r[6]) for r in rows] == [(kind, ahead, unroll) for ahead in ("no", "yes") for unroll in "12"
                                                  for kind in ("fwd", "bwd", "bwd-atomic")]
    # loads ahead and unrolled loops (16 states, 8 passes of 2): against the default tile's
    assert all(float(r[-1]) <= tune.ERROR_LIMIT for r in rows)


def test_a_run_with_compiled_resources_times_those_within_the_budget(monkeypatch, capsys, no_end_to_end):
    # as on a GPU machine: every candidate compiled for sm_90 first (here stood in for), then timed
    def usage(kernels):
        return {k: (200, 0, 9.0) if k[2].block_k == 4 else (100, 0, 2.5) for k in kernels}

    monkeypatch.setattr(tune, "resource_usage", usage)
    assert tune.main(["--batch", "1", "--channels", "4", "--length", "12", "--chunks", "8", "--block-k", "2,4",
                      "--warps", "4", "--repeats", "1", "--points", "mamba", "--prefetch", "0"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("mamba ")]
    assert [(r[1], r[3], r[8], r[10]) for r in rows] == [
        (kind, k, registers, per_element) for k, registers, per_element in (("2", "100", "2.50"), ("4", "200", "9.00"))
        for kind in ("fwd", "bwd", "bwd-atomic")]
    assert [r[7] != "-" for r in rows] == [True] * 3 + [False] * 3  # over the register budget: not timed


def test_a_tiny_diagonal_run_prints_a_diagonal_tile_entry(capsys):
    # K 4: the default BLOCK_K is 4, so the BLOCK_K 2 candidate is checked against another tiling
    assert tune.main(["--batch", "2", "--channels", "4", "--length", "12", "--chunks", "4,8", "--diagonal-block-k",
                      "2", "--warps", "4", "--repeats", "1", "--points", "s5;real diagonal selective"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[1:] if line.startswith(("s5 ", "real ")) and ":" not in line]
    assert len(rows) == 8 and all(float(r[-1]) <= tune.ERROR_LIMIT for r in rows)
    assert out[-2].startswith("s5: _DIAGONAL_TILES (True, False): (")
    assert out[-1].startswith("real diagonal selective: _DIAGONAL_TILES (False, True): (")


def test_precompile_tasks_cover_every_candidate_once_and_launch_it():
    kernels = tune.candidates(["mamba", "s5"], [16, 32], {"selective": [1, 8], "diagonal": [32]}, [1, 4])
    # every mamba tile (at most 8 elements per thread), forward, backward and with atomic sums; s5 on
    # one warp holds 16 or 32: left out
    assert len(kernels) == 3 * 2 * 2 * 2 + 2 * (2 * 1 * 2 - 2)
    assert not [tile for point, _, tile in kernels if point == "s5" and tile.num_warps == 1]
    assert max(tune.elements_per_thread(tile) for _, _, tile in kernels) == tune.MAX_ELEMENTS_PER_THREAD
    tasks = tune.compile_tasks(kernels)
    assert [(point, jobs[0][1].chunk_size, jobs[0][1].block_k) for point, jobs in tasks] == [
        ("mamba", 16, 1), ("mamba", 16, 8), ("mamba", 32, 1), ("mamba", 32, 8), ("s5", 16, 32), ("s5", 32, 32)]
    assert [(p, k, t) for p, jobs in tasks for k, t in jobs] == kernels
    # one task as a pool process runs it, here under the interpreter
    assert tune.launch_once("s5", 1, 4, 12, [("fwd", tune.tile_of("s5", 4, 2, 4)),
                                             ("bwd", tune.tile_of("s5", 8, 4, 4))], device="cpu") == 2
    assert tune.kinds_of("s5") == ("fwd", "bwd") and tune.kinds_of("s4d") == ("fwd", "bwd")
    # both ways of loading a state's inputs for a selective scan; a diagonal scan has no loop over states
    both = tune.candidates(["mamba", "s5"], [16], {"selective": [1], "diagonal": [32]}, [4], prefetch=(False, True),
                           unroll=(1, 4))
    assert [(p, k, t.prefetch, t.unroll) for p, k, t in both] == [
        ("mamba", k, ahead, unroll) for ahead in (False, True) for unroll in (1, 4)
        for k in ("fwd", "bwd", "bwd-atomic")] + [("s5", "fwd", False, 1), ("s5", "bwd", False, 1)]


def test_kernels_over_the_register_budget_are_listed_not_timed():
    tiles = [tune.tile_of("s5", 4, k, 4) for k in (2, 4)]
    usage = {("s5", "fwd", tiles[0]): (129, 0, 3.0), ("s5", "bwd", tiles[0]): (40, 8, 9.5),
             ("s5", "fwd", tiles[1]): (128, 0, 2.25)}
    rows = tune.tune_point("s5", 1, 4, 12, [(kind, t) for t in tiles for kind in ("fwd", "bwd")], usage, 1,
                           torch.device("cpu"))
    assert [(r.kind, r.tile.block_k, r.ms is not None) for r in rows] == [
        ("fwd", 2, False), ("bwd", 2, False), ("fwd", 4, True), ("bwd", 4, True)]
    assert [r.registers for r in rows] == [129, 40, 128, None]
    assert [r.per_element for r in rows] == [3.0, 9.5, 2.25, None]
    assert tune.row_line(rows[0]).split()[5:] == ["no", "1", "-", "129", "0", "3.00", "-"]


def test_unknown_points_are_refused(capsys):
    assert tune.main(["--points", "mamba;s6"]) == 2
    assert f"unknown points ['s6']; expected some of {list(tune.POINTS)}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--chunks", "12"], "chunk_size=12 is not valid"),
    (["--block-k", "3"], "block_k=3 is not valid"),
    (["--diagonal-block-k", "0"], "block_k=0 is not valid"),
    (["--warps", "3"], "warps=3 is not valid; expected one of [1, 2, 4, 8, 16, 32]"),
    (["--repeats", "0"], "repeats=0 is not valid; expected >= 1"),
    (["--prefetch", "2"], "prefetch=[2] is not valid; expected 0, 1 or 0,1"),
    (["--unroll", "1,3"], "unroll=[1, 3] is not valid; expected some of [1, 2, 4, 8]"),
])
def test_bad_tiles_are_refused_before_any_timing(argv, message, capsys):
    assert tune.main(argv + ["--points", "mamba"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("point", tune.POINTS)
def test_every_point_times_a_bounded_scan_on_long_inputs(point):
    # a Δ the kernel takes as given (no softplus) must be positive, or |Ā| > 1 and the scan
    # overflows long before the tuner's 2048 steps (every error then reads nan)
    args = tune.inputs(point, 1, 4, 1024, torch.device("cpu"))
    args = {k: (v.double() if torch.is_tensor(v) and not v.is_complex() else v.to(torch.complex128)
                if torch.is_tensor(v) else v) for k, v in args.items()}
    reference = ts.selective_scan_reference if tune.scan_of(point) == "selective" else ts.diagonal_scan_reference
    out = reference(**args)
    assert torch.isfinite(torch.view_as_real(out) if out.is_complex() else out).all()
    assert out.abs().max() < 1e3


class _DriftingClock:
    """Stands in for models.timing.Clock: each timed call reads what the call returns plus 1 ms
    more than the call before (a GPU slowing down over a run)."""

    def __init__(self):
        self.timed = 0

    def sync(self):
        pass

    def seconds(self, fn):
        self.timed += 1
        return fn() + 1e-3 * self.timed


def test_candidates_are_timed_in_rounds_so_drift_reaches_each_alike():
    order = []
    calls = [lambda: order.append("a") or 0.0, lambda: order.append("b") or 0.010]
    ms = tune.interleaved_ms(_DriftingClock(), calls, 5)
    assert order == ["a", "b"] * 6  # a warm-up call each, then 5 rounds
    # a's calls read drifts 1, 3, 5, 7, 9 ms, b's 2 to 10 ms: medians 5 and 6 + 10 (one after the
    # other they would read 3 and 8 + 10: the drift of whole rounds between them)
    assert ms == pytest.approx([5.0, 16.0])


def test_compare_times_the_default_launch_against_the_other_flip_and_the_masks(monkeypatch, capsys):
    seen = []  # (FLIP_ADJOINT, EVEN) of every backward launched
    kernel = ts._selective_scan_bwd_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((kwargs["FLIP_ADJOINT"], kwargs["EVEN"]))
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(ts, "_selective_scan_bwd_kernel", Spy())
    # one backward chunk of 64 steps, channel blocks of 2: EVEN unless the masks are asked for
    assert tune.main(["--compare", "--points", "mamba", "--batch", "1", "--channels", "2", "--length", "64",
                      "--repeats", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.startswith("mamba ")]
    flip = ts.flip_adjoint(False, True)
    word = {True: "yes", False: "no"}
    assert [(r[1], r[2]) for r in rows] == [(word[f], word[m]) for f in (flip, not flip) for m in (False, True)]
    assert out[1].endswith("(default)") and all(float(r[5]) <= tune.ERROR_LIMIT for r in rows)
    assert {(f, even) for f in (flip, not flip) for even in (True, False)} <= set(seen)


def test_compare_refuses_a_diagonal_point(capsys):
    assert tune.main(["--compare", "--points", "mamba;s5"]) == 2
    assert "--compare takes selective points" in capsys.readouterr().err
