"""Shared helpers for the tests (tiny sizes, float64 where exactness is checked)."""

from __future__ import annotations

import copy
import importlib.util
import sys
import types

import torch

from models import SSMConfig, SSMLayer, triton_scan


def randomize_(module: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Move every parameter away from its initial value (tests must not rely on init structure)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def assert_same_function(ours: torch.Tensor, expected: torch.Tensor, inputs: dict[str, torch.Tensor],
                         tolerance: float, weights: torch.Tensor | None = None) -> None:
    """Two outputs of the same inputs agree, and so do the gradients of a random weighted sum
    of them with respect to every named input (the layer input and the official parameters)."""
    assert relative_error(ours, expected) < tolerance
    weights = torch.randn_like(expected) if weights is None else weights
    names, tensors = list(inputs), list(inputs.values())
    g_ours = torch.autograd.grad((ours * weights).sum(), tensors)
    g_expected = torch.autograd.grad((expected * weights).sum(), tensors)
    for name, a, b in zip(names, g_ours, g_expected):
        assert relative_error(a, b) < tolerance, name


def triton_device() -> str | None:
    """Where these tests run mode ``triton``: ``cpu`` under the interpreter (conftest.py sets it
    without a GPU), ``cuda`` natively on a GPU machine, None when neither can."""
    if triton_scan.runs_on("cpu"):
        return "cpu"
    if torch.cuda.is_available() and triton_scan.runs_on("cuda"):
        return "cuda"
    return None


def mamba3_class() -> type | None:
    """mamba-ssm's Mamba3 (importable without its CUDA build through a stand-in module), or None
    when mamba-ssm is not installed."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    from mamba_ssm.modules.mamba3 import Mamba3
    return Mamba3


def valid_modes(cfg: SSMConfig) -> list[str]:
    """The modes that can run this config, ``recurrent`` first; every mode runs on the CPU but
    ``triton``, which runs where :func:`triton_device` says (its results come back to the CPU)."""
    return (["recurrent", "scan", "chunked"] + (["fft"] if cfg.supports_fft else [])
            + (["triton"] if triton_device() and cfg.supports_triton else []))


def stepped_outputs(layer: SSMLayer, u: torch.Tensor) -> torch.Tensor:
    """The layer's step() over u (B, L, H) token by token from its initial state: (B, L, H)."""
    with torch.no_grad():
        state = layer.init_state(u.shape[0])
        steps = []
        for t in range(u.shape[1]):
            y_t, state = layer.step(u[:, t], state)
            steps.append(y_t)
    return torch.stack(steps, 1)


def outputs_and_grads(layer: SSMLayer, u: torch.Tensor, mode: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y and the gradients of a fixed random projection of y w.r.t. u and every parameter.
    Mode ``triton`` on a GPU machine runs a copy of the layer on CUDA; results come back to u's device."""
    layer.cfg.mode = mode
    if mode == "triton" and triton_device() == "cuda" and u.device.type != "cuda":
        y, grads = outputs_and_grads(copy.deepcopy(layer).cuda(), u.cuda(), mode)
        return y.to(u.device), [g.to(u.device) for g in grads]
    u = u.detach().requires_grad_(True)
    y = layer(u)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype).to(y.device)
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad((y * weights).sum(), [u, *params], allow_unused=True)
    return y.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, [u, *params])]
