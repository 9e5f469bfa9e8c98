"""Parameter counts, state sizes, FLOP estimates, matching helpers and the seed interface."""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import pytest
import torch

import models
from models import IOSpec, SSMLayer, model_preset, preset

from helpers import mamba3_class


# ------------------------------------------------------------------ closed-form parameter counts
# Written from the published architectures (REFERENCES.md; the official modules' layouts), from
# the config's sizes only, never by summing our modules' parameters: they check models.param_count.

def s5_layer_params(H: int, P: int, conj_sym: bool = True, bidirectional: bool = False) -> int:
    """S5 layer (lindermanlab/S5 ``s5/ssm.py`` S5SSM, ``s5/layers.py`` SequenceLayer, half_glu1
    activation), H = d_model, P = d_state; with conjugate symmetry the official code keeps
    n = P/2 eigenvalues, else n = P. The layer's norm belongs to the Block here (counted by
    :func:`backbone_params`), as in the official SequenceLayer it sits around the SSM."""
    n = P // 2 if conj_sym else P
    return (n  # Lambda_re: Re Λ stored directly (a_param='direct'), (n,)
            + n  # Lambda_im: Im Λ, (n,)
            + n  # log_step: one Δ per state, (n, 1)
            + n * H * 2  # B̃: (n, H) complex, stored as (n, H, 2)
            + H * n * 2 * (2 if bidirectional else 1)  # C̃: (H, n) complex as (H, n, 2); bidirectional: C1 and C2
            + H  # D: (H,)
            + H * H + H)  # half_glu1's out2 = Dense(H) with bias (no in_proj / out_proj: expand 0)


def mamba3_layer_params(H: int, N: int, expand: int = 2, headdim: int | None = None, R: int = 1, ngroups: int = 1,
                        rope_fraction: float = 0.5) -> int:
    """Mamba-3 layer (arXiv 2603.15569; mamba-ssm 2.3.2 ``modules/mamba3.py`` ``Mamba3`` with
    is_outproj_norm=False, its default), H = d_model, N = d_state, R = mimo_rank (1: SISO).
    D = expand·H channels in E = D / headdim heads (headdim: the presets' gcd(64, D) by default);
    M = int(N · rope_fraction) // 2 rotation angles (Mamba3's num_rope_angles).
    Absent by design of Mamba-3: no short conv, no gated output RMSNorm, no A_log (A_t comes from
    the data), no dt_proj (Δ is projected at full rank, one per head, from u)."""
    D = expand * H
    E = D // (headdim or math.gcd(64, D))
    M = int(N * rope_fraction) // 2
    return (H * (2 * D + 2 * ngroups * R * N + 3 * E + M)  # in_proj, no bias: [z, x, B, C, dd_dt, dd_A, trap,
            # angles] (ours splits it: in_proj H×2D for x, z and heads.x_proj H×(the rest), both from u)
            + E  # dt_bias: one per head
            + 2 * N  # B_norm, C_norm (BCNorm): an RMSNorm weight over the N entries each
            + 2 * E * R * N  # B_bias, C_bias: (E, R, N) each, per head and rank
            + (3 * R * D if R > 1 else 0)  # MIMO only: mimo_x, mimo_z, mimo_o, (E, R, headdim) = R·D each
            + E  # D: one per head
            + D * H)  # out_proj: D -> H, no bias


NORM_PARAMS = {"layer": 2, "batch": 2, "rms": 1, "none": 0}  # per channel: LayerNorm/BatchNorm γ, β; RMSNorm γ


def backbone_params(layer: int, H: int, n_layers: int, norm: str, ffn_hidden: int = 0, vocab_size: int | None = None,
                    d_input: int | None = None, d_output: int | None = None) -> int:
    """A Backbone (DESIGN.md; models/backbone.py's docstring) around a layer of ``layer`` parameters:
    encoder -> n_layers pre-norm blocks (norm, SSM layer, optional norm + MLP) -> final norm -> head."""
    norm_params = NORM_PARAMS[norm] * H
    encoder = vocab_size * H if vocab_size else d_input * H + H  # Embedding(V, H), or Linear(d_input, H) with bias
    ffn = norm_params + (H * ffn_hidden + ffn_hidden) + (ffn_hidden * H + H) if ffn_hidden else 0  # norm, Linear
    # (H, F) and Linear(F, H), both with bias
    block = norm_params + layer + ffn
    head = H * d_output + d_output if d_output else 0  # Linear(H, d_output) with bias; none without d_output
    return encoder + n_layers * block + norm_params + head


@pytest.mark.parametrize("name", sorted(models.PRESETS))
@pytest.mark.parametrize("d_model,d_state", [(8, 4), (16, 16), (24, 32)])
def test_param_count_on_meta_equals_the_real_build(name: str, d_model: int, d_state: int) -> None:
    """param_count builds on the meta device: the count equals the module built on the CPU (it
    says nothing about whether that count is right: the formula tests below do)."""
    cfg = preset(name, d_model=d_model, d_state=d_state)
    assert models.param_count(cfg) == sum(p.numel() for p in SSMLayer(cfg).parameters())
    model_cfg = model_preset(name, n_layers=3, d_model=d_model, d_state=d_state, ffn_expand=2)
    spec = IOSpec(vocab_size=13, d_output=7)
    assert models.param_count(model_cfg, spec) == sum(p.numel() for p in models.build(model_cfg, spec).parameters())


def test_param_count_by_hand_for_s4d() -> None:
    """S4D layer, H=8, N=4 (2 complex modes): A_log, A_imag (8×2 each), log_dt (8), C (8×2×2), D (8),
    GLU output Linear(8, 16) with bias."""
    cfg = preset("s4d", d_model=8, d_state=4)
    assert models.param_count(cfg) == 16 + 16 + 8 + 32 + 8 + (8 * 16 + 16)


def test_param_count_by_hand_for_mamba() -> None:
    """Mamba H=4, N=2, expand 2 (D=8), dt_rank 1, conv 4: in_proj 4·16, conv 8·4+8, x_proj 8·(1+2+2),
    dt_proj 1·8+8, A_log 8·2, D 8, out_proj 8·4."""
    cfg = preset("mamba", d_model=4, d_state=2)
    assert models.param_count(cfg) == 64 + 40 + 40 + 16 + 16 + 8 + 32


def test_param_count_by_hand_for_mamba2() -> None:
    """Mamba-2 H=4, N=2, headdim 4 (D=8, E=2 heads), conv 4: in_proj 4·16, projection of u
    4·(2+2+2) (Δ per head, B, C), conv 8·4+8 over x and 4·4+4 over B, C, dt_bias, A_log and D
    2 each, gated RMSNorm weight 8, out_proj 8·4 (Mamba2's own count: in_proj 4·22, conv 12·4+12)."""
    cfg = preset("mamba2", d_model=4, d_state=2, headdim=4)
    assert models.param_count(cfg) == 64 + 24 + 40 + 20 + 2 + 2 + 2 + 8 + 32


@pytest.mark.parametrize("d_model,d_state,options", [
    (8, 8, {}),
    (16, 32, dict(bidirectional=True)),  # S5's LRA runs: C1 and C2
    (8, 6, dict(conj_sym=False)),  # all P eigenvalues stored
    (8, 4, dict(conj_sym=False, bidirectional=True)),
])
def test_param_count_by_formula_for_s5(d_model: int, d_state: int, options: dict) -> None:
    """S5 layer, e.g. H=8, P=8 (4 stored eigenvalues): Λ re, im, log_step 4 each, B̃ 4·8·2, C̃ 8·4·2,
    D 8, out2 Dense(8) 8·8+8 = 220."""
    cfg = preset("s5", d_model=d_model, d_state=d_state, **options)
    assert models.param_count(cfg) == s5_layer_params(d_model, d_state, **options)
    if not options and d_model == 8:
        assert models.param_count(cfg) == 4 + 4 + 4 + 64 + 64 + 8 + 72 == 220


MAMBA3_SIZES = [
    dict(d_model=8, d_state=8, headdim=4),
    dict(d_model=16, d_state=16),  # the presets' headdim: gcd(64, D) = 32, one head
    dict(d_model=8, d_state=8, headdim=4, ngroups=2),
    dict(d_model=8, d_state=12, headdim=2, rope_fraction=1.0),
    dict(d_model=64, d_state=128),  # Mamba3's defaults: headdim 64, d_state 128
]


def _formula_options(sizes: dict) -> dict:
    return dict(H=sizes["d_model"], N=sizes["d_state"], headdim=sizes.get("headdim"), ngroups=sizes.get("ngroups", 1),
                rope_fraction=sizes.get("rope_fraction", 0.5))


@pytest.mark.parametrize("sizes", MAMBA3_SIZES)
def test_param_count_by_formula_for_mamba3(sizes: dict) -> None:
    """Mamba-3 SISO, e.g. H=8, N=8, headdim 4 (D=16, E=4 heads, M=2 angles): in_proj 8·(32+16+12+2),
    dt_bias 4, BCNorm 8+8, B/C biases 2·4·8, D 4, out_proj 16·8 = 712."""
    cfg = preset("mamba3", **sizes)
    assert models.param_count(cfg) == mamba3_layer_params(**_formula_options(sizes))
    if sizes == MAMBA3_SIZES[0]:
        assert models.param_count(cfg) == 8 * 62 + 4 + 16 + 64 + 4 + 128 == 712


@pytest.mark.parametrize("rank", [4, 2])
@pytest.mark.parametrize("sizes", MAMBA3_SIZES)
def test_param_count_by_formula_for_mamba3_mimo(sizes: dict, rank: int) -> None:
    """Mamba-3 MIMO, e.g. R=4, H=8, N=8, headdim 4: in_proj 8·(32+2·4·8+12+2), dt_bias 4, BCNorm 16,
    B/C biases 2·4·4·8, mimo_x, mimo_z, mimo_o 3·4·16, D 4, out_proj 128 = 1480."""
    cfg = preset("mamba3_mimo", mimo_rank=rank, **sizes)
    assert models.param_count(cfg) == mamba3_layer_params(R=rank, **_formula_options(sizes))
    if sizes == MAMBA3_SIZES[0] and rank == 4:
        assert models.param_count(cfg) == 8 * 110 + 4 + 16 + 256 + 192 + 4 + 128 == 1480


@pytest.fixture(scope="module")
def official_mamba3_module():
    """mamba-ssm's ``modules/mamba3.py`` (:func:`helpers.mamba3_class`); installed by `make test`."""
    official = mamba3_class()
    assert official is not None, "mamba-ssm is not installed: run `make test` (it installs mamba-ssm 2.3.2.post1)"
    return sys.modules[official.__module__]


@pytest.mark.parametrize("rank", [1, 4])
@pytest.mark.parametrize("sizes", MAMBA3_SIZES)
def test_mamba3_presets_have_mamba3_s_parameter_count(official_mamba3_module, monkeypatch, sizes: dict,
                                                      rank: int) -> None:
    """models.param_count of the mamba3 / mamba3_mimo presets is mamba-ssm's Mamba3's own count, built
    on the meta device. Mamba3(is_mimo=True) asserts that its TileLang kernel imported; only the
    parameters are needed here, so a stand-in for the kernel lets it build without TileLang."""
    if rank > 1 and official_mamba3_module.mamba3_mimo_combined is None:
        monkeypatch.setattr(official_mamba3_module, "mamba3_mimo_combined", object())
    cfg = preset("mamba3" if rank == 1 else "mamba3_mimo", **sizes)
    theirs = official_mamba3_module.Mamba3(d_model=cfg.d_model, d_state=cfg.d_state, expand=cfg.expand,
                                           headdim=cfg.headdim, ngroups=cfg.ngroups, rope_fraction=cfg.rope_fraction,
                                           is_mimo=rank > 1, mimo_rank=rank, device="meta")
    assert models.param_count(cfg) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("case", ["mamba3_mimo_tokens", "s5_features", "mamba3_batchnorm_features"])
def test_backbone_param_count_by_formula(case: str) -> None:
    """A whole Backbone: encoder, every block's norms, layer and MLP, the final norm and the head."""
    if case == "mamba3_mimo_tokens":  # token embedding, RMSNorm (the preset's), an MLP of odd width, a head
        cfg = replace(model_preset("mamba3_mimo", n_layers=3, d_model=8, d_state=8, headdim=4), ffn_width=13)
        spec = IOSpec(vocab_size=11, d_output=5)
        layer = mamba3_layer_params(8, 8, headdim=4, R=4)
        expected = backbone_params(layer, 8, 3, "rms", ffn_hidden=13, vocab_size=11, d_output=5)
        # by hand: Embedding 11·8; per block RMSNorm 8 + layer 1480 + RMSNorm 8 + MLP 8·13+13 + 13·8+8;
        # final RMSNorm 8; head 8·5+5
        assert expected == 88 + 3 * (8 + 1480 + 8 + 117 + 112) + 8 + 45
    elif case == "s5_features":  # linear encoder of features, LayerNorm (the preset's), MLP 2H, no head
        cfg = model_preset("s5", n_layers=2, d_model=8, d_state=8, ffn_expand=2)
        spec = IOSpec(d_input=5, d_output=None)
        expected = backbone_params(s5_layer_params(8, 8), 8, 2, "layer", ffn_hidden=16, d_input=5)
        # by hand: Linear(5, 8) 5·8+8; per block LayerNorm 16 + layer 220 + LayerNorm 16 + MLP 8·16+16 + 16·8+8;
        # final LayerNorm 16
        assert expected == 48 + 2 * (16 + 220 + 16 + 144 + 136) + 16
    else:  # BatchNorm (S5's LRA setting: γ, β; running statistics are buffers), no MLP, features, head
        cfg = model_preset("mamba3", n_layers=2, d_model=16, d_state=16, norm="batch")
        spec = IOSpec(d_input=3, d_output=2, readout="mean")
        expected = backbone_params(mamba3_layer_params(16, 16), 16, 2, "batch", d_input=3, d_output=2)
    assert models.param_count(cfg, spec) == expected


@pytest.mark.parametrize("encoder,layer", [
    (models.S5, lambda H, N: s5_layer_params(H, N)),
    (models.Mamba3, lambda H, N: mamba3_layer_params(H, N)),
    (models.Mamba3MIMO, lambda H, N: mamba3_layer_params(H, N, R=4)),
])
def test_seed_encoder_param_count_by_formula(encoder, layer) -> None:
    """The seed interface's encoder: Linear(embed_dim, H) with bias -> num_layers blocks -> final norm,
    no head (S5: LayerNorm; Mamba-3: RMSNorm, headdim gcd(64, 2H))."""
    opts = dict(embed_dim=287, hidden_size=32, state_size=8, num_layers=2, dropout=0.1, window_size=60)
    norm = "layer" if encoder is models.S5 else "rms"
    assert encoder.param_count(**opts) == backbone_params(layer(32, 8), 32, 2, norm, d_input=287)


def test_state_size_conventions() -> None:
    assert models.state_size(preset("s5", d_model=32, d_state=64)) == 64  # P
    assert models.state_size(preset("s4d", d_model=32, d_state=64)) == 32 * 64  # H·N
    assert models.state_size(preset("mamba", d_model=32, d_state=16)) == 64 * 16  # D·N
    assert models.state_size(preset("s5", d_model=8, d_state=8, conj_sym=False)) == 16
    assert models.state_size(model_preset("s4d", n_layers=3, d_model=4, d_state=8)) == 3 * 32
    for name in ("mamba2", "mamba3", "mamba3_mimo"):  # D·N real numbers: rank R does not add state
        assert models.state_size(preset(name, d_model=32, d_state=16)) == 64 * 16
    layer = SSMLayer(preset("s4d", d_model=4, d_state=8))
    h = layer.init_state(1)["h"]
    assert torch.view_as_real(h).numel() == models.state_size(layer.cfg)


def test_match_state_size_makes_mimo_and_siso_equal() -> None:
    siso = preset("s4d", d_model=16, d_state=8)
    mimo = models.match_state_size(preset("s5", d_model=16, d_state=2), models.state_size(siso))
    assert mimo.d_state == 128
    assert models.state_size(mimo) == models.state_size(siso)
    with pytest.raises(ValueError, match="not reachable"):
        models.match_state_size(preset("s4d", d_model=16, d_state=2), 17)


def test_match_param_count_finds_the_closest() -> None:
    target = models.param_count(preset("s4d", d_model=32, d_state=64))
    matched = models.match_param_count(preset("s5", d_model=32, d_state=2), target, field="d_state")
    gap = abs(models.param_count(matched) - target)
    for d_state in range(2, 400, 2):
        assert abs(models.param_count(preset("s5", d_model=32, d_state=d_state)) - target) >= gap
    by_width = models.match_param_count(model_preset("mamba", d_model=8), 20000, field="d_model")
    counts = {w: models.param_count(model_preset("mamba", d_model=w)) for w in range(8, 80)}
    assert abs(models.param_count(by_width) - 20000) == min(abs(c - 20000) for c in counts.values())


def test_flops_per_token_grows_with_size_and_counts_linears() -> None:
    small, big = preset("mamba", d_model=16), preset("mamba", d_model=32)
    assert models.flops_per_token(big) > 2 * models.flops_per_token(small)
    layer = SSMLayer(small)
    linear = sum(2 * m.weight.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear))
    assert linear < models.flops_per_token(small) < 3 * linear
    # by hand, S4D H=4, N=4 (G=4 SSMs × 2 complex modes = 8 states), recurrent: GLU Linear(4, 8): 2·32;
    # readout 8 states × 4; recurrence 8 × (6 + 2); activations 3·4
    assert models.flops_per_token(preset("s4d", d_model=4, d_state=4, mode="scan")) == 64 + 32 + 64 + 12
    lti = preset("s4d", d_model=16, d_state=64)
    assert models.flops_per_token(lti, length=1024) != models.flops_per_token(lti.with_(mode="scan"), length=1024)


@pytest.mark.parametrize("encoder", [models.S5, models.S4D, models.Mamba, models.Mamba2, models.Mamba3,
                                     models.Mamba3MIMO])
def test_seed_interface(encoder) -> None:
    opts = dict(embed_dim=287, hidden_size=32, state_size=8, num_layers=2, dropout=0.1, window_size=60)
    module = encoder.build(**opts).eval()
    x = torch.randn(3, 20, 287)
    y = module(x)
    assert y.shape == (3, 32) == (3, encoder.output_size(**opts))
    assert encoder.param_count(**opts) == sum(p.numel() for p in module.parameters())
    cache = module.init_cache(3)
    with torch.no_grad():
        for t in range(20):
            y_t, cache = module.step(x[:, t], cache)
    torch.testing.assert_close(y_t, module(x), rtol=1e-5, atol=1e-5)
    defaults = encoder.recommended_defaults()
    assert set(defaults) == set(opts)
    with pytest.raises(ValueError, match="unknown option"):
        encoder.build(embed_dim=4, colour="red")
    with pytest.raises(ValueError, match="window_size"):
        encoder.build(window_size=0)


@pytest.mark.parametrize("encoder", [models.S5, models.S4D, models.Mamba, models.Mamba2, models.Mamba3,
                                     models.Mamba3MIMO])
@pytest.mark.parametrize("option, value", [("embed_dim", 0), ("hidden_size", "16"), ("hidden_size", -8),
                                           ("state_size", 0), ("num_layers", 0), ("dropout", 1.5)])
def test_seed_interface_refusals_name_the_option_given(encoder, option: str, value) -> None:
    """A bad option is refused by the name the caller used (num_layers, not the n_layers it sets)."""
    with pytest.raises(ValueError) as err:
        encoder.build(**{option: value})
    assert str(err.value).startswith(f"{option}={value!r} is not valid; expected "), str(err.value)


def test_seed_interface_example_shapes() -> None:
    module = models.S5.build(embed_dim=287, hidden_size=256, state_size=64, num_layers=4, dropout=0.1, window_size=60)
    assert module(torch.randn(2, 60, 287)).shape == (2, 256)


def test_rank_r_mimo_keeps_the_state_and_multiplies_the_state_flops() -> None:
    siso, mimo = preset("mamba3", d_model=32, d_state=16, mode="scan"), preset("mamba3_mimo", d_model=32, d_state=16,
                                                                                mode="scan")
    assert models.state_size(mimo) == models.state_size(siso)
    linear = lambda cfg: sum(2 * m.weight.numel() for m in SSMLayer(cfg).modules() if isinstance(m, torch.nn.Linear))
    extra_siso = models.flops_per_token(siso) - linear(siso)
    extra_mimo = models.flops_per_token(mimo) - linear(mimo)
    assert 2 * extra_siso < extra_mimo < 5 * extra_siso


def test_match_param_count_shrinks_the_mlp_width_like_mamba3() -> None:
    """Mamba-3 matches a MIMO model to its SISO twin by shrinking the MLP's hidden width."""
    siso = model_preset("mamba3", n_layers=2, d_model=32, d_state=16, ffn_expand=4)
    mimo = model_preset("mamba3_mimo", n_layers=2, d_model=32, d_state=16, ffn_expand=4)
    spec = IOSpec(vocab_size=11, d_output=11)
    target = models.param_count(siso, spec)
    assert models.param_count(mimo, spec) > target
    matched = models.match_param_count(mimo, target, field="ffn_width", spec=spec)
    assert matched.ffn_hidden < 4 * 32
    # by formula: the MLP's width w costs 2·H·w + w per block (two Linear weights and the first bias), so
    # the width that absorbs the MIMO layer's extra parameters is 4H - round(extra / (2H + 1)) (here 67)
    extra = mamba3_layer_params(32, 16, R=4) - mamba3_layer_params(32, 16)
    assert matched.ffn_hidden == 4 * 32 - round(extra / (2 * 32 + 1)) == 67
    built = models.build(matched, spec)
    assert sum(p.numel() for p in built.parameters()) == models.param_count(matched, spec)
    gap = abs(models.param_count(matched, spec) - target)
    assert gap <= min(abs(models.param_count(mimo.__class__(**{**mimo.__dict__, "ffn_width": w}), spec) - target)
                      for w in range(1, 200))
    with pytest.raises(ValueError, match="ffn_width"):
        models.match_param_count(mimo.ssm, target, field="ffn_width")


def test_match_param_count_refuses_a_target_out_of_reach() -> None:
    """The nearest value is no match when the target lies outside what the field reaches: the
    mamba2 block at headdim 64 has no d_model below 32 (33k parameters against S4D's 13k)."""
    with pytest.raises(ValueError, match=r"target parameter count 10 is not reachable by d_state: the smallest "
                                         r"valid d_state, 2, gives \d+ parameters"):
        models.match_param_count(preset("s5", d_model=8, d_state=8), 10)
    with pytest.raises(ValueError, match=r"the largest valid d_state, 4096, gives \d+ parameters"):
        models.match_param_count(preset("s5", d_model=8, d_state=8), 10**9)
    spec = IOSpec(vocab_size=16, d_output=16)
    with pytest.raises(ValueError, match=r"not reachable by d_model: the smallest valid d_model, 32"):
        models.match_param_count(model_preset("mamba2", n_layers=2, d_model=32), 13482, field="d_model", spec=spec)
    within = models.match_param_count(preset("s5", d_model=8, d_state=8), 500, candidates=[64, 8, 16, 24, 32])
    assert within.d_state == 24  # candidates in any order


def test_bidirectional_flops_count_the_drive_once() -> None:
    """The backward direction reads the same drive B x reversed: a second recurrence and readout,
    not a second B x (S5 H 8, P 4 stored: readout G·c·n·2·2 = 128, recurrence n·(6 + 2) = 32)."""
    uni = preset("s5", d_model=8, d_state=8)
    extra = models.flops_per_token(uni.with_(bidirectional=True)) - models.flops_per_token(uni)
    assert extra == 128 + 32


def test_auto_is_counted_as_the_mode_a_cpu_runs() -> None:
    """auto on a CPU runs a time-invariant SISO layer in fft; where that is a state convolution
    (trapezoidal, heads) it is counted as one, as mode fft is."""
    for cfg in (preset("s4d", d_model=8, d_state=8, discretization="trapezoidal", trapezoid=0.5),
                preset("s4d", d_model=8, d_state=8, headdim=4)):
        assert SSMLayer(cfg).resolve_mode(torch.device("cpu")) == "fft"
        assert models.flops_per_token(cfg, length=256, batch=8) == \
            models.flops_per_token(cfg.with_(mode="fft"), length=256, batch=8)


def test_a_pooled_head_counts_once_per_sequence() -> None:
    cfg = model_preset("s4d", n_layers=1, d_model=8, d_state=8)
    flops = {readout: models.flops_per_token(cfg, IOSpec(vocab_size=5, d_output=10, readout=readout), length=16)
             for readout in ("all", "last", "mean")}
    assert flops["all"] - flops["last"] == 2 * 8 * 10 * (1 - 1 / 16) and flops["last"] == flops["mean"]


@pytest.mark.parametrize("cfg", [preset("mamba", d_model=4, d_state=4), preset("mamba2", d_model=4, d_state=4, headdim=2),
                                 preset("mamba3", d_model=4, d_state=8, headdim=2)], ids=["mamba", "mamba2", "mamba3"])
def test_discretisation_counts_the_transitions_the_layer_computes(cfg) -> None:
    """The exps of Ā_t = exp(Δ_t A) a forward computes per token, counted on the aten calls:
    one per channel and state for Mamba-1, one per head for Mamba-2/3 (plus exp(A_log) once
    per call)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from models.sizing import _transitions_per_token

    class ExpCount(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.ops.aten.exp.default, torch.ops.aten.exp_.default):
                self.numel += out.numel()
            return out

    layer = SSMLayer(cfg.with_(mode="recurrent"))
    counts = []
    for length in (8, 16):
        with torch.no_grad(), ExpCount() as count:
            layer(torch.randn(1, length, cfg.d_model))
        counts.append(count.numel)
    assert (counts[1] - counts[0]) / 8 == _transitions_per_token(cfg)  # the per-call exp(A_log) cancels
