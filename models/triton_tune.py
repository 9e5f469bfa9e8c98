"""Time the fused scan kernels over candidate tiles, and print the fastest that fit.

    python -m models.triton_tune                                   # batch 8, K 1024, L 2048, on CUDA
    python -m models.triton_tune --batch 8 --channels 1024 --length 2048 --repeats 20

For each point of :data:`POINTS`, float32, and each T of ``--chunks``: the forward kernel at
every (BLOCK_K, warps) of the point's candidates x ``--warps``, then the backward kernel at every
one, from the chunk-start states of that T. The points are the selective scans of
:data:`models.triton_resources.CASES` (Mamba: real A, n 16, Δ, B, C per step; S4D: complex A,
n 32, fixed Δ and C; complex with Δ, B and C per step), whose BLOCK_K candidates are
``--block-k``, and the diagonal scans of the MIMO layer (S5: complex A, fixed Δ; complex with Δ
and C per step; real with Δ per step: one state per channel), whose BLOCK_K candidates are
``--diagonal-block-k``. Each candidate is the median of ``--repeats`` timed calls
(models.timing.Clock: CUDA events on a GPU) after a warm-up call, and is checked against the
default tile on the same inputs (relative norm error of out, or of every gradient together).
One row per candidate: T, BLOCK_K, warps, milliseconds, registers per thread and spill bytes
(compiled for sm_90 by :func:`models.triton_resources.measure`, as the register test does, in
parallel processes after the timings; unknown under TRITON_INTERPRET), the error. Per point
the fastest pair (forward + backward at one shared T) among the candidates that compute the
same (error at most 1e-4) and fit the register budget (at most 128 registers, no spills: the
budget tests/test_kernel_resources.py holds the defaults to) is printed as the entry of
``_SELECTIVE_TILES`` or ``_DIAGONAL_TILES`` in :mod:`models.triton_scan`. ``make gpu-tune``
runs it.

On a GPU, every candidate is first compiled by triton's JIT in parallel processes, one launch
each on the same shapes, which fills triton's on-disk kernel cache; the timing process then
loads the compiled kernels from it instead of compiling a few hundred kernels one after another.
The seconds each phase took go to stderr.

The default selective candidates span the two ways a tile can spread over threads: BLOCK_K 1
on one warp puts a chunk's steps across the lanes of one warp (every scan and reduction by
shuffles, no barrier in the compiled kernel; u, Δ, z read with a stride of K), while BLOCK_K 8
or 16 on 4 or 8 warps reads rows of channels in one run but synchronises its warps in every
scan (10 bar.sync instructions in the PTX of the Mamba forward at T 32, BLOCK_K 16, 4 warps, and
36 in the backward at T 32, BLOCK_K 8, 8 warps; none in either at BLOCK_K 1 on one warp). A
BLOCK_K 1 backward writes a partial gradient of B and C per channel, (K, Bt, n, L).

On a CPU, triton's interpreter (TRITON_INTERPRET=1) runs the kernels, so the command runs
there too, at small shapes; its times measure the interpreter, not a GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch

from . import triton_resources as resources
from . import triton_scan as ts
from .bench import relative_difference
from .timing import Clock

POINTS = {  # point -> the case of its forward kernel in triton_resources.CASES
    "mamba": "mamba fwd",
    "s4d": "s4d fwd",
    "s4d selective dt,B,C": "s4d selective dt,B,C fwd",
    "s5": "s5 fwd",
    "s5 selective dt,C": "s5 selective dt,C fwd",
    "real diagonal selective": "real diagonal selective fwd",
}
ERROR_LIMIT = 1e-4  # relative norm error against the default tile (float32, reordered sums)
WARPS = (1, 2, 4, 8, 16, 32)
TABLES = {"selective": "_SELECTIVE_TILES", "diagonal": "_DIAGONAL_TILES"}  # in models.triton_scan


@dataclass
class Timing:
    point: str
    kind: str  # fwd or bwd
    tile: ts.Tile
    ms: float
    registers: int | None
    spills: int | None
    error: float

    @property
    def usable(self) -> bool:
        fits = self.registers is None or (self.registers <= resources.REGISTER_BUDGET and not self.spills)
        return fits and self.error <= ERROR_LIMIT


def _case(point: str) -> resources.Case:
    return next(c for c in resources.CASES if c.name == POINTS[point])


def scan_of(point: str) -> str:
    """``selective`` or ``diagonal``: the scan a point's kernels compute."""
    return _case(point).kind.split("_")[0]


def inputs(point: str, batch: int, channels: int, length: int, device: torch.device) -> dict:
    """Random float32 keyword arguments of :func:`models.triton_scan.selective_scan` or
    :func:`models.triton_scan.diagonal_scan` for a point of POINTS."""
    case = _case(point)
    flags = dict(case.flags)
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device)
    n = case.n
    A = -torch.rand(channels, n, generator=gen) - 0.1
    if case.complex:
        A = torch.complex(A, torch.pi * torch.randn(channels, n, generator=gen))
    steps = (batch, length, channels)
    common = dict(
        u=rand(*steps), delta=0.5 * rand(*(steps if flags["DELTA_PER_STEP"] else (channels,))) - 1.0,
        delta_bias=rand(channels) if flags["HAS_BIAS"] else None, delta_softplus=flags["SOFTPLUS"],
        discretization=flags["METHOD"],
    )
    if scan_of(point) == "diagonal":
        return dict(common, A=A[:, 0].to(device), gain=rand(*steps) if flags["HAS_GAIN"] else None)
    return dict(
        common, A=A.to(device),
        B=rand(batch, length, n).to(A.dtype) if flags["HAS_B"] else None,
        C=(rand(batch, length, n) if flags["C_SHARED"] else rand(channels, n)).to(A.dtype),
        D=rand(channels) if flags["HAS_D"] else None, z=rand(*steps) if flags["HAS_Z"] else None,
    )


class Kernels:
    """A point's forward and backward kernels on fixed random float32 inputs (:func:`inputs`),
    launched as the scan's autograd function launches them, at any tile."""

    def __init__(self, point: str, batch: int, channels: int, length: int, device: torch.device):
        args = inputs(point, batch, channels, length, device)
        self.scan = scan_of(point)
        self.softplus, self.method = args.pop("delta_softplus"), args.pop("discretization")
        A = args["A"]
        self.complex, self.per_step = A.is_complex(), args["delta"].dim() == 3
        if self.scan == "selective":
            scale = torch.ones(1, dtype=torch.float32, device=device)
            self.operands = (*ts._selective_operands(**args), scale)
            self._forward, self._backward = ts._selective_forward, ts._selective_backward
            self.n = A.shape[1]
        else:
            self.operands = ts._diagonal_operands(**args)
            self._forward, self._backward = ts._diagonal_forward, ts._diagonal_backward
            self.n = 1
        self.channels = channels
        out_dtype = torch.complex64 if self.scan == "diagonal" and self.complex else torch.float32
        self.dout = torch.randn((batch, length, channels), dtype=out_dtype,
                                generator=torch.Generator().manual_seed(1)).to(device)

    def default(self, T: int) -> ts._Launch:
        """The launch of the default tiles at T."""
        return ts._launch_settings(self.scan, self.method, self.softplus, T, None, self.channels, self.n,
                                   self.complex, self.per_step)

    def launch(self, T: int, block_k: int, num_warps: int) -> ts._Launch:
        """Forward and backward both at (T, block_k, num_warps)."""
        tile = ts.Tile(T, block_k, ts._next_power_of_2(self.n), num_warps)
        return ts._Launch(self.method, self.softplus, T, tile, tile)

    def forward(self, launch: ts._Launch):
        """(out, chunk-start states)."""
        return self._forward(*self.operands, launch, True)

    def backward(self, launch: ts._Launch, states) -> list[torch.Tensor]:
        """The gradients of every input there is."""
        return [g for g in self._backward(*self.operands, states, self.dout, launch) if g is not None]


def _relative(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over every tensor of the lists together."""
    return relative_difference(torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want]))


def candidates(point: str, chunks, block_ks: dict[str, list[int]], warps) -> list[tuple[int, int, int]]:
    """(T, BLOCK_K, warps) of every candidate of a point, in the order they are timed."""
    return [(T, k, w) for T in chunks for k in block_ks[scan_of(point)] for w in warps]


def compile_tasks(points, chunks, block_ks: dict[str, list[int]], warps) -> list[tuple[str, list]]:
    """The candidates of every point split into pool tasks: (point, its tiles of one (T, BLOCK_K))."""
    tasks = []
    for point in points:
        tiles = candidates(point, chunks, block_ks, warps)
        tasks += [(point, tiles[i:i + len(warps)]) for i in range(0, len(tiles), len(warps))]
    return tasks


def launch_once(point: str, batch: int, channels: int, length: int, tiles: list[tuple[int, int, int]],
                device: str = "cuda") -> int:
    """Launch the forward and backward at each tile once (in a pool's process on CUDA, triton's
    JIT compiles them into its on-disk cache). Returns the number of tiles launched."""
    kernels = Kernels(point, batch, channels, length, torch.device(device))
    for tile in tiles:
        launch = kernels.launch(*tile)
        _, states = kernels.forward(launch)
        kernels.backward(launch, states)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(tiles)


def precompile(points, batch: int, channels: int, length: int, chunks, block_ks, warps) -> None:
    """On a GPU, compile every candidate in parallel processes before the timings (module
    docstring); nothing on a CPU, where the interpreter compiles nothing."""
    if ts.interpreted() or not torch.cuda.is_available():
        return
    tasks = compile_tasks(points, chunks, block_ks, warps)
    workers = max(1, min(len(tasks), os.cpu_count() or 1, 16))
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        launched = sum(pool.map(launch_once, *zip(*[(p, batch, channels, length, tiles) for p, tiles in tasks])))
    print(f"compiled the kernels of {launched} candidate tiles in {workers} processes in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)


def add_registers(rows: list[Timing]) -> None:
    """Fill in every row's registers and spills (:func:`_registers`), compiling in parallel
    (spawned processes: no CUDA state is shared with the compiles); left None where the
    kernels cannot be compiled here."""
    if resources.available() or ts.interpreted():
        return
    with ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn")) as pool:
        usages = pool.map(_registers, [r.point for r in rows], [r.kind for r in rows], [r.tile for r in rows])
        for row, (registers, spills) in zip(rows, usages):
            row.registers, row.spills = registers, spills


def _registers(point: str, kind: str, tile: ts.Tile) -> tuple[int, int]:
    """(registers per thread, spill bytes) of the kernel compiled for sm_90 at ``tile``
    (:func:`models.triton_resources.measure`, the proxy the register test uses;
    :func:`add_registers` calls it only where the kernels compile)."""
    case = next(c for c in resources.CASES if c.name == f"{point} {kind}")
    usage = resources.measure(case, tile)
    return usage.registers, usage.spills


def _median_ms(clock: Clock, call, repeats: int) -> float:
    call()
    clock.sync()
    return 1e3 * statistics.median(clock.seconds(call) for _ in range(repeats))


def tune_point(point: str, batch: int, channels: int, length: int, tiles: list[tuple[int, int, int]], repeats: int,
               device: torch.device) -> list[Timing]:
    """Every candidate (T, BLOCK_K, warps) of one point, forward and backward, timed and checked."""
    kernels = Kernels(point, batch, channels, length, device)
    clock = Clock(device)
    rows, reference = [], {}
    for T, block_k, num_warps in tiles:
        if T not in reference:
            want_out, states = kernels.forward(kernels.default(T))
            reference[T] = want_out, states, kernels.backward(kernels.default(T), states)
        want_out, states, want_grads = reference[T]
        launch = kernels.launch(T, block_k, num_warps)
        forward = partial(kernels.forward, launch)
        backward = partial(kernels.backward, launch, states)
        errors = {"fwd": _relative([forward()[0]], [want_out]), "bwd": _relative(backward(), want_grads)}
        for kind, call in (("fwd", forward), ("bwd", backward)):
            ms = _median_ms(clock, call, repeats)
            rows.append(Timing(point, kind, launch.forward, ms, None, None, errors[kind]))
    return rows


def best(rows: list[Timing]) -> tuple[Timing, Timing] | None:
    """The fastest usable (forward, backward) pair at one shared T, by forward + backward time."""
    pairs = []
    for T in sorted({r.tile.chunk_size for r in rows}):
        fwd = [r for r in rows if r.kind == "fwd" and r.tile.chunk_size == T and r.usable]
        bwd = [r for r in rows if r.kind == "bwd" and r.tile.chunk_size == T and r.usable]
        if fwd and bwd:
            pairs.append((min(fwd, key=lambda r: r.ms), min(bwd, key=lambda r: r.ms)))
    return min(pairs, key=lambda p: p[0].ms + p[1].ms, default=None)


def report(rows: list[Timing]) -> str:
    header = f"{'point':24} {'kernel':6} {'T':>4} {'BLOCK_K':>7} {'warps':>5} {'ms':>9} {'REG':>4} {'spill':>5} "
    lines = [header + f"{'error':>8}"]
    for r in rows:
        lines.append(f"{r.point:24} {r.kind:6} {r.tile.chunk_size:>4} {r.tile.block_k:>7} {r.tile.num_warps:>5} "
                     f"{r.ms:>9.4f} {r.registers if r.registers is not None else '-':>4} "
                     f"{r.spills if r.spills is not None else '-':>5} {r.error:>8.1e}")
    for point in dict.fromkeys(r.point for r in rows):
        case = _case(point)
        pair = best([r for r in rows if r.point == point])
        key = (case.complex, dict(case.flags)["DELTA_PER_STEP"])
        if pair is None:
            lines.append(f"{point}: no candidate computes the same within {ERROR_LIMIT} and fits the budget")
            continue
        f, b = pair
        lines.append(f"{point}: {TABLES[scan_of(point)]} {key}: ({f.tile.chunk_size}, {f.tile.block_k}, "
                     f"{f.tile.num_warps}, {b.tile.block_k}, {b.tile.num_warps}),  # forward {f.ms:.4f} ms, "
                     f"backward {b.ms:.4f} ms")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _check_candidates(device: torch.device, chunks, block_ks: dict[str, list[int]], warps, repeats: int) -> None:
    """ValueError on any candidate tile, warp count or repeat count, before any timing."""
    for T in chunks:
        ts._check_launch(torch.zeros(1, device=device), T, None)
    for block_k in (k for ks in block_ks.values() for k in ks):
        ts._check_launch(torch.zeros(1, device=device), None, block_k)
    for num_warps in warps:
        if num_warps not in WARPS:
            raise ValueError(f"warps={num_warps} is not valid; expected one of {list(WARPS)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} is not valid; expected >= 1")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.triton_tune", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--chunks", type=_ints, default=[16, 32, 64], help="T values, comma-separated")
    parser.add_argument("--block-k", type=_ints, default=[1, 8, 16], help="BLOCK_K of the selective scans")
    parser.add_argument("--diagonal-block-k", type=_ints, default=[16, 32, 64, 128],
                        help="BLOCK_K of the diagonal scans")
    parser.add_argument("--warps", type=_ints, default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--points", default=";".join(POINTS), help=f"a subset of {list(POINTS)}, ';'-separated")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not ts.runs_on(device):
        print(f"cannot run the kernels on {device}: needs CUDA, or TRITON_INTERPRET=1 on a CPU", file=sys.stderr)
        return 2
    points = [p for p in args.points.split(";") if p]
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        print(f"unknown points {unknown}; expected some of {list(POINTS)}", file=sys.stderr)
        return 2
    block_ks = {"selective": args.block_k, "diagonal": args.diagonal_block_k}
    try:
        _check_candidates(device, args.chunks, block_ks, args.warps, args.repeats)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    shape = (args.batch, args.channels, args.length)
    precompile(points, *shape, args.chunks, block_ks, args.warps)
    start = time.perf_counter()
    rows = []
    for point in points:
        rows += tune_point(point, *shape, candidates(point, args.chunks, block_ks, args.warps), args.repeats, device)
    print(f"timed {len(rows)} kernels in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    add_registers(rows)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
