"""Property-based tests of config validation: any combination of values either builds a layer
that runs forward and backward, or fails up front with a ValueError that names the field."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import SSMConfig, SSMLayer
from models.config import C_INITS, DISCRETIZATIONS, GATES, INITS, MODES, SKIP_INITS, STRUCTURES

FIELDS = {f.name for f in dataclasses.fields(SSMConfig)}

values = {
    "d_model": st.one_of(st.integers(-2, 8), st.just("4"), st.just(2.5)),
    "d_state": st.one_of(st.integers(-1, 8), st.just(None)),
    "structure": st.sampled_from([*STRUCTURES, "grouped", ""]),
    "groups": st.one_of(st.none(), st.integers(-1, 8)),
    "selective": st.one_of(st.sampled_from(["", "none", "dt", "B", "C", "dt,B,C", "B,C", "dt,A", "x"]),
                           st.lists(st.sampled_from(["dt", "B", "C", "D"]), max_size=3)),
    "gate": st.sampled_from([*GATES, "relu"]),
    "conv": st.integers(-1, 4),
    "expand": st.integers(-1, 2),
    "init": st.sampled_from([*INITS, "legs"]),
    "discretization": st.sampled_from([*DISCRETIZATIONS, "euler"]),
    "complex": st.booleans(),
    "conj_sym": st.booleans(),
    "bidirectional": st.booleans(),
    "blocks": st.integers(0, 3),
    "dt_min": st.sampled_from([1e-3, 0.0, -1.0, 0.5]),
    "c_init": st.sampled_from([*C_INITS, "zeros"]),
    "skip_init": st.sampled_from([*SKIP_INITS, "two"]),
    "mode": st.sampled_from([m for m in MODES if m != "cuda"] + ["gpu"]),
    "chunk_size": st.one_of(st.none(), st.integers(-1, 5)),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=values))
def test_random_configs_build_and_run_or_fail_clearly(overrides: dict) -> None:
    try:
        cfg = SSMConfig(**overrides)
    except ValueError as err:
        message = str(err)
        assert any(name in message for name in FIELDS | {"selective entry"}), message
        assert "\n" not in message
        return
    except TypeError as err:  # e.g. "4" > 0 on a string: must not happen, validation comes first
        raise AssertionError(f"{overrides} raised TypeError instead of a clear ValueError: {err}") from err
    layer = SSMLayer(cfg).double()
    u = torch.randn(2, 5, cfg.d_model, dtype=torch.float64, requires_grad=True)
    y = layer(u)
    assert y.shape == u.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(u.grad).all()
