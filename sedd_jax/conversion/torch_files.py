"""PyTorch checkpoint files as the converter reads them.

Layouts: this project's `.pt` (the reference trainer's layout plus `meta`) and
`.safetensors` exports; the reference system's training checkpoints
(`model_state_dict`, `ema_state_dict.shadow_params`, `config`, a pickled `utils.Config`);
upstream SEDD's (`model`, `ema`, `step`; DDP `module.` prefixes); a bare state_dict.
Each becomes a `TorchCheckpoint`: float32 numpy arrays by torch name, the EMA named by
the parameters it shadows, a full sedd config, and where its settings came from.

The architecture is read off the tensor shapes (the head count from the rotary buffer);
the graph, noise and `scale_by_sigma` come from the run's own config or from flags
(`conversion.run_settings`), never from a default. This project's exports carry their
config and are read as they are.

Files are read with `torch.load(weights_only=True)` and an allow-list (`safe_globals`:
numpy scalars and dtypes, the reference's Config as an attribute bag); anything else is
refused, naming the classes, unless `trust_pickle`. torch and safetensors are imported
only when a file is read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import types

import ml_collections

from sedd_jax.conversion import foreign_configs, run_settings
from sedd_jax.conversion.run_settings import ConversionError, ImportOptions
from sedd_jax.defaults import base_config

log = logging.getLogger(__name__)

ROTARY_BUFFER = "rotary_emb.inv_freq"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile


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


def infer_config(state_dict: dict, require_heads: bool = True) -> ml_collections.ConfigDict:
    """The architecture of a single-track torch state_dict, read off its names and shapes.

    The variant follows the embedding's name (`embedding`: upstream `sedd`); the head count
    comes from the rotary buffer (nothing else carries it; without the buffer it is an
    error unless `require_heads` is False, when the default stays for a config to set).
    The graph, and so the number of tokens, is not read here: see `run_settings.resolve`.
    """
    sd = strip_wrappers(state_dict)
    variant = "sedd" if "vocab_embed.embedding" in sd else "protlig"
    if ROTARY_BUFFER not in sd and require_heads:
        raise ConversionError(
            f"no {ROTARY_BUFFER!r} buffer, so the number of heads is unknown: pass a config"
        )
    hidden = vocab_table(sd).shape[1]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    fc1 = "blocks.0.mlp.0.weight" if variant == "sedd" else "blocks.0.mlp.fc1.weight"
    config = base_config()
    config.model.variant = variant
    config.model.hidden = int(hidden)
    config.model.n_blocks = len(blocks)
    if ROTARY_BUFFER in sd:
        config.model.n_heads = int(hidden) // (2 * int(sd[ROTARY_BUFFER].shape[0]))
    config.model.cond_dim = int(sd["sigma_map.mlp.0.weight"].shape[0])
    config.model.mlp_ratio = int(sd[fc1].shape[0]) // int(hidden) if fc1 in sd else 4
    return config


def vocab_table(state_dict: dict):
    """The input embedding [V, d] of a single-track state_dict."""
    for name in ("vocab_embed.embedding", "vocab_embed.weight"):
        if name in state_dict:
            return state_dict[name]
    raise ConversionError(
        "no 'vocab_embed.weight' or 'vocab_embed.embedding' in the checkpoint: not a "
        f"single-track SEDD state_dict (keys start {sorted(state_dict)[:5]})"
    )


@dataclasses.dataclass
class TorchCheckpoint:
    """A torch checkpoint, normalised: weights by torch name as float32 numpy arrays."""

    params: dict  # raw weights (buffers included)
    ema: dict | None  # EMA weights, when the file has them
    config: ml_collections.ConfigDict
    step: int
    meta: dict
    layout: str  # sedd | reference | upstream | state_dict | safetensors
    provenance: dict = dataclasses.field(default_factory=dict)  # where the settings came from


class _Stub:
    """Stands in for a class of another code base (e.g. the reference's `utils.Config`):
    an attribute bag, nothing runs."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class ReferenceConfig(_Stub):
    """The reference system's `protlig_dd.utils.utils.Config` (a dataclass holding its
    YAML as `dictionary`), unpickled as a plain attribute bag."""


# Globals a `weights_only` load may meet in the checkpoints this converter reads: numpy
# scalars and dtypes (upstream saves its learning rate as a numpy float) and the
# reference's Config, under the names the pickles carry.
_REFERENCE_CONFIG_NAMES = ("protlig_dd.utils.utils.Config", "utils.utils.Config", "utils.Config")


def safe_globals() -> list:
    import numpy as np

    multiarray = (getattr(np, "_core", None) or np.core).multiarray  # numpy 2 | 1.x
    entries = [np.dtype, np.ndarray, *(getattr(np.dtypes, n) for n in np.dtypes.__all__)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(multiarray.scalar, f"{module}.scalar")]
        entries += [(multiarray._reconstruct, f"{module}._reconstruct")]
    return entries + [(ReferenceConfig, name) for name in _REFERENCE_CONFIG_NAMES]


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if f"{module}.{name}" in _REFERENCE_CONFIG_NAMES:
            return ReferenceConfig
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": module})


_LENIENT_PICKLE = types.SimpleNamespace(
    __name__="lenient_pickle", Unpickler=_LenientUnpickler, load=pickle.load
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _unsafe_globals(path: str, error: Exception) -> str:
    """The globals of `path` outside the allow-list, named in full (or torch's reason)."""
    import torch

    allowed = {
        e[1] if isinstance(e, tuple) else f"{e.__module__}.{e.__qualname__}" for e in safe_globals()
    }
    try:
        names = [
            g
            for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
            if g not in allowed
        ]
    except Exception:  # noqa: BLE001  (fall back to torch's own message)
        names = []
    if names:
        return "it pickles objects of classes outside the allow-list: " + ", ".join(names)
    text = _ANSI.sub("", str(error))
    reason = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    return " ".join(reason.split()) or type(error).__name__


def torch_load(path: str, trust_pickle: bool = False) -> tuple[dict, str]:
    """(object, how it was read). `weights_only=True` with `safe_globals()`; a file that
    needs more is refused, naming the classes, unless `trust_pickle`."""
    import torch

    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True), "weights_only"
    except pickle.UnpicklingError as error:
        reason = _unsafe_globals(path, error)
    except (RuntimeError, EOFError, ValueError) as error:  # truncated, not a torch file
        first = next(iter(_ANSI.sub("", str(error)).splitlines()), type(error).__name__)
        raise ConversionError(f"{path}: not a readable torch checkpoint ({first})") from None
    if not trust_pickle:
        raise ConversionError(
            f"{path}: cannot be read with weights_only=True: {reason}. Reading it as a full "
            "pickle runs code from the file: pass --trust_pickle if you trust its source"
        )
    log.warning("%s: %s; reading it as a full pickle (--trust_pickle)", path, reason)
    obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE)
    return obj, "full pickle (--trust_pickle)"


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


@dataclasses.dataclass
class _Parts:
    """A file's weights and whatever config it carries, before the config is resolved."""

    params: dict
    ema: dict | None
    step: int
    meta: dict
    layout: str
    config: dict | None  # a full sedd config (own layouts) or the reference's, or None
    yaml_file: str | None = None  # the YAML the reference's Config was loaded from


def _parts(obj: dict) -> _Parts:
    if "model_state_dict" in obj:
        params = _numpy(obj["model_state_dict"])
        shadows = (obj.get("ema_state_dict") or {}).get("shadow_params")
        ema = _numpy(_named_shadows(params, shadows)) if shadows else None
        layout = "sedd" if "meta" in obj else "reference"
        config = _plain(obj["config"]) if obj.get("config") else None
        meta = _plain(obj.get("meta", {}))
        yaml_file = getattr(obj.get("config"), "yamlfile", None)  # the reference's Config
        step = int(obj.get("step", 0))
        return _Parts(params, ema, step, meta, layout, config, yaml_file)
    if "model" in obj and hasattr(obj["model"], "items"):
        params = _numpy(obj["model"])
        shadows = (obj.get("ema") or {}).get("shadow_params")
        ema = _numpy(_named_shadows(params, shadows)) if shadows else None
        return _Parts(params, ema, int(obj.get("step", 0)), {}, "upstream", None)
    if obj and all(hasattr(v, "shape") for v in obj.values()):
        return _Parts(_numpy(obj), None, 0, {}, "state_dict", None)
    raise ConversionError(
        f"unknown checkpoint layout with keys {sorted(obj)[:8]}: expected "
        "model_state_dict (reference / sedd), model + ema (upstream SEDD) or a state_dict"
    )


def _read_safetensors(path: str) -> tuple[_Parts, str]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(path)
    with safe_open(path, "np") as f:
        metadata = f.metadata() or {}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    params = {k: v for k, v in tensors.items() if not k.startswith("ema.")}
    config = json.loads(metadata["config"]) if "config" in metadata else None
    meta = json.loads(metadata.get("meta", "{}"))
    step = int(metadata.get("step", 0))
    return _Parts(params, ema, step, meta, "safetensors", config), "safetensors"


def _run_settings(parts: _Parts, source, options: ImportOptions) -> run_settings.Settings:
    """The run's own settings, per layout (before the flags)."""
    if options.run_config:
        values = foreign_configs.read_yaml(options.run_config)
        mapper = foreign_configs.from_reference if parts.layout == "reference" else None
        return (mapper or foreign_configs.from_upstream)(values, options.run_config)
    if parts.layout == "reference" and parts.config:
        yaml_file = parts.yaml_file
        where = f"{source}: pickled Config" + (f" (of {yaml_file})" if yaml_file else "")
        return foreign_configs.from_reference(parts.config, where)
    if parts.layout == "upstream" and isinstance(source, str):
        path = foreign_configs.upstream_config_path(source)
        if os.path.exists(path):
            return foreign_configs.from_upstream(foreign_configs.read_yaml(path), path)
        return run_settings.Settings(origin=f"no run config at {path}")
    return run_settings.Settings()


def resolve_checkpoint(parts: _Parts, source, options: ImportOptions) -> TorchCheckpoint:
    """Weights + the run's own config (+ flags) -> a TorchCheckpoint, or a refusal."""
    where = source if isinstance(source, str) else f"<{parts.layout} checkpoint>"
    if parts.layout in ("sedd", "safetensors") and parts.config is not None:
        if options.values() or options.run_config:
            raise ConversionError(
                f"{where} is this project's export and carries its own config; the flags "
                "--graph/--noise/--tokens/... apply only to files without one"
            )
        config = config_from_dict(parts.config)
        origin = {"config_from": f"{where}: its config"}
        return TorchCheckpoint(
            parts.params, parts.ema, config, parts.step, parts.meta, parts.layout, origin
        )
    settings = run_settings.with_flags(_run_settings(parts, source, options), options)
    if parts.layout == "upstream":
        foreign_configs.finish_upstream(settings)
    needs_heads = "model.n_heads" not in settings.values and parts.layout != "reference"
    config = infer_config(parts.params, require_heads=needs_heads)
    rows = int(vocab_table(strip_wrappers(parts.params)).shape[0])
    config = run_settings.resolve(config, rows, settings, where)
    provenance = run_settings.summary(settings)
    return TorchCheckpoint(
        parts.params, parts.ema, config, parts.step, parts.meta, parts.layout, provenance
    )


def read_torch_checkpoint(source, options: ImportOptions | None = None) -> TorchCheckpoint:
    """Read a `.pt`/`.pth`/`.safetensors` path, or an already loaded checkpoint dict, with
    the settings of its run (see `conversion.run_settings`)."""
    options = options or ImportOptions()
    if isinstance(source, str) and source.endswith(".safetensors"):
        parts, loaded = _read_safetensors(source)
    elif isinstance(source, str):
        obj, loaded = torch_load(source, options.trust_pickle)
        parts = _parts(obj)
    else:
        parts, loaded = _parts(source), "in memory"
    ckpt = resolve_checkpoint(parts, source, options)
    ckpt.provenance["loaded_with"] = loaded
    return ckpt
