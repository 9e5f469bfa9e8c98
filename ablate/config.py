"""Typed configuration of one run, and its validation before any training starts.

The Hydra schemas type the ``model`` and ``trainer`` nodes. The model's layer schema is
derived from :class:`models.SSMConfig` field by field, so the two cannot drift apart.
:func:`resolve` turns a composed config into validated objects (``models.ModelConfig``, the
task, ``TrainerConfig``), raising ``ValueError`` with a one-line message that names the bad
value and what would be valid.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import os
import shutil
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from models import (IOSpec, ModelConfig, SSMConfig, flops_per_token, match_param_count, match_state_size,
                    model_preset, param_count, state_size)
from models.config import NORMS
from models.sizing import build_on_meta

from . import tasks
from .results import identity_columns

PRECISIONS = ("auto", "fp32", "bf16")
BUDGETS = ("steps", "tokens", "flops", "time")
MATCH_BY = ("none", "state_size", "param_count")
# The run's seed is spread into generator seeds of about 1_000_003 x seed (each split of the task,
# ablate.tasks.base; the batch order, ablate.trainer), which torch takes within 64 bits only.
SEED_LIMIT = 2**40


def _omegaconf_type(hint: Any) -> Any:
    """``int | None`` -> ``Optional[int]``; anything OmegaConf cannot type -> ``Any``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return Optional[args[0]] if len(args) == 1 and args[0] in (int, float, str, bool) else Any
    return hint if hint in (int, float, str, bool) else Any


def _schema_from(cls: type, name: str) -> type:
    """A Hydra structured-config dataclass with the fields and defaults of ``cls``."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        default = f.default
        if isinstance(default, tuple):
            specs.append((f.name, Any, field(default_factory=lambda d=default: list(d))))
        else:
            specs.append((f.name, _omegaconf_type(hints[f.name]), field(default=default)))
    return dataclasses.make_dataclass(name, specs)


LayerSchema = _schema_from(SSMConfig, "LayerSchema")


@dataclass
class MatchSchema:
    """Resize the model so it matches a reference in total state size or parameter count.

    ``reference``: a preset (s5 / s4d / mamba) built at the same d_model, n_layers and
    ``reference_d_state`` (default: the model's own d_state), and with the model's own norm and
    MLP (``ffn_expand``): a Mamba run (RMSNorm) of ``+experiment=presets`` is matched to S4D with
    RMSNorm, 13,034 parameters on sdigits, where the S4D row beside it has LayerNorm's 13,130.
    ``field``: what to resize.
    """

    by: str = "none"
    reference: str = "s4d"
    reference_d_state: Optional[int] = None
    field: str = "d_state"


@dataclass
class ModelSchema:
    preset: str = "s4d"
    n_layers: int = 2
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    ffn_expand: int = 0
    ffn_width: Optional[int] = None
    ssm: LayerSchema = field(default_factory=LayerSchema)
    match: MatchSchema = field(default_factory=MatchSchema)


@dataclass
class TrainerConfig:
    """The shared trainer (see ablate.trainer). Defaults run on a laptop CPU."""

    max_steps: int = 300
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 3e-3
    ssm_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    grad_clip: float = 1.0
    eval_every: int = 100
    time_budget_s: Optional[float] = None
    device: str = "auto"
    threads: Optional[int] = None
    precision: str = "auto"
    compile: bool = False
    checkpoint: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {"max_steps": self.max_steps, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size, "eval_every": self.eval_every}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"trainer.{name}={value!r} is not valid; expected an integer >= 1")
        for name in ("lr", "ssm_lr"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"trainer.{name}={value!r} is not valid; expected a learning rate > 0")
        for name in ("weight_decay", "warmup_steps", "grad_clip"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"trainer.{name}={value!r} is not valid; expected a value >= 0")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"trainer.time_budget_s={self.time_budget_s!r} is not valid; expected > 0 or null")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"trainer.threads={self.threads!r} is not valid; expected an integer >= 1 or null")
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r} is not valid; expected one of {list(PRECISIONS)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"trainer.device={self.device!r} is not valid; expected 'auto', 'cpu' or 'cuda[:N]'")


def register() -> None:
    """Type the ``model`` and ``trainer`` nodes (conf/config.yaml lists them in its defaults).

    The root stays open, so run flags such as ``+rerun=true`` can be added on the command line.
    """
    store = ConfigStore.instance()
    store.store(group="schema", name="model", node=ModelSchema)
    store.store(group="schema", name="trainer", node=TrainerConfig)


@dataclass
class ResolvedRun:
    """Everything a run needs, validated."""

    experiment: str
    seed: int
    results_dir: str
    rerun: bool
    model: ModelConfig
    preset: str
    task: tasks.Task
    task_cfg: dict
    trainer: TrainerConfig
    match: dict
    budget: dict  # what every run of the comparison gets equally, and how much
    tuned: list  # config keys tuned over (selection on validation happens in analysis)
    identity: dict  # what the run id hashes: the resolved configuration and seed

    def flops_per_token(self) -> float:
        """The forward FLOPs per token a run row records: :func:`models.flops_per_token` of the
        model at the task's length and the trainer's batch."""
        spec = self.task.spec
        return flops_per_token(self.model, spec.io, length=spec.length, batch=self.trainer.batch_size)


def cost_per_token(kind: str, model: ModelConfig, spec, batch: int) -> Callable[[int], float]:
    """What a budget of ``kind`` counts per training position at a sequence length: 1 for
    tokens, 3 × the forward FLOPs per token for flops (forward + backward ≈ 3× forward; counted
    once per length)."""
    if kind == "tokens":
        return lambda length: 1.0
    return functools.lru_cache(maxsize=None)(lambda length: 3 * flops_per_token(model, spec.io, length=length,
                                                                                batch=batch))


def training_cost(task, steps: int, batch: int, per_token: Callable[[int], float]) -> float:
    """What a run of ``steps`` steps of ``batch`` sequences costs: per curriculum stage, its
    steps × batch × the stage's length × ``per_token(length)`` (:func:`cost_per_token`). A
    stage's first step is found from ``task.train_stage`` by bisection."""
    bounds = [bisect.bisect_left(range(steps), stage, key=lambda step: task.train_stage(step, steps)[0])
              for stage in range(task.train_stages)] + [steps]
    return sum((bounds[k + 1] - bounds[k]) * batch * task.train_length(k) * per_token(task.train_length(k))
               for k in range(task.train_stages))


def apply_budget(trainer: TrainerConfig, budget: dict, model: ModelConfig, task) -> dict:
    """Turn ``budget`` (kind, value) into the trainer's stopping rule; returns the record.

    steps: ``max_steps = value``; tokens and flops: the fewest steps whose training positions
    (batch × each curriculum stage's length) reach ``value``, at :func:`cost_per_token` each
    (:func:`training_cost`); time: ``time_budget_s = value`` (max_steps stays an upper bound).
    A null value keeps the trainer's own max_steps / time_budget_s; a ``trainer.time_budget_s``
    then makes it a time budget (recorded as such), and beside a steps/tokens/flops value it is
    refused (the runs would stop on whichever came first).
    """
    kind, value = budget.get("kind", "steps"), budget.get("value")
    if kind not in BUDGETS:
        raise ValueError(f"budget.kind={kind!r} is not valid; expected one of {list(BUDGETS)}")
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"budget.value={value!r} is not valid; expected a number > 0 or null")
    if kind == "steps" and value is not None and value != int(value):
        raise ValueError(f"budget.value={value!r} is not valid for budget.kind=steps; expected a whole number of "
                         "steps >= 1 or null")
    if kind != "time" and trainer.time_budget_s is not None:
        # the trainer's own time limit stops the runs too: a steps/tokens/flops budget would be
        # recorded (and captioned) as held equal while the runs stop on time
        if value is not None:
            raise ValueError(f"trainer.time_budget_s={trainer.time_budget_s!r} is not valid with budget.kind={kind} "
                             f"and budget.value={value!r}: runs would stop at whichever comes first; expected "
                             "trainer.time_budget_s=null, or budget.kind=time")
        kind = "time"  # budget.value null: the trainer's time limit is the budget (max_steps an upper bound)
    if value is not None:
        if kind == "steps":
            trainer.max_steps = int(value)
        elif kind in ("tokens", "flops"):
            batch = trainer.batch_size
            per_token = cost_per_token(kind, model, task.spec, batch)
            cheapest = min(task.train_length(k) * per_token(task.train_length(k)) for k in range(task.train_stages))
            most = max(1, math.ceil(value / (batch * cheapest)))  # enough steps: none costs less than cheapest
            trainer.max_steps = 1 + bisect.bisect_left(range(1, most + 1), value,
                                                       key=lambda steps: training_cost(task, steps, batch, per_token))
        else:
            trainer.time_budget_s = float(value)
    if kind == "time":
        value = trainer.time_budget_s
    elif value is None:
        value = trainer.max_steps if kind == "steps" else None
    return {"budget_kind": kind, "budget_value": value}


def _build_model_config(model: dict, spec: IOSpec) -> tuple[ModelConfig, dict]:
    """ModelConfig from the composed model node, resized when ``match.by`` asks for it."""
    match = dict(model.pop("match"))
    preset = model.pop("preset")  # a label of the run, not a ModelConfig field
    try:
        model["ssm"] = SSMConfig(**model["ssm"])
    except ValueError as err:
        raise ValueError(f"model.ssm.{err}") from None
    try:
        cfg = ModelConfig(**model)
    except ValueError as err:
        raise ValueError(f"model.{err}") from None
    if match["by"] not in MATCH_BY:
        raise ValueError(f"model.match.by={match['by']!r} is not valid; expected one of {list(MATCH_BY)}")
    if match["by"] == "none":
        return cfg, {"match_by": "none", "match_target": None}
    ref_state = match["reference_d_state"] or cfg.ssm.d_state
    reference = model_preset(match["reference"], n_layers=cfg.n_layers, d_model=cfg.d_model, d_state=ref_state,
                             norm=cfg.norm, ffn_expand=cfg.ffn_expand)
    if match["by"] == "state_size":
        target = state_size(reference)
        if match["field"] != "d_state":
            raise ValueError(f"model.match.field={match['field']!r} is not valid for state_size; expected 'd_state'")
        resized = dataclasses.replace(cfg, ssm=match_state_size(cfg.ssm, target // cfg.n_layers))
    else:
        target = param_count(reference, spec)
        resized = match_param_count(cfg, target, field=match["field"], spec=spec)
    if preset == match["reference"] and resized == cfg:  # the reference itself: one run, whatever match.by
        return cfg, {"match_by": "none", "match_target": None}
    return resized, {"match_by": match["by"], "match_reference": match["reference"], "match_target": target}


def check_writable(results_dir: str, min_free_mb: float = 50.0) -> None:
    """Fail before training when results cannot be written: not a directory, not writable,
    or less than ``min_free_mb`` free."""
    path = os.path.abspath(results_dir)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"results_dir={results_dir!r} is not valid: {probe} is not a directory")
    if not os.access(probe, os.W_OK):
        raise ValueError(f"results_dir={results_dir!r} is not writable")
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < min_free_mb:
        raise ValueError(f"results_dir={results_dir!r} has {free_mb:.0f} MB free; at least {min_free_mb:.0f} MB needed")


def check_device(trainer: TrainerConfig, ssm: SSMConfig) -> None:
    """The trainer's device exists here and the layer's compute mode runs on it: the same
    checks the trainer and the layer make, made before any training."""
    from .trainer import resolve_device  # imported here: ablate.trainer imports this module

    device = resolve_device(trainer.device)
    if trainer.precision == "bf16" and device.type != "cuda":
        raise ValueError(f"trainer.precision='bf16' is not valid on device {device.type} (bf16 autocast runs on a "
                         "GPU only); expected 'auto' or 'fp32'")
    try:
        build_on_meta(ssm).resolve_mode(device)
    except ValueError as err:
        raise ValueError(f"model.ssm.{err}") from None


def check_tuned(tuned: list, identity: dict[str, Any]) -> None:
    """Every tuned key must name a recorded config value (a column of the run's row), or the
    analysis would have nothing to select over."""
    keys = identity_columns(identity)
    tunable = sorted(k for k in keys if k.startswith(("trainer.", "model.", "task.")))
    for key in tuned:
        if key not in keys:
            near = [k for k in tunable if k.startswith("trainer.")]
            raise ValueError(f"tuned entry {key!r} is not a config key of the run; expected keys such as "
                             f"{near} (any of {len(tunable)} model./task./trainer. keys)")


def resolve(cfg: DictConfig) -> ResolvedRun:
    """Validate a composed config and build the task and model configuration.

    Raises ValueError (or FileNotFoundError for missing data) naming the bad value.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    seed = plain.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not -SEED_LIMIT <= seed <= SEED_LIMIT:
        raise ValueError(f"seed={seed!r} is not valid; expected an integer from {-SEED_LIMIT} to {SEED_LIMIT}")
    trainer = TrainerConfig(**plain["trainer"])
    model_node = dict(plain["model"])
    if model_node.get("norm") not in NORMS:
        raise ValueError(f"model.norm={model_node.get('norm')!r} is not valid; expected one of {list(NORMS)}")
    task = tasks.build(plain["task"], data_seed=plain["seed"])
    model_cfg, match = _build_model_config(model_node, task.spec.io)
    if model_cfg.ssm.bidirectional and task.spec.causal:
        raise ValueError(f"model.ssm.bidirectional=True is not valid for the causal task {task.spec.name!r}; "
                         "expected bidirectional=False")
    check_device(trainer, model_cfg.ssm)
    budget = apply_budget(trainer, dict(plain.get("budget") or {}), model_cfg, task)
    tuned = list(plain.get("tuned") or [])
    check_writable(plain["results_dir"])
    identity = {
        "model": {"preset": plain["model"]["preset"], **model_cfg.identity()},
        "task": plain["task"],
        "trainer": {k: v for k, v in dataclasses.asdict(trainer).items() if k not in ("progress", "checkpoint", "threads")},
        "seed": plain["seed"],
        "match": match,
    }
    check_tuned(tuned, identity)
    if tuned and task.val_is_test:
        raise ValueError(f"tuned={tuned!r} is not valid for this task ({task.spec.name}): its validation split is "
                         "its test split, so selecting on validation would select on test; expected tuned=[] (or a "
                         "task with its own validation split)")
    return ResolvedRun(experiment=plain["experiment"], seed=plain["seed"], results_dir=plain["results_dir"],
                       rerun=bool(plain.get("rerun", False)), model=model_cfg, preset=plain["model"]["preset"], task=task,
                       task_cfg=plain["task"], trainer=trainer, match=match, budget=budget, tuned=tuned,
                       identity=identity)
