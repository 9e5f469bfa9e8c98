"""The register and spill budget of the fused Triton kernels, checked without a GPU.

Every kernel of models/triton_scan.py (forward, backward, step; real and complex; SISO
selective_scan and MIMO diagonal_scan) is compiled for sm_90 in float32 at its default tile by
the ptxas that triton ships, and cuobjdump reads its resource usage
(models/triton_resources.py). Budget: no spills (no spill stores or loads, no local memory)
and at most 128 registers per thread, which lets 4-warp programs reach 25% occupancy. The table is printed
(pytest -s shows it), with the instructions of each kernel's main loop in the SASS (its loop
over states or over chunks) per element. This is a compile-time proxy for speed; a GPU run
(make gpu-check) times it.

The bf16 compiles (every per-step tensor bf16, as under autocast; triton_resources.BF16_CASES)
are held to the same budget, and so are the fp32 and bf16 compiles with every argument aligned
(triton_resources.ALIGNED_CASES: triton's JIT compiles a launch with 16-byte aligned tensors and
L, K, N multiples of 16, as at the benchmark shape, so; its registers differ). The float64 compiles (triton_resources.FP64_CASES: the dtype the
layer's mode-equivalence tests run the kernels in, natively on a GPU) must build for sm_90; they
are not held to the budget.

The compile runs in a subprocess: this test session runs triton's interpreter on a CPU
(TRITON_INTERPRET=1, tests/conftest.py), under which triton.jit builds no compilable kernel.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import triton_resources

ROOT = Path(__file__).resolve().parents[1]


def _measure(*args: str) -> list[triton_resources.Usage]:
    reason = triton_resources.available()
    if reason:
        pytest.skip(f"cannot compile the kernels for sm_90: {reason}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-m", "models.triton_resources", "--json", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [triton_resources.Usage(**json.loads(line)) for line in result.stdout.splitlines() if line.startswith("{")]


def _over_budget(usages: list[triton_resources.Usage]) -> list[str]:
    return [u.name for u in usages if not triton_resources.within_budget(u.registers, u.spills)]


@pytest.mark.parametrize("flags, cases", [
    ((), triton_resources.CASES),
    (("--bf16", "bf16"), triton_resources.BF16_CASES),  # the cases named ... bf16 only
    (("--aligned", "aligned"), triton_resources.ALIGNED_CASES),  # the cases named ... aligned only
], ids=["fp32", "bf16", "aligned"])
def test_every_kernel_fits_the_register_budget_without_spilling(flags, cases):
    usages = _measure(*flags)
    assert [u.name for u in usages] == [case.name for case in cases]
    table = triton_resources.table(usages)
    print(table)
    over = _over_budget(usages)
    assert not over, f"over the budget (<= {triton_resources.REGISTER_BUDGET} registers, no spills): {over}\n{table}"
    # every scan kernel has its main loop found in the SASS (the per-element instruction count)
    scans = [u for u in usages if u.T is not None]
    assert scans and all(u.loop_instructions > 0 and u.per_element > 0 for u in scans), table


_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   IMAD.MOV.U32 R2, RZ, RZ, RZ ;
        /*0020*/                   LDG.E R3, desc[UR4][R4.64] ;
        /*0030*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0040*/                   FFMA R5, R3, R3, R5 ;
        /*0050*/                   ISETP.GE.AND P2, PT, R6, 0x1, PT ;
        /*0060*/               @P2 BRA 0x50 ;
        /*0070*/              @!P0 BRA 0x30 ;
        /*0080*/                   ISETP.NE.AND P1, PT, R2, RZ, PT ;
        /*0090*/               @P1 BRA 0x20 ;
        /*00a0*/                   BRA 0xb0 ;
        /*00b0*/                   EXIT ;
"""


def test_the_main_loop_is_read_from_the_sass():
    # loops 0x20..0x90 > 0x30..0x70 > 0x50..0x60; a loop's count leaves out the loops inside it
    # (in the kernels: libdevice's sin and cos reduction); the forward branch at 0xa0 is no loop
    assert triton_resources.main_loop(_SASS, depth=1) == ["BAR.SYNC.DEFER_BLOCKING", "FFMA", "BRA"]
    assert triton_resources.main_loop(_SASS, depth=0) == ["LDG.E", "ISETP.NE.AND", "BRA"]
    assert triton_resources.main_loop(_SASS, depth=2) == ["ISETP.GE.AND", "BRA"]
    assert triton_resources.main_loop(_SASS, depth=3) == []
    usage = triton_resources.Usage("k", 32, 4, 16, 1, 64, 0, 0, 0, 0, 0, 0, loop_instructions=300, loop_barriers=1)
    assert usage.per_element == 300 * 1 / (32 * 4)
    unrolled = triton_resources.Usage("k", 32, 4, 16, 1, 64, 0, 0, 0, 0, 0, 0, loop_instructions=300, unroll=2)
    assert unrolled.per_element == 300 * 1 / (32 * 4 * 2)  # per state: the loop holds two


def test_float64_kernels_compile_for_the_gpu():
    usages = _measure("--fp64", "fp64")  # the cases named ... fp64 only; a failed compile fails the run
    assert [u.name for u in usages] == [case.name for case in triton_resources.FP64_CASES]
    assert all(u.registers > 0 for u in usages), triton_resources.table(usages)
    print(triton_resources.table(usages))


def test_kernels_loading_each_state_ahead_compile_for_the_gpu():
    # PREFETCH, which the tuner times beside the default tiles: held to the budget only as a
    # default (then CASES compile it), here each must build and have its main loop found
    usages = _measure("--prefetch", "prefetch")  # the cases named ... prefetch only
    assert [u.name for u in usages] == [case.name for case in triton_resources.PREFETCH_CASES]
    assert all(u.registers > 0 and u.loop_instructions > 0 for u in usages), triton_resources.table(usages)
    print(triton_resources.table(usages))


def test_kernels_with_their_loop_over_states_unrolled_compile_for_the_gpu():
    usages = _measure("--unroll", "unroll 2")  # the cases named ... unroll 2 ... only
    assert [u.name for u in usages] == [case.name for case in triton_resources.UNROLL_CASES]
    assert all(u.registers > 0 and u.loop_instructions > 0 and u.unroll == 2 for u in usages), \
        triton_resources.table(usages)
    print(triton_resources.table(usages))
