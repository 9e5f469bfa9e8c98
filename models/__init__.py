"""The model zoo: one SSM layer whose configuration spans S5, S4D, Mamba and the points between.

Pure PyTorch; importable without Hydra or the experiment app.
"""

from .backbone import Backbone, Block, resolved_mode
from .config import IOSpec, ModelConfig, SSMConfig
from .layer import SSMLayer
from .official import load_official
from .presets import PRESETS, model_preset, preset
from .seed_api import S4D, S5, Mamba, Mamba2, Mamba3, Mamba3MIMO, SequenceEncoder
from .sizing import flops_per_token, match_param_count, match_state_size, param_count, state_size


def build(cfg: ModelConfig | dict, spec: IOSpec | dict) -> Backbone:
    """The model for a config and a task's input/output spec."""
    if isinstance(cfg, dict):
        cfg = ModelConfig(**cfg)
    if isinstance(spec, dict):
        spec = IOSpec(**spec)
    return Backbone(cfg, spec)


__all__ = [
    "Backbone", "Block", "IOSpec", "ModelConfig", "SSMConfig", "SSMLayer", "load_official", "PRESETS", "model_preset", "preset",
    "S4D", "S5", "Mamba", "Mamba2", "Mamba3", "Mamba3MIMO", "SequenceEncoder", "flops_per_token", "match_param_count", "match_state_size",
    "param_count", "resolved_mode", "state_size", "build",
]
