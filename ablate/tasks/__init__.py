"""Tasks: synthetic generators and data-set readers behind one interface (:mod:`.base`)."""

from __future__ import annotations

from typing import Any

from .base import IGNORE, Batch, Split, Task, TaskSpec, config_from_dict
from .adding import Adding
from .copying import Copying
from .induction_heads import InductionHeads
from .listops import ListOps
from .lra import LRA
from .modular_arithmetic import ModularArithmetic
from .mqar import MQAR
from .parity import Parity
from .pathfinder import Pathfinder
from .sdigits import SDigits
from .selective_copying import SelectiveCopying

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (SDigits, SelectiveCopying, InductionHeads, MQAR, Copying, Adding, ListOps, Pathfinder, LRA,
                Parity, ModularArithmetic)
}


def build(cfg: dict[str, Any], data_seed: int = 0) -> Task:
    """The task named by ``cfg['name']``, configured by the other keys of ``cfg``."""
    values = dict(cfg)
    name = values.pop("name", None)
    if name not in TASKS:
        raise ValueError(f"task name={name!r} is not valid; expected one of {sorted(TASKS)}")
    cls = TASKS[name]
    return cls(config_from_dict(cls.Config, values, name), data_seed=data_seed)


__all__ = ["IGNORE", "Batch", "Split", "Task", "TaskSpec", "TASKS", "build"]
