"""models.load_official: our layers and models built from the official codes' parameters
compute what the official modules compute.

Each test writes parameters in the official layout (names, shapes, dtypes as the official
module holds them; random values), converts them and compares our output with the official
equations evaluated step by step in float64 here (independent of models/: no shared code),
to ~1e-12. For Mamba the official module itself (mamba-ssm on its reference path, see
models.peers.mamba_reference) is compared too, at its own precision: its reference scan runs
in float32 even in a float64 module. For Mamba2 the official module is the oracle (mamba-ssm's
Mamba2 on its PyTorch references, models.peers.mamba2_reference: float64 throughout in a
float64 module). state-spaces/s4 and lindermanlab/S5 (JAX) are not
installed; their equations are written out below from s4d.py and s5/ssm.py, s5/layers.py,
s5/seq_model.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import models.official as official
from models import load_official
from models.peers import mamba2_reference, mamba_reference

from helpers import randomize_

F64 = torch.float64


def _gelu(x: np.ndarray, tanh: bool) -> np.ndarray:
    if tanh:  # flax.linen.gelu (approximate=True, its default)
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(x))


def _silu(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _max_diff(ours: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(ours.detach().numpy() - expected).max())


# ============================================================================ S4D
def s4d_state_dict(H: int = 4, N: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Parameters of state-spaces/s4's minimal S4D(d_model=H, d_state=N), official names and shapes."""
    g = torch.Generator().manual_seed(seed)
    n = N // 2
    return {"D": torch.randn(H, generator=g, dtype=F64),
            "kernel.log_dt": math.log(1e-3) + torch.rand(H, generator=g, dtype=F64) * math.log(100),
            "kernel.C": torch.randn(H, n, 2, generator=g, dtype=F64),
            "kernel.log_A_real": torch.log(0.5 + torch.rand(H, n, generator=g, dtype=F64)),
            "kernel.A_imag": math.pi * torch.arange(n, dtype=F64).expand(H, n) + torch.randn(H, n, generator=g, dtype=F64),
            "output_linear.0.weight": torch.randn(2 * H, H, 1, generator=g, dtype=F64) / math.sqrt(H),
            "output_linear.0.bias": torch.randn(2 * H, generator=g, dtype=F64)}


def s4d_official(sd: dict[str, torch.Tensor], u: np.ndarray) -> np.ndarray:
    """s4d.py's S4D forward, u (B, L, H): kernel K[h, l] = 2 Re Σ_n C (exp(dtA) - 1)/A exp(dtA l),
    y = causal conv(u, K) + D u, GELU (exact), Conv1d(H, 2H, 1), GLU over channels."""
    p = {k: v.numpy() for k, v in sd.items()}
    dt = np.exp(p["kernel.log_dt"])
    A = -np.exp(p["kernel.log_A_real"]) + 1j * p["kernel.A_imag"]
    C = p["kernel.C"][..., 0] + 1j * p["kernel.C"][..., 1]
    batch, L, H = u.shape
    dtA = A * dt[:, None]
    K = np.stack([2 * (C * (np.exp(dtA) - 1) / A * np.exp(dtA * l)).sum(-1).real for l in range(L)], -1)  # (H, L)
    y = np.zeros_like(u)
    for t in range(L):
        for s in range(t + 1):
            y[:, t] += K[:, t - s] * u[:, s]
    y = _gelu(y + p["D"] * u, tanh=False)
    out = y @ p["output_linear.0.weight"][..., 0].T + p["output_linear.0.bias"]
    return out[..., :H] * _sigmoid(out[..., H:])


def test_s4d_from_official_state_dict(tmp_path) -> None:
    sd = s4d_state_dict()
    u = np.random.default_rng(1).standard_normal((2, 23, 4))
    expected = s4d_official(sd, u)
    layer = load_official("s4d", sd)
    assert layer.A_imag.dtype == F64  # the source's dtype
    for mode in ("fft", "recurrent", "scan", "chunked"):
        layer.cfg.mode = mode
        assert _max_diff(layer(torch.from_numpy(u)), expected) < 1e-12, mode
    # inside a larger model's state_dict, saved to a file
    torch.save({f"model.layers.0.layer.{k}": v for k, v in sd.items()}, tmp_path / "s4.pt")
    nested = load_official("s4d", tmp_path / "s4.pt", prefix="model.layers.0.layer.")
    assert _max_diff(nested(torch.from_numpy(u)), expected) < 1e-12


# ============================================================================ Mamba
@pytest.fixture(scope="module")
def reference():
    found = mamba_reference()
    assert found is not None, "mamba-ssm is not installed: run `make test` (it installs mamba-ssm 2.3.2.post1)"
    return found


def official_mamba(reference, d_model: int = 16, d_state: int = 8, seed: int = 0) -> torch.nn.Module:
    Mamba, _ = reference
    torch.manual_seed(seed)
    module = Mamba(d_model=d_model, d_state=d_state, d_conv=4, expand=2, use_fast_path=False, layer_idx=0).to(F64)
    return randomize_(module, scale=0.1, seed=seed)


def mamba_official(p: dict[str, np.ndarray], u: np.ndarray) -> np.ndarray:
    """mamba_simple.Mamba's forward in float64, token by token. u: (B, L, H)."""
    D = p["D"].shape[0]
    N = p["A_log"].shape[1]
    R = p["dt_proj.weight"].shape[1]
    k = p["conv1d.weight"].shape[-1]
    x, z = np.split(u @ p["in_proj.weight"].T, 2, axis=-1)
    batch, L, _ = x.shape
    padded = np.concatenate([np.zeros((batch, k - 1, D)), x], 1)
    w = p["conv1d.weight"][:, 0]  # (D, k): the last tap multiplies the current token
    x = _silu(np.stack([(padded[:, t:t + k] * w.T).sum(1) for t in range(L)], 1) + p["conv1d.bias"])
    dt_low, B, C = np.split(x @ p["x_proj.weight"].T, [R, R + N], axis=-1)
    delta = _softplus(dt_low @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # (B, L, D)
    A = -np.exp(p["A_log"])  # (D, N)
    h = np.zeros((batch, D, N))
    ys = []
    for t in range(L):
        h = np.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + p["D"] * x[:, t])
    y = np.stack(ys, 1) * _silu(z)
    return y @ p["out_proj.weight"].T


def test_mamba_from_official_state_dict(reference) -> None:
    theirs = official_mamba(reference)
    sd = theirs.state_dict()
    u = torch.randn(2, 19, 16, dtype=F64)
    expected = mamba_official({k: v.numpy() for k, v in sd.items()}, u.numpy())
    layer = load_official("mamba", sd)
    for mode in ("recurrent", "scan", "chunked"):
        layer.cfg.mode = mode
        assert _max_diff(layer(u), expected) < 1e-12, mode
    with torch.no_grad():  # the official module: its reference scan is float32 inside
        torch.testing.assert_close(layer(u), theirs(u), rtol=1e-5, atol=1e-6)


def test_mamba_prefill_state_equals_official_inference_cache(reference) -> None:
    """mamba-ssm's own prefill (forward with inference_params fills the conv and ssm caches)
    and ours leave the same state; stepping on from it gives the official step's outputs."""
    from mamba_ssm.utils.generation import InferenceParams
    theirs = official_mamba(reference)
    layer = load_official("mamba", theirs.state_dict())
    u = torch.randn(3, 9, 16, dtype=F64)
    params = InferenceParams(max_seqlen=16, max_batch_size=3)
    with torch.no_grad():
        y_theirs = theirs(u, inference_params=params)
        y_ours, state = layer(u, return_state=True)
        conv_state, ssm_state = params.key_value_memory_dict[theirs.layer_idx]
        torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state["conv"], conv_state, rtol=0, atol=1e-14)
        torch.testing.assert_close(state["h"], ssm_state, rtol=1e-5, atol=1e-6)
        for t in range(3):
            u_t = torch.randn(3, 16, dtype=F64)
            y_t, state = layer.step(u_t, state)
            y_ref, conv_state, ssm_state = theirs.step(u_t[:, None], conv_state, ssm_state)
            torch.testing.assert_close(y_t, y_ref[:, 0], rtol=1e-5, atol=1e-6)


# ============================================================================ MambaLMHeadModel
def official_mamba_lm(reference, monkeypatch, d_model: int = 16, n_layer: int = 2, vocab_size: int = 64):
    """mamba-ssm's MambaLMHeadModel (Mamba1 mixers, RMSNorm, fused_add_norm off) on the CPU:
    its blocks take the reference Mamba class (``mixer_seq_simple.Mamba`` patched while the
    model is built), and its Triton RMSNorm runs mamba-ssm's PyTorch ``rms_norm_ref`` (the
    module's forward patched for the test)."""
    from mamba_ssm.models import mixer_seq_simple
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.ops.triton import layer_norm

    ReferenceMamba, _ = reference

    def rms_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        assert residual is None and not prenorm  # fused_add_norm=False: the plain norm
        return layer_norm.rms_norm_ref(x, self.weight, self.bias, eps=self.eps)

    monkeypatch.setattr(layer_norm.RMSNorm, "forward", rms_forward)
    monkeypatch.setattr(mixer_seq_simple, "Mamba", ReferenceMamba)
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, ssm_cfg={"layer": "Mamba1", "d_state": 8},
                         rms_norm=True, fused_add_norm=False, residual_in_fp32=True, pad_vocab_size_multiple=8)
    torch.manual_seed(0)
    model = mixer_seq_simple.MambaLMHeadModel(config).to(F64)
    assert all(type(block.mixer) is ReferenceMamba for block in model.backbone.layers)
    return randomize_(model, scale=0.1, seed=2).eval()


def mamba_lm_official(sd: dict[str, torch.Tensor], n_layer: int, tokens: np.ndarray) -> np.ndarray:
    """MambaLMHeadModel's forward in float64: residual += mixer(RMSNorm(residual)) per block,
    then norm_f and the tied lm_head."""
    p = {k: v.numpy() for k, v in sd.items()}

    def rms(x, w):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * w

    h = p["backbone.embedding.weight"][tokens]
    for i in range(n_layer):
        mixer = {k.split(".mixer.")[1]: v for k, v in p.items() if k.startswith(f"backbone.layers.{i}.mixer.")}
        h = h + mamba_official(mixer, rms(h, p[f"backbone.layers.{i}.norm.weight"]))
    return rms(h, p["backbone.norm_f.weight"]) @ p["lm_head.weight"].T


def test_mamba_lm_from_checkpoint_directory(reference, monkeypatch, tmp_path) -> None:
    theirs = official_mamba_lm(reference, monkeypatch)
    theirs.save_pretrained(str(tmp_path))  # config.json + pytorch_model.bin
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]
    ours = load_official("mamba_lm", tmp_path)
    assert ours.head.weight is ours.encoder.weight and ours.head.bias is None  # tied, bias-free, as lm_head
    tokens = torch.randint(0, 64, (2, 13))
    expected = mamba_lm_official(theirs.state_dict(), 2, tokens.numpy())
    with torch.no_grad():
        for mode in ("recurrent", "scan", "chunked"):
            for block in ours.blocks:
                block.mixer.cfg.mode = mode
            assert _max_diff(ours(tokens), expected) < 1e-12, mode
        torch.testing.assert_close(ours(tokens), theirs(tokens).logits, rtol=1e-5, atol=1e-6)
        # generation: prefill 8 tokens, step the rest; the logits of a full forward
        logits, state = ours(tokens[:, :8], return_state=True)
        assert _max_diff(logits, expected[:, :8]) < 1e-12
        for t in range(8, 13):
            step_logits, state = ours.step(tokens[:, t], state)
            assert _max_diff(step_logits, expected[:, t]) < 1e-12, t


# ============================================================================ Mamba2
@pytest.fixture(scope="module")
def reference2():
    found = mamba2_reference()
    assert found is not None, "mamba-ssm is not installed: run `make test` (it installs mamba-ssm 2.3.2.post1)"
    return found


def official_mamba2(Mamba2, ngroups: int = 1, seed: int = 0, **kwargs) -> torch.nn.Module:
    """mamba-ssm's Mamba2 (tiny: d_model 16, headdim 8 -> 4 heads, d_state 8; chunk 8 so the
    lengths used here span several chunks and a padded last one), random float64 parameters."""
    torch.manual_seed(seed)
    module = Mamba2(d_model=16, d_state=8, headdim=8, ngroups=ngroups, chunk_size=8, layer_idx=0, **kwargs)
    return randomize_(module.to(F64), scale=0.2, seed=seed).eval()


@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_from_official_state_dict(reference2, ngroups: int) -> None:
    """Mamba2's state_dict -> a mamba2-preset layer computing Mamba2's forward in every CPU
    mode (max difference measured: 1.8e-15 on outputs of size ~5), and prefill leaving the
    state Mamba2's own inference cache holds, from which step gives Mamba2's forward over the
    longer sequence (measured: 1.3e-15; and Mamba2.step's outputs, to the float32 rounding of
    its A)."""
    from mamba_ssm.utils.generation import InferenceParams
    theirs = official_mamba2(reference2, ngroups)
    sd = theirs.state_dict()
    layer = load_official("mamba2", sd, ngroups=ngroups)
    cfg = layer.cfg
    assert (cfg.d_model, cfg.d_state, cfg.headdim, cfg.ngroups, cfg.conv, cfg.expand) == (16, 8, 8, ngroups, 4, 2)
    if ngroups == 2:  # d_state instead of ngroups, or both: the same layer
        assert load_official("mamba2", sd, d_state=8).cfg.ngroups == 2
        assert load_official("mamba2", sd, d_state=8, ngroups=2).cfg.d_state == 8
    u = torch.randn(2, 19, 16, dtype=F64)
    with torch.no_grad():
        expected = theirs(u)
        for mode in ("recurrent", "scan", "chunked"):
            layer.cfg.mode = mode
            assert (layer(u) - expected).abs().max() < 1e-12, mode
        params = InferenceParams(max_seqlen=32, max_batch_size=2)
        y_theirs = theirs(u, inference_params=params)
        y_ours, state = layer(u, return_state=True)
        conv_state, ssm_state = params.key_value_memory_dict[theirs.layer_idx]
        assert (y_ours - y_theirs).abs().max() < 1e-12
        assert (torch.cat([state["conv"], state["bc_conv"]], 1) - conv_state).abs().max() < 1e-12
        h = state["h"].view(2, cfg.n_heads, cfg.headdim, cfg.d_state)
        assert (h - ssm_state).abs().max() < 1e-12
        more = torch.randn(2, 3, 16, dtype=F64)
        whole = theirs(torch.cat([u, more], 1))  # Mamba2's forward over prompt + steps: float64 throughout
        for t in range(3):
            y_t, state = layer.step(more[:, t], state)
            y_ref, conv_state, ssm_state = theirs.step(more[:, t : t + 1], conv_state, ssm_state)
            assert (y_t - whole[:, 19 + t]).abs().max() < 1e-12
            # Mamba2.step rounds A = -exp(A_log) to float32 (a guard for fp16): agreement to that rounding
            torch.testing.assert_close(y_t, y_ref[:, 0], rtol=1e-7, atol=1e-7)


def official_mamba2_lm(Mamba2, monkeypatch, ngroups: int = 1, n_layer: int = 2, vocab_size: int = 64):
    """mamba-ssm's MambaLMHeadModel with Mamba2 mixers (d_model 16, headdim 8, d_state 8),
    RMSNorm, fused_add_norm and residual_in_fp32 off, on the CPU: its blocks take the reference Mamba2 class
    (``mixer_seq_simple.Mamba2`` patched while the model is built), its Triton RMSNorm runs
    mamba-ssm's ``rms_norm_ref`` (the module's forward patched for the test)."""
    from mamba_ssm.models import mixer_seq_simple
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.ops.triton import layer_norm

    def rms_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        assert residual is None and not prenorm  # fused_add_norm=False: the plain norm
        return layer_norm.rms_norm_ref(x, self.weight, self.bias, eps=self.eps)

    monkeypatch.setattr(layer_norm.RMSNorm, "forward", rms_forward)
    monkeypatch.setattr(mixer_seq_simple, "Mamba2", Mamba2)
    ssm_cfg = {"layer": "Mamba2", "d_state": 8, "headdim": 8, "ngroups": ngroups, "chunk_size": 8}
    # residual_in_fp32=False: Block casts the residual stream to float32 otherwise, even in a float64 model
    config = MambaConfig(d_model=16, n_layer=n_layer, vocab_size=vocab_size, ssm_cfg=ssm_cfg, rms_norm=True,
                         fused_add_norm=False, residual_in_fp32=False, pad_vocab_size_multiple=8)
    torch.manual_seed(0)
    model = mixer_seq_simple.MambaLMHeadModel(config).to(F64)
    assert all(type(block.mixer) is Mamba2 for block in model.backbone.layers)
    return randomize_(model, scale=0.1, seed=2).eval()


@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_lm_from_checkpoint_directory(reference2, monkeypatch, tmp_path, ngroups: int) -> None:
    """A MambaLMHeadModel with Mamba2 mixers, saved with save_pretrained: the same logits
    (max difference measured: 9.2e-16 on logits of size ~1.2), and generation (prefill 8
    tokens, then step) giving the full forward's logits (measured: 1.4e-15)."""
    theirs = official_mamba2_lm(reference2, monkeypatch, ngroups)
    theirs.save_pretrained(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]
    ours = load_official("mamba_lm", tmp_path)
    assert ours.head.weight is ours.encoder.weight and ours.head.bias is None
    assert all(block.mixer.cfg.ngroups == ngroups and block.mixer.cfg.headdim == 8 for block in ours.blocks)
    tokens = torch.randint(0, 64, (2, 13))
    with torch.no_grad():
        expected = theirs(tokens).logits
        for mode in ("recurrent", "scan", "chunked"):
            for block in ours.blocks:
                block.mixer.cfg.mode = mode
            assert (ours(tokens) - expected).abs().max() < 1e-12, mode
        logits, state = ours(tokens[:, :8], return_state=True)
        assert (logits - expected[:, :8]).abs().max() < 1e-12
        for t in range(8, 13):
            step_logits, state = ours.step(tokens[:, t], state)
            assert (step_logits - expected[:, t]).abs().max() < 1e-12, t


# ============================================================================ S5
def s5_ssm_params(H: int = 4, P: int = 3, layout: str = "C", seed: int = 0, nonnegative: int = 0) -> dict:
    """Flax params of an S5SSM (P stored eigenvalues), official names and shapes. layout: 'C'
    (H, P, 2); 'C1C2' (bidirectional); 'C2P' (bidirectional, complex_normal: C (H, 2P, 2)).
    ``nonnegative``: that many Re Λ >= 0 (reachable in training; clip_eigs clips them)."""
    rng = np.random.default_rng(seed)
    lambda_re = -0.5 - rng.random(P)
    lambda_re[:nonnegative] = [0.3, 0.0][:nonnegative]
    params = {"Lambda_re": lambda_re, "Lambda_im": rng.standard_normal(P) * 3,
              "B": rng.standard_normal((P, H, 2)) / math.sqrt(H), "D": rng.standard_normal(H),
              "log_step": np.log(10 ** rng.uniform(-3, -1, (P, 1))) + 2.0}
    shape = (H, 2 * P, 2) if layout == "C2P" else (H, P, 2)
    for name in (("C1", "C2") if layout == "C1C2" else ("C",)):
        params[name] = rng.standard_normal(shape) / math.sqrt(P)
    return params


def dense(rng, n_in: int, n_out: int) -> dict:
    return {"kernel": rng.standard_normal((n_in, n_out)) / math.sqrt(n_in), "bias": rng.standard_normal(n_out) * 0.1}


def s5_ssm_official(p: dict, u: np.ndarray, conj_sym: bool = True, discretization: str = "zoh",
                    clip_eigs: bool = False, step_rescale: float = 1.0) -> np.ndarray:
    """s5/ssm.py's S5SSM.__call__ on u (B, L, H), step by step (the scan's recurrence)."""
    re = np.minimum(p["Lambda_re"], -1e-4) if clip_eigs else p["Lambda_re"]
    Lam = re + 1j * p["Lambda_im"]
    B = p["B"][..., 0] + 1j * p["B"][..., 1]
    step = step_rescale * np.exp(p["log_step"][:, 0])
    if discretization == "zoh":
        Lam_bar = np.exp(Lam * step)
        B_bar = ((Lam_bar - 1) / Lam)[:, None] * B
    else:
        BL = 1 / (1 - step / 2 * Lam)
        Lam_bar = BL * (1 + step / 2 * Lam)
        B_bar = (BL * step)[:, None] * B
    if "C1" in p:
        C = np.concatenate([p["C1"][..., 0] + 1j * p["C1"][..., 1], p["C2"][..., 0] + 1j * p["C2"][..., 1]], -1)
    else:
        C = p["C"][..., 0] + 1j * p["C"][..., 1]
    bidirectional = C.shape[1] == 2 * Lam.shape[0]
    batch, L, _ = u.shape
    Bu = u @ B_bar.T  # (B, L, P)
    xs, x = [], np.zeros((batch, Lam.shape[0]), complex)
    for t in range(L):
        x = Lam_bar * x + Bu[:, t]
        xs.append(x)
    xs = np.stack(xs, 1)
    if bidirectional:
        back, x = [None] * L, np.zeros_like(x)
        for t in reversed(range(L)):
            x = Lam_bar * x + Bu[:, t]
            back[t] = x
        xs = np.concatenate([xs, np.stack(back, 1)], -1)
    y = (xs @ C.T).real
    return (2 * y if conj_sym else y) + p["D"] * u


def sequence_layer_official(p: dict, u: np.ndarray, activation: str, prenorm: bool, batchnorm: bool,
                            stats: dict | None, **ssm) -> np.ndarray:
    """s5/layers.py's SequenceLayer (eval: no dropout, BatchNorm on its running averages)."""
    def norm(x):
        if batchnorm:
            return (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
        mean = x.mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6) * p["norm"]["scale"] + p["norm"]["bias"]

    x = norm(u) if prenorm else u
    x = s5_gate_official(p, s5_ssm_official(p["seq"], x, **ssm), activation)
    x = u + x
    return x if prenorm else norm(x)


def s5_gate_official(p: dict, y: np.ndarray, activation: str) -> np.ndarray:
    def lin(name, x):
        return x @ p[name]["kernel"] + p[name]["bias"]

    g = _gelu(y, tanh=True)
    if activation == "full_glu":
        return lin("out1", g) * _sigmoid(lin("out2", g))
    if activation == "half_glu1":
        return g * _sigmoid(lin("out2", g))
    if activation == "half_glu2":
        return y * _sigmoid(lin("out2", g))
    return g


S5_CASES = {
    "zoh": dict(layout="C"),
    "bilinear_no_conj_sym": dict(layout="C", discretization="bilinear", conj_sym=False),
    "bidirectional_C1_C2": dict(layout="C1C2"),
    "bidirectional_complex_normal": dict(layout="C2P", discretization="bilinear"),
    "clip_eigs_step_rescale": dict(layout="C", clip_eigs=True, step_rescale=2.0, nonnegative=2),
}


@pytest.mark.parametrize("case", sorted(S5_CASES))
@pytest.mark.parametrize("activation", ["gelu", "full_glu", "half_glu1", "half_glu2"])
def test_s5_ssm_from_official_params(case: str, activation: str) -> None:
    opts = dict(S5_CASES[case])
    layout, nonnegative = opts.pop("layout"), opts.pop("nonnegative", 0)
    p = s5_ssm_params(layout=layout, nonnegative=nonnegative)
    rng = np.random.default_rng(5)
    gate = {name: dense(rng, 4, 4) for name in {"full_glu": ["out1", "out2"], "half_glu1": ["out2"],
                                                  "half_glu2": ["out2"], "gelu": []}[activation]}
    u = rng.standard_normal((2, 17, 4))
    expected = s5_gate_official(gate, s5_ssm_official(p, u, **opts), activation)
    layer = load_official("s5", {**p, **gate}, activation=activation, **opts)
    assert layer.cfg.bidirectional == (layout != "C")
    for mode in ("recurrent", "scan", "chunked", "fft"):
        layer.cfg.mode = mode
        assert _max_diff(layer(torch.from_numpy(u)), expected) < 1e-12, mode


@pytest.mark.parametrize("variant", ["prenorm_batchnorm", "postnorm_layernorm_full_glu", "classifier_pool",
                                     "classifier_last_bidirectional"])
def test_s5_model_from_official_params(variant: str, tmp_path) -> None:
    """A whole StackedEncoderModel (2 layers) or ClassificationModel, as nested dicts of
    arrays and as a flat .npz of '/'-joined keys."""
    rng = np.random.default_rng(7)
    d_input, H, P, n_layers = 3, 4, 3, 2
    activation = "full_glu" if "full_glu" in variant else "half_glu1"
    batchnorm, prenorm = "batchnorm" in variant or "classifier" in variant, "postnorm" not in variant
    layout = "C1C2" if "bidirectional" in variant else "C"
    stack = {"encoder": dense(rng, d_input, H)}
    stats = {}
    for i in range(n_layers):
        layer = {"seq": s5_ssm_params(H, P, layout, seed=10 + i),
                 "norm": {"scale": 1 + 0.1 * rng.standard_normal(H), "bias": 0.1 * rng.standard_normal(H)}}
        layer.update({name: dense(rng, H, H) for name in (["out1", "out2"] if activation == "full_glu" else ["out2"])})
        stack[f"layers_{i}"] = layer
        stats[f"layers_{i}"] = {"norm": {"mean": rng.standard_normal(H) * 0.1, "var": 0.5 + rng.random(H)}}
    u = rng.standard_normal((2, 11, d_input))
    x = u @ stack["encoder"]["kernel"] + stack["encoder"]["bias"]
    for i in range(n_layers):
        x = sequence_layer_official(stack[f"layers_{i}"], x, activation, prenorm, batchnorm,
                                    stats[f"layers_{i}"]["norm"])
    params, batch_stats, mode = stack, stats if batchnorm else None, "pool"  # LayerNorm: no batch_stats
    if "classifier" in variant:
        mode = "last" if "last" in variant else "pool"
        decoder = dense(rng, H, 5)
        x = (x[:, -1] if mode == "last" else x.mean(1)) @ decoder["kernel"] + decoder["bias"]
        params, batch_stats = {"encoder": stack, "decoder": decoder}, {"encoder": stats}
    options = dict(activation=activation, prenorm=prenorm, batchnorm=batchnorm, mode=mode)
    tree = {"params": params} if batch_stats is None else {"params": params, "batch_stats": batch_stats}
    model = load_official("s5_model", tree, **options)
    assert _max_diff(model(torch.from_numpy(u)), x) < 1e-12
    flat = official.flatten_params(params)
    np.savez(tmp_path / "params.npz", **flat)
    from_file = load_official("s5_model", tmp_path / "params.npz", batch_stats=batch_stats, **options)
    assert _max_diff(from_file(torch.from_numpy(u)), x) < 1e-12


# ============================================================================ bad input
@pytest.fixture
def nothing_built(monkeypatch):
    """Fails a test that gets as far as building a layer: bad input is refused before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("a layer was built from bad input")
    monkeypatch.setattr(official, "SSMLayer", refuse)
    monkeypatch.setattr(official, "Backbone", refuse)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"kind='s4' is not valid; expected one of \['s4d', 'mamba', 'mamba2', 'mamba_lm', 's5'"):
        load_official("s4", {})


def test_s4d_missing_key_and_wrong_shape(nothing_built) -> None:
    sd = s4d_state_dict()
    del sd["kernel.A_imag"]
    with pytest.raises(ValueError, match=r"missing key 'kernel.A_imag' \(expected shape \(H, N/2\) = \(4, 4\)\)"):
        load_official("s4d", sd)
    sd = s4d_state_dict()
    sd["output_linear.0.weight"] = sd["output_linear.0.weight"][:4]
    with pytest.raises(ValueError, match=r"'output_linear.0.weight' has shape \(4, 4, 1\), expected \(2H, H, 1\) = \(8, 4, 1\)"):
        load_official("s4d", sd)
    with pytest.raises(ValueError, match=r"no key starts with prefix='layer.'"):
        load_official("s4d", s4d_state_dict(), prefix="layer.")


def test_mamba_wrong_shape_and_unsupported_checkpoints(reference, nothing_built) -> None:
    sd = dict(official_mamba(reference).state_dict())
    bad = {**sd, "A_log": sd["A_log"][:, :4]}
    with pytest.raises(ValueError, match=r"'x_proj.weight' has shape \(17, 32\), expected \(dt_rank \+ 2·d_state, d_inner\) = \(9, 32\)"):
        load_official("mamba", bad)  # A_log fixes d_state = 4: x_proj no longer fits
    with pytest.raises(ValueError, match=r"key 'in_proj.bias' \(bias=True\) has no counterpart"):
        load_official("mamba", {**sd, "in_proj.bias": torch.zeros(64, dtype=F64)})
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['extra'\]"):
        load_official("mamba", {**sd, "extra": torch.zeros(1)})


def test_mamba_lm_refuses_what_it_cannot_represent(tmp_path, nothing_built) -> None:
    with pytest.raises(ValueError, match="no config.json in"):
        load_official("mamba_lm", tmp_path)
    config = {"d_model": 16, "n_layer": 2, "vocab_size": 64, "d_intermediate": 32, "ssm_cfg": {}}
    with pytest.raises(ValueError, match=r"config d_intermediate=32 is not supported; expected 0"):
        load_official("mamba_lm", (config, {}))
    config = {**config, "d_intermediate": 0, "ssm_cfg": {"layer": "Mamba3"}}
    with pytest.raises(ValueError, match=r"config ssm_cfg.layer='Mamba3' is not supported; expected 'Mamba1' or 'Mamba2'"):
        load_official("mamba_lm", (config, {}))
    config = {**config, "attn_layer_idx": [1], "ssm_cfg": {"layer": "Mamba2"}}
    with pytest.raises(ValueError, match=r"config attn_layer_idx=\[1\] is not supported; expected \[\]"):
        load_official("mamba_lm", (config, {}))
    config["attn_layer_idx"] = []
    for option, value, shown in [("rmsnorm", False, "False"), ("norm_before_gate", True, "True"),
                                 ("dt_limit", [0.0, 0.1], r"\[0.0, 0.1\]"), ("D_has_hdim", True, "True"),
                                 ("d_ssm", 16, "16")]:
        bad = {**config, "ssm_cfg": {"layer": "Mamba2", option: value}}
        with pytest.raises(ValueError, match=rf"config ssm_cfg.{option}={shown} is not supported; expected"):
            load_official("mamba_lm", (bad, {}))
    full = {**config, "ssm_cfg": {"layer": "Mamba2", "d_ssm": 32, "dt_limit": [0.0, math.inf]}}  # the defaults
    with pytest.raises(ValueError, match=r"missing key 'backbone.embedding.weight'"):
        load_official("mamba_lm", (full, {}))


def test_mamba2_lm_config_must_fit_its_parameters(reference2, monkeypatch, tmp_path, nothing_built) -> None:
    theirs = official_mamba2_lm(reference2, monkeypatch, ngroups=2)
    config = {**theirs.config.__dict__}
    sd = theirs.state_dict()
    bad = {**config, "ssm_cfg": {**config["ssm_cfg"], "headdim": 4}}
    with pytest.raises(ValueError, match=r"config ssm_cfg.headdim=4 does not fit layer 0's parameters, which have headdim = 8"):
        load_official("mamba_lm", (bad, sd))
    bad = {**config, "ssm_cfg": {**config["ssm_cfg"], "ngroups": 1}}  # 2 groups of 8 read as one of 8: 16 rows short
    with pytest.raises(ValueError, match=r"layer 0: key 'in_proj.weight' has shape \(100, 16\): its 32 rows for B and C"):
        load_official("mamba_lm", (bad, sd))


def test_mamba2_refuses_what_it_cannot_represent(reference2, nothing_built) -> None:
    """Each Mamba2 form without a counterpart is told by its keys or shapes, in one line,
    before anything is built; so are ngroups/d_state options that do not fit in_proj."""
    sd = dict(official_mamba2(reference2, ngroups=2).state_dict())  # in_proj: 2·32 + 2·2·8 + 4 = 100 rows
    with pytest.raises(ValueError, match=r"key 'in_proj.weight' has shape \(100, 16\): its 32 rows for B and C are "
                                         r"2·ngroups·d_state, which ngroups=3, d_state=None do not fit"):
        load_official("mamba2", sd, ngroups=3)
    with pytest.raises(ValueError, match=r"ngroups=1, d_state=8 do not fit .* expected options with ngroups·d_state = 16"):
        load_official("mamba2", sd, ngroups=1, d_state=8)
    with pytest.raises(ValueError, match=r"key 'A_log' has shape \(4,\): nheads = 4 is not a multiple of ngroups = 8"):
        load_official("mamba2", sd, d_state=2)
    with pytest.raises(ValueError, match=r"ngroups=0 is not valid; expected a positive integer"):
        load_official("mamba2", sd, ngroups=0)
    with pytest.raises(ValueError, match=r"key 'D' has shape \(5,\), expected \(nheads,\) = \(4,\)"):
        load_official("mamba2", {**sd, "D": torch.ones(5, dtype=F64)}, ngroups=2)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['extra'\]"):
        load_official("mamba2", {**sd, "extra": torch.zeros(1)}, ngroups=2)
    with pytest.raises(ValueError, match=r"missing key 'dt_bias' \(expected shape \(nheads,\) = \(4,\)\)"):
        load_official("mamba2", {k: v for k, v in sd.items() if k != "dt_bias"}, ngroups=2)
    cases = [
        (dict(bias=True), r"key 'in_proj.bias' \(bias=True\) has no counterpart"),
        (dict(conv_bias=False), r"missing key 'conv1d.bias' \(conv_bias=False\)"),
        (dict(rmsnorm=False), r"missing key 'norm.weight' \(rmsnorm=False\)"),
        (dict(d_ssm=16), r"key 'conv1d.weight' has shape \(32, 1, 4\): d_ssm = 16 < d_inner = 32 \(a gated MLP"),
        (dict(D_has_hdim=True), r"key 'D' has shape \(32,\) \(D_has_hdim=True\)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            load_official("mamba2", official_mamba2(reference2, **kwargs).state_dict())
        with pytest.raises(ValueError, match=r"^[^\n]*$"):  # one line
            load_official("mamba2", official_mamba2(reference2, **kwargs).state_dict())


def test_s5_bad_params(nothing_built) -> None:
    p = s5_ssm_params()
    with pytest.raises(ValueError, match=r"key 'B' has shape \(4, 3, 2\), expected \(P, H, 2\) = \(3, 4, 2\)"):
        load_official("s5", {**p, "B": p["B"].transpose(1, 0, 2)})
    with pytest.raises(ValueError, match=r"missing key 'log_step' \(expected shape \(P, 1\) = \(3, 1\)\)"):
        load_official("s5", {k: v for k, v in p.items() if k != "log_step"})
    with pytest.raises(ValueError, match=r"missing key 'out2/kernel'"):
        load_official("s5", p, activation="half_glu1")
    with pytest.raises(ValueError, match=r"activation='glu' is not valid; expected one of \['full_glu'"):
        load_official("s5", p, activation="glu")
    with pytest.raises(ValueError, match=r"missing key 'layers_0/seq/Lambda_re'|missing key layers_0"):
        load_official("s5_model", {"encoder": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}})
    stack = {"encoder": dense(np.random.default_rng(0), 3, 4), "layers_0": {
        "seq": p, "out2": dense(np.random.default_rng(0), 4, 4), "norm": {"scale": np.ones(4), "bias": np.zeros(4)}}}
    with pytest.raises(ValueError, match=r"batch_stats .*missing key 'layers_0/norm/mean'"):
        load_official("s5_model", stack)


def test_tied_lm_head_is_optional_and_must_equal_the_embedding(reference, monkeypatch, tmp_path) -> None:
    """safetensors stores a tied weight once (save_model drops lm_head.weight): such a
    checkpoint loads; a tied checkpoint whose two copies differ is refused."""
    from safetensors.torch import save_model
    theirs = official_mamba_lm(reference, monkeypatch)
    (tmp_path / "config.json").write_text(json.dumps(theirs.config.__dict__))
    save_model(theirs, str(tmp_path / "model.safetensors"))
    ours = load_official("mamba_lm", tmp_path)
    tokens = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert _max_diff(ours(tokens), mamba_lm_official(theirs.state_dict(), 2, tokens.numpy())) < 1e-12
    sd = dict(theirs.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match=r"tie_embeddings=True, but keys 'lm_head.weight' and "
                                         r"'backbone.embedding.weight' differ"):
        load_official("mamba_lm", (theirs.config.__dict__, sd))


def test_mamba_lm_config_must_fit_its_parameters(reference, monkeypatch, nothing_built) -> None:
    """Every size config.json states is checked against the weights; keys MambaConfig or the
    mixer would refuse are refused (a typo is not silently a default)."""
    theirs = official_mamba_lm(reference, monkeypatch)  # d_model 16, d_state 8, vocab 64
    config, sd = dict(theirs.config.__dict__), theirs.state_dict()
    cases = [
        ({"ssm_cfg": {"layer": "Mamba1", "d_state": 16}}, r"ssm_cfg.d_state=16 does not fit layer 0's parameters, "
                                                           r"which have d_state = 8"),
        ({"ssm_cfg": {"layer": "Mamba1", "d_state": 8, "d_conv": 2}}, r"ssm_cfg.d_conv=2 does not fit"),
        ({"ssm_cfg": {"layer": "Mamba1", "d_state": 8, "expand": 3}}, r"ssm_cfg.expand=3 does not fit"),
        ({"ssm_cfg": {"layer": "Mamba1", "d_state": 8, "dt_rank": 4}}, r"ssm_cfg.dt_rank=4 does not fit"),
        ({"d_model": 999}, r"config d_model=999 does not fit the parameters, whose embedding has width 16"),
        ({"vocab_size": 5000}, r"config vocab_size=5000 \(padded to a multiple of pad_vocab_size_multiple=8\) does "
                               r"not fit the embedding's 64 rows"),
        ({"tie_embedding": False}, r"config key 'tie_embedding' is not valid \(mamba-ssm refuses it too\)"),
        ({"ssm_cfg": {"layer": "Mamba1", "d_sate": 8}}, r"config ssm_cfg key 'd_sate' is not valid"),
        ({"ssm_cfg": "Mamba1"}, r"config ssm_cfg='Mamba1' is not valid; expected a mapping"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            load_official("mamba_lm", ({**config, **change}, sd))


def test_mamba_lm_vocabulary_padding(reference, monkeypatch) -> None:
    """vocab_size 60 with pad_vocab_size_multiple 8 is the embedding's 64 rows, as mamba-ssm pads it."""
    theirs = official_mamba_lm(reference, monkeypatch)
    ours = load_official("mamba_lm", ({**theirs.config.__dict__, "vocab_size": 60}, theirs.state_dict()))
    assert ours.encoder.weight.shape == (64, 16)


def test_malformed_sources_are_one_line_errors(tmp_path, nothing_built) -> None:
    sd = s4d_state_dict()
    with pytest.raises(ValueError, match=r"key 'state_dict' holds a dict, expected a tensor or a numeric array "
                                         r"\(a state_dict nested under 'state_dict'\?"):
        load_official("s4d", {"state_dict": sd, "epoch": 3})
    with pytest.raises(ValueError, match=r"key 'D' holds a NoneType"):
        load_official("s4d", {**sd, "D": None})
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"official S4D state_dict: cannot read '.*bad.pt'"):
        load_official("s4d", tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"expected a checkpoint directory or a \(config dict, state_dict\) pair, got dict"):
        load_official("mamba_lm", sd)
    with pytest.raises(ValueError, match=r"a tuple source has 3 items, expected 2"):
        load_official("mamba_lm", ({}, {}, {}))
    with pytest.raises(ValueError, match=r"the state_dict is a str, expected a mapping"):
        load_official("mamba_lm", ({}, "weights.bin"))
    with pytest.raises(ValueError, match=r"the config is a list, expected a mapping"):
        load_official("mamba_lm", ([], {}))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"official MambaLMHeadModel: cannot read '.*config.json'"):
        load_official("mamba_lm", tmp_path)
    with pytest.raises(ValueError, match=r"^[^\n]*$"):
        load_official("mamba_lm", tmp_path)


def test_wrong_dtypes_and_kinds_are_refused(reference, reference2, nothing_built) -> None:
    sd = s4d_state_dict()
    with pytest.raises(ValueError, match=r"key 'kernel.log_dt' has dtype torch.int64, expected a real floating dtype"):
        load_official("s4d", {**sd, "kernel.log_dt": sd["kernel.log_dt"].long()})
    with pytest.raises(ValueError, match=r"key 'D' has dtype torch.complex128, expected a real floating dtype"):
        load_official("s4d", {**sd, "D": sd["D"] + 1j})
    for dtype in ("float32", torch.int64):
        with pytest.raises(ValueError, match=rf"dtype={dtype!r} is not valid; expected one of \[torch.float16"):
            load_official("s4d", sd, dtype=dtype)
    with pytest.raises(ValueError, match=r"dtype=torch.float16 is not valid for a layer with complex parameters"):
        load_official("s4d", sd, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"a Mamba \(Mamba-1\) state_dict\? expected kind 'mamba'"):
        load_official("mamba2", official_mamba(reference).state_dict())
    with pytest.raises(ValueError, match=r"a Mamba2 state_dict\? expected kind 'mamba2'"):
        load_official("mamba", official_mamba2(reference2).state_dict())


def test_options_are_checked_before_loading(reference) -> None:
    """An option that is not a field, or contradicts the parameters, is refused before anything
    is built; one that moves the layer to other parameters names itself."""
    sd = s4d_state_dict()
    mamba = official_mamba(reference).state_dict()
    with pytest.raises(ValueError, match=r"option foo=1 is not valid; expected the loader's options or SSMConfig"):
        load_official("mamba", mamba, foo=1)
    with pytest.raises(ValueError, match=r"option d_model=8 does not fit: the parameters \(or the loader's own "
                                         r"options\) give d_model=4; leave it out"):
        load_official("s4d", sd, d_model=8)
    with pytest.raises(ValueError, match=r"option d_state=4 does not fit: .* give d_state=8"):
        load_official("mamba", mamba, d_state=4)
    for option in (dict(conj_sym=False), dict(gate="none")):
        with pytest.raises(ValueError, match=rf"options {option} give a layer with other parameters than the official"):
            load_official("s4d", sd, **option)
    p = s5_ssm_params()
    with pytest.raises(ValueError, match=r"conj_sym='yes' is not valid; expected true or false"):
        load_official("s5", p, conj_sym="yes")
    with pytest.raises(ValueError, match=r"bn_momentum=2.0 is not valid; expected a number in \[0, 1\]"):
        load_official("s5_model", {"encoder": {}}, bn_momentum=2.0)
    # options that keep the parameters: computed the same way
    u = torch.randn(2, 9, 4, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(load_official("s4d", sd, mode="recurrent", chunk_size=3)(u), load_official("s4d", sd)(u))


def test_batch_stats_need_batchnorm(nothing_built) -> None:
    stack = {"encoder": dense(np.random.default_rng(0), 3, 4), "layers_0": {
        "seq": s5_ssm_params(), "out2": dense(np.random.default_rng(0), 4, 4),
        "norm": {"scale": np.ones(4), "bias": np.zeros(4)}}}
    stats = {"layers_0": {"norm": {"mean": np.zeros(4), "var": np.ones(4)}}}
    with pytest.raises(ValueError, match=r"batchnorm=False is not valid with batch_stats given"):
        load_official("s5_model", {"params": stack, "batch_stats": stats}, batchnorm=False)


def test_source_dtypes() -> None:
    """Half-precision sources: an S4D or S5 layer (complex parameters) is built in float32,
    from bf16 tensors too (numpy has no bf16); a mixed source takes its widest dtype."""
    sd = s4d_state_dict()
    u = torch.randn(2, 9, 4)
    for half in (torch.float16, torch.bfloat16):
        layer = load_official("s4d", {k: v.to(half) for k, v in sd.items()})
        same_values = load_official("s4d", {k: v.to(half).float() for k, v in sd.items()})
        assert layer.D.dtype == torch.float32
        with torch.no_grad():
            torch.testing.assert_close(layer(u), same_values(u))
    p = s5_ssm_params()
    layer = load_official("s5", {k: torch.from_numpy(v).bfloat16() for k, v in p.items()})
    same_values = load_official("s5", {k: torch.from_numpy(v).bfloat16().float() for k, v in p.items()})
    assert layer.D.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(layer(u), same_values(u))
    mixed = {**sd, "D": sd["D"].float()}
    assert load_official("s4d", mixed).D.dtype == F64


# ============================================================================ README
def test_readme_official_checkpoints_snippet_runs(reference, monkeypatch, tmp_path) -> None:
    """The README's "Using official checkpoints" code block runs as written, on tiny official
    checkpoints written where it looks for them (checkpoints/ in the working directory)."""
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("### Using official checkpoints", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    checkpoints = tmp_path / "checkpoints"
    official_mamba_lm(reference, monkeypatch).save_pretrained(str(checkpoints / "mamba"))
    torch.save(s4d_state_dict(), checkpoints / "s4d_layer.pt")
    rng = np.random.default_rng(0)
    stack = {"encoder": dense(rng, 3, 4)}
    stats = {}
    for i in range(2):
        stack[f"layers_{i}"] = {"seq": s5_ssm_params(4, 3, seed=i), "out2": dense(rng, 4, 4),
                                "norm": {"scale": np.ones(4), "bias": np.zeros(4)}}
        stats[f"layers_{i}"] = {"norm": {"mean": np.zeros(4), "var": np.ones(4)}}
    tree = {"params": {"encoder": stack, "decoder": dense(rng, 4, 5)}, "batch_stats": {"encoder": stats}}
    np.savez(checkpoints / "s5_params.npz", **official.flatten_params(tree))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (1, 64) and namespace["s5"].spec.d_output == 5
    assert namespace["mixer"].cfg.d_model == 16 and namespace["s4d"].cfg.d_model == 4
