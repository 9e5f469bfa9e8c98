"""The benchmark's configuration, validated before anything is measured.

:func:`resolve` turns the composed Hydra config (``conf/bench/``) into a frozen
:class:`BenchSettings`, raising ``ValueError`` with a one-line message that names the bad
key, its value and what would be valid (the CLI prints it and exits with status 2).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from models import SSMConfig, preset
from models.config import MODES
from models.presets import PRESETS

CONCRETE_MODES = tuple(m for m in MODES if m != "auto")  # recurrent, scan, chunked, fft, cuda, triton: what modes=all times
GPU_MODES = ("cuda", "triton")  # timed on a GPU only (on a CPU: a 'skipped' row for each point)


@dataclass(frozen=True)
class Point:
    """One point of the ablation space to time: a preset moved along some axes.

    name: the label of its rows; preset: s5 / s4d / mamba; overrides: SSMConfig fields
    (d_model and d_state default to the scale's); cfg: the validated layer config.
    """

    name: str
    preset: str
    overrides: dict[str, Any]
    cfg: SSMConfig

    @property
    def axis_overrides(self) -> dict[str, Any]:
        """The overrides that move the point away from its preset (sizes excluded)."""
        return {k: v for k, v in self.overrides.items() if k not in ("d_model", "d_state")}


@dataclass(frozen=True)
class Scale:
    """Sizes, repeat counts and limits (``conf/bench/scale/*.yaml``)."""

    d_model: int = 64
    d_state: int | None = None
    batch: tuple[int, ...] = (4,)
    lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
    repeats: int = 5
    warmup: int = 1
    budget_s: float = 15.0
    step_batch: tuple[int, ...] = (1,)
    step_tokens: int = 100
    step_warmup: int = 10
    bandwidth_mb: float = 256.0
    max_memory_fraction: float = 0.5
    job_budget_s: float | None = None  # the job's series and steps start only before this many seconds


@dataclass(frozen=True)
class BenchSettings:
    """Everything one benchmark job needs, validated."""

    points: tuple[Point, ...]
    scale: Scale
    device: str  # resolved: "cpu" or "cuda[:N]"
    threads: int | None
    modes: tuple[str, ...] | None  # None: every valid mode
    peers: bool
    step: bool
    memory: bool
    seed: int
    results_dir: str
    identity: dict[str, Any] = field(compare=False)

    def config_hash(self) -> str:
        """8 hex digits identifying the resolved configuration."""
        text = json.dumps(self.identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------- field checks
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {minimum}")
    return value


def _number(name: str, value: Any, lower: float, upper: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > lower
    if ok and upper is not None:
        ok = value <= upper
    if not ok:
        bound = f"{lower} < {name} <= {upper}" if upper is not None else f"a number > {lower}"
        raise ValueError(f"{name}={value!r} is not valid; expected {bound}")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; expected true or false")
    return value


def _int_list(name: str, value: Any, minimum: int) -> tuple[int, ...]:
    """A positive integer or a non-empty list of them -> sorted tuple without repeats."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{name}=[] is not valid; expected a non-empty list of integers >= {minimum}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f"{name}={value!r} is not valid; expected integers >= {minimum}")
    return tuple(sorted(set(items)))


def resolve_device(value: Any) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cpu'; 'cuda' / 'cuda:N' (must exist)."""
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if isinstance(value, str) and (value == "cuda" or value.startswith("cuda:")):
        if not torch.cuda.is_available():
            raise ValueError(f"device={value!r} is not valid: CUDA is not available here; expected 'auto' or 'cpu'")
        index = value.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device={value!r} is not valid; expected cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return value
    raise ValueError(f"device={value!r} is not valid; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def resolve_scale(node: Any) -> Scale:
    """The ``scale`` node -> :class:`Scale` (unknown keys are errors)."""
    if not isinstance(node, dict):
        raise ValueError(f"scale={node!r} is not valid; expected a mapping (pick one with scale=default|smoke|gpu)")
    known = set(Scale.__dataclass_fields__)
    unknown = sorted(set(node) - known)
    if unknown:
        raise ValueError(f"scale.{unknown[0]} is not a valid key; expected some of {sorted(known)}")
    values = {**asdict(Scale()), **node}
    d_state = values["d_state"]
    return Scale(
        d_model=_int("scale.d_model", values["d_model"], 1),
        d_state=None if d_state is None else _int("scale.d_state", d_state, 1),
        batch=_int_list("scale.batch", values["batch"], 1),
        lengths=_int_list("scale.lengths", values["lengths"], 2),
        repeats=_int("scale.repeats", values["repeats"], 1),
        warmup=_int("scale.warmup", values["warmup"], 0),
        budget_s=_number("scale.budget_s", values["budget_s"], 0.0),
        step_batch=_int_list("scale.step_batch", values["step_batch"], 1),
        step_tokens=_int("scale.step_tokens", values["step_tokens"], 1),
        step_warmup=_int("scale.step_warmup", values["step_warmup"], 0),
        bandwidth_mb=_number("scale.bandwidth_mb", values["bandwidth_mb"], 0.0),
        max_memory_fraction=_number("scale.max_memory_fraction", values["max_memory_fraction"], 0.0, 1.0),
        job_budget_s=(None if values["job_budget_s"] is None
                      else _number("scale.job_budget_s", values["job_budget_s"], 0.0)),
    )


def resolve_point(name: str, node: Any, scale: Scale) -> Point:
    """``points.NAME`` = {preset: ..., overrides: {...}} -> :class:`Point` with a validated config."""
    where = f"points.{name}"
    if not isinstance(node, dict):
        raise ValueError(f"{where}={node!r} is not valid; expected a mapping with 'preset' and optional 'overrides'")
    unknown = sorted(set(node) - {"preset", "overrides", "description"})
    if unknown:
        raise ValueError(f"{where}.{unknown[0]} is not a valid key; expected 'preset', 'overrides', 'description'")
    name_of_preset = node.get("preset")
    if name_of_preset not in PRESETS:
        raise ValueError(f"{where}.preset={name_of_preset!r} is not valid; expected one of {sorted(PRESETS)}")
    overrides = dict(node.get("overrides") or {})
    if "mode" in overrides:
        raise ValueError(f"{where}.overrides.mode is not valid here: the benchmark times every valid mode; "
                         "choose modes with modes=[...]")
    sizes = {"d_model": scale.d_model, **({"d_state": scale.d_state} if scale.d_state else {})}
    try:
        cfg = preset(name_of_preset, **{**sizes, **overrides})
    except TypeError as err:  # an unknown SSMConfig field
        raise ValueError(f"{where}.overrides is not valid: {err}") from None
    except ValueError as err:
        raise ValueError(f"{where}.overrides: {err}") from None
    return Point(name=str(name), preset=name_of_preset, overrides=overrides, cfg=cfg)


def resolve_modes(value: Any) -> tuple[str, ...] | None:
    """'all' -> None (every valid concrete mode); a list -> those (checked against the known modes;
    'auto' may be listed: it times the layer's own pick, named 'auto->MODE' in the rows)."""
    if value == "all":
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    bad = [m for m in items if m not in MODES]
    if not items or bad:
        raise ValueError(f"modes={value!r} is not valid; expected 'all' or a list from {list(MODES)}")
    return tuple(dict.fromkeys(items))


def resolve(plain: dict[str, Any]) -> BenchSettings:
    """Validate the composed config (a plain dict) and build :class:`BenchSettings`."""
    known = {"points", "scale", "device", "threads", "modes", "peers", "step", "memory", "seed", "results_dir"}
    unknown = sorted(set(plain) - known - {"hydra"})
    if unknown:
        raise ValueError(f"{unknown[0]} is not a valid key; expected some of {sorted(known)}")
    scale = resolve_scale(plain.get("scale"))
    points_node = plain.get("points")
    if not isinstance(points_node, dict) or not points_node:
        raise ValueError(f"points={points_node!r} is not valid; expected a non-empty mapping of name -> "
                         "{preset, overrides} (pick a set with points=presets|ablations)")
    points = tuple(resolve_point(name, node, scale) for name, node in points_node.items())
    threads = plain.get("threads")
    seed = plain.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} is not valid; expected an integer")
    results_dir = plain.get("results_dir")
    if not isinstance(results_dir, str) or not results_dir:
        raise ValueError(f"results_dir={results_dir!r} is not valid; expected a directory path")
    from ablate.config import check_writable
    check_writable(results_dir)
    settings = dict(
        points=points,
        scale=scale,
        device=resolve_device(plain.get("device", "auto")),
        threads=None if threads is None else _int("threads", threads, 1),
        modes=resolve_modes(plain.get("modes", "all")),
        peers=_bool("peers", plain.get("peers", True)),
        step=_bool("step", plain.get("step", True)),
        memory=_bool("memory", plain.get("memory", True)),
        seed=seed,
        results_dir=results_dir,
    )
    if settings["device"] == "cpu" and settings["modes"] is not None and set(settings["modes"]) <= set(GPU_MODES):
        raise ValueError(f"modes={list(settings['modes'])} is not valid on device 'cpu': {' and '.join(GPU_MODES)} "
                         f"are timed on a GPU only; expected 'all' or some of {[m for m in MODES if m not in GPU_MODES]}")
    identity = {k: v for k, v in plain.items() if k not in ("hydra", "results_dir")}
    return BenchSettings(**settings, identity=identity)
