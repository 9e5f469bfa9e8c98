"""Speed of the SSM layer on this machine: ``python -m models.bench`` (``--quick`` for a smoke run).

One run prints four sections; every time is the median over ``--repeats`` (default 5; 1 with
``--quick``) timed calls after ``--warmup`` untimed ones, measured with ``time.perf_counter``
on ``torch.randn`` inputs (float32, on the CPU, with PyTorch's default thread count):

1. ``s5-peer``: our S5 preset layer (``models.preset('s5', d_model=256, d_state=256)``) against
   s5-pytorch's ``S5(256, 256)``, forward+backward at batch 8, length 2048. The peer is the SSM
   alone (256 complex states, no conjugate symmetry, y = Re(C x) + D u, vmapped over the batch);
   the preset adds the paper's output stage (GELU, half_glu1 gate), and stores the 256 states
   as 128 conjugate pairs. A third row (``conj_sym=False, gate='none'``) does the peer's work:
   256 complex states, output GELU(y) only.
2. ``mamba-ref``: our Mamba preset layer against mamba-ssm's ``Mamba`` on its pure-PyTorch
   reference scan (``selective_scan_ref``), same weights, at batch 8, length 1024. The reference
   backward is quadratic in the length (autograd through a per-step Python loop of slices); when
   one of its calls takes over 20 s it is timed 3 times, after a warm-up at a short length.
3. ``throughput``: tokens/s of each preset (d_model 128, its default d_state, batch 8) and each
   valid compute mode at lengths 256 .. 8192 (``recurrent`` at the shortest only). A series
   stops ("stopped: over budget") after a measurement that took longer than ``--budget`` s.
4. ``step``: per-token latency of ``models.S5/S4D/Mamba.build(**recommended_defaults())`` at
   batch 1 (eval, no_grad) against the 16.7 ms frame of 60 fps.

Forward times are taken under ``torch.no_grad()`` (inference); forward+backward times back-
propagate a random output gradient into the input and every parameter.
:func:`main` returns one dict per measurement (keys: :data:`RESULT_KEYS`).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .layer import SSMLayer
from .peers import copy_into_mamba, mamba_reference, s5_peer
from .presets import preset
from .seed_api import S4D, S5, Mamba
from .timing import Clock, Workload, free_memory_bytes, time_samples

FRAME_BUDGET_MS = 1000.0 / 60.0
SLOW_CALL_S = 20.0  # a peer call slower than this is timed SLOW_REPEATS times
SLOW_REPEATS = 3
MEMORY_FRACTION = 0.5  # skip a measurement whose estimated peak exceeds this share of free memory
STATE_COPIES = 10  # rough peak memory of a forward+backward, in (B, L, G, n) state tensors

RESULT_KEYS = (
    "section", "name", "peer", "mode", "batch", "length", "d_model", "d_state", "fwd_ms", "fwdbwd_ms",
    "tokens_per_s_fwd", "tokens_per_s_fwdbwd", "repeats", "ratio", "step_ms", "steps_per_s",
    "status", "includes",
)


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one run (``--quick`` shrinks them)."""

    repeats: int
    warmup: int
    budget_s: float
    s5_shape: tuple[int, int, int, int]  # batch, length, H, P
    mamba_shape: tuple[int, int, int]  # batch, length, H
    sweep_d_model: int
    sweep_batch: int
    sweep_lengths: tuple[int, ...]
    step_count: int
    step_warmup: int
    slow_call_s: float


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's sizes: the brief's defaults, or tiny ones with ``--quick``."""
    if args.quick:  # --repeats, --warmup and --steps given on the command line are kept
        return Settings(repeats=args.repeats or 1, warmup=2 if args.warmup is None else args.warmup,
                        budget_s=args.budget, s5_shape=(2, 64, 32, 32), mamba_shape=(2, 32, 16), sweep_d_model=16,
                        sweep_batch=2, sweep_lengths=(32, 64), step_count=args.steps or 20, step_warmup=5,
                        slow_call_s=SLOW_CALL_S)
    lengths = tuple(256 * 2 ** k for k in range(int(math.log2(args.max_length // 256)) + 1))
    return Settings(repeats=args.repeats or 5, warmup=1 if args.warmup is None else args.warmup,
                    budget_s=args.budget, s5_shape=(8, 2048, 256, 256), mamba_shape=(8, 1024, 128),
                    sweep_d_model=128, sweep_batch=8, sweep_lengths=lengths, step_count=args.steps or 200,
                    step_warmup=20, slow_call_s=SLOW_CALL_S)


def result(**values: Any) -> dict[str, Any]:
    """One measurement as a dict with every key of :data:`RESULT_KEYS` (None where not applicable)."""
    unknown = set(values) - set(RESULT_KEYS)
    if unknown:
        raise ValueError(f"unknown result keys {sorted(unknown)}; expected some of {list(RESULT_KEYS)}")
    row = dict.fromkeys(RESULT_KEYS)
    row.update(peer=False, status="ok")
    row.update(values)
    return row


def state_bytes(layer: SSMLayer, batch: int, length: int) -> int:
    """Bytes of one (B, L, G, n) state tensor of the layer."""
    cfg = layer.cfg
    element = 8 if cfg.complex else 4
    return batch * length * cfg.n_groups * cfg.n_modes * element


def fits_in_memory(layer: SSMLayer, batch: int, length: int) -> bool:
    """A rough guard: ~STATE_COPIES state tensors must fit into MEMORY_FRACTION of free memory."""
    free = free_memory_bytes()
    return free is None or STATE_COPIES * state_bytes(layer, batch, length) <= MEMORY_FRACTION * free


def measure(module: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> dict[str, Any]:
    """Forward and forward+backward medians (ms) and tokens/s of ``module`` on ``x`` (B, L, H)."""
    batch, length = x.shape[:2]
    start = time.perf_counter()
    work, clock = Workload(module, [x]), Clock(x.device)
    fwd = statistics.median(time_samples(work.forward, clock, repeats, warmup))
    fwdbwd = statistics.median(time_samples(work.forward_backward, clock, repeats, warmup))
    return dict(fwd_ms=1e3 * fwd, fwdbwd_ms=1e3 * fwdbwd, tokens_per_s_fwd=batch * length / fwd,
                tokens_per_s_fwdbwd=batch * length / fwdbwd, repeats=repeats, wall_s=time.perf_counter() - start)


def measure_slow(module: nn.Module, x: torch.Tensor, short_x: torch.Tensor, repeats: int, warmup: int,
                 slow_call_s: float) -> tuple[dict[str, Any], str]:
    """Like :func:`measure` for a peer that may take minutes per call.

    Each pass (forward, forward+backward) is warmed up on ``short_x``, then timed once on ``x``.
    If that call took over ``slow_call_s`` it counts as the first of ``SLOW_REPEATS`` samples
    (a full-size warm-up would double the cost); otherwise it was the warm-up and ``repeats``
    samples follow. Returns the timings and a note on what was done.
    """
    batch, length = x.shape[:2]
    out: dict[str, Any] = {}
    notes = []
    short, full, clock = Workload(module, [short_x]), Workload(module, [x]), Clock(x.device)
    for key, method in (("fwd", "forward"), ("fwdbwd", "forward_backward")):
        time_samples(getattr(short, method), clock, 1, warmup)
        call = getattr(full, method)
        first = time_samples(call, clock, 1, 0)[0]
        if first > slow_call_s:
            samples = [first] + time_samples(call, clock, SLOW_REPEATS - 1, 0)
            notes.append(f"{key}: one call took {first:.0f} s > {slow_call_s:.0f} s, so {len(samples)} repeats "
                         f"(warm-up at length {short_x.shape[1]})")
        else:
            samples = time_samples(call, clock, repeats, max(warmup - 1, 0))
        median = statistics.median(samples)
        out[f"{key}_ms"] = 1e3 * median
        out[f"tokens_per_s_{key}"] = batch * length / median
        out[f"{key}_repeats"] = len(samples)
    out["repeats"] = min(out.pop("fwd_repeats"), out.pop("fwdbwd_repeats"))
    return out, "; ".join(notes)


# ---------------------------------------------------------------------------- peers
def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def bench_layer_pair(section: str, ours: Sequence[tuple[str, str, nn.Module]], peer: tuple[str, nn.Module] | None,
                     x: torch.Tensor, settings: Settings, slow_peer: bool = False) -> list[dict[str, Any]]:
    """Time our layers and one peer on the same input; ratio = peer time / our time (fwd+bwd).

    ours: (name, what it includes, module); peer: (what it includes, module) or None (skipped).
    """
    batch, length, width = x.shape
    rows = []
    for name, includes, module in ours:
        mode = None
        if isinstance(module, SSMLayer):
            resolved = module.resolve_mode(x.device)
            mode = resolved if module.cfg.mode == resolved else f"{module.cfg.mode}->{resolved}"
        timing = measure(module, x, settings.repeats, settings.warmup)
        timing.pop("wall_s")
        rows.append(result(section=section, name=name, mode=mode, batch=batch, length=length, d_model=width,
                           d_state=module.cfg.d_state, includes=includes, **timing))
    if peer is None:
        return rows
    includes, module = peer
    if slow_peer:
        short_x = x[:, : min(length, 128)].contiguous()
        timing, note = measure_slow(module, x, short_x, settings.repeats, settings.warmup, settings.slow_call_s)
        includes = f"{includes}; {note}" if note else includes
    else:
        timing = measure(module, x, settings.repeats, settings.warmup)
        timing.pop("wall_s")
    peer_row = result(section=section, name=type(module).__name__ + " (peer)", peer=True, mode="peer", batch=batch,
                      length=length, d_model=width, includes=includes, **timing)
    for row in rows:
        row["ratio"] = peer_row["fwdbwd_ms"] / row["fwdbwd_ms"]
    return rows + [peer_row]


def s5_layers(H: int, P: int) -> list[tuple[str, str, SSMLayer]]:
    """Our S5 preset layer in the scan and chunked modes, and the variant doing the peer's work."""
    preset_includes = (f"MIMO SSM, P={P} as {P // 2} conjugate pairs, ZOH, D skip; + GELU, half_glu1 gate "
                       f"(Linear {H}x{H}, sigmoid)")
    same_includes = f"MIMO SSM, {P} complex states (no conjugate symmetry), ZOH, D skip; + GELU"
    layers = []
    for name, overrides, includes in (
        ("ours s5 preset", dict(mode="scan"), preset_includes),
        ("ours s5 preset", dict(mode="chunked"), preset_includes),
        ("ours s5 conj_sym=False gate=none", dict(mode="scan", conj_sym=False, gate="none"), same_includes),
    ):
        layers.append((name, includes, SSMLayer(preset("s5", d_model=H, d_state=P, **overrides))))
    return layers


def bench_s5_peer(settings: Settings, seed: int) -> list[dict[str, Any]]:
    """Section 1: our S5 layer vs s5-pytorch's S5 (forward+backward), same H, P, batch, length."""
    batch, length, H, P = settings.s5_shape
    torch.manual_seed(seed)
    ours = s5_layers(H, P)
    S5Peer = s5_peer()
    peer = None
    if S5Peer is None:
        print("s5-pytorch is not installed: the S5 peer is skipped")
    else:
        module = S5Peer(H, P)  # unidirectional, dense B/C, ZOH, no liquid, degree 1
        peer = (f"s5-pytorch {_version('s5-pytorch')} S5({H}, {P}): SSM only, {P} complex states (no conjugate "
                f"symmetry), ZOH, D skip, no activation; vmap over batch", module)
    x = torch.randn(batch, length, H)
    return bench_layer_pair("s5-peer", ours, peer, x, settings)


def bench_mamba_reference(settings: Settings, seed: int) -> list[dict[str, Any]]:
    """Section 2: our Mamba preset layer vs mamba-ssm's Mamba on its reference scan, same weights."""
    batch, length, H = settings.mamba_shape
    torch.manual_seed(seed)
    includes = "in_proj, causal conv 4 + SiLU, selective dt/B/C, real S4D-Real state, D, y*SiLU(z), out_proj"
    ours = [("ours mamba preset", includes, SSMLayer(preset("mamba", d_model=H))),
            ("ours mamba preset", includes, SSMLayer(preset("mamba", d_model=H, mode="scan")))]
    found = mamba_reference()  # Mamba on its PyTorch reference paths (see models.peers)
    peer = None
    if found is None:
        print("mamba-ssm is not installed: the Mamba reference is skipped")
    else:
        MambaRef, _ = found
        module = MambaRef(d_model=H, use_fast_path=False)
        copy_into_mamba(ours[0][2], module)
        check = torch.randn(2, 64, H)
        with torch.no_grad():
            diff = relative_difference(ours[0][2](check), module(check))
        print(f"mamba-ssm reference vs ours, same weights, (2, 64, {H}): relative difference {diff:.1e}")
        peer = (f"mamba-ssm {_version('mamba_ssm')} Mamba(d_model={H}, use_fast_path=False): same layer; "
                "selective_scan_ref (Python loop over L), PyTorch conv", module)
    x = torch.randn(batch, length, H)
    return bench_layer_pair("mamba-ref", ours, peer, x, settings, slow_peer=True)


# ---------------------------------------------------------------------------- throughput sweep
def sweep_modes(cfg_supports_fft: bool) -> list[str]:
    """The compute modes a CPU can run for a preset (``fft`` only with a time-invariant Δ)."""
    return ["recurrent", "scan", "chunked"] + (["fft"] if cfg_supports_fft else [])


def bench_series(name: str, mode: str, lengths: Sequence[int], settings: Settings, seed: int,
                 on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
    """Tokens/s of one preset in one mode over increasing lengths, until a measurement runs over
    the budget (``status`` "stopped: over budget") or would not fit in memory. ``on_row`` sees
    each row as soon as it is measured."""
    H, batch = settings.sweep_d_model, settings.sweep_batch
    torch.manual_seed(seed)
    layer = SSMLayer(preset(name, d_model=H, mode=mode))
    rows = []
    base = dict(section="throughput", name=name, mode=mode, batch=batch, d_model=H, d_state=layer.cfg.d_state)
    for index, length in enumerate(lengths):
        if not fits_in_memory(layer, batch, length):
            rows.append(result(length=length, status="skipped: memory", **base))
            on_row(rows[-1])
            break
        x = torch.randn(batch, length, H)
        timing = measure(layer, x, settings.repeats, settings.warmup)
        wall = timing.pop("wall_s")
        rows.append(result(length=length, **base, **timing))
        on_row(rows[-1])
        if wall > settings.budget_s and index + 1 < len(lengths):
            rows.append(result(length=lengths[index + 1], status="stopped: over budget", **base))
            on_row(rows[-1])
            break
    return rows


def bench_throughput(settings: Settings, seed: int,
                     on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
    """Section 3: every preset, every valid mode (recurrent at the shortest length only)."""
    rows = []
    for name in ("s5", "s4d", "mamba"):
        cfg = preset(name, d_model=settings.sweep_d_model)
        for mode in sweep_modes(cfg.supports_fft):
            lengths = settings.sweep_lengths[:1] if mode == "recurrent" else settings.sweep_lengths
            rows.extend(bench_series(name, mode, lengths, settings, seed, on_row))
    return rows


# ---------------------------------------------------------------------------- step latency
def bench_step(settings: Settings, seed: int) -> list[dict[str, Any]]:
    """Section 4: ``step`` latency of each seed-API encoder at its recommended defaults."""
    rows = []
    for api in (S5, S4D, Mamba):
        torch.manual_seed(seed)
        options = api.recommended_defaults()
        encoder = api.build(**options).eval()
        inputs = torch.randn(settings.step_warmup + settings.step_count, 1, options["embed_dim"])
        samples = []
        with torch.no_grad():
            cache = encoder.init_cache(1)
            for t, x_t in enumerate(inputs):
                start = time.perf_counter()
                _, cache = encoder.step(x_t, cache)
                if t >= settings.step_warmup:
                    samples.append(time.perf_counter() - start)
        median = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        includes = (f"{options['num_layers']} layers, hidden {options['hidden_size']}, state {options['state_size']}, "
                    f"embed {options['embed_dim']}; p90 {1e3 * p90:.3f} ms")
        rows.append(result(section="step", name=f"models.{api.__name__}", batch=1, length=1, mode="step",
                           d_model=options["hidden_size"], d_state=options["state_size"], repeats=len(samples),
                           step_ms=1e3 * median, steps_per_s=1.0 / median, includes=includes))
    return rows


# ---------------------------------------------------------------------------- output
def _version(distribution: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_pairs(title: str, rows: list[dict[str, Any]], ratio_label: str) -> None:
    """A peer comparison table: medians, tokens/s, ratio peer/ours, what each side includes."""
    print(f"\n== {title}")
    print(f"{'name':34} {'mode':13} {'B':>2} {'L':>5} {'fwd ms':>10} {'fwd+bwd ms':>11} {'tok/s f+b':>10} "
          f"{ratio_label:>14} {'n':>2}")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"{r['name']:34} {r['mode'] or '-':13} {r['batch']:>2} {r['length']:>5} {_fmt(r['fwd_ms'], '10.1f')} "
              f"{_fmt(r['fwdbwd_ms'], '11.1f')} {_fmt(r['tokens_per_s_fwdbwd'], '10.0f')} {ratio:>14} "
              f"{_fmt(r['repeats'], '2d')}")
    for r in rows:
        print(f"  {r['name']} [{r['mode']}]: {r['includes']}")


def print_throughput_header(settings: Settings) -> None:
    print(f"\n== throughput: tokens/s per preset and mode (d_model {settings.sweep_d_model}, default d_state, "
          f"batch {settings.sweep_batch}, float32)")
    print(f"{'preset':6} {'d_state':>7} {'mode':9} {'L':>5} {'fwd ms':>10} {'fwd+bwd ms':>11} {'tok/s fwd':>11} "
          f"{'tok/s f+b':>11}  status")


def print_throughput_row(r: dict[str, Any]) -> None:
    print(f"{r['name']:6} {r['d_state']:>7} {r['mode']:9} {r['length']:>5} {_fmt(r['fwd_ms'], '10.2f')} "
          f"{_fmt(r['fwdbwd_ms'], '11.2f')} {_fmt(r['tokens_per_s_fwd'], '11.0f')} "
          f"{_fmt(r['tokens_per_s_fwdbwd'], '11.0f')}  {r['status']}", flush=True)


def print_step(rows: list[dict[str, Any]]) -> None:
    print(f"\n== step latency: batch 1, float32, eval, no_grad; frame budget {FRAME_BUDGET_MS:.1f} ms (60 fps)")
    print(f"{'encoder':12} {'step ms':>8} {'steps/s':>9} {'of frame':>9}  setting")
    for r in rows:
        print(f"{r['name']:12} {r['step_ms']:8.3f} {r['steps_per_s']:9.0f} {100 * r['step_ms'] / FRAME_BUDGET_MS:8.1f}%"
              f"  {r['includes']}; median of {r['repeats']}")


def print_header(settings: Settings) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"models.bench: torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}, "
          f"os.cpu_count()={os.cpu_count()}, load average {load and ' '.join(f'{v:.2f}' for v in load)}")
    print(f"medians of {settings.repeats} timed calls after {settings.warmup} warm-up; float32; torch.randn inputs; "
          f"forward under no_grad; series budget {settings.budget_s:g} s per measurement")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m models.bench", description=__doc__.split("\n")[0],
        epilog="Without --quick the run takes minutes on a laptop CPU: mamba-ssm's reference scan alone "
               "needs about 111 s per forward+backward call (d_model 128, length 1024), timed 3 times; "
               "--only s5 throughput step leaves it out.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 1 repeat after 2 warm-ups, 20 steps (unless given): a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per median (default 5; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default 1; 2 with --quick)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="a throughput series stops after a measurement longer than this many seconds")
    parser.add_argument("--max-length", type=int, default=8192, help="longest throughput length (default 8192)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed step calls per encoder (default 200; 20 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=("s5", "mamba", "throughput", "step"),
                        default=("s5", "mamba", "throughput", "step"), help="sections to run")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is not valid; expected an integer >= 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup={args.warmup} is not valid; expected an integer >= 0")
    if not args.budget > 0:
        parser.error(f"--budget={args.budget} is not valid; expected a number of seconds > 0")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps={args.steps} is not valid; expected an integer >= 1")
    if args.max_length < 256 and not args.quick:
        parser.error(f"--max-length={args.max_length} is not valid; expected an integer >= 256")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected sections, print their tables, and return one dict per measurement."""
    args = parse_args(argv)
    settings = settings_from_args(args)
    torch.manual_seed(args.seed)
    print_header(settings)
    results: list[dict[str, Any]] = []
    if "s5" in args.only:
        rows = bench_s5_peer(settings, args.seed)
        batch, length, H, P = settings.s5_shape
        print_pairs(f"S5 layer vs s5-pytorch (H={H}, P={P}, batch {batch}, length {length}, forward+backward; "
                    "ours must be faster)", rows, "peer/ours f+b")
        results += rows
    if "mamba" in args.only:
        rows = bench_mamba_reference(settings, args.seed)
        batch, length, H = settings.mamba_shape
        print_pairs(f"Mamba layer vs mamba-ssm reference (d_model={H}, batch {batch}, length {length}; "
                    "target: ours >= 10x faster)", rows, "ref/ours f+b")
        results += rows
    if "throughput" in args.only:
        print_throughput_header(settings)
        rows = bench_throughput(settings, args.seed, print_throughput_row)
        results += rows
    if "step" in args.only:
        rows = bench_step(settings, args.seed)
        print_step(rows)
        results += rows
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\nload average at the end: {load and ' '.join(f'{v:.2f}' for v in load)}")
    return results


if __name__ == "__main__":
    main()
