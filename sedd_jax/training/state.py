"""The train state and its creation."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sedd_jax.training.loss_scale import LossScaler, LossScaleState


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs; the data position is `step` (batches are pure in it)."""

    step: jax.Array  # [] int32, optimizer steps taken
    params: dict
    ema_params: dict
    opt_state: optax.OptState
    rng: jax.Array  # [2] uint32 raw key data; per-step keys are fold_in(rng, step)
    # float16 loss scaling (`training/loss_scale.py`); scale 1 for bfloat16/float32
    loss_scale: LossScaleState = flax.struct.field(default_factory=lambda: LossScaler().init())


def create_train_state(
    init_params, tx, rng: jax.Array, scaler: LossScaler | None = None
) -> TrainState:
    """A fresh state; init_params(key) returns the network's parameters. Built by one
    compiled function: op by op, every leaf's copy and optimizer zeros would compile on
    its own (about 100 small compilations, seconds at every start)."""

    def build(rng):
        init_key, state_key = jax.random.split(rng)
        params = init_params(init_key)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            ema_params=jax.tree_util.tree_map(jnp.copy, params),
            opt_state=tx.init(params),
            rng=jax.random.key_data(state_key),
            loss_scale=(scaler or LossScaler()).init(),
        )

    return jax.jit(build)(rng)


def ema_decay(decay: float, num_updates: jax.Array) -> jax.Array:
    """Warm-up of the EMA decay: min(decay, (1 + n) / (10 + n)), n = updates so far (>= 1)."""
    n = num_updates.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def update_ema(ema_params, params, decay: jax.Array):
    """ema <- ema - (1 - decay) (ema - params)."""
    return jax.tree_util.tree_map(lambda e, p: e - (1.0 - decay) * (e - p), ema_params, params)
