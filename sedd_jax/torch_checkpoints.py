"""PyTorch checkpoint files as the converter reads them, and the configs they imply.

Layouts: this project's `.pt` (the reference trainer's layout plus `meta`) and
`.safetensors` exports; the reference system's training checkpoints
(`model_state_dict`, `ema_state_dict.shadow_params`, `config`, a pickled `utils.Config`);
upstream SEDD's (`model`, `ema`, `step`; DDP `module.` prefixes); a bare state_dict.
Each becomes a `TorchCheckpoint`: float32 numpy arrays by torch name, the EMA named by
the parameters it shadows, and a full sedd config. Where a file carries no usable
config, the architecture is read off the tensor shapes (the head count from the rotary
buffer); a reference config is read with `transformer_v100.SEDD`'s resolution rules.

torch and safetensors are imported only when a file is read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
import types

import ml_collections

from sedd_jax.defaults import base_config

log = logging.getLogger(__name__)

ROTARY_BUFFER = "rotary_emb.inv_freq"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile


class ConversionError(ValueError):
    """A checkpoint that does not match its config, or a file of an unknown layout."""


def strip_wrappers(state_dict: dict) -> dict:
    """Drop `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out = {}
    for name, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        out[name] = value
    return out


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
    """A full config: `base_config()` updated (recursively) with a saved config dict."""
    config = base_config()

    def merge(target, source):
        for key, value in source.items():
            if isinstance(value, dict) and key in target and hasattr(target[key], "items"):
                merge(target[key], value)
            else:
                target[key] = value

    merge(config, values)
    return config


def infer_config(
    state_dict: dict, scale_by_sigma: bool = True, require_heads: bool = True
) -> ml_collections.ConfigDict:
    """A config for a single-track torch state_dict, read off its names and shapes.

    The variant follows the embedding's name (`embedding`: upstream `sedd`); the head count
    comes from the rotary buffer (nothing else carries it; without the buffer it is an
    error unless `require_heads` is False, when the default stays for a config to set).
    """
    sd = strip_wrappers(state_dict)
    variant = "sedd" if "vocab_embed.embedding" in sd else "protlig"
    table_name = "vocab_embed.embedding" if variant == "sedd" else "vocab_embed.weight"
    if table_name not in sd:
        raise ConversionError(
            f"no {table_name!r} in the checkpoint: not a single-track SEDD state_dict "
            f"(keys start {sorted(sd)[:5]})"
        )
    if ROTARY_BUFFER not in sd and require_heads:
        raise ConversionError(
            f"no {ROTARY_BUFFER!r} buffer, so the number of heads is unknown: pass a config"
        )
    vocab, hidden = sd[table_name].shape
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    fc1 = "blocks.0.mlp.0.weight" if variant == "sedd" else "blocks.0.mlp.fc1.weight"
    config = base_config()
    config.data.vocab_size = int(vocab) - 1  # absorbing graph: V = tokens + 1
    config.model.variant = variant
    config.model.hidden = int(hidden)
    config.model.n_blocks = len(blocks)
    if ROTARY_BUFFER in sd:
        config.model.n_heads = int(hidden) // (2 * int(sd[ROTARY_BUFFER].shape[0]))
    config.model.cond_dim = int(sd["sigma_map.mlp.0.weight"].shape[0])
    config.model.mlp_ratio = int(sd[fc1].shape[0]) // int(hidden) if fc1 in sd else 4
    config.model.scale_by_sigma = scale_by_sigma
    return config


def apply_reference_config(config, reference: dict) -> ml_collections.ConfigDict:
    """Overlay a reference-system config (transformer_v100.SEDD's resolution rules) on
    `config`; the shape check afterwards catches any disagreement with the weights."""
    model = reference.get("model") or {}
    graph = reference.get("graph") or {}
    tokens = reference.get("tokens") or (reference.get("data") or {}).get("vocab_size_protein")
    tokens = tokens or model.get("vocab_size")
    if graph.get("type", "absorb") != "absorb":
        raise ConversionError(f"reference graph.type={graph.get('type')!r}: only absorb is read")
    if tokens:
        config.data.vocab_size = int(tokens)
    for ours, theirs in (
        ("hidden", ("dim", "hidden_size")),
        ("n_blocks", ("n_layers", "n_blocks_prot")),
        ("n_heads", ("n_heads",)),
        ("cond_dim", ("cond_dim",)),
    ):
        value = next((model[k] for k in theirs if model.get(k) is not None), None)
        if value is not None:
            config.model[ours] = int(value)
    config.model.variant = "protlig"
    config.model.dropout = 0.1  # hard-coded in transformer_v100 (model.dropout is ignored)
    config.model.scale_by_sigma = bool(model.get("scale_by_sigma", False))
    noise = reference.get("noise") or {}
    if noise.get("type"):
        config.noise = ml_collections.ConfigDict(
            {k: v for k, v in noise.items() if k in ("type", "eps", "sigma_min", "sigma_max")}
        )
    return config


@dataclasses.dataclass
class TorchCheckpoint:
    """A torch checkpoint, normalised: weights by torch name as float32 numpy arrays."""

    params: dict  # raw weights (buffers included)
    ema: dict | None  # EMA weights, when the file has them
    config: ml_collections.ConfigDict
    step: int
    meta: dict
    layout: str  # sedd | reference | upstream | state_dict | safetensors


class _Stub:
    """Stands in for a class of another code base (e.g. the reference's `utils.Config`)."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": module})


_LENIENT_PICKLE = types.SimpleNamespace(
    __name__="lenient_pickle", Unpickler=_LenientUnpickler, load=pickle.load
)


def _torch_load(path: str) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        log.warning(
            "%s holds more than tensors (%s); reading it as a full pickle, which runs code "
            "from the file: convert only checkpoints you trust",
            path,
            str(error).splitlines()[0],
        )
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE
        )


def _plain(value):
    """Config objects (dicts, the reference's Config dataclass, stubs) -> plain dicts."""
    if isinstance(value, _Stub) or dataclasses.is_dataclass(value):
        fields = vars(value)
        if isinstance(fields.get("dictionary"), dict):  # the reference's utils.Config
            return _plain(fields["dictionary"])
        return {k: _plain(v) for k, v in fields.items() if not k.startswith("_")}
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _numpy(tensors: dict) -> dict:
    return {k: v.detach().cpu().float().numpy() for k, v in strip_wrappers(tensors).items()}


def _named_shadows(state_dict: dict, shadows: list) -> dict:
    """Name an EMA's shadow_params list by the parameters (not buffers) of its state_dict."""
    names = [k for k in state_dict if not k.endswith("inv_freq")]
    if len(names) != len(shadows):
        raise ConversionError(
            f"ema shadow_params has {len(shadows)} tensors but the state_dict has "
            f"{len(names)} parameters"
        )
    out = {}
    for name, shadow in zip(names, shadows, strict=True):
        if tuple(shadow.shape) != tuple(state_dict[name].shape):
            raise ConversionError(
                f"ema shadow_params for {name!r}: shape {tuple(shadow.shape)}, the parameter "
                f"has {tuple(state_dict[name].shape)} (shadow_params out of order?)"
            )
        out[name] = shadow
    return out


def _from_torch_object(obj: dict, scale_by_sigma: bool | None) -> TorchCheckpoint:
    sbs = True if scale_by_sigma is None else scale_by_sigma
    if "model_state_dict" in obj:
        params = _numpy(obj["model_state_dict"])
        ema_state = obj.get("ema_state_dict") or {}
        shadows = ema_state.get("shadow_params")
        ema = _numpy(_named_shadows(params, shadows)) if shadows else None
        source_config = _plain(obj.get("config") or {})
        if "meta" in obj:  # this project's own layout
            config, layout = config_from_dict(source_config), "sedd"
        else:
            inferred = infer_config(params, sbs, require_heads=False)
            config = apply_reference_config(inferred, source_config)
            if scale_by_sigma is not None:
                config.model.scale_by_sigma = scale_by_sigma
            layout = "reference"
        return TorchCheckpoint(
            params, ema, config, int(obj.get("step", 0)), _plain(obj.get("meta", {})), layout
        )
    if "model" in obj and hasattr(obj["model"], "items"):
        params = _numpy(obj["model"])
        shadows = (obj.get("ema") or {}).get("shadow_params")
        ema = _numpy(_named_shadows(params, shadows)) if shadows else None
        config = infer_config(params, sbs)
        return TorchCheckpoint(params, ema, config, int(obj.get("step", 0)), {}, "upstream")
    if obj and all(hasattr(v, "shape") for v in obj.values()):
        params = _numpy(obj)
        return TorchCheckpoint(params, None, infer_config(params, sbs), 0, {}, "state_dict")
    raise ConversionError(
        f"unknown checkpoint layout with keys {sorted(obj)[:8]}: expected "
        "model_state_dict (reference / sedd), model + ema (upstream SEDD) or a state_dict"
    )


def _read_safetensors(path: str, scale_by_sigma: bool | None) -> TorchCheckpoint:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(path)
    with safe_open(path, "np") as f:
        metadata = f.metadata() or {}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    params = {k: v for k, v in tensors.items() if not k.startswith("ema.")}
    if "config" in metadata:
        config = config_from_dict(json.loads(metadata["config"]))
    else:
        config = infer_config(params, True if scale_by_sigma is None else scale_by_sigma)
    meta = json.loads(metadata.get("meta", "{}"))
    return TorchCheckpoint(params, ema, config, int(metadata.get("step", 0)), meta, "safetensors")


def read_torch_checkpoint(source, scale_by_sigma: bool | None = None) -> TorchCheckpoint:
    """Read a `.pt`/`.pth`/`.safetensors` path, or an already loaded checkpoint dict.

    scale_by_sigma: for files whose config does not say (upstream SEDD, bare state_dicts);
    default True. For reference checkpoints it overrides their config's value.
    """
    if isinstance(source, str) and source.endswith(".safetensors"):
        return _read_safetensors(source, scale_by_sigma)
    obj = _torch_load(source) if isinstance(source, str) else source
    return _from_torch_object(obj, scale_by_sigma)
