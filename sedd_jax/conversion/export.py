"""Flax weights -> PyTorch files: `.pt` in the reference layout, or `.safetensors`.

numpy is the interchange format; torch and safetensors are imported only when a file is
written.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from sedd_jax.conversion.names import flax_to_torch, with_rotary_buffer
from sedd_jax.conversion.orbax_io import Weights
from sedd_jax.conversion.run_settings import ConversionError
from sedd_jax.conversion.torch_files import config_from_dict
from sedd_jax.conversion.torch_import import WEIGHTS
from sedd_jax.runs import open_run


def torch_tensors(weights: Weights, which: str) -> tuple[dict, dict | None]:
    """(state_dict arrays with buffer, EMA arrays or None) per `which` in both|ema|params."""
    variant = weights.config.model.variant
    head_dim = weights.config.model.hidden // weights.config.model.n_heads
    raw = flax_to_torch(weights.params, variant)
    ema = flax_to_torch(weights.ema_params, variant)
    if which not in WEIGHTS:
        raise ConversionError(f"weights={which!r}; choose one of {WEIGHTS}")
    if which == "both":
        return with_rotary_buffer(raw, head_dim), ema
    return with_rotary_buffer(ema if which == "ema" else raw, head_dim), None


def export_pt(weights: Weights, path: str, which: str = "both") -> str:
    """Write the reference layout: model_state_dict, ema_state_dict.shadow_params (in
    parameter order), step, config, meta."""
    import torch

    state_dict, ema = torch_tensors(weights, which)
    payload = {
        "step": weights.step,
        "model_state_dict": {k: torch.from_numpy(v) for k, v in state_dict.items()},
        "config": weights.config.to_dict(),
        "meta": weights.meta,
    }
    if ema is not None:
        payload["ema_state_dict"] = {
            "decay": weights.config.training.ema,
            "num_updates": weights.step,
            "shadow_params": [torch.from_numpy(v) for v in ema.values()],
        }
    torch.save(payload, path)
    return path


def export_safetensors(weights: Weights, path: str, which: str = "both") -> str:
    """Write tensors by torch name (EMA as `ema.<name>` with which=both); config, meta and
    step go into the header's metadata."""
    from safetensors.numpy import save_file

    state_dict, ema = torch_tensors(weights, which)
    tensors = dict(state_dict)
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    metadata = {
        "format": "sedd",
        "weights": which,
        "step": str(weights.step),
        "config": json.dumps(weights.config.to_dict()),
        "meta": json.dumps(weights.meta),
    }
    save_file(tensors, path, metadata=metadata)
    return path


EXPORTERS = {".pt": export_pt, ".pth": export_pt, ".safetensors": export_safetensors}


def read_weights(path: str, step: int | None = None) -> Weights:
    """Both weight sets of a run (an orbax workdir, a twin workdir or a torch file) as
    numpy trees."""
    run = open_run(path, step)
    to_numpy = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
    params, ema = (to_numpy(run.params(w)) for w in ("params", "ema"))
    return Weights(params, ema, run.step, config_from_dict(run.meta["config"]), run.meta)


def export_torch(workdir: str, path: str, which: str = "both", step: int | None = None) -> str:
    """A run's checkpoint (orbax, or the twin's) -> `.pt`/`.pth` or `.safetensors` by
    extension."""
    suffix = next((s for s in EXPORTERS if path.endswith(s)), None)
    if suffix is None:
        raise ConversionError(f"{path}: the extension must be one of {sorted(EXPORTERS)}")
    return EXPORTERS[suffix](read_weights(workdir, step), path, which)
