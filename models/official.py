"""Build our layers and models from the parameters of the official codes.

One entry point, :func:`load_official` (``kind``, ``source``), and one function per kind:

==============  ==============================================================  =========================
kind            source                                                          returns
==============  ==============================================================  =========================
``s4d``         state_dict of state-spaces/s4 ``models/s4/s4d.py`` ``S4D``       :class:`SSMLayer` (s4d)
``mamba``       state_dict of mamba-ssm ``Mamba`` (``mamba_simple.py``)         :class:`SSMLayer` (mamba)
``mamba2``      state_dict of mamba-ssm ``Mamba2`` (``mamba2.py``)              :class:`SSMLayer` (mamba2)
``mamba_lm``    a ``MambaLMHeadModel`` directory: ``config.json`` +             :class:`Backbone`
                ``pytorch_model.bin`` (or ``model.safetensors``); local only;
                Mamba1 or Mamba2 mixers (``ssm_cfg.layer``)
``s5``          flax ``params`` of lindermanlab/S5 ``S5SSM``                     :class:`SSMLayer` (s5)
``s5_model``    flax ``params`` of S5's ``StackedEncoderModel`` (or of a         :class:`Backbone`
                ``ClassificationModel`` around one), + ``batch_stats``
==============  ==============================================================  =========================

A state_dict source is a mapping of names to tensors (or arrays) or a path that
``torch.load`` reads; ``prefix`` selects one module inside a larger state_dict (e.g.
``"backbone.layers.0.mixer."``). An S5 source is a nested dict of arrays (flax's ``params``,
with or without the top ``{"params": ...}`` level), the same flattened with ``/``-joined
keys, or a path to such a flat ``.npz``; no JAX is needed (a JAX bfloat16 array is read as
float32). Every source is checked before anything is built: a missing or unexpected key, a
shape that does not fit the others, a dtype that is not real floating, a value that is not an
array, a file that does not read, or (MambaLMHeadModel) a config.json key mamba-ssm would
refuse or a size it states that the weights contradict, is a one-line ValueError naming it
and what would fit. A tied LM head may be absent (safetensors stores the embedding alone).

Further keyword options are SSMConfig fields the parameters do not fix: ``mode``,
``chunk_size``, or an axis moved to ablate from the loaded point (``eig_range``,
``discretization`` ...). A field the parameters fix (``d_model``, ``d_state`` ...) is refused
unless it agrees, and an option that would give the layer other parameters (``gate``, an
S4D's ``conj_sym`` ...) is a ValueError naming it, before anything is loaded.

The hyperparameters that are not in the parameters (S5's ``conj_sym``, ``discretization``,
``clip_eigs``, ``step_rescale``, ``activation``, ``prenorm``, ``batchnorm``, ``mode``) are
keyword arguments whose defaults are those of the official run script (``run_train.py``).
A ``Mamba2`` state_dict fixes every size but one: its in_proj holds 2·ngroups·d_state rows
for B and C, so ``ngroups`` (default 1, mamba-ssm's) and/or ``d_state`` are options, checked
against that count. Its ``norm_before_gate`` and ``dt_limit`` are not in the state_dict
either: mamba-ssm's defaults (False, none) are assumed; a ``MambaLMHeadModel``'s config.json
states them and is checked.
``dtype`` (default: the widest floating dtype of the source, float32 at the least for S4D and
S5, whose complex parameters have no half-precision arithmetic) is the dtype of the returned
module; it is returned in eval mode.

The mappings (ours <- official):

- S4D (one SISO SSM per channel, n = N/2 modes): ``A_log`` <- ``kernel.log_A_real``,
  ``A_imag`` <- ``kernel.A_imag``, ``log_dt`` (H, 1) <- ``kernel.log_dt`` (H,), ``C`` <-
  ``kernel.C`` (H, n, 2: real, imaginary), ``D`` <- ``D``, ``output_linear`` (Linear H -> 2H)
  <- ``output_linear.0`` (Conv1d H -> 2H, kernel 1); GELU exact and GLU over the channel
  halves on both sides.
- Mamba: the same names and layouts (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj);
  ``bias=True`` or ``conv_bias=False`` checkpoints are refused (the layer has neither form).
- Mamba2: :func:`models.peers.mamba2_from_official` (in_proj rows [z, x, B, C, dt] -> our
  in_proj [x, z] and the heads' projection [dt, B, C]; conv1d over [x, B, C] -> our conv over x
  and the heads' conv over [B, C]; A_log (E,) -> (E, 1); dt_bias, D, norm.weight, out_proj
  copied). Refused, each read off the keys and shapes: ``bias=True`` (in_proj/out_proj biases),
  ``conv_bias=False`` (no conv1d.bias), ``rmsnorm=False`` (no norm.weight), ``d_ssm < d_inner``
  (conv1d narrower than in_proj's x: the gated-MLP channels), ``D_has_hdim=True`` (D (d_inner,)).
- MambaLMHeadModel: ``encoder`` <- ``backbone.embedding``, block i's ``norm`` and ``mixer`` <-
  ``backbone.layers.i.norm`` / ``.mixer``, ``final_norm`` <- ``backbone.norm_f``, a bias-free
  ``head`` <- ``lm_head`` (tied to the embedding when ``tie_embeddings``). mamba-ssm's Block
  computes  residual = h + residual; h = mixer(norm(residual))  and adds the last mixer output
  before ``norm_f``: the same function as our pre-norm blocks  u <- u + mixer(norm(u)).
  ``residual_in_fp32`` keeps that sum in float32 (ours keeps it in the model's dtype: the same
  under a float32 model; under a lower precision ours rounds it, under float64 theirs does);
  ``fused_add_norm`` is the same function fused; the norms take ``norm_epsilon``. Mamba2
  mixers (``ssm_cfg.layer="Mamba2"``) become mamba2-preset layers (sizes from ``ssm_cfg`` with
  ``Mamba2``'s defaults: d_state 128, ngroups 1, headdim 64, d_conv 4, expand 2; checked
  against the shapes); refused: attention layers, the GatedMLP (``d_intermediate > 0``),
  biases off mamba-ssm's defaults, and the Mamba2 options the preset has no form for
  (``rmsnorm=False``, ``norm_before_gate=True``, a ``dt_limit``, ``D_has_hdim=True``,
  ``d_ssm < d_inner``).
- S5 (one MIMO SSM, P stored eigenvalues; d_state = 2P with conj_sym): ``A_real`` (1, P) <-
  ``Lambda_re`` (with ``a_param='log'``: ``A_log`` = log(-Lambda_re), clipped first under clip_eigs), ``A_imag`` <-
  ``Lambda_im``, ``B`` (1, P, H, 2) <- ``B`` (P, H, 2), ``C`` (1, H, P, 2) <- ``C`` (H, P, 2);
  bidirectional: ``C``, ``C_backward`` <- ``C1``, ``C2`` or the halves of ``C`` (H, 2P, 2)
  (``complex_normal``); ``log_dt`` (1, P) <- ``log_step`` (P, 1); ``D`` <- ``D``. Gate:
  ``full_glu`` -> ``glu`` with ``output_linear`` <- [out1; out2], ``half_glu1``/``half_glu2``
  -> the same gate with ``output_linear`` <- ``out2``, ``gelu`` -> ``none``; flax's ``nn.gelu``
  is the tanh form (``gelu='tanh'``). flax Dense kernels are (in, out): transposed.
- StackedEncoderModel: ``encoder`` <- ``encoder`` (Dense), block i <- ``layers_i`` (``seq``,
  ``out1``/``out2``, ``norm``: LayerNorm eps 1e-6 as flax's, or BatchNorm with ``batch_stats``
  ``mean``/``var``, momentum 1 - flax's), no final norm (the official stack has none);
  a ClassificationModel's ``decoder`` becomes the head, read out by ``mode`` (``pool``: mean,
  ``last``). The padded (masked mean) form is not represented.

The two Backbones differ from ``models.build(model.cfg, model.spec)`` where the official model
does: the LM's head has no bias (and is tied), S5's stack has no final norm and flax's norm
epsilons. Training or ablating goes on from the returned module; a model rebuilt from its
config alone would have our head and norms.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from . import peers
from .backbone import Backbone
from .config import CLIP_EIGS_BOUND, IOSpec, ModelConfig, SSMConfig
from .layer import SSMLayer
from .presets import preset

KINDS = ("s4d", "mamba", "mamba2", "mamba_lm", "s5", "s5_model")
# mamba-ssm's Mamba2 defaults (modules/mamba2.py) for what a MambaLMHeadModel's ssm_cfg leaves out
MAMBA2_DEFAULTS = {"d_state": 128, "ngroups": 1, "headdim": 64, "d_conv": 4, "expand": 2}
S5_ACTIVATIONS = {"full_glu": "glu", "half_glu1": "half_glu1", "half_glu2": "half_glu2", "gelu": "none"}
FLAX_LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon (torch's is 1e-5)
FLAX_BATCH_NORM_EPS = 1e-5
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The keys mamba-ssm's MambaConfig takes, and those its ssm_cfg may hold for each mixer (the
# mixer's constructor arguments but d_model, layer_idx, device and dtype; plus "layer"):
# MambaLMHeadModel.from_pretrained passes them on, and refuses any other (TypeError).
MAMBA_LM_CONFIG_KEYS = ("d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
                        "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings")
MAMBA_SSM_CFG_KEYS = {
    "Mamba1": ("layer", "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
               "dt_init_floor", "conv_bias", "bias", "use_fast_path"),
    "Mamba2": ("layer", "d_state", "d_conv", "conv_init", "expand", "headdim", "d_ssm", "ngroups", "A_init_range",
               "D_has_hdim", "rmsnorm", "norm_before_gate", "dt_min", "dt_max", "dt_init_floor", "dt_limit", "bias",
               "conv_bias", "chunk_size", "use_mem_eff_path", "process_group", "sequence_parallel"),
}


def load_official(kind: str, source: Any, **options: Any) -> nn.Module:
    """Our layer or model computing what the official module with parameters ``source``
    computes; ``kind`` in :data:`KINDS` (see the module docstring), ``options`` those of the
    kind's function (:func:`s4d_from_official`, :func:`mamba_from_official`,
    :func:`mamba2_from_official`, :func:`mamba_lm_from_official`, :func:`s5_from_official`,
    :func:`s5_model_from_official`)."""
    loaders = {"s4d": s4d_from_official, "mamba": mamba_from_official, "mamba2": mamba2_from_official,
               "mamba_lm": mamba_lm_from_official, "s5": s5_from_official, "s5_model": s5_model_from_official}
    if kind not in loaders:
        raise ValueError(f"kind={kind!r} is not valid; expected one of {list(KINDS)}")
    return loaders[kind](source, **options)


# ---------------------------------------------------------------------------- reading sources
def _tensor(value: Any) -> torch.Tensor:
    return value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _array_leaf(what: str, key: str, value: Any) -> Any:
    """``value`` if it is a tensor or a numeric array, as torch can take it (a JAX/ml_dtypes
    bfloat16 array widened to float32); else a ValueError naming the key (a mapping there is
    a tree nested one level deeper than expected)."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value) if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)) else None
    if array is not None and array.dtype.name == "bfloat16":
        return array.astype(np.float32)
    if array is None or array.dtype.kind not in "biufc":
        hint = (f" (a state_dict nested under {key!r}? pass that entry, or a prefix)" if isinstance(value, Mapping)
                else "")
        raise ValueError(f"{what}: key {key!r} holds a {type(value).__name__}, expected a tensor or a numeric "
                         f"array{hint}")
    return array


def _load_file(what: str, path: Path, read: Any) -> Any:
    """``read(path)``, any failure to read or parse the file a one-line ValueError."""
    try:
        return read(path)
    except Exception as error:  # unpickling, JSON, safetensors and I/O errors alike: the file is not readable
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{what}: cannot read {str(path)!r} ({first})") from None


def _state_dict(source: Any, prefix: str, what: str) -> dict[str, torch.Tensor]:
    """The entries of a state_dict (a mapping, or a file torch.load reads) under ``prefix``,
    the prefix removed."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{what}: no file at {str(path)!r}; expected a state_dict saved with torch.save")
        source = _load_file(what, path, _read_torch)
    if not isinstance(source, Mapping):
        raise ValueError(f"{what}: expected a state_dict (a mapping of names to tensors) or a path, "
                         f"got {type(source).__name__}")
    if not isinstance(prefix, str):
        raise ValueError(f"prefix={prefix!r} is not valid; expected a string (e.g. 'backbone.layers.0.mixer.')")
    out = {k[len(prefix):]: _tensor(_array_leaf(what, k, v)) for k, v in source.items()
           if isinstance(k, str) and k.startswith(prefix)}
    if not out:
        raise ValueError(f"{what}: no key starts with prefix={prefix!r}; keys are e.g. {sorted(map(str, source))[:5]}")
    return out


def _read_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def flatten_params(tree: Any, sep: str = "/") -> dict[str, np.ndarray]:
    """A flax parameter tree (nested dicts of arrays) -> {``a/b/c``: array}; a flat mapping is
    returned as arrays; a path is read as an ``.npz`` of ``/``-joined keys. A single top level
    ``params`` key is dropped (``{"params": {...}}`` as flax's ``init`` returns it)."""
    if isinstance(tree, (str, Path)):
        path = Path(tree)
        if not path.is_file():
            raise ValueError(f"no file at {str(path)!r}; expected an .npz of '/'-joined flax parameter names")
        tree = _load_file("flax parameters", path, _read_npz)
    if not isinstance(tree, Mapping):
        raise ValueError(f"expected a flax parameter tree (nested dicts of arrays), a flat dict with '/'-joined keys "
                         f"or an .npz path, got {type(tree).__name__}")
    flat: dict[str, np.ndarray] = {}

    def walk(node: Mapping, path: str) -> None:
        for key, value in node.items():
            name = f"{path}{sep}{key}" if path else str(key)
            if isinstance(value, Mapping):
                walk(value, name)
            else:
                leaf = _array_leaf("flax parameters", name, value)
                if isinstance(leaf, torch.Tensor):  # numpy has no bfloat16: widened to float32
                    leaf = leaf.detach().cpu()
                    leaf = (leaf.float() if leaf.dtype == torch.bfloat16 else leaf).numpy()
                flat[name] = leaf

    walk(tree, "")
    if flat and all(k.startswith("params/") for k in flat):
        flat = {k[len("params/"):]: v for k, v in flat.items()}
    return flat


def _floating_dtype(tensors: Mapping[str, Any], dtype: Any, complex_parameters: bool = False) -> torch.dtype:
    """The module's dtype: ``dtype`` (checked), else the widest floating dtype of the source.
    A layer with complex parameters (S4D, S5) computes in complex64 at the least (no complex
    half-precision arithmetic): a narrower source gives float32, a narrower ``dtype`` is refused."""
    if dtype is not None:
        if dtype not in FLOATING:
            raise ValueError(f"dtype={dtype!r} is not valid; expected one of {list(FLOATING)}")
        if complex_parameters and dtype.itemsize < 4:
            raise ValueError(f"dtype={dtype!r} is not valid for a layer with complex parameters (complex "
                             "half-precision arithmetic does not exist); expected torch.float32 or torch.float64")
        return dtype
    found = [t.dtype for t in map(_tensor, tensors.values()) if t.is_floating_point()]
    widest = max(found, key=lambda d: d.itemsize) if found else torch.get_default_dtype()
    return torch.float32 if complex_parameters and widest.itemsize < 4 else widest


def _check(what: str, tree: Mapping[str, Any], expected: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """ValueError unless ``tree`` has exactly the keys of ``expected``, each of its shape.
    ``expected``: key -> (shape, the shape in symbols, e.g. "(H, N/2, 2)")."""
    missing = [k for k in expected if k not in tree]
    if missing:
        shape, symbols = expected[missing[0]]
        raise ValueError(f"{what}: missing key {missing[0]!r} (expected shape {symbols} = {shape}); "
                         f"expected the keys {_some(sorted(expected))}")
    unexpected = sorted(set(tree) - set(expected))
    if unexpected:
        raise ValueError(f"{what}: unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} (no "
                         f"parameter of ours takes them); expected the keys {_some(sorted(expected))}")
    for key, (shape, symbols) in expected.items():
        got = tuple(tree[key].shape)
        if got != tuple(shape):
            raise ValueError(f"{what}: key {key!r} has shape {got}, expected {symbols} = {tuple(shape)}")
        dtype = tree[key].dtype
        if not (dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.dtype(dtype).kind == "f"):
            raise ValueError(f"{what}: key {key!r} has dtype {dtype}, expected a real floating dtype (float16, "
                             "bfloat16, float32 or float64)")


def _some(keys: list[str], most: int = 12) -> str:
    """A list of keys for a message: all of them, or the first ``most`` and how many more."""
    return str(keys) if len(keys) <= most else f"{keys[:most]} and {len(keys) - most} more"


def _dims(what: str, tree: Mapping[str, Any], key: str, rank: int, symbols: str) -> tuple[int, ...]:
    """The shape of ``tree[key]`` (the key that fixes some sizes), checked for its rank."""
    if key not in tree:
        raise ValueError(f"{what}: missing key {key!r} (expected shape {symbols}); keys present: {sorted(tree)[:12]}")
    shape = tuple(tree[key].shape)
    if len(shape) != rank:
        raise ValueError(f"{what}: key {key!r} has shape {shape}, expected {symbols}")
    return shape


def _layer_config(name: str, fixed: dict[str, Any], overrides: dict[str, Any], what: str) -> SSMConfig:
    """The ``name`` preset with the fields the official parameters and options fix, moved by
    ``overrides``: SSMConfig fields those do not fix (``mode``, ``chunk_size``, or an axis to
    ablate from the loaded point). An unknown field, or one that contradicts ``fixed``, is a
    ValueError before anything is built."""
    valid = [f.name for f in dataclasses.fields(SSMConfig)]
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(f"option {key}={value!r} is not valid; expected the loader's options or SSMConfig fields "
                             f"the parameters do not fix, e.g. mode or chunk_size (fields: {valid})")
        if key in fixed and value != fixed[key]:
            raise ValueError(f"{what}: option {key}={value!r} does not fit: the parameters (or the loader's own "
                             f"options) give {key}={fixed[key]!r}; leave it out")
    return preset(name, **{**fixed, **overrides})


def _load(module: nn.Module, ours: Mapping[str, Any], dtype: torch.dtype,
          overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """Copy ``ours`` (our names) into ``module`` (every parameter must be given, each of its
    shape), eval mode. A mismatch with ``overrides`` given is theirs (an axis moved to one with
    other parameters): a ValueError naming them; without, a bug in the mapping."""
    module = module.to(dtype)
    state = module.state_dict()
    unknown = sorted(set(ours) - set(state))
    uncovered = sorted(k for k, _ in module.named_parameters() if k not in ours)
    resized = sorted(k for k in set(ours) & set(state) if tuple(_tensor(ours[k]).shape) != tuple(state[k].shape))
    if unknown or uncovered or resized:
        found = f"parameters it lacks {unknown}, its parameters not given {uncovered}, other shapes {resized}"
        if overrides:
            raise ValueError(f"options {dict(overrides)} give a layer with other parameters than the official ones "
                             f"({found}); expected options that keep the parameters (e.g. mode, chunk_size)")
        raise RuntimeError(f"official mapping does not fit the module: {found}")
    for key, value in ours.items():
        state[key] = _tensor(value).to(state[key].dtype)
    module.load_state_dict(state)
    return module.eval()


def _real_part(layer: SSMLayer, real: torch.Tensor, what: str) -> dict[str, torch.Tensor]:
    """Re A as the layer stores it: ``A_real`` itself, or ``A_log`` = log(-Re A) (needs Re A < 0;
    under clip_eigs Re A is clipped first: the same function, though a clipped entry then sits on
    the bound, where it gets a gradient)."""
    if getattr(layer, "A_real", None) is not None:
        return {"A_real": real}
    if layer.cfg.clip_eigs:
        real = real.clamp(max=CLIP_EIGS_BOUND)
    if (real >= 0).any():
        raise ValueError(f"{what}: Re Λ has {int((real >= 0).sum())} entries >= 0, which a layer storing "
                         "A_log = log(-Re A) cannot represent; expected Re Λ < 0 (or use clip_eigs=True)")
    return {"A_log": torch.log(-real)}


# ---------------------------------------------------------------------------- S4D
def s4d_from_official(source: Any, prefix: str = "", dtype: torch.dtype | None = None,
                      **overrides: Any) -> SSMLayer:
    """An s4d-preset :class:`SSMLayer` from the state_dict of state-spaces/s4's minimal ``S4D``
    (``models/s4/s4d.py``). ``overrides``: further SSMConfig fields (e.g. ``mode``)."""
    what = "official S4D state_dict"
    sd = _state_dict(source, prefix, what)
    (H,) = _dims(what, sd, "D", 1, "(H,)")
    _, n, _ = _dims(what, sd, "kernel.C", 3, "(H, N/2, 2)")
    _check(what, sd, {
        "D": ((H,), "(H,)"), "kernel.log_dt": ((H,), "(H,)"), "kernel.C": ((H, n, 2), "(H, N/2, 2)"),
        "kernel.log_A_real": ((H, n), "(H, N/2)"), "kernel.A_imag": ((H, n), "(H, N/2)"),
        "output_linear.0.weight": ((2 * H, H, 1), "(2H, H, 1)"), "output_linear.0.bias": ((2 * H,), "(2H,)"),
    })
    dtype = _floating_dtype(sd, dtype, complex_parameters=True)
    layer = SSMLayer(_layer_config("s4d", dict(d_model=H, d_state=2 * n), overrides, what))
    real = -torch.exp(sd["kernel.log_A_real"].to(torch.float64))
    ours = {"A_log": sd["kernel.log_A_real"]} if getattr(layer, "A_log", None) is not None else {"A_real": real}
    ours.update({"A_imag": sd["kernel.A_imag"], "log_dt": sd["kernel.log_dt"].unsqueeze(-1), "C": sd["kernel.C"],
                 "D": sd["D"], "output_linear.weight": sd["output_linear.0.weight"][..., 0],
                 "output_linear.bias": sd["output_linear.0.bias"]})
    return _load(layer, ours, dtype, overrides)


# ---------------------------------------------------------------------------- Mamba
MAMBA_NAMES = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
               "dt_proj.bias", "A_log", "D", "out_proj.weight")


def _refuse_bias_options(sd: Mapping[str, torch.Tensor], what: str, ours: str, theirs: str) -> None:
    """A mamba-ssm block built with bias=True or conv_bias=False has no counterpart in the
    ``ours`` preset (projections without bias, a conv with one): one-line ValueError."""
    for name in ("in_proj.bias", "out_proj.bias"):
        if name in sd:
            raise ValueError(f"{what}: key {name!r} (bias=True) has no counterpart: the {ours} preset's projections have "
                             f"no bias; expected a {theirs} built with bias=False (mamba-ssm's default)")
    if "conv1d.weight" in sd and "conv1d.bias" not in sd:
        raise ValueError(f"{what}: missing key 'conv1d.bias' (conv_bias=False): the {ours} preset's conv has a bias; "
                         f"expected a {theirs} built with conv_bias=True (mamba-ssm's default)")


def _mamba_config_overrides(sd: Mapping[str, torch.Tensor], what: str) -> tuple[dict[str, Any], dict]:
    """The mamba preset's sizes read off a Mamba state_dict, and the expected shapes."""
    if "dt_bias" in sd and "x_proj.weight" not in sd:
        raise ValueError(f"{what}: keys 'dt_bias' and no 'x_proj.weight': a Mamba2 state_dict? expected kind 'mamba2' "
                         "for it, or a Mamba (Mamba-1) state_dict")
    _refuse_bias_options(sd, what, "mamba", "Mamba")
    two_d, H = _dims(what, sd, "in_proj.weight", 2, "(2·d_inner, d_model)")
    D = two_d // 2
    if two_d % 2 or D % H:
        raise ValueError(f"{what}: key 'in_proj.weight' has shape {(two_d, H)}, expected (2·d_inner, d_model) with "
                         "d_inner = expand·d_model for an integer expand")
    _, N = _dims(what, sd, "A_log", 2, "(d_inner, d_state)")
    _, R = _dims(what, sd, "dt_proj.weight", 2, "(d_inner, dt_rank)")
    _, _, k = _dims(what, sd, "conv1d.weight", 3, "(d_inner, 1, d_conv)")
    expected = {
        "in_proj.weight": ((2 * D, H), "(2·d_inner, d_model)"), "conv1d.weight": ((D, 1, k), "(d_inner, 1, d_conv)"),
        "conv1d.bias": ((D,), "(d_inner,)"), "x_proj.weight": ((R + 2 * N, D), "(dt_rank + 2·d_state, d_inner)"),
        "dt_proj.weight": ((D, R), "(d_inner, dt_rank)"), "dt_proj.bias": ((D,), "(d_inner,)"),
        "A_log": ((D, N), "(d_inner, d_state)"), "D": ((D,), "(d_inner,)"), "out_proj.weight": ((H, D), "(d_model, d_inner)"),
    }
    return dict(d_model=H, d_state=N, expand=D // H, conv=k, dt_rank=R), expected


def mamba_from_official(source: Any, prefix: str = "", dtype: torch.dtype | None = None,
                        **overrides: Any) -> SSMLayer:
    """A mamba-preset :class:`SSMLayer` from the state_dict of mamba-ssm's ``Mamba``
    (``prefix`` e.g. ``"backbone.layers.3.mixer."`` for one layer of a MambaLMHeadModel)."""
    what = "official Mamba state_dict"
    sd = _state_dict(source, prefix, what)
    sizes, expected = _mamba_config_overrides(sd, what)
    _check(what, sd, expected)
    dtype = _floating_dtype(sd, dtype)
    layer = SSMLayer(_layer_config("mamba", sizes, overrides, what))
    return _load(layer, _mamba_ours(sd, layer, what), dtype, overrides)


def _mamba_ours(sd: Mapping[str, torch.Tensor], layer: SSMLayer, what: str) -> dict[str, torch.Tensor]:
    """A Mamba state_dict as ``layer``'s: the same names, A_log turned into the layer's own
    storage of Re A when that is not A_log (``a_param='direct'``)."""
    ours = {k: v for k, v in sd.items() if k != "A_log"}
    ours.update(_real_part(layer, -torch.exp(sd["A_log"].to(torch.float64)), what)
                if getattr(layer, "A_log", None) is None else {"A_log": sd["A_log"]})
    return ours


# ---------------------------------------------------------------------------- Mamba2
def _mamba2_config_overrides(sd: Mapping[str, torch.Tensor], what: str, ngroups: int | None = None,
                             d_state: int | None = None) -> tuple[dict[str, Any], dict]:
    """The mamba2 preset's sizes read off a Mamba2 state_dict (ngroups and d_state from the
    options: the shapes fix only their product), and the expected shapes."""
    if "x_proj.weight" in sd and "dt_bias" not in sd:
        raise ValueError(f"{what}: key 'x_proj.weight' and no 'dt_bias': a Mamba (Mamba-1) state_dict? expected kind "
                         "'mamba' for it, or a Mamba2 state_dict")
    _refuse_bias_options(sd, what, "mamba2", "Mamba2")
    if "A_log" in sd and "norm.weight" not in sd:
        raise ValueError(f"{what}: missing key 'norm.weight' (rmsnorm=False): the mamba2 preset normalises y ⊙ SiLU(z) "
                         "with a gated RMSNorm; expected a Mamba2 built with rmsnorm=True (mamba-ssm's default)")
    H, D = _dims(what, sd, "out_proj.weight", 2, "(d_model, d_inner)")
    (E,) = _dims(what, sd, "A_log", 1, "(nheads,)")
    rows, H_in = _dims(what, sd, "in_proj.weight", 2, "(2·d_inner + 2·ngroups·d_state + nheads, d_model)")
    conv_dim, _, k = _dims(what, sd, "conv1d.weight", 3, "(d_inner + 2·ngroups·d_state, 1, d_conv)")
    two_gn = rows - 2 * D - E  # rows of in_proj for B and C
    if two_gn <= 0 or two_gn % 2:
        raise ValueError(f"{what}: key 'in_proj.weight' has shape {(rows, H_in)}, expected (2·d_inner + 2·ngroups·d_state"
                         f" + nheads, d_model) with d_inner = {D} (out_proj.weight) and nheads = {E} (A_log): it leaves "
                         f"{two_gn} rows for B and C, expected a positive even number")
    gn = two_gn // 2
    d_ssm = conv_dim - 2 * gn
    if 0 < d_ssm < D:
        raise ValueError(f"{what}: key 'conv1d.weight' has shape {(conv_dim, 1, k)}: d_ssm = {d_ssm} < d_inner = {D} (a "
                         f"gated MLP on the other {D - d_ssm} channels), which the mamba2 preset has no form for; expected "
                         f"(d_inner + 2·ngroups·d_state, 1, d_conv) = {(D + 2 * gn, 1, k)} (d_ssm=None, mamba-ssm's default)")
    if "D" in sd and tuple(sd["D"].shape) == (D,) and D != E:
        raise ValueError(f"{what}: key 'D' has shape {(D,)} (D_has_hdim=True): the mamba2 preset has one D per head; "
                         f"expected (nheads,) = {(E,)} (D_has_hdim=False, mamba-ssm's default)")
    if D % E:
        raise ValueError(f"{what}: key 'A_log' has shape {(E,)}, expected (nheads,) with nheads dividing d_inner = {D} "
                         "(out_proj.weight): d_inner = nheads·headdim")
    if D % H:
        raise ValueError(f"{what}: key 'out_proj.weight' has shape {(H, D)}, expected (d_model, d_inner) with "
                         "d_inner = expand·d_model for an integer expand")
    for name, value in (("ngroups", ngroups), ("d_state", d_state)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name}={value!r} is not valid; expected a positive integer")
    if d_state is None:
        g = 1 if ngroups is None else ngroups
        N = gn // g
    else:
        N = d_state
        g = gn // N if ngroups is None else ngroups
    if g * N != gn:
        raise ValueError(f"{what}: key 'in_proj.weight' has shape {(rows, H_in)}: its {two_gn} rows for B and C are "
                         f"2·ngroups·d_state, which ngroups={ngroups!r}, d_state={d_state!r} do not fit (ngroups "
                         f"defaults to 1 unless d_state is given); expected options with ngroups·d_state = {gn}")
    if E % g:
        raise ValueError(f"{what}: key 'A_log' has shape {(E,)}: nheads = {E} is not a multiple of ngroups = {g}; "
                         "expected ngroups to divide the heads")
    expected = {
        "in_proj.weight": ((2 * D + 2 * gn + E, H), "(2·d_inner + 2·ngroups·d_state + nheads, d_model)"),
        "conv1d.weight": ((D + 2 * gn, 1, k), "(d_inner + 2·ngroups·d_state, 1, d_conv)"),
        "conv1d.bias": ((D + 2 * gn,), "(d_inner + 2·ngroups·d_state,)"),
        "dt_bias": ((E,), "(nheads,)"), "A_log": ((E,), "(nheads,)"), "D": ((E,), "(nheads,)"),
        "norm.weight": ((D,), "(d_inner,)"), "out_proj.weight": ((H, D), "(d_model, d_inner)"),
    }
    return dict(d_model=H, d_state=N, expand=D // H, headdim=D // E, ngroups=g, conv=k), expected


def mamba2_from_official(source: Any, prefix: str = "", ngroups: int | None = None, d_state: int | None = None,
                         dtype: torch.dtype | None = None, **overrides: Any) -> SSMLayer:
    """A mamba2-preset :class:`SSMLayer` from the state_dict of mamba-ssm's ``Mamba2``
    (``prefix`` e.g. ``"backbone.layers.3.mixer."``). The shapes fix d_model, d_inner,
    nheads, headdim and d_conv, and only the product ngroups·d_state: give ``ngroups``
    (default 1, mamba-ssm's) or ``d_state`` or both (checked). ``norm_before_gate`` and
    ``dt_limit`` are not in a state_dict: mamba-ssm's defaults (False, none) are assumed.
    The mapping is :func:`models.peers.mamba2_from_official`."""
    what = "official Mamba2 state_dict"
    sd = _state_dict(source, prefix, what)
    sizes, expected = _mamba2_config_overrides(sd, what, ngroups, d_state)
    _check(what, sd, expected)
    dtype = _floating_dtype(sd, dtype)
    layer = SSMLayer(_layer_config("mamba2", sizes, overrides, what))
    return _load(layer, peers.mamba2_from_official(sd, layer.cfg), dtype, overrides)


def _read_mamba_lm(source: Any, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state_dict) from a checkpoint directory or a (config, state_dict) pair, each checked for its type."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(f"{what}: a tuple source has {len(source)} items, expected 2: (config dict, state_dict)")
        config, sd = source
    elif isinstance(source, (str, Path)):
        directory = Path(source)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{what}: no config.json in {str(directory)!r}; expected a local directory with "
                             "config.json and pytorch_model.bin (as MambaLMHeadModel.save_pretrained writes)")
        config = _load_file(what, config_path, lambda p: json.loads(p.read_text()))
        weights = directory / "pytorch_model.bin"
        if weights.is_file():
            sd = _load_file(what, weights, _read_torch)
        elif (directory / "model.safetensors").is_file():
            from safetensors.torch import load_file
            sd = _load_file(what, directory / "model.safetensors", load_file)
        else:
            raise ValueError(f"{what}: no pytorch_model.bin (or model.safetensors) in {str(directory)!r}")
    else:
        raise ValueError(f"{what}: expected a checkpoint directory or a (config dict, state_dict) pair, "
                         f"got {type(source).__name__}")
    if not isinstance(config, Mapping):
        raise ValueError(f"{what}: the config is a {type(config).__name__}, expected a mapping (config.json's object)")
    if not isinstance(sd, Mapping):
        raise ValueError(f"{what}: the state_dict is a {type(sd).__name__}, expected a mapping of names to tensors")
    return dict(config), {k: _tensor(_array_leaf(what, k, v)) for k, v in sd.items()}


def _check_mamba_lm_config(config: Mapping, ssm_cfg: Mapping, layer_kind: str, what: str) -> None:
    """Keys that MambaConfig, or the mixer's constructor, would refuse: a one-line ValueError."""
    for name, keys, given in (("config", MAMBA_LM_CONFIG_KEYS, config),
                              ("config ssm_cfg", MAMBA_SSM_CFG_KEYS[layer_kind], ssm_cfg)):
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise ValueError(f"{what}: {name} key {unknown[0]!r} is not valid (mamba-ssm refuses it too); expected "
                             f"keys among {list(keys)}")


def _check_mamba1_sizes(ssm_cfg: Mapping, sizes: Mapping[str, int], what: str) -> None:
    """A Mamba1 ssm_cfg's sizes (mamba-ssm's defaults where absent) against layer 0's parameters."""
    H = sizes["d_model"]
    dt_rank = ssm_cfg.get("dt_rank", "auto")
    stated = {"d_state": (ssm_cfg.get("d_state", 16), sizes["d_state"]),
              "d_conv": (ssm_cfg.get("d_conv", 4), sizes["conv"]),
              "expand": (ssm_cfg.get("expand", 2), sizes["expand"]),
              "dt_rank": (math.ceil(H / 16) if dt_rank == "auto" else dt_rank, sizes["dt_rank"])}
    for name, (value, weights) in stated.items():
        if value != weights and not (name == "expand" and isinstance(value, (int, float)) and int(value * H) == weights * H):
            raise ValueError(f"{what}: config ssm_cfg.{name}={ssm_cfg.get(name, value)!r} does not fit layer 0's "
                             f"parameters, which have {name} = {weights}; expected the config.json saved with them")


def mamba_lm_from_official(source: Any, dtype: torch.dtype | None = None, **overrides: Any) -> Backbone:
    """A :class:`Backbone` (token embedding, mamba- or mamba2-preset blocks with mamba-ssm's
    norm, final norm, bias-free LM head) from a ``MambaLMHeadModel`` checkpoint directory, or
    from ``(config_dict, state_dict)``. ``model(tokens)`` gives the logits (B, L, vocab);
    ``model(tokens, return_state=True)`` and ``model.step`` generate. ``overrides``: further
    SSMConfig fields of every layer (e.g. ``mode``)."""
    what = "official MambaLMHeadModel"
    config, sd = _read_mamba_lm(source, what)
    ssm_cfg = config.get("ssm_cfg") or {}
    if not isinstance(ssm_cfg, Mapping):
        raise ValueError(f"{what}: config ssm_cfg={ssm_cfg!r} is not valid; expected a mapping")
    ssm_cfg = dict(ssm_cfg)
    layer_kind = ssm_cfg.get("layer", "Mamba1")
    if layer_kind not in ("Mamba1", "Mamba2"):
        raise ValueError(f"{what}: config ssm_cfg.layer={layer_kind!r} is not supported; expected 'Mamba1' or 'Mamba2'")
    _check_mamba_lm_config(config, ssm_cfg, layer_kind, what)
    mamba2 = layer_kind == "Mamba2"
    refused = {"d_intermediate": (config.get("d_intermediate", 0), 0, "the GatedMLP after each mixer has no counterpart"),
               "attn_layer_idx": (list(config.get("attn_layer_idx") or []), [], "attention layers have no counterpart"),
               "ssm_cfg.bias": (ssm_cfg.get("bias", False), False, "the preset's projections have no bias"),
               "ssm_cfg.conv_bias": (ssm_cfg.get("conv_bias", True), True, "the preset's conv has a bias")}
    if mamba2:
        d_ssm = ssm_cfg.get("d_ssm")
        if d_ssm is not None and d_ssm == ssm_cfg.get("expand", MAMBA2_DEFAULTS["expand"]) * config.get("d_model", -1):
            d_ssm = None  # the whole of d_inner: the default
        dt_limit = ssm_cfg.get("dt_limit", (0.0, math.inf))
        refused.update({
            "ssm_cfg.rmsnorm": (ssm_cfg.get("rmsnorm", True), True, "the mamba2 preset has Mamba2's gated RMSNorm"),
            "ssm_cfg.norm_before_gate": (ssm_cfg.get("norm_before_gate", False), False,
                                         "the mamba2 preset normalises y ⊙ SiLU(z), after the gate"),
            "ssm_cfg.dt_limit": (list(dt_limit) if isinstance(dt_limit, (list, tuple)) else dt_limit,
                                 [0.0, math.inf], "the mamba2 preset does not clamp Δ"),
            "ssm_cfg.D_has_hdim": (ssm_cfg.get("D_has_hdim", False), False, "the mamba2 preset has one D per head"),
            "ssm_cfg.d_ssm": (d_ssm, None, "the gated-MLP channels beside the SSM have no counterpart")})
    for name, (value, valid, reason) in refused.items():
        if value != valid:
            raise ValueError(f"{what}: config {name}={value!r} is not supported; expected {valid!r} ({reason})")
    n_layer = config.get("n_layer")
    if not isinstance(n_layer, int) or n_layer < 1:
        raise ValueError(f"{what}: config n_layer={n_layer!r} is not valid; expected an integer >= 1")
    rms = config.get("rms_norm", True)
    V, H = _dims(what, sd, "backbone.embedding.weight", 2, "(vocab, d_model)")
    layer0 = {k[len("backbone.layers.0.mixer."):]: v for k, v in sd.items() if k.startswith("backbone.layers.0.mixer.")}
    if mamba2:
        cfg_value = {name: ssm_cfg.get(name, default) for name, default in MAMBA2_DEFAULTS.items()}
        sizes, mixer_shapes = _mamba2_config_overrides(layer0, what + " layer 0", cfg_value["ngroups"],
                                                       cfg_value["d_state"])
        for name, ours in (("headdim", "headdim"), ("d_conv", "conv"), ("expand", "expand")):
            if cfg_value[name] != sizes[ours]:
                raise ValueError(f"{what}: config ssm_cfg.{name}={cfg_value[name]!r} does not fit layer 0's parameters, "
                                 f"which have {name} = {sizes[ours]}; expected the config.json saved with them")
    else:
        sizes, mixer_shapes = _mamba_config_overrides(layer0, what + " layer 0")
        _check_mamba1_sizes(ssm_cfg, sizes, what)
    if sizes["d_model"] != H:
        raise ValueError(f"{what}: key 'backbone.layers.0.mixer.in_proj.weight' has d_model {sizes['d_model']}, "
                         f"expected {H} (the embedding's width)")
    if config.get("d_model", H) != H:
        raise ValueError(f"{what}: config d_model={config['d_model']!r} does not fit the parameters, whose embedding "
                         f"has width {H}; expected the config.json saved with them")
    vocab, multiple = config.get("vocab_size", V), config.get("pad_vocab_size_multiple", 8)
    if not (isinstance(vocab, int) and isinstance(multiple, int) and multiple > 0 and vocab + (-vocab % multiple) == V):
        raise ValueError(f"{what}: config vocab_size={vocab!r} (padded to a multiple of pad_vocab_size_multiple="
                         f"{multiple!r}) does not fit the embedding's {V} rows; expected the config.json saved with them")
    tied = config.get("tie_embeddings", True)
    if not isinstance(tied, bool):
        raise ValueError(f"{what}: config tie_embeddings={tied!r} is not valid; expected true or false")
    norm_shapes = {"weight": ((H,), "(d_model,)"), **({} if rms else {"bias": ((H,), "(d_model,)")})}
    expected = {"backbone.embedding.weight": ((V, H), "(vocab, d_model)"), "lm_head.weight": ((V, H), "(vocab, d_model)")}
    if tied and "lm_head.weight" not in sd:  # safetensors stores a tied weight once (the embedding)
        del expected["lm_head.weight"]
    elif tied and not torch.equal(sd["lm_head.weight"], sd["backbone.embedding.weight"]):
        raise ValueError(f"{what}: config tie_embeddings=True, but keys 'lm_head.weight' and "
                         "'backbone.embedding.weight' differ; expected equal tied weights, or tie_embeddings=false")
    for i in range(n_layer):
        expected.update({f"backbone.layers.{i}.mixer.{k}": s for k, s in mixer_shapes.items()})
        expected.update({f"backbone.layers.{i}.norm.{k}": s for k, s in norm_shapes.items()})
    expected.update({f"backbone.norm_f.{k}": s for k, s in norm_shapes.items()})
    _check(what, sd, expected)
    dtype = _floating_dtype(sd, dtype)

    cfg = ModelConfig(ssm=_layer_config("mamba2" if mamba2 else "mamba", sizes, overrides, what), n_layers=n_layer,
                      norm="rms" if rms else "layer")
    model = Backbone(cfg, IOSpec(vocab_size=V, d_output=V, readout="all"))
    for norm in [block.norm for block in model.blocks] + [model.final_norm]:
        norm.eps = config.get("norm_epsilon", 1e-5)  # mamba-ssm's default, as ours
    model.head = nn.Linear(H, V, bias=False)  # mamba-ssm's lm_head has no bias
    if tied:
        model.head.weight = model.encoder.weight
    ours = {"encoder.weight": sd["backbone.embedding.weight"],
            "head.weight": sd["backbone.embedding.weight"] if tied else sd["lm_head.weight"]}
    for i, block in enumerate(model.blocks):
        mixer = {k: sd[f"backbone.layers.{i}.mixer.{k}"] for k in mixer_shapes}
        mixer = peers.mamba2_from_official(mixer, block.mixer.cfg) if mamba2 else _mamba_ours(mixer, block.mixer, what)
        ours.update({f"blocks.{i}.mixer.{k}": v for k, v in mixer.items()})
        ours.update({f"blocks.{i}.norm.{k}": sd[f"backbone.layers.{i}.norm.{k}"] for k in norm_shapes})
    ours.update({f"final_norm.{k}": sd[f"backbone.norm_f.{k}"] for k in norm_shapes})
    return _load(model, ours, dtype, overrides)


# ---------------------------------------------------------------------------- S5
def _s5_shapes(what: str, p: Mapping[str, Any]) -> tuple[int, int, str, dict]:
    """(H, P, C layout, expected shapes) of an S5SSM parameter tree (flat, our prefix removed).
    C layouts: ``C`` (H, P, 2), ``C1``/``C2`` (H, P, 2) each (bidirectional), ``C`` (H, 2P, 2)
    (bidirectional with complex_normal); told apart by the keys, then by C's width."""
    (P,) = _dims(what, p, "Lambda_re", 1, "(P,)")
    (H,) = _dims(what, p, "D", 1, "(H,)")
    expected = {"Lambda_re": ((P,), "(P,)"), "Lambda_im": ((P,), "(P,)"), "B": ((P, H, 2), "(P, H, 2)"),
                "D": ((H,), "(H,)"), "log_step": ((P, 1), "(P, 1)")}
    if "C1" in p or "C2" in p:
        layout = "C1C2"
        expected.update({"C1": ((H, P, 2), "(H, P, 2)"), "C2": ((H, P, 2), "(H, P, 2)")})
    else:
        _, width, _ = _dims(what, p, "C", 3, "(H, P, 2) or, bidirectional, (H, 2P, 2)")
        layout = "C2P" if width == 2 * P else "C"
        expected["C"] = ((H, 2 * P, 2), "(H, 2P, 2)") if layout == "C2P" else ((H, P, 2), "(H, P, 2)")
    return H, P, layout, expected


def _s5_layer_config(H: int, P: int, bidirectional: bool, conj_sym: bool, discretization: str, clip_eigs: bool,
                     step_rescale: float, activation: str, overrides: dict) -> Any:
    if activation not in S5_ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not valid; expected one of {list(S5_ACTIVATIONS)}")
    if discretization not in ("zoh", "bilinear"):
        raise ValueError(f"discretization={discretization!r} is not valid; expected one of ['zoh', 'bilinear']")
    fields = dict(d_model=H, d_state=2 * P if conj_sym else P, blocks=1, conj_sym=conj_sym,
                  bidirectional=bidirectional, discretization=discretization, gate=S5_ACTIVATIONS[activation],
                  clip_eigs=clip_eigs, step_rescale=step_rescale)
    s5_conventions = dict(a_param="direct", gelu="tanh")  # flax's nn.gelu; Λ's real part stored as it is
    return _layer_config("s5", fields, {**s5_conventions, **overrides}, "official S5 params")


def _s5_ours(p: Mapping[str, np.ndarray], layout: str, P: int, layer: SSMLayer, what: str) -> dict[str, torch.Tensor]:
    """Our SSMLayer's SSM parameters from an S5SSM's (flat, prefix removed)."""
    t = {k: _tensor(v) for k, v in p.items()}
    ours = _real_part(layer, t["Lambda_re"].unsqueeze(0), what)
    ours.update({"A_imag": t["Lambda_im"].unsqueeze(0), "B": t["B"].unsqueeze(0), "D": t["D"],
                 "log_dt": t["log_step"][:, 0].unsqueeze(0)})
    if layout == "C":
        ours["C"] = t["C"].unsqueeze(0)
    elif layout == "C1C2":
        ours["C"], ours["C_backward"] = t["C1"].unsqueeze(0), t["C2"].unsqueeze(0)
    else:
        ours["C"], ours["C_backward"] = t["C"][:, :P].unsqueeze(0), t["C"][:, P:].unsqueeze(0)
    return ours


def _gate_params(flat: Mapping[str, np.ndarray], prefix: str, activation: str, H: int) -> tuple[dict, dict]:
    """Expected shapes of a SequenceLayer's out1/out2 Dense and our output_linear from them."""
    dense = {"kernel": ((H, H), "(H, H)"), "bias": ((H,), "(H,)")}
    names = {"full_glu": ("out1", "out2"), "half_glu1": ("out2",), "half_glu2": ("out2",), "gelu": ()}[activation]
    expected = {f"{prefix}{name}/{k}": s for name in names for k, s in dense.items()}
    if not names or any(k not in flat for k in expected):
        return expected, {}
    weight = torch.cat([_tensor(flat[f"{prefix}{name}/kernel"]).T for name in names])
    bias = torch.cat([_tensor(flat[f"{prefix}{name}/bias"]) for name in names])
    return expected, {"output_linear.weight": weight, "output_linear.bias": bias}


def s5_from_official(source: Any, activation: str = "gelu", conj_sym: bool = True, discretization: str = "zoh",
                     clip_eigs: bool = False, step_rescale: float = 1.0, dtype: torch.dtype | None = None,
                     **overrides: Any) -> SSMLayer:
    """An s5-preset :class:`SSMLayer` computing ``activation(S5SSM(u))``: lindermanlab/S5's
    ``S5SSM`` with flax params ``source`` (keys Lambda_re, Lambda_im, B, C or C1/C2, D,
    log_step; bidirectional is read off the C keys), followed by the output stage of its
    ``SequenceLayer`` (``activation``: ``gelu`` needs no parameters; ``full_glu`` takes
    ``out1`` and ``out2``, ``half_glu1``/``half_glu2`` take ``out2``, each {kernel, bias},
    beside the S5SSM's keys). A whole model: :func:`s5_model_from_official`."""
    what = "official S5SSM params"
    if activation not in S5_ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not valid; expected one of {list(S5_ACTIVATIONS)}")
    flat = flatten_params(source)
    H, P, layout, expected = _s5_shapes(what, flat)
    gate_expected, gate_ours = _gate_params(flat, "", activation, H)
    _check(what, flat, {**expected, **gate_expected})
    dtype = _floating_dtype(flat, dtype, complex_parameters=True)
    layer = SSMLayer(_s5_layer_config(H, P, layout != "C", conj_sym, discretization, clip_eigs, step_rescale,
                                      activation, overrides))
    return _load(layer, {**_s5_ours(flat, layout, P, layer, what), **gate_ours}, dtype, overrides)


def s5_model_from_official(source: Any, batch_stats: Any = None, activation: str = "half_glu1",
                           prenorm: bool = True, batchnorm: bool = True, bn_momentum: float = 0.95,
                           mode: str = "pool", conj_sym: bool = True, discretization: str = "zoh",
                           clip_eigs: bool = False, step_rescale: float = 1.0, dtype: torch.dtype | None = None,
                           **overrides: Any) -> Backbone:
    """A :class:`Backbone` computing lindermanlab/S5's ``StackedEncoderModel`` (features
    (B, L, H), no head) or, when ``source`` holds ``encoder/...`` and ``decoder/...`` (a
    ``ClassificationModel``, unpadded), the classifier's logits (its log_softmax up to a
    per-row constant) read out by ``mode`` (``pool``: mean, ``last``). ``batch_stats``: the
    flax ``batch_stats`` collection (BatchNorm's running ``mean``/``var``), or inside
    ``source`` as ``{"params": ..., "batch_stats": ...}`` (an .npz: keys ``params/...`` and
    ``batch_stats/...``). Defaults: the official run script's."""
    what = "official S5 StackedEncoderModel params"
    flat = flatten_params(source)
    if any(k.startswith("batch_stats/") for k in flat):  # {"params": ..., "batch_stats": ...} in one tree or .npz
        stats_in = {k[len("batch_stats/"):]: v for k, v in flat.items() if k.startswith("batch_stats/")}
        flat = {k[len("params/"):] if k.startswith("params/") else k: v for k, v in flat.items()
                if not k.startswith("batch_stats/")}
        batch_stats = stats_in if batch_stats is None else batch_stats
    if activation not in S5_ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not valid; expected one of {list(S5_ACTIVATIONS)}")
    if mode not in ("pool", "last"):
        raise ValueError(f"mode={mode!r} is not valid; expected one of ['pool', 'last']")
    if not isinstance(batchnorm, bool):  # (ModelConfig refuses a prenorm that is not a boolean)
        raise ValueError(f"batchnorm={batchnorm!r} is not valid; expected true or false")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 <= bn_momentum <= 1:
        raise ValueError(f"bn_momentum={bn_momentum!r} is not valid; expected a number in [0, 1] (flax's momentum)")
    if not batchnorm and batch_stats is not None:
        raise ValueError("batchnorm=False is not valid with batch_stats given: only a model trained with BatchNorm has "
                         "them; expected batchnorm=True (the official default), or no batch_stats")
    classifier = any(k.startswith("decoder/") for k in flat)
    root = "encoder/" if classifier else ""
    n_layers = 0
    while any(k.startswith(f"{root}layers_{n_layers}/") for k in flat):
        n_layers += 1
    if n_layers == 0:
        raise ValueError(f"{what}: missing key {root}layers_0/seq/Lambda_re (no layers_0); keys present: "
                         f"{sorted(flat)[:12]}")
    seq0 = {k[len(f"{root}layers_0/seq/"):]: v for k, v in flat.items() if k.startswith(f"{root}layers_0/seq/")}
    H, P, layout, ssm_expected = _s5_shapes(what + " layers_0/seq", seq0)
    d_input, _ = _dims(what, flat, f"{root}encoder/kernel", 2, "(d_input, H)")
    expected = {f"{root}encoder/kernel": ((d_input, H), "(d_input, H)"), f"{root}encoder/bias": ((H,), "(H,)")}
    d_output = None
    if classifier:
        _, d_output = _dims(what, flat, "decoder/kernel", 2, "(H, d_output)")
        expected.update({"decoder/kernel": ((H, d_output), "(H, d_output)"), "decoder/bias": ((d_output,), "(d_output,)")})
    gates = []
    for i in range(n_layers):
        prefix = f"{root}layers_{i}/"
        expected.update({f"{prefix}seq/{k}": s for k, s in ssm_expected.items()})
        expected.update({f"{prefix}norm/{k}": ((H,), "(H,)") for k in ("scale", "bias")})
        gate_expected, gate_ours = _gate_params(flat, prefix, activation, H)
        expected.update(gate_expected)
        gates.append(gate_ours)
    _check(what, flat, expected)
    stats = {}
    if batchnorm:
        stats = flatten_params(batch_stats) if batch_stats is not None else {}
        _check("official S5 batch_stats (BatchNorm running statistics; batchnorm=True)", stats,
               {f"{root}layers_{i}/norm/{k}": ((H,), "(H,)") for i in range(n_layers) for k in ("mean", "var")})
    dtype = _floating_dtype(flat, dtype, complex_parameters=True)

    layer_cfg = _s5_layer_config(H, P, layout != "C", conj_sym, discretization, clip_eigs, step_rescale, activation,
                                 overrides)
    cfg = ModelConfig(ssm=layer_cfg, n_layers=n_layers, norm="batch" if batchnorm else "layer", prenorm=prenorm)
    readout = {"pool": "mean", "last": "last"}[mode] if classifier else "all"
    model = Backbone(cfg, IOSpec(d_input=d_input, d_output=d_output, readout=readout))
    model.final_norm = nn.Identity()  # the official stack ends with its last layer
    t = {k: _tensor(v) for k, v in flat.items()}
    ours = {"encoder.weight": t[f"{root}encoder/kernel"].T, "encoder.bias": t[f"{root}encoder/bias"]}
    if classifier:
        ours.update({"head.weight": t["decoder/kernel"].T, "head.bias": t["decoder/bias"]})
    for i, block in enumerate(model.blocks):
        prefix = f"{root}layers_{i}/"
        seq = {k[len(f"{prefix}seq/"):]: v for k, v in flat.items() if k.startswith(f"{prefix}seq/")}
        ours.update({f"blocks.{i}.mixer.{k}": v for k, v in _s5_ours(seq, layout, P, block.mixer, what).items()})
        ours.update({f"blocks.{i}.mixer.{k}": v for k, v in gates[i].items()})
        ours.update({f"blocks.{i}.norm.weight": t[f"{prefix}norm/scale"], f"blocks.{i}.norm.bias": t[f"{prefix}norm/bias"]})
        if batchnorm:
            ours.update({f"blocks.{i}.norm.running_mean": _tensor(stats[f"{prefix}norm/mean"]),
                         f"blocks.{i}.norm.running_var": _tensor(stats[f"{prefix}norm/var"])})
            block.norm.eps, block.norm.momentum = FLAX_BATCH_NORM_EPS, 1.0 - bn_momentum
        else:
            block.norm.eps = FLAX_LAYER_NORM_EPS
    return _load(model, ours, dtype, overrides)
