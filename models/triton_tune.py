"""Time the fused selective-scan kernels over candidate tiles, and print the fastest that fit.

    python -m models.triton_tune                                   # batch 8, K 1024, L 2048, on CUDA
    python -m models.triton_tune --batch 8 --channels 1024 --length 2048 --repeats 20

For each selective point of :data:`models.triton_resources.CASES` (Mamba: real A, n 16, Δ, B, C
per step; S4D: complex A, n 32, fixed Δ and C; complex with Δ, B and C per step), float32, and
each T of ``--chunks``: the forward kernel at every (BLOCK_K, warps) of ``--block-k`` x
``--warps``, then the backward kernel at every one, from the chunk-start states of that T.
Each candidate is the median of ``--repeats`` timed calls (models.timing.Clock: CUDA events on
a GPU) after a warm-up call, and is checked against the default tile on the same inputs
(relative norm error of out, or of every gradient together). One row per candidate: T,
BLOCK_K, warps, milliseconds, registers per thread and spill bytes (compiled for sm_90 by
:func:`models.triton_resources.measure`, as the register test does, in parallel processes after
the timings; unknown under TRITON_INTERPRET), the error. Per point the fastest pair
(forward + backward at one shared T) among the candidates that compute the same (error at most
1e-4) and fit the register budget (at most 128 registers, no spills: the budget
tests/test_kernel_resources.py holds the defaults to) is printed as the
``_SELECTIVE_TILES`` entry of :mod:`models.triton_scan`. ``make gpu-tune`` runs it.

The default candidates span the two ways a tile can spread over threads: BLOCK_K 1 on one
warp puts a chunk's steps across the lanes of one warp (every scan and reduction by shuffles,
no barrier in the compiled kernel; u, Δ, z read with a stride of K), while BLOCK_K 8 or 16 on
4 or 8 warps reads rows of channels in one run but synchronises its warps in every scan
(10 bar.sync instructions in the PTX of the Mamba forward at T 32, BLOCK_K 16, 4 warps, and 36
in the backward at T 32, BLOCK_K 8, 8 warps; none in either at BLOCK_K 1 on one warp). A BLOCK_K 1 backward writes a partial gradient of B and C per channel,
(K, Bt, n, L).

On a CPU, triton's interpreter (TRITON_INTERPRET=1) runs the kernels, so the command runs
there too, at small shapes; its times measure the interpreter, not a GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch

from . import triton_resources as resources
from . import triton_scan as ts
from .bench import relative_difference
from .timing import Clock

POINTS = {  # name in triton_resources.CASES -> the selective point it stands for
    "mamba": "mamba fwd",
    "s4d": "s4d fwd",
    "s4d selective dt,B,C": "s4d selective dt,B,C fwd",
}
ERROR_LIMIT = 1e-4  # relative norm error against the default tile (float32, reordered sums)
WARPS = (1, 2, 4, 8, 16, 32)


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


def inputs(point: str, batch: int, channels: int, length: int, device: torch.device) -> dict:
    """Random float32 inputs of :func:`models.triton_scan.selective_scan` for a point of POINTS."""
    case = next(c for c in resources.CASES if c.name == POINTS[point])
    flags = dict(case.flags)
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device)
    n, complex_ = case.n, case.complex
    A = -torch.rand(channels, n, generator=gen) - 0.1
    if complex_:
        A = torch.complex(A, torch.pi * torch.randn(channels, n, generator=gen))
    state_dtype = A.dtype
    per_step = (batch, length, channels) if flags["DELTA_PER_STEP"] else (channels,)
    return dict(
        u=rand(batch, length, channels), delta=0.5 * rand(*per_step) - 1.0, A=A.to(device),
        B=rand(batch, length, n).to(state_dtype) if flags["HAS_B"] else None,
        C=(rand(batch, length, n) if flags["C_SHARED"] else rand(channels, n)).to(state_dtype),
        D=rand(channels) if flags["HAS_D"] else None, z=rand(batch, length, channels) if flags["HAS_Z"] else None,
        delta_bias=rand(channels) if flags["HAS_BIAS"] else None, delta_softplus=flags["SOFTPLUS"],
        discretization=flags["METHOD"],
    )


def _relative(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over every tensor of the lists together."""
    return relative_difference(torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want]))


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


def tune_point(point: str, batch: int, channels: int, length: int, chunks, block_ks, warps, repeats: int,
               device: torch.device) -> list[Timing]:
    """Every candidate tile of one point, forward and backward, timed and checked."""
    args = inputs(point, batch, channels, length, device)
    softplus, method = args.pop("delta_softplus"), args.pop("discretization")
    u, delta, A, B, C, D, z, bias = ts._selective_operands(*(args[k] for k in ("u", "delta", "A", "B", "C", "D", "z",
                                                                                "delta_bias")))
    n, complex_, per_step = A.shape[1], A.is_complex(), delta.dim() == 3
    scale = torch.ones(1, dtype=torch.float32, device=device)
    dout = torch.randn(u.shape, generator=torch.Generator().manual_seed(1)).to(device)
    clock = Clock(device)
    rows = []
    for T in chunks:
        default = ts._launch_settings("selective", method, softplus, T, None, channels, n, complex_, per_step)
        want_out, states = ts._selective_forward(u, delta, A, B, C, D, z, bias, scale, default, save_states=True)
        want_grads = [g for g in ts._selective_backward(u, delta, A, B, C, D, z, bias, scale, states, dout, default)
                      if g is not None]
        for block_k in block_ks:
            for num_warps in warps:
                tile = ts.Tile(T, block_k, ts._next_power_of_2(n), num_warps)
                launch = ts._Launch(method, softplus, T, tile, tile)
                forward = partial(ts._selective_forward, u, delta, A, B, C, D, z, bias, scale, launch, True)
                backward = partial(ts._selective_backward, u, delta, A, B, C, D, z, bias, scale, states, dout, launch)
                out, _ = forward()
                grads = [g for g in backward() if g is not None]
                for kind, call, error in (("fwd", forward, _relative([out], [want_out])),
                                          ("bwd", backward, _relative(grads, want_grads))):
                    ms = _median_ms(clock, call, repeats)
                    rows.append(Timing(point, kind, tile, ms, None, None, error))
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
    header = f"{'point':22} {'kernel':6} {'T':>4} {'BLOCK_K':>7} {'warps':>5} {'ms':>9} {'REG':>4} {'spill':>5} "
    lines = [header + f"{'error':>8}"]
    for r in rows:
        lines.append(f"{r.point:22} {r.kind:6} {r.tile.chunk_size:>4} {r.tile.block_k:>7} {r.tile.num_warps:>5} "
                     f"{r.ms:>9.4f} {r.registers if r.registers is not None else '-':>4} "
                     f"{r.spills if r.spills is not None else '-':>5} {r.error:>8.1e}")
    for point in dict.fromkeys(r.point for r in rows):
        case = next(c for c in resources.CASES if c.name == POINTS[point])
        pair = best([r for r in rows if r.point == point])
        key = (case.complex, dict(case.flags)["DELTA_PER_STEP"])
        if pair is None:
            lines.append(f"{point}: no candidate computes the same within {ERROR_LIMIT} and fits the budget")
            continue
        f, b = pair
        lines.append(f"{point}: {key}: ({f.tile.chunk_size}, {f.tile.block_k}, {f.tile.num_warps}, {b.tile.block_k}, "
                     f"{b.tile.num_warps}),  # forward {f.ms:.4f} ms, backward {b.ms:.4f} ms")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.triton_tune", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--chunks", type=_ints, default=[16, 32, 64], help="T values, comma-separated")
    parser.add_argument("--block-k", type=_ints, default=[1, 8, 16])
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
    try:  # every tile before any timing
        for T in args.chunks:
            ts._check_launch(torch.zeros(1, device=device), T, None)
        for block_k in args.block_k:
            ts._check_launch(torch.zeros(1, device=device), None, block_k)
        for num_warps in args.warps:
            if num_warps not in WARPS:
                raise ValueError(f"warps={num_warps} is not valid; expected one of {list(WARPS)}")
        if args.repeats < 1:
            raise ValueError(f"repeats={args.repeats} is not valid; expected >= 1")
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    rows = []
    for point in points:
        rows += tune_point(point, args.batch, args.channels, args.length, args.chunks, args.block_k, args.warps,
                           args.repeats, device)
    add_registers(rows)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
