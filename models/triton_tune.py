"""Time the fused scan kernels over candidate tiles, and print the fastest that fit.

    python -m models.triton_tune                                   # batch 8, K 1024, L 2048, on CUDA
    python -m models.triton_tune --batch 8 --channels 1024 --length 2048 --repeats 20
    python -m models.triton_tune --points "mamba channels-first" --chunks 64,128 --block-k 1,2 --warps 1 \
        --prefetch 0,1 --unroll 1,2                                # one point's variants (below)
    python -m models.triton_tune --compare --points "mamba channels-first" --repeats 100   # A/B (below)

For each point of :data:`POINTS`, float32, the candidate tiles are every (T, BLOCK_K, warps)
of ``--chunks`` x the point's BLOCK_K candidates x ``--warps`` with at most 8 (T, BLOCK_K)
elements per thread (:data:`MAX_ELEMENTS_PER_THREAD`), each for the forward and the backward
kernel. The points are the selective scans of :data:`models.triton_resources.CASES`
(Mamba: real A, n 16, Δ, B, C per step, also in mamba-ssm's layout, ``mamba channels-first``:
u, δ, z, out and their gradients (Bt, K, L), ``selective_scan(channels_first=True)``; S4D:
complex A, n 32, fixed Δ and C; complex with Δ, B and C per step), whose BLOCK_K candidates are
``--block-k``, and the diagonal scans of the MIMO
layer (S5: complex A, fixed Δ; complex with Δ and C per step; real with Δ per step: one state
per channel), whose BLOCK_K candidates are ``--diagonal-block-k``.

One point after another (so that a run cut short keeps whole points, the Mamba point first):

1. Every candidate kernel is compiled for sm_90 by :func:`models.triton_resources.measure`, as
   the register test does, in parallel processes (not under TRITON_INTERPRET), for its
   registers per thread and spill bytes: twice, with no argument specialised and with every
   one aligned, the more of each counted. One over the budget (more than 128 registers, or any
   spill: the budget tests/test_kernel_resources.py holds the defaults to) is listed, not timed.
2. On a GPU, every other one is compiled by triton's JIT in parallel processes, one launch each
   on the same shapes, which fills triton's on-disk kernel cache: the timing process then loads
   the kernels instead of compiling a few hundred one after another.
3. Each is checked against the default tile at its T on the same inputs (relative norm error
   of out, or of every gradient together; the backward runs from the default forward's
   chunk-start states), then the point's candidates are timed together: ``--repeats`` rounds,
   each calling every candidate once in turn (models.timing.Clock: CUDA events on a GPU), after
   a warm-up call each; a row's time is the median of its calls. Interleaved so, a GPU's drift
   over the run (clocks, temperature) reaches every candidate alike: in a run that timed one
   candidate after another, two timings of one forward differed by 0.09 ms of 0.46
   (:mod:`models.triton_scan`, Measured), as much as the effects compared.

One row per candidate kernel: T, BLOCK_K, warps, whether it loads ahead and its unrolling
(below), milliseconds, registers, spills, the warp instructions per element of its main loop
(the compile-time proxy the default tiles were chosen by: the rows say how well it ranks the
timings), the error; the seconds each phase took go to stderr. Per point, among the timed
candidates that compute the same (error at most 1e-4), the fastest backward and forward by
their summed time: a
diagonal scan's at one shared T, printed as its entry of ``_DIAGONAL_TILES`` in
:mod:`models.triton_scan`; a selective scan's forward at any multiple of the backward's T (it
stores the state entering each of the backward's chunks at any row of its own), printed as
the entry of ``_SELECTIVE_TILES`` (the backward's T and tile, and the fastest forward at that
T, which a call with a chunk_size of its own runs) and of ``_FORWARD_TILES``. A forward
candidate is timed storing the states of its own chunks, not of the backward's: at T 128
against 64, with n 16 states, 0.125 against 0.25 fp32 values written per (step, channel)
element, beside the 16 bytes of u, δ, z read and out written.
A point's rows are printed once its rounds are done, and its entry after its rows, so that a
run cut short keeps the points it measured; every entry is printed again at the end. ``make
gpu-tune`` runs it.

After a selective point's entry, one line times that scan end to end (:func:`end_to_end`), as
``ablate.bench`` times it: the forward and the backward through autograd (the output and every
input's gradient from a fixed output gradient, torch's sums of the partial gradients included)
and the forward without autograd. It runs at the tables' launch (``default``), at the entry's
(``picked``: its tiles and variants, checked against the default), and, for the Mamba point in
mamba-ssm's layout (:data:`PEER_POINT`), through mamba-ssm's ``selective_scan_fn`` on the same
tensors where its CUDA build imports. All are timed in the same interleaved rounds, so one run
says what the entries come to beside mamba-ssm before they are pasted into the tables.

The default candidates hold the default tiles (T 8 to 256; the selective scans' BLOCK_K 1 to 16
on 1 to 4 warps, the diagonal ones' 16 to 64 on 1 to 8). The selective candidates span the two
ways a tile can spread over threads. BLOCK_K 1 or 2 on one warp puts a chunk's steps across the
lanes of one warp: every scan and reduction by shuffles, no barrier in the compiled loop over
states (the forward's one barrier a chunk orders the state it passes to the next chunk through
memory), few registers, but u, Δ, z read with a stride of K. BLOCK_K 8 or 16 on 4 or 8 warps
reads rows of channels in one run but synchronises its warps in every scan. Compiled for sm_90
by triton 3.6 (the H200 image's), Mamba point, bar.sync instructions in the PTX and registers,
forward / backward:

  T 32, BLOCK_K 1, 1 warp       1 / 0      60 / 56
  T 32, BLOCK_K 2, 1 warp       1 / 0      72 / 72
  T 64, BLOCK_K 1, 1 warp       1 / 0      71 / 96
  T 32, BLOCK_K 4, 1 warp       5 / 9      79 / 111
  T 32, BLOCK_K 16 / 8, 4 / 8 warps (the former defaults)   3 / 38   71 / 109

The Mamba point's defaults, and the complex scan's with Δ, B and C per step, are the fastest
this tuner timed on an H200: in mamba-ssm's layout a backward at T 64, BLOCK_K 1 with atomic
sums and a forward at T 128, BLOCK_K 2; in (Bt, L, K) T 64, BLOCK_K 2 and T 128, BLOCK_K 1;
the complex scan T 64, BLOCK_K 1 both, atomic sums; all on one warp (:mod:`models.triton_scan`
gives the timings and the other points' tiles, chosen by the instructions in their main
loops). The forwards' own tiles (``_FORWARD_TILES``) come from the same rows: any T that is a
multiple of the backward's is a candidate for them.

A backward at BLOCK_K 1 or 2 writes a partial gradient of B and C per one or two channels,
(K / BLOCK_K, Bt, n, L), which its time includes (summed by torch): 1.07 GB each at BLOCK_K 1
at the Mamba point's shape. So for the points with a shared B or C (Mamba, both layouts; S4D
with Δ, B and C per step) each tile's backward is timed twice: kernel ``bwd``, the sum per
block, and ``bwd-atomic``, the blocks adding into one (Bt, n, L) tensor by atomic adds
(``selective_scan(atomic_sums=True)``; checked against ``bwd`` at the default tile); the
fastest of either pairs with the forward, and the entry says which it was (``_ATOMIC_SUMS``).

Two variants of each selective tile address what Nsight Compute says both Mamba kernels wait on
most, their loads (:mod:`models.triton_scan`, Measured), and are timed on request, as more
candidates: ``--prefetch 0,1`` times each tile also with PREFETCH (``Tile.prefetch``), each
state's loads (A[k, j], the state entering the chunk, B_t[j] and C_t[j] over the chunk) issued
one state ahead, before the previous state's arithmetic; ``--unroll 1,2`` also with the loop over
states unrolled by 2 (``Tile.unroll``), so that the compiler may interleave two states'
independent work. Both cost registers (the proxy's columns say how many); unrolling saves loop
instructions. The entry says, for the forward and the backward it picks, whether its key belongs
in ``_PREFETCH`` and its factor in ``_UNROLL`` (where the rows hold variants). Each doubles the candidates, so a whole run does
not time them by default; one point's few tiles take a minute (``make gpu-tune GPU_TUNE=...``).

``--compare`` times, instead of tiles, each selective point's default launch against itself
with two code choices turned the other way, forward and backward in the same interleaved
rounds, each checked against the default: the backward's FLIP_ADJOINT (on by default with
triton before 3.9: the adjoint scanned forward over reversed inputs), and EVEN (whole chunks and
channel blocks compiled without masks, on wherever they fit): four launches, one line each.
Those two were chosen by the compile-time proxy; an A/B of them timed one after another was
within the spread of its timings (:mod:`models.triton_scan`, Measured).

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
from dataclasses import dataclass, replace
from functools import partial

import torch

from . import triton_resources as resources
from . import triton_scan as ts
from .bench import relative_difference
from .cuda import selective_scan_kernel
from .timing import Clock

POINTS = (  # points whose "<point> fwd" and "<point> bwd" kernels are cases of triton_resources.CASES
    "mamba", "mamba channels-first", "s4d", "s4d selective dt,B,C", "s5", "s5 selective dt,C",
    "real diagonal selective",
)
ERROR_LIMIT = 1e-4  # relative norm error against the default tile (float32, reordered sums)
WARPS = (1, 2, 4, 8, 16, 32)
UNROLL = (1, 2, 4, 8)  # the factors a selective kernel's loop over states may be unrolled by
# A tile with more (T, BLOCK_K) elements per thread is not a candidate: none fits the register
# budget, and each takes seconds to minutes to compile. At 8 some forwards fit (the Mamba forward
# at T 64, BLOCK_K 16 on 4 warps: 128 registers) and no backward (the Mamba backward at T 32,
# BLOCK_K 8 on one warp: 255); at 16 the backwards take 255 registers and spill 1.6 to 4.6 KB,
# 5 to 13 s of compiling each (triton 3.6); the S5 backward at 512 did not finish in 2 minutes.
MAX_ELEMENTS_PER_THREAD = 8
TABLES = {"selective": "_SELECTIVE_TILES", "diagonal": "_DIAGONAL_TILES"}  # in models.triton_scan
# the kernels timed per tile: the forward, the backward, and for a selective scan with a shared B
# or C the backward that adds their gradients over channel blocks atomically (atomic_sums)
FORWARD, BACKWARD, ATOMIC = "fwd", "bwd", "bwd-atomic"


Resources = dict  # (point, kind, tile) -> (registers per thread, spill bytes, per element) of the sm_90 compile


@dataclass
class Timing:
    point: str
    kind: str  # FORWARD, BACKWARD or ATOMIC
    tile: ts.Tile
    ms: float | None  # None: over the register budget, not timed
    registers: int | None  # None: unknown (no compile here)
    spills: int | None
    error: float | None
    per_element: float | None = None  # main-loop warp instructions per element (compile proxy)

    @property
    def fits(self) -> bool:
        return resources.within_budget(self.registers, self.spills)

    @property
    def usable(self) -> bool:
        return self.fits and self.ms is not None and self.error <= ERROR_LIMIT


def _case(point: str, kind: str = FORWARD) -> resources.Case:
    """The case of a point's forward or backward kernel in triton_resources.CASES; a backward's
    with ATOMIC_SUMS set as the kind says (ATOMIC: True)."""
    case = next(c for c in resources.CASES if c.name == f"{point} {BACKWARD if kind == ATOMIC else kind}")
    if kind == FORWARD:
        return case
    flags = {**dict(case.flags), "ATOMIC_SUMS": kind == ATOMIC}
    return replace(case, name=f"{point} {kind}", flags=tuple(sorted(flags.items())))


def kinds_of(point: str) -> tuple[str, ...]:
    """The kernels timed per tile of a point: FORWARD, BACKWARD, and ATOMIC for a selective scan
    with a shared B or C (the gradients the backward sums over channel blocks)."""
    flags = dict(_case(point).flags)
    shared = scan_of(point) == "selective" and (flags.get("HAS_B") or flags.get("C_SHARED"))
    return (FORWARD, BACKWARD, ATOMIC) if shared else (FORWARD, BACKWARD)


def scan_of(point: str) -> str:
    """``selective`` or ``diagonal``: the scan a point's kernels compute."""
    return _case(point).kind.split("_")[0]


def tile_of(point: str, T: int, block_k: int, num_warps: int) -> ts.Tile:
    """A point's kernel tile at (T, BLOCK_K, warps): BLOCK_N covers its n states."""
    return ts.Tile(T, block_k, ts._next_power_of_2(_case(point).n), num_warps)


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
    delta = 0.5 * rand(*(steps if flags["DELTA_PER_STEP"] else (channels,))) - 1.0
    if not flags["SOFTPLUS"]:  # the kernel takes Δ as given: positive, as softplus would make it (|Ā| < 1)
        delta = torch.nn.functional.softplus(delta)
    common = dict(
        u=rand(*steps), delta=delta,
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


def point_launch(point: str, forward: ts.Tile, backward: ts.Tile, atomic_sums: bool) -> ts._Launch:
    """A point's launch (its discretisation, softplus and layout) at these forward and backward tiles."""
    flags = dict(_case(point).flags)
    return ts._Launch(flags["METHOD"], flags["SOFTPLUS"], forward, backward, flags.get("CHANNELS_FIRST", False),
                      atomic_sums)


class Kernels:
    """A point's forward and backward kernels on fixed random float32 inputs (:func:`inputs`),
    launched as the scan's autograd function launches them, at any tile."""

    def __init__(self, point: str, batch: int, channels: int, length: int, device: torch.device):
        args = inputs(point, batch, channels, length, device)
        self.point, self.scan = point, scan_of(point)
        self.softplus, self.method = args.pop("delta_softplus"), args.pop("discretization")
        A = args["A"]
        self.complex, self.per_step = A.is_complex(), args["delta"].dim() == 3
        self.channels_first = dict(_case(point).flags).get("CHANNELS_FIRST", False)
        if self.scan == "selective":
            scale = torch.ones(1, dtype=torch.float32, device=device)
            u, delta, *rest, z, delta_bias = ts._selective_operands(**args)
            if self.channels_first:  # the kernels' (Bt, K, L) layout; the copies are not timed
                u, delta, z = ts._channels_first_steps(u, delta, z)
            self.operands = (u, delta, *rest, z, delta_bias, scale)
            self._forward, self._backward = ts._selective_forward, ts._selective_backward
        else:
            self.operands = ts._diagonal_operands(**args)
            self._forward, self._backward = ts._diagonal_forward, ts._diagonal_backward
        self.channels = channels
        out_dtype = torch.complex64 if self.scan == "diagonal" and self.complex else torch.float32
        self.dout = torch.randn((batch, length, channels), dtype=out_dtype,
                                generator=torch.Generator().manual_seed(1)).to(device)
        if self.channels_first:
            self.dout = ts._channels_first(self.dout)
        self._states = {}  # T -> the chunk-start states of the default forward

    def default(self, T: int) -> ts._Launch:
        """The launch of the default tiles at T, the backward writing a sum per channel block."""
        n = _case(self.point).n
        return ts._launch_settings(self.scan, self.method, self.softplus, T, None, self.channels, n, self.complex,
                                   self.per_step, channels_first=self.channels_first, atomic_sums=False)

    def defaults(self) -> ts._Launch:
        """The launch a call of the scan with no tile arguments makes (atomic sums as the tables say)."""
        return ts._launch_settings(self.scan, self.method, self.softplus, None, None, self.channels,
                                   _case(self.point).n, self.complex, self.per_step, channels_first=self.channels_first)

    def launch(self, kind: str, tile: ts.Tile) -> ts._Launch:
        """The launch of one kernel (FORWARD, BACKWARD or ATOMIC) at ``tile`` (forward and
        backward both at it)."""
        return point_launch(self.point, tile, tile, kind == ATOMIC)

    def forward(self, launch: ts._Launch):
        """(out, chunk-start states)."""
        return self._forward(*self.operands, launch, True)

    def backward(self, launch: ts._Launch) -> list[torch.Tensor]:
        """The gradients of every input there is, from the default forward's states at launch's T."""
        T = launch.backward.chunk_size
        if T not in self._states:
            self._states[T] = self.forward(self.default(T))[1]
        return [g for g in self._backward(*self.operands, self._states[T], self.dout, launch) if g is not None]

    def call(self, kind: str, launch: ts._Launch) -> list[torch.Tensor]:
        """The outputs of one kernel: [out] (FORWARD) or the gradients (a backward)."""
        return [self.forward(launch)[0]] if kind == FORWARD else self.backward(launch)


def _relative(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over every tensor of the lists together."""
    return relative_difference(torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want]))


def elements_per_thread(tile: ts.Tile) -> float:
    """(T, BLOCK_K) tile elements each of the tile's threads holds."""
    return tile.chunk_size * tile.block_k / (32 * tile.num_warps)


def candidates(points, chunks, block_ks: dict[str, list[int]], warps, prefetch=(False,),
               unroll=(1,)) -> list[tuple[str, str, ts.Tile]]:
    """(point, kind, tile) of every candidate kernel with at most MAX_ELEMENTS_PER_THREAD, in the
    order they are timed: per point and (T, BLOCK_K, warps), the forward then the backward, each
    with every ``prefetch`` value (Tile.prefetch) and ``unroll`` factor (Tile.unroll) for a
    selective scan (a diagonal scan has no loop over states: neither)."""
    variants = {"selective": [(a, u) for a in prefetch for u in unroll], "diagonal": [(False, 1)]}
    tiles = [(p, replace(tile_of(p, T, k, w), prefetch=a, unroll=u)) for p in points for T in chunks
             for k in block_ks[scan_of(p)] for w in warps for a, u in variants[scan_of(p)]]
    return [(p, kind, tile) for p, tile in tiles if elements_per_thread(tile) <= MAX_ELEMENTS_PER_THREAD
            for kind in kinds_of(p)]


def resource_usage(kernels: list[tuple[str, str, ts.Tile]]) -> Resources:
    """Registers and spills of each (point, kind, tile) compiled for sm_90
    (:func:`models.triton_resources.measure`, the proxy the register test uses), in parallel
    spawned processes (no CUDA state shared with them); empty where the kernels cannot be
    compiled here (under TRITON_INTERPRET, or without triton's ptxas)."""
    if resources.available() or ts.interpreted():
        return {}
    with ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(kernels, pool.map(_registers, *zip(*kernels))))


def _registers(point: str, kind: str, tile: ts.Tile) -> tuple[int, int, float | None]:
    """The most registers, spill bytes and main-loop warp instructions per element
    (:attr:`models.triton_resources.Usage.per_element`) of the two compiles the budget test
    holds a default to: no argument specialised, and every one aligned
    (triton_resources.ALIGNED_CASES)."""
    case = _case(point, kind)
    usages = [resources.measure(c, tile) for c in (case, replace(case, aligned=True))]
    per_element = [u.per_element for u in usages if u.per_element is not None]
    return max(u.registers for u in usages), max(u.spills for u in usages), max(per_element, default=None)


def compile_tasks(kernels: list[tuple[str, str, ts.Tile]]) -> list[tuple[str, list[tuple[str, ts.Tile]]]]:
    """The kernels split into pool tasks: (point, its (kind, tile) of one (T, BLOCK_K))."""
    tasks = {}
    for point, kind, tile in kernels:
        tasks.setdefault((point, tile.chunk_size, tile.block_k), []).append((kind, tile))
    return [(point, jobs) for (point, _, _), jobs in tasks.items()]


def launch_once(point: str, batch: int, channels: int, length: int, jobs: list[tuple[str, ts.Tile]],
                device: str = "cuda") -> int:
    """Launch each (kind, tile) once (in a pool's process on CUDA, triton's JIT compiles it into
    its on-disk cache). Returns the number of kernels launched."""
    kernels = Kernels(point, batch, channels, length, torch.device(device))
    for kind, tile in jobs:
        kernels.call(kind, kernels.launch(kind, tile))
    if device == "cuda":
        torch.cuda.synchronize()
    return len(jobs)


def precompile(kernels: list[tuple[str, str, ts.Tile]], batch: int, channels: int, length: int) -> None:
    """On a GPU, compile the kernels in parallel processes before the timings (module
    docstring); nothing on a CPU, where the interpreter compiles nothing."""
    if ts.interpreted() or not torch.cuda.is_available() or not kernels:
        return
    tasks = compile_tasks(kernels)
    workers = max(1, min(len(tasks), os.cpu_count() or 1, 16))
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        launched = sum(pool.map(launch_once, *zip(*[(p, batch, channels, length, jobs) for p, jobs in tasks])))
    print(f"compiled {launched} kernels in {workers} processes in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


def interleaved_ms(clock: Clock, calls: list, repeats: int) -> list[float]:
    """The median milliseconds of each call over ``repeats`` rounds, each round timing every
    call once in turn (after one warm-up call each), so that a GPU's drift over the rounds
    (clocks, temperature, other work) reaches every call alike."""
    for call in calls:
        call()
    clock.sync()
    samples = [[] for _ in calls]
    for _ in range(repeats):
        for call, times in zip(calls, samples):
            times.append(clock.seconds(call))
    return [1e3 * statistics.median(times) for times in samples]


def tune_point(point: str, batch: int, channels: int, length: int, kernels: list[tuple[str, ts.Tile]], usage: Resources,
               repeats: int, device: torch.device, emit=lambda row: None) -> list[Timing]:
    """One row per (kind, tile) of a point: registers and spills from ``usage``; within the
    budget, the kernel checked against the default tile at its T, and all of them timed
    together (:func:`interleaved_ms`). ``emit`` gets each row when it is complete."""
    runs = Kernels(point, batch, channels, length, device)
    rows, reference, calls = [], {}, []
    for kind, tile in kernels:
        registers, spills, per_element = usage.get((point, kind, tile), (None, None, None))
        row = Timing(point, kind, tile, None, registers, spills, None, per_element)
        rows.append(row)
        if row.fits:
            T, computes = tile.chunk_size, FORWARD if kind == FORWARD else BACKWARD
            if (computes, T) not in reference:
                reference[computes, T] = runs.call(kind, runs.default(T))
            launch = runs.launch(kind, tile)
            row.error = _relative(runs.call(kind, launch), reference[computes, T])
            calls.append((row, partial(runs.call, kind, launch)))
    reference.clear()
    timings = interleaved_ms(Clock(device), [call for _, call in calls], repeats)
    for (row, _), ms in zip(calls, timings):
        row.ms = ms
    for row in rows:
        emit(row)
    return rows


@dataclass
class Comparison:
    """One launch of :func:`compare`: its FLIP_ADJOINT and masks, times and error."""
    flip: bool
    masked: bool
    forward_ms: float
    backward_ms: float
    error: float  # the larger of the forward's and the backward's against the default launch


def compare(point: str, batch: int, channels: int, length: int, repeats: int, device: torch.device) -> list[Comparison]:
    """A selective point's default launch (its tables' tiles) against itself with the
    backward's FLIP_ADJOINT the other way, with the kernels' masks on where whole chunks and
    channel blocks need none (EVEN off), and with both: forward and backward timed in the same
    interleaved rounds (:func:`interleaved_ms`), each checked against the default launch."""
    runs = Kernels(point, batch, channels, length, device)
    default = runs.defaults()
    flip = ts.flip_adjoint(runs.complex, runs.per_step)
    launches = [replace(default, flip=f, masked=m) for f in (flip, not flip) for m in (False, True)]
    want = [runs.call(kind, default) for kind in (FORWARD, BACKWARD)]
    errors = [max(_relative(runs.call(kind, launch), w) for kind, w in zip((FORWARD, BACKWARD), want))
              for launch in launches]
    calls = [partial(runs.call, kind, launch) for launch in launches for kind in (FORWARD, BACKWARD)]
    ms = interleaved_ms(Clock(device), calls, repeats)
    return [Comparison(launch.flip, launch.masked, ms[2 * i], ms[2 * i + 1], error)
            for i, (launch, error) in enumerate(zip(launches, errors))]


def comparison_lines(point: str, rows: list[Comparison]) -> list[str]:
    """A header and one line per launch of :func:`compare` (the first: the default)."""
    lines = [f"{'point':24} {'flip':>5} {'masks':>5} {'fwd ms':>9} {'bwd ms':>9} {'error':>8}"]
    for i, r in enumerate(rows):
        lines.append(f"{point:24} {'yes' if r.flip else 'no':>5} {'yes' if r.masked else 'no':>5} "
                     f"{r.forward_ms:>9.4f} {r.backward_ms:>9.4f} {r.error:>8.1e}" + ("  (default)" if i == 0 else ""))
    return lines


# the point mamba-ssm's selective_scan_fn computes, on the inputs it takes: (Bt, K, L) and (Bt, n, L), read in place
PEER_POINT = "mamba channels-first"


def picked(point: str, rows: list[Timing]) -> ts._Launch | None:
    """The launch of a selective point's entry (:func:`best` of its rows): the chosen forward's
    tile and variants, the chosen backward's, atomic sums as its kind; None when none is usable."""
    choice = best([r for r in rows if r.point == point], own_forward=True)
    if choice is None:
        return None
    _, backward, forward = choice
    return point_launch(point, forward.tile, backward.tile, backward.kind == ATOMIC)


@dataclass
class Whole:
    """One scan of :func:`end_to_end`: its times and its error against the first."""
    name: str
    forward_backward_ms: float
    forward_ms: float
    error: float  # of its output and every gradient together, against the first launch's (0 for that one)


def end_to_end(point: str, batch: int, channels: int, length: int, launch: ts._Launch, repeats: int,
               device: torch.device, peer=None) -> list[Whole]:
    """A selective point's scan end to end, as ``ablate.bench`` times it: the forward and the
    backward through autograd (the output and the gradients of every input, from a fixed output
    gradient; the torch sums of the partial gradients included) and the forward without
    autograd, at the tables' launch (``default``), at ``launch`` (``picked``), and for
    :data:`PEER_POINT` by mamba-ssm's ``selective_scan_fn`` (``peer``, where given) on the same
    tensors; timed in the same interleaved rounds (:func:`interleaved_ms`), each checked against
    the default."""
    runs = Kernels(point, batch, channels, length, device)
    launches = {"default": runs.defaults(), "picked": launch}
    *tensors, scale = runs.operands  # u, δ, A, B, C, D, z, bias: the inputs the kernels read
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    present = [t for t in leaves if t is not None]

    def with_autograd(scan):
        out = scan(True)
        return [out, *torch.autograd.grad(out, present, runs.dout, materialize_grads=True)]  # 0 for an unused input

    def without_autograd(scan):  # ours then stores no chunk-start states, as selective_scan under no_grad
        with torch.no_grad():
            return [scan(False)]

    def ours(settings: ts._Launch, grad: bool):
        if grad:
            return ts._SelectiveScan.apply(*leaves, scale, settings)
        return ts._selective_forward(*tensors, scale, settings, False)[0]

    scans = {name: partial(ours, settings) for name, settings in launches.items()}
    if peer is not None and point == PEER_POINT:
        u, delta, A, B, C, D, z, bias = leaves
        scans["mamba-ssm selective_scan_fn"] = lambda grad: peer(u, delta, A, B, C, D, z=z, delta_bias=bias,
                                                                 delta_softplus=True)
    default, *others = scans.values()
    want = with_autograd(default)
    errors = [0.0] + [_relative(with_autograd(scan), want) for scan in others]
    calls = [partial(run, scan) for scan in scans.values() for run in (with_autograd, without_autograd)]
    ms = interleaved_ms(Clock(device), calls, repeats)
    return [Whole(name, ms[2 * i], ms[2 * i + 1], error) for i, (name, error) in enumerate(zip(scans, errors))]


def end_to_end_line(point: str, rows: list[Whole]) -> str:
    """One line: each scan's forward+backward / forward milliseconds, and its error."""
    return f"end to end, {point}: forward+backward / forward ms: " + "; ".join(
        f"{r.name} {r.forward_backward_ms:.4f} / {r.forward_ms:.4f}" + (f" (error {r.error:.1e})" if i else "")
        for i, r in enumerate(rows))


def best(rows: list[Timing], own_forward: bool = False) -> tuple[Timing, Timing, Timing] | None:
    """(forward at T, backward at T, forward) of the fastest usable backward and forward, by
    forward + backward time: the forward at the backward's T, or with ``own_forward`` (a
    selective scan, whose forward stores the states of the backward's chunks at any row of its
    own) at any multiple of it; None when no T has a usable forward and backward."""
    fastest = lambda candidates: min(candidates, key=lambda r: r.ms, default=None)
    choices = []
    for T in sorted({r.tile.chunk_size for r in rows}):
        pair = fastest(r for r in rows if r.kind == FORWARD and r.tile.chunk_size == T and r.usable)
        backward = fastest(r for r in rows if r.kind != FORWARD and r.tile.chunk_size == T and r.usable)
        forward = fastest(r for r in rows if r.kind == FORWARD and r.usable and r.tile.chunk_size % T == 0
                          and (own_forward or r.tile.chunk_size == T))
        if pair and backward:
            choices.append((pair, backward, forward))
    return min(choices, key=lambda c: c[2].ms + c[1].ms, default=None)


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADER = (f"{'point':24} {'kernel':10} {'T':>4} {'BLOCK_K':>7} {'warps':>5} {'ahead':>5} {'unroll':>6} {'ms':>9} "
          f"{'REG':>4} {'spill':>5} {'/ELEM':>6} {'error':>8}")


def row_line(r: Timing) -> str:
    return (f"{r.point:24} {r.kind:10} {r.tile.chunk_size:>4} {r.tile.block_k:>7} {r.tile.num_warps:>5} "
            f"{'yes' if r.tile.prefetch else 'no':>5} {r.tile.unroll:>6} {_cell(r.ms, '.4f'):>9} "
            f"{_cell(r.registers, 'd'):>4} {_cell(r.spills, 'd'):>5} {_cell(r.per_element, '.2f'):>6} "
            f"{_cell(r.error, '.1e'):>8}")


def entry(point: str, rows: list[Timing]) -> str:
    """The tile-table entries of a point's fastest usable backward and forward among its rows
    (:func:`best`): the pair's, and a selective forward's own (``_FORWARD_TILES``)."""
    case = _case(point)
    selective = scan_of(point) == "selective"
    choice = best([r for r in rows if r.point == point], own_forward=selective)
    if choice is None:
        return f"{point}: no candidate computes the same within {ERROR_LIMIT} and fits the budget"
    p, b, f = choice
    flags = dict(case.flags)
    key = (case.complex, flags["DELTA_PER_STEP"])
    channels_first = flags.get("CHANNELS_FIRST", False)
    table = "_CHANNELS_FIRST_TILES" if channels_first else TABLES[scan_of(point)]
    line = (f"{point}: {table} {key}: ({p.tile.chunk_size}, {p.tile.block_k}, {p.tile.num_warps}, "
            f"{b.tile.block_k}, {b.tile.num_warps}),")
    if selective:
        own = "_CHANNELS_FIRST_FORWARD_TILES" if channels_first else "_FORWARD_TILES"
        line += f" {own} {key}: ({f.tile.chunk_size}, {f.tile.block_k}, {f.tile.num_warps}),"
    line += f"  # forward {p.ms:.4f} ms at T {p.tile.chunk_size}"
    line += f", {f.ms:.4f} ms at T {f.tile.chunk_size}" if selective else ""
    line += f", backward {b.ms:.4f} ms"
    if selective and any(r.tile.prefetch or r.tile.unroll > 1 for r in rows if r.point == point):
        # the variants (Tile.prefetch, Tile.unroll) of the forward (its own tile's) and the backward
        line += "; " + ", ".join(f"{(*key, channels_first, backward)} {'' if r.tile.prefetch else 'not '}in _PREFETCH"
                                 for backward, r in ((False, f), (True, b)))
        line += ", _UNROLL " + ", ".join(f"{(*key, channels_first, backward)}: {r.tile.unroll}"
                                         for backward, r in ((False, f), (True, b)))
    if ATOMIC not in kinds_of(point):
        return line
    atomic = (*key, channels_first)
    return line + (f"; with atomic sums: {atomic} in _ATOMIC_SUMS" if b.kind == ATOMIC else
                   f"; with a sum per block: {atomic} not in _ATOMIC_SUMS")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _check_candidates(device: torch.device, chunks, block_ks: dict[str, list[int]], warps, repeats: int,
                      prefetch=(0,), unroll=(1,)) -> None:
    """ValueError on any candidate tile, warp count, variant or repeat count, before any timing."""
    for T in chunks:
        ts._check_launch(torch.zeros(1, device=device), T, None)
    for block_k in (k for ks in block_ks.values() for k in ks):
        ts._check_launch(torch.zeros(1, device=device), None, block_k)
    for num_warps in warps:
        if num_warps not in WARPS:
            raise ValueError(f"warps={num_warps} is not valid; expected one of {list(WARPS)}")
    if set(prefetch) - {0, 1}:
        raise ValueError(f"prefetch={list(prefetch)} is not valid; expected 0, 1 or 0,1")
    if set(unroll) - set(UNROLL):
        raise ValueError(f"unroll={list(unroll)} is not valid; expected some of {list(UNROLL)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} is not valid; expected >= 1")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.triton_tune", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--chunks", type=_ints, default=[8, 16, 32, 64, 128, 256], help="T values, comma-separated")
    parser.add_argument("--block-k", type=_ints, default=[1, 2, 4, 8, 16], help="BLOCK_K of the selective scans")
    parser.add_argument("--diagonal-block-k", type=_ints, default=[16, 32, 64, 128],
                        help="BLOCK_K of the diagonal scans")
    parser.add_argument("--warps", type=_ints, default=[1, 2, 4, 8])
    parser.add_argument("--prefetch", type=_ints, default=[0],
                        help="selective scans: tiles without (0) and with (1) each state's loads one state ahead")
    parser.add_argument("--unroll", type=_ints, default=[1],
                        help="selective scans: the factors to unroll the loop over states by (1: not)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--points", default=";".join(POINTS), help=f"a subset of {list(POINTS)}, ';'-separated")
    parser.add_argument("--compare", action="store_true",
                        help="time each selective point's default launch against FLIP_ADJOINT the other way and "
                             "the masks on, instead of tiles")
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
        _check_candidates(device, args.chunks, block_ks, args.warps, args.repeats, args.prefetch, args.unroll)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if args.compare:
        diagonal = [p for p in points if scan_of(p) != "selective"]
        if diagonal:
            print(f"--compare takes selective points; not {diagonal}", file=sys.stderr)
            return 2
        for point in points:
            print("\n".join(comparison_lines(point, compare(point, args.batch, args.channels, args.length,
                                                                 args.repeats, device))), flush=True)
        return 0
    shape = (args.batch, args.channels, args.length)
    kernels = candidates(points, args.chunks, block_ks, args.warps, [bool(x) for x in dict.fromkeys(args.prefetch)],
                         list(dict.fromkeys(args.unroll)))
    every = sum(len(args.chunks) * len(block_ks[scan_of(p)]) * len(args.warps) for p in points)
    kept = len({(p, replace(tile, prefetch=False, unroll=1)) for p, _, tile in kernels})
    if kept < every:
        print(f"left out {every - kept} of {every} candidate tiles: more than {MAX_ELEMENTS_PER_THREAD} "
              "(T, BLOCK_K) elements per thread", file=sys.stderr)
    rows, start = [], time.perf_counter()
    peer = selective_scan_kernel()  # mamba-ssm's fused kernel where its CUDA build imports
    print(HEADER, flush=True)
    for point in points:  # one point after another, so that a run cut short keeps whole points
        mine = [k for k in kernels if k[0] == point]
        compiled = time.perf_counter()
        usage = resource_usage(mine)
        if usage:
            print(f"{point}: compiled {len(usage)} kernels for sm_90 (registers, spills, main loop) in "
                  f"{time.perf_counter() - compiled:.1f} s", file=sys.stderr)
        precompile([k for k in mine if resources.within_budget(*usage.get(k, (None, None, None))[:2])], *shape)
        point_rows = tune_point(point, *shape, [(kind, tile) for _, kind, tile in mine], usage, args.repeats, device,
                                emit=lambda row: print(row_line(row), flush=True))
        print(entry(point, point_rows), flush=True)  # each row as it is timed, then the point's entry
        launch = picked(point, point_rows) if scan_of(point) == "selective" else None
        if launch is not None:  # the scan end to end at the tables' tiles and at the entry's
            print(end_to_end_line(point, end_to_end(point, *shape, launch, args.repeats, device, peer)), flush=True)
        rows += point_rows
    print(f"compiled and timed {sum(r.ms is not None for r in rows)} kernels in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    print("\n".join(entry(point, rows) for point in points))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
