"""Registers, spills and shared memory of the fused Triton kernels, measured without a GPU.

Triton compiles a kernel for a target it does not run on: :func:`triton.compile` with
``GPUTarget("cuda", 90, 32)`` lowers it to PTX and assembles it with the ptxas that triton
ships, and the cuobjdump it ships reads the per-thread register count, the stack frame, local
memory and static shared memory from the cubin; ptxas -v gives the spill stores and loads. This
is a compile-time proxy for the kernels' speed (registers bound occupancy; spills go to local
memory), not a timing. So is the SASS of the main loop (cuobjdump -sass): its instructions
and barriers, and the warp instructions per element they come to (:attr:`Usage.per_element`),
which bound the time a GPU needs to issue them. Register allocation differs between triton
versions: the default tiles fit both triton 3.9 and 3.6 (the table in
:mod:`models.triton_scan`); this measures the one installed.

:data:`CASES` are the kernels of :mod:`models.triton_scan` at the configurations the presets
use, at each kernel's default tile (:func:`models.triton_scan.default_tile`), float32.
:data:`BF16_CASES` are the same kernels with every per-step tensor (u, δ, B, C, z, gains, the
output and the gradients written for them) in bfloat16, as under autocast; the parameters,
states and partial sums stay float32. Triton's JIT compiles each launch for what it sees: a
pointer aligned to 16 bytes and an integer argument that is a multiple of 16 are compiled as
such, which widens loads and stores and changes the register allocation. :data:`CASES` and
:data:`BF16_CASES` compile no argument so (a launch at an odd L, K or N, from tensor views);
:data:`ALIGNED_CASES` are both compiled with every argument so, as a launch at the benchmark
shape (batch 8, K 1024, n 16, L 2048) is; a launch at another shape mixes the two.
:data:`FP64_CASES` are the same kernels in float64 (every tensor), the dtype the layer's
mode-equivalence tests run them in (tests/test_modes.py, natively on a GPU by ``make
gpu-check``): compiled to show that they build for the GPU, not held to the
budget (float64 is for checking correctness, not for speed). :data:`PREFETCH_CASES` and
:data:`UNROLL_CASES` are the selective scans' forward and backward compiled with PREFETCH (each
state's loads issued one state ahead) and with their loop over states unrolled by 2
(:class:`models.triton_scan.Tile`), variants the tuner times beside the default; held to the
budget where a default tile holds them (:data:`models.triton_scan._PREFETCH`, ``_UNROLL``), not
before. An unrolled loop holds several states: :attr:`Usage.per_element` counts per state.

    python -m models.triton_resources           # the table
    python -m models.triton_resources --bf16    # the table, then the bf16 compiles
    python -m models.triton_resources --aligned # the table, then the fp32 and bf16 compiles aligned
    python -m models.triton_resources --fp64    # the table, then the float64 compiles
    python -m models.triton_resources --prefetch  # the table, then the selective kernels with PREFETCH
    python -m models.triton_resources --unroll    # the table, then the selective kernels unrolled by 2
    python -m models.triton_resources --json    # one JSON object per line

Must run with TRITON_INTERPRET unset (under the interpreter triton.jit builds no compilable
kernel); the test in tests/test_kernel_resources.py runs this module in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import triton_scan as ts

ARCH = 90  # sm_90 (H100, H200)
REGISTER_BUDGET = 128  # per thread: 4 warps then reach 25% occupancy


def within_budget(registers: int | None, spills: int | None) -> bool:
    """At most REGISTER_BUDGET registers per thread and no spills (True when unknown: None)."""
    return registers is None or (registers <= REGISTER_BUDGET and not spills)

# (kernel kind, preset point it stands for, complex, n, constexpr flags other than the tiles)
_MAMBA = dict(METHOD="zoh_euler", DELTA_PER_STEP=True, HAS_BIAS=True, SOFTPLUS=True, HAS_B=True, C_SHARED=True,
              HAS_D=True, HAS_Z=True)
_MAMBA_CHANNELS_FIRST = dict(_MAMBA, CHANNELS_FIRST=True)
_MAMBA_LTI = dict(_MAMBA, DELTA_PER_STEP=False, HAS_BIAS=False, SOFTPLUS=False, HAS_B=False, C_SHARED=False)
_S4D = dict(METHOD="zoh", DELTA_PER_STEP=False, HAS_BIAS=False, SOFTPLUS=False, HAS_B=False, C_SHARED=False,
            HAS_D=True, HAS_Z=False)
_S4D_SELECTIVE = dict(_S4D, DELTA_PER_STEP=True, HAS_BIAS=True, SOFTPLUS=True, HAS_B=True, C_SHARED=True)
_S5 = dict(METHOD="zoh", DELTA_PER_STEP=False, HAS_BIAS=False, SOFTPLUS=False, HAS_GAIN=False)
_S5_SELECTIVE = dict(_S5, DELTA_PER_STEP=True, HAS_BIAS=True, SOFTPLUS=True, HAS_GAIN=True)


@dataclass(frozen=True)
class Case:
    name: str  # what the row stands for
    kind: str  # selective_fwd, selective_bwd, selective_step, selective_inference, diagonal_fwd, diagonal_bwd
    complex: bool
    n: int  # states per channel (1 for the diagonal scan)
    flags: tuple  # sorted (name, value) constexpr pairs
    io: str = "fp32"  # the triton dtype of the per-step tensors (fp32, bf16, or fp64: every tensor)
    aligned: bool = False  # compiled as a launch with aligned tensors and L, K, N multiples of 16 (and of
    #                        the tile's T and BLOCK_K: EVEN), as at the benchmark shape
    prefetch: bool = False  # a selective kernel compiled with PREFETCH whatever its default tile says
    unroll: int = 1  # ... and its loop over states unrolled by this factor (1: as its default tile says)


def _case(name, kind, complex_, n, flags):
    return Case(name, kind, complex_, n, tuple(sorted(flags.items())))


CASES = [
    *(_case(f"mamba {k}", f"selective_{k}", False, 16, _MAMBA) for k in ("fwd", "bwd", "step", "inference")),
    *(_case(f"mamba lti {k}", f"selective_{k}", False, 16, _MAMBA_LTI) for k in ("fwd", "bwd", "step")),
    # mamba-ssm's layout: u, δ, z (and their gradients) (Bt, K, L), a channel's steps adjacent
    *(_case(f"mamba channels-first {k}", f"selective_{k}", False, 16, _MAMBA_CHANNELS_FIRST)
      for k in ("fwd", "bwd", "inference")),
    *(_case(f"s4d {k}", f"selective_{k}", True, 32, _S4D) for k in ("fwd", "bwd", "step")),
    *(_case(f"s4d selective dt,B,C {k}", f"selective_{k}", True, 32, _S4D_SELECTIVE) for k in ("fwd", "bwd", "step")),
    # a large state: the backward's carried (BLOCK_N, BLOCK_K) tiles, BLOCK_K capped at 512 /
    # BLOCK_N (a forward compiles the same for any n: it holds no tile with an n axis)
    _case("mamba n 256 bwd", "selective_bwd", False, 256, _MAMBA),
    _case("s4d n 256 bwd", "selective_bwd", True, 256, _S4D),
    *(_case(f"s4d selective dt,B,C n {n} bwd", "selective_bwd", True, n, _S4D_SELECTIVE) for n in (64, 256)),
    *(_case(f"s5 {k}", f"diagonal_{k}", True, 1, _S5) for k in ("fwd", "bwd")),
    *(_case(f"s5 selective dt,C {k}", f"diagonal_{k}", True, 1, _S5_SELECTIVE) for k in ("fwd", "bwd")),
    *(_case(f"real diagonal selective {k}", f"diagonal_{k}", False, 1, _S5_SELECTIVE) for k in ("fwd", "bwd")),
]

BF16_CASES = [replace(case, name=f"{case.name} bf16", io="bf16") for case in CASES]
FP64_CASES = [replace(case, name=f"{case.name} fp64", io="fp64") for case in CASES]
ALIGNED_CASES = [replace(case, name=f"{case.name} aligned", aligned=True) for case in CASES + BF16_CASES]
# the selective kernels the tuner times with and without PREFETCH, and unrolled by 2 or not
# (models.triton_tune), at their default tiles, fp32: unaligned and aligned; aligned
_VARIED = [case for case in CASES
           if case.kind in ("selective_fwd", "selective_bwd", "selective_inference") and case.n < ts._LARGE_STATE]
PREFETCH_CASES = [replace(case, name=f"{case.name} prefetch{' aligned' * aligned}", aligned=aligned, prefetch=True)
                  for aligned in (False, True) for case in _VARIED]
UNROLL_CASES = [replace(case, name=f"{case.name} unroll 2 aligned", aligned=True, unroll=2) for case in _VARIED]

_KERNELS = {
    "selective_fwd": "_selective_scan_fwd_kernel",
    "selective_inference": "_selective_scan_fwd_kernel",  # no chunk-start states written
    "selective_bwd": "_selective_scan_bwd_kernel",
    "selective_step": "_selective_step_kernel",
    "diagonal_fwd": "_diagonal_scan_fwd_kernel",
    "diagonal_bwd": "_diagonal_scan_bwd_kernel",
}


@dataclass
class Usage:
    name: str
    T: int | None
    block_k: int
    block_n: int | None
    num_warps: int
    registers: int
    stack: int  # bytes per thread of stack frame: spill space, or local arrays (see spills)
    local: int  # bytes per thread of local memory
    shared: int  # bytes of static shared memory (cuobjdump)
    dynamic_shared: int  # bytes of shared memory triton allocates at launch (scans, reductions)
    spill_stores: int  # bytes, from ptxas's report
    spill_loads: int
    loop_instructions: int = 0  # SASS instructions in the main loop (:func:`main_loop`)
    loop_barriers: int = 0  # of them, bar.sync (BAR): the program's warps wait for each other
    unroll: int = 1  # states per pass of a selective kernel's main loop (Tile.unroll)

    @property
    def per_element(self) -> float | None:
        """Warp instructions of the main loop per (step, channel) element of one iteration:
        its instructions times the warps, over the T x BLOCK_K elements each iteration takes (a
        selective kernel's loop over states: per element and state, an unrolled loop's over its
        ``unroll`` states; a diagonal kernel's loop over chunks: per element). None for the step
        kernel, which has no (T, BLOCK_K) tile."""
        if self.T is None or not self.loop_instructions:
            return None
        return self.loop_instructions * self.num_warps / (self.T * self.block_k * self.unroll)

    @property
    def spills(self) -> int:
        """Bytes of spilled registers: ptxas's spill stores and loads, and local memory. A stack
        frame alone is not a spill: with triton 3.6 every kernel with a complex A has a 32-byte
        one, the local array of libdevice's sin and cos for arguments beyond about 1e5."""
        return max(self.local, self.spill_stores, self.spill_loads)


def _tools() -> tuple[Path, Path]:
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return bin_dir / "ptxas", bin_dir / "cuobjdump"


def available() -> str | None:
    """None when triton, its ptxas and cuobjdump are there; else why not."""
    if ts.triton is None:
        return "triton is not installed"
    for tool in _tools():
        if not os.access(tool, os.X_OK):
            return f"{tool} (shipped with triton) is missing"
    return None


def per_step_arguments(case: Case) -> set[str]:
    """The kernel's pointer arguments that hold per-step tensors (Bt, L, ·) of real dtype: the
    ones that take the input's dtype (bf16 under autocast); the rest stay fp32."""
    flags = dict(case.flags)
    names = {"u_ptr", "z_ptr", "out_ptr", "y_ptr", "dout_ptr", "du_ptr", "dz_ptr", "gain_ptr", "dgain_ptr"}
    if flags.get("DELTA_PER_STEP"):
        names |= {"delta_ptr", "dpre_ptr"}
    if not case.complex:
        names |= {"B_ptr", "C_ptr"} if flags.get("C_SHARED") else {"B_ptr"}
    elif case.kind.startswith("diagonal"):  # u, g and their gradients are complex with A
        names -= {"u_ptr", "out_ptr", "dout_ptr", "du_ptr"}
    return names


def measure(case: Case, tile=None) -> Usage:
    """Compile one case for sm_90 at ``tile`` (a :class:`models.triton_scan.Tile`; None: the
    kernel's default) and read its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if ts.interpreted():
        raise RuntimeError("TRITON_INTERPRET=1: triton.jit built interpreted kernels, which do not compile")
    kernel = getattr(ts, _KERNELS[case.kind])
    flags = dict(case.flags)
    selective, channels_first = flags.get("DELTA_PER_STEP", False), flags.get("CHANNELS_FIRST", False)
    # the steps between the states a selective forward stores: its default backward's T, or
    # with a tile given (the tuner's candidates, forward and backward at one T) the tile's
    stride = tile.chunk_size if tile else ts.default_chunk_size(case.kind, case.complex, selective, channels_first)
    tile = tile or ts.default_tile(case.kind, case.n, case.complex, selective, channels_first=channels_first)
    if case.prefetch:
        tile = replace(tile, prefetch=True)
    if case.unroll > 1:
        tile = replace(tile, unroll=case.unroll)
    constexprs = dict(flags, COMPLEX=case.complex)
    if case.kind.startswith("selective"):
        constexprs["BLOCK_N"] = tile.block_n
    if not case.kind.endswith("step"):
        constexprs["T"] = tile.chunk_size
    if case.kind.endswith(("fwd", "inference")):
        constexprs["SAVE_STATES"] = case.kind.endswith("fwd")
        constexprs["T_STATES"] = stride if case.kind.endswith("fwd") else tile.chunk_size
    constexprs["BLOCK_K"] = tile.block_k
    constexprs.setdefault("CHANNELS_FIRST", False)  # a selective scan's layout: (Bt, L, K) unless the case says
    # a selective backward's sums over channel blocks: the default unless the case says
    constexprs.setdefault("ATOMIC_SUMS", ts.default_atomic_sums(case.complex, selective, channels_first))
    constexprs.setdefault("FLIP_ADJOINT", ts.flip_adjoint(case.complex, selective))  # as the launcher sets it
    constexprs["EVEN"] = case.aligned  # L and K multiples of the tile, as at the benchmark shape
    constexprs["FLIP_GATHER"] = constexprs["FLIP_ADJOINT"] and ts.flip_gather(case.complex, tile, case.aligned)
    constexprs["PREFETCH"] = tile.prefetch
    constexprs["UNROLL"] = tile.unroll
    for name in list(constexprs):
        if name not in kernel.arg_names:
            del constexprs[name]
    signature = {}
    per_step = per_step_arguments(case)
    accumulation = "fp64" if case.io == "fp64" else "fp32"
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = f"*{case.io}" if name in per_step else f"*{accumulation}"
        else:
            signature[name] = "i32"
    # triton's JIT specialises each launch: a pointer 16-byte aligned, or an integer that is a
    # multiple of 16, is compiled as such (tt.divisibility 16), which changes the vector widths
    # and the register allocation; an aligned case compiles every argument so, an other none
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
             if signature[name] != "constexpr"} if case.aligned else {}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", ARCH, 32), options={"num_warps": tile.num_warps})
    _, cuobjdump = _tools()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        report = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)], capture_output=True,
                                text=True, check=True).stdout
        sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", report))
    spill_stores, spill_loads = _ptxas_spills(compiled)
    depth = {"selective_fwd": 1, "selective_inference": 1, "selective_bwd": 1, "diagonal_fwd": 0,
             "diagonal_bwd": 0}.get(case.kind)
    loop = [] if depth is None else main_loop(sass, depth)  # the step kernel has no loop over a tile
    return Usage(case.name, constexprs.get("T"), tile.block_k, constexprs.get("BLOCK_N"), tile.num_warps,
                 int(fields["REG"]), int(fields["STACK"]), int(fields["LOCAL"]), int(fields["SHARED"]),
                 int(compiled.metadata.shared), spill_stores, spill_loads, len(loop),
                 sum(op.startswith("BAR") for op in loop), tile.unroll if "UNROLL" in constexprs else 1)


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def main_loop(sass: str, depth: int) -> list[str]:
    """The opcodes of a kernel's main loop in its cuobjdump -sass listing: the largest loop (a
    backward branch and the instructions from its target to it) inside ``depth`` others, less
    the loops inside it. The scan kernels' main loop is the loop over states of a selective
    kernel (depth 1, inside its loop over chunks), or the loop over chunks of a diagonal one
    (depth 0): the code each (T, BLOCK_K) tile runs per state or per chunk. The loops inside it
    are libdevice's reduction of sin and cos arguments beyond about 1e5 (complex A), not taken
    otherwise. Instructions of other branches not taken count. Empty when there is none."""
    lines = [(int(m[1], 16), m[2], m[3]) for m in _SASS_LINE.finditer(sass)]
    loops = []
    for address, op, operands in lines:
        target = re.search(r"0x([0-9a-f]+)", operands) if op.startswith("BRA") else None
        if target and int(target[1], 16) < address:
            loops.append((int(target[1], 16), address))

    def inside(a, b):  # loop a lies in loop b
        return a != b and b[0] <= a[0] and a[1] <= b[1]

    def body(lp):  # its opcodes, less those of the loops inside it
        inner = [other for other in loops if inside(other, lp)]
        return [op for a, op, _ in lines if lp[0] <= a <= lp[1] and not any(i[0] <= a <= i[1] for i in inner)]

    at_depth = [lp for lp in loops if sum(inside(lp, other) for other in loops) == depth]
    return max(map(body, at_depth), key=len, default=[])


def _ptxas_spills(compiled) -> tuple[int, int]:
    """(spill stores, spill loads) in bytes, from ptxas -v on the compiled PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(ARCH).path  # the ptxas triton itself assembles with for this arch
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        result = subprocess.run([str(ptxas), "-v", "--regAllocOptLevel=2", f"--gpu-name=sm_{ARCH}a", str(ptx),
                                 "-o", str(Path(tmp) / "o")], capture_output=True, text=True)
    match = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", result.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)


def table(usages: list[Usage]) -> str:
    """One line per kernel; LOOP, BAR: instructions and barriers of the main loop, /ELEM:
    its warp instructions per element (:attr:`Usage.per_element`)."""
    lines = [f"{'kernel':36} {'T':>4} {'BLOCK_K':>7} {'BLOCK_N':>7} {'warps':>5} {'REG':>4} {'STACK':>5} "
             f"{'LOCAL':>5} {'SHARED':>6} {'DYN.SH':>6} {'spill st/ld':>12} {'LOOP':>5} {'BAR':>3} {'/ELEM':>6}"]
    for u in usages:
        per_element = "-" if u.per_element is None else f"{u.per_element:.2f}"
        lines.append(f"{u.name:36} {u.T or '-':>4} {u.block_k:>7} {u.block_n or '-':>7} {u.num_warps:>5} "
                     f"{u.registers:>4} {u.stack:>5} {u.local:>5} {u.shared:>6} {u.dynamic_shared:>6} "
                     f"{f'{u.spill_stores}/{u.spill_loads}':>12} {u.loop_instructions:>5} {u.loop_barriers:>3} "
                     f"{per_element:>6}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    reason = available()
    if reason:
        print(f"cannot measure: {reason}", file=sys.stderr)
        return 2
    as_json = "--json" in argv
    names = [a for a in argv if not a.startswith("--")]
    usages = []
    extra = {"--bf16": BF16_CASES, "--aligned": ALIGNED_CASES, "--fp64": FP64_CASES, "--prefetch": PREFETCH_CASES,
             "--unroll": UNROLL_CASES}
    for case in CASES + [case for flag, cases in extra.items() if flag in argv for case in cases]:
        if names and not any(name in case.name for name in names):
            continue
        usage = measure(case)
        usages.append(usage)
        if as_json:
            print(json.dumps(asdict(usage)), flush=True)
    if not as_json:
        print(table(usages))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
