"""Torch checkpoints of the whole train state (twin of sedd_jax/training/checkpoint.py).

Layout: `<workdir>/torch_checkpoints/checkpoint_step_<step>.pt`, one file per saved step,
in the reference system's format so that its tools and `python -m sedd_jax.convert` read
it: `model_state_dict`, `ema_state_dict` (`decay`, `num_updates`, `shadow_params` in
`model.parameters()` order), `optimizer_state_dict`, `step`, `config` (the run's config as
a plain dict) and `meta` (vocabulary size, length distribution). Everything is a tensor or
a plain Python value, so `torch.load(..., weights_only=True)` reads it. A write goes to a
temporary file first; `restore_latest` falls back to an older step when the newest is
unreadable. `sedd_jax.sample` / `sedd_jax.evaluate --workdir` read these files directly
(`sedd_jax.runs.open_run` converts them on the fly).
"""

from __future__ import annotations

import logging
import os

import torch

from sedd_jax.common.torch_layout import (  # noqa: F401  (re-exported)
    DIRECTORY,
    all_steps,
    checkpoint_path,
)
from sedd_torch.training.state import TrainState

log = logging.getLogger(__name__)


def state_payload(state: TrainState, ema: float, config: dict, meta: dict) -> dict:
    return {
        "step": state.step,
        "model_state_dict": state.model.state_dict(),
        "ema_state_dict": {
            "decay": ema,
            "num_updates": state.step,
            "shadow_params": [p.detach() for p in state.ema_model.parameters()],
        },
        "optimizer_state_dict": state.optimizer.state_dict(),
        "config": config,
        "meta": meta,
    }


def save(workdir: str, state: TrainState, ema: float, config: dict, meta: dict, keep: int):
    """Write the state at `state.step`, then delete all but the `keep` newest files."""
    path = checkpoint_path(workdir, state.step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state_payload(state, ema, config, meta), path + ".tmp")
    os.replace(path + ".tmp", path)
    for step in all_steps(workdir)[:-keep] if keep > 0 else []:
        os.remove(checkpoint_path(workdir, step))
    return path


def load_into(state: TrainState, payload: dict) -> TrainState:
    state.model.load_state_dict(payload["model_state_dict"])
    with torch.no_grad():
        shadows = payload["ema_state_dict"]["shadow_params"]
        for e, s in zip(state.ema_model.parameters(), shadows, strict=True):
            e.copy_(s)
    state.optimizer.load_state_dict(payload["optimizer_state_dict"])
    state.step = int(payload["step"])
    return state


def restore_latest(workdir: str, state: TrainState) -> TrainState | None:
    """Load the newest readable checkpoint into `state`, or None when there is none."""
    device = next(state.model.parameters()).device
    for step in reversed(all_steps(workdir)):
        try:
            payload = torch.load(checkpoint_path(workdir, step), map_location=device)
            return load_into(state, payload)
        except Exception as error:  # torch raises many types for damaged files
            log.warning("checkpoint step %d unreadable (%s); trying an older one", step, error)
    return None
