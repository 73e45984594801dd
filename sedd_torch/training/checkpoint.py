"""Torch checkpoints of the whole train state (twin of sedd_jax/training/checkpoint.py).

Layout: `<workdir>/torch_checkpoints/checkpoint_step_<step>.pt`, one file per saved step,
in the reference system's format so that its tools and `python -m sedd_jax.convert` read
it: `model_state_dict`, `ema_state_dict` (`decay`, `num_updates`, `shadow_params` in
`model.parameters()` order), `optimizer_state_dict`, `step`, `config` (the run's config as
a plain dict) and `meta` (vocabulary size, length distribution). Everything is a tensor or
a plain Python value, so `torch.load(..., weights_only=True)` reads it. A write goes to a
temporary file first; `restore_latest` falls back to an older step when the newest is
unreadable (moving it aside) and raises `CheckpointMismatchError` when none loads.
`sedd_jax.sample` / `sedd_jax.evaluate --workdir` read these files directly
(`sedd_jax.runs.open_run` converts them on the fly).
"""

from __future__ import annotations

import logging
import os
import time

import torch

from sedd_jax.common.errors import checkpoint_mismatch
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


UNREADABLE = f"{DIRECTORY}.unreadable"  # beside torch_checkpoints/, as sedd_jax's


def restore_latest(workdir: str, state: TrainState) -> TrainState | None:
    """Load the newest readable checkpoint into `state`, or None when there is none.

    Unreadable steps newer than the one loaded are moved to
    `<workdir>/torch_checkpoints.unreadable/<step>-<UTC time>.pt` (logged). When checkpoints
    exist but none loads (e.g. the config changed the model's shapes), nothing is moved
    and this raises `CheckpointMismatchError`, as sedd_jax does, rather than starting over
    in a directory that holds a run.
    """
    device = next(state.model.parameters()).device
    errors = {}
    for step in reversed(all_steps(workdir)):
        try:
            payload = torch.load(checkpoint_path(workdir, step), map_location=device)
            load_into(state, payload)
        except Exception as error:  # torch raises many types for damaged files
            errors[step] = str(error)
            log.warning("checkpoint step %d unreadable (%s); trying an older one", step, error)
            continue
        _set_aside(workdir, sorted(errors))
        return state
    if errors:
        raise checkpoint_mismatch(os.path.join(workdir, DIRECTORY), errors[max(errors)])
    return None


def _set_aside(workdir: str, steps: list[int]):
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for step in steps:
        target = os.path.join(workdir, UNREADABLE, f"{step}-{stamp}.pt")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(checkpoint_path(workdir, step), target)
        log.warning("checkpoint step %d is unreadable: moved to %s", step, target)
