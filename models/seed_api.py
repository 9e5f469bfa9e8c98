"""The sequence-encoder interface of the seed document, for every preset.

    enc = models.S5.build(embed_dim=287, hidden_size=256, state_size=64, num_layers=4,
                          dropout=0.1, window_size=60)
    enc(x)                      # x: (batch, seq_len, embed_dim) -> (batch, hidden_size)
    cache = enc.init_cache(batch)
    y_t, cache = enc.step(x_t, cache)   # x_t: (batch, embed_dim) -> (batch, hidden_size), O(1)

``models.S4D``, ``models.Mamba``, ``models.Mamba2``, ``models.Mamba3`` and ``models.Mamba3MIMO`` take
the same options. The output is the final
(normalised) feature of the last position; no classification head.

Options:
* ``embed_dim``: input feature size; ``hidden_size``: residual width H (the output size);
* ``state_size``: d_state in the preset's own meaning (S5: P for the one MIMO SSM;
  S4D, Mamba: N per channel);
* ``num_layers``, ``dropout``;
* ``window_size``: frames of context the encoder should integrate (60 = one second at
  60 fps). It sets the initial step sizes so the SSM timescales 1/Δ span 1..window_size
  frames: Δ log-uniform in [1/window_size, 1]. Inputs of any length are accepted.
"""

from __future__ import annotations

import re
from typing import Any

from .backbone import Backbone
from .config import IOSpec, ModelConfig
from .presets import model_preset
from .sizing import param_count as _param_count

OPTIONS = ("embed_dim", "hidden_size", "state_size", "num_layers", "dropout", "window_size")
# the config field each option sets, for refusals that name the option the user gave
FIELD_OPTIONS = {"d_input": "embed_dim", "d_model": "hidden_size", "d_state": "state_size", "n_layers": "num_layers"}


class SequenceEncoder(Backbone):
    """A Backbone that reads (batch, seq_len, embed_dim) and returns (batch, hidden_size)."""

    def init_cache(self, batch: int) -> dict:
        """Zero recurrent state for :meth:`step` (per layer: SSM state, conv window)."""
        return self.init_state(batch)


class _PresetEncoder:
    preset: str = ""
    defaults: dict[str, Any] = {}

    @classmethod
    def recommended_defaults(cls) -> dict[str, Any]:
        """Options sized for real-time sequence processing at 60 fps on a laptop CPU: a
        one-second window, and a per-frame ``step`` far inside the 16.7 ms frame budget
        (measured by ``python -m models.bench``). ``embed_dim`` is the seed document's
        feature size; replace it by your data's."""
        return dict(cls.defaults)

    @classmethod
    def _options(cls, opts: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; expected some of {list(OPTIONS)}")
        merged = {**cls.defaults, **opts}
        window = merged["window_size"]
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window_size={window!r} is not valid; expected an integer >= 1")
        return merged

    @classmethod
    def config(cls, **opts: Any) -> tuple[ModelConfig, IOSpec]:
        o = cls._options(opts)
        try:
            cfg = model_preset(cls.preset, n_layers=o["num_layers"], dropout=o["dropout"], d_model=o["hidden_size"],
                               d_state=o["state_size"], dt_min=1.0 / o["window_size"], dt_max=1.0)
            return cfg, IOSpec(d_input=o["embed_dim"], d_output=None, readout="last")
        except ValueError as err:  # name the options, not the config fields they set
            message = re.sub(r"\b(\w+)=", lambda m: f"{FIELD_OPTIONS.get(m.group(1), m.group(1))}=", str(err))
            raise ValueError(message) from err

    @classmethod
    def build(cls, **opts: Any) -> SequenceEncoder:
        """The encoder module (float32, on the CPU)."""
        return SequenceEncoder(*cls.config(**opts))

    @classmethod
    def output_size(cls, **opts: Any) -> int:
        return cls._options(opts)["hidden_size"]

    @classmethod
    def param_count(cls, **opts: Any) -> int:
        return _param_count(*cls.config(**opts))


_REALTIME = dict(embed_dim=287, hidden_size=256, num_layers=4, dropout=0.1, window_size=60)


class S5(_PresetEncoder):
    preset = "s5"
    defaults = {**_REALTIME, "state_size": 64}


class S4D(_PresetEncoder):
    preset = "s4d"
    defaults = {**_REALTIME, "state_size": 64}


class Mamba(_PresetEncoder):
    preset = "mamba"
    defaults = {**_REALTIME, "hidden_size": 128, "state_size": 16}


class Mamba2(_PresetEncoder):
    preset = "mamba2"
    defaults = {**_REALTIME, "hidden_size": 128, "state_size": 16}


class Mamba3(_PresetEncoder):
    preset = "mamba3"
    defaults = {**_REALTIME, "hidden_size": 128, "state_size": 16}


class Mamba3MIMO(_PresetEncoder):
    preset = "mamba3_mimo"
    defaults = {**_REALTIME, "hidden_size": 128, "state_size": 16}
