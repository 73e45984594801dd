"""Weights in and out of orbax workdirs (`<workdir>/checkpoints/<step>/{state, meta}`)."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from sedd_jax.common import torch_layout
from sedd_jax.conversion.torch_files import config_from_dict
from sedd_jax.training import checkpoint
from sedd_jax.training.optim import make_optimizer
from sedd_jax.training.state import TrainState


@dataclasses.dataclass
class Weights:
    """Flax parameters of a checkpoint and where they came from."""

    params: dict
    ema_params: dict
    step: int
    config: ml_collections.ConfigDict
    meta: dict


def _manager(workdir: str):
    return checkpoint.make_manager(workdir, keep=1_000_000, async_save=False)


def has_orbax(workdir: str) -> bool:
    """Whether `workdir` holds an orbax checkpoint."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return False
    return _manager(workdir).latest_step() is not None


def read_meta(workdir: str, step: int | None = None) -> tuple[int, dict]:
    """(step, meta) of an orbax checkpoint (the newest when step is None), without the
    arrays."""
    manager = _manager(workdir)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint under {os.path.join(workdir, 'checkpoints')} "
            f"(nor {os.path.join(workdir, torch_layout.DIRECTORY)})"
        )
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    return step, meta


def read_orbax(workdir: str, step: int | None = None) -> Weights:
    """params and EMA of `<workdir>/checkpoints/<step>` (the newest when step is None)."""
    step, meta = read_meta(workdir, step)
    state = checkpoint.restore_raw_state(workdir, step)
    to_numpy = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
    config = config_from_dict(meta["config"])
    return Weights(to_numpy(state["params"]), to_numpy(state["ema_params"]), step, config, meta)


def train_state(config, params, ema_params, step: int) -> TrainState:
    """A TrainState the JAX loop resumes from: these weights, a fresh optimizer state, and
    the PRNG that `create_train_state` derives from `config.seed`."""
    tx = make_optimizer(config.optim, config.training.n_steps)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    _, state_key = jax.random.split(jax.random.key(config.seed))
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.asarray, ema_params),
        opt_state=tx.init(params),
        rng=jax.random.key_data(state_key),
    )


def write_orbax(workdir: str, weights: Weights) -> str:
    """Save `weights` as `<workdir>/checkpoints/<step>/{state, meta}`."""
    state = train_state(weights.config, weights.params, weights.ema_params, weights.step)
    meta = dict(weights.meta, config=weights.config.to_dict())
    manager = _manager(workdir)
    checkpoint.save(manager, weights.step, state, meta, force=True)
    manager.wait_until_finished()
    manager.close()
    return str(manager.directory)
