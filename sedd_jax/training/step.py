"""The train step, written per device, and its `jax.pmap` wrapper.

`train_step(state, batch)` sees one device's shard: tokens/valid [A, B, L] with A
micro-batches accumulated inside the step (one optimizer step per call). Gradients and
token counts are averaged over the `data` axis with `lax.pmean`, so the update equals the
single-device update on the global batch: loss = sum of token losses / number of valid
tokens, over all micro-batches and devices.

The curriculum (`config.curriculum`, see `sedd_jax.diffusion.curriculum`) is a pure
function of `state.step`: it sets the time sampler and the sigma multiplier of the loss.
The metrics report its progress and the mean sampled time.

A non-finite loss or gradient leaves the state unchanged and reports `finite = 0`, so the
loop can stop with the last good state intact.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from sedd_jax.diffusion.curriculum import check_curriculum, progress, sigma_multiplier
from sedd_jax.diffusion.losses import loss_times, per_token_loss
from sedd_jax.training.state import TrainState, ema_decay, update_ema

AXIS = "data"


def step_key(state: TrainState, axis_name: str | None = AXIS) -> jax.Array:
    """A key unique to (run, step, device)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return key


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model,
    graph,
    noise,
    tx,
    lr_schedule,
    ema: float,
    sampling_eps: float,
    curriculum=None,
    axis_name: str = AXIS,
):
    key = step_key(state, axis_name)
    curriculum = check_curriculum(curriculum)
    sigma_scale = sigma_multiplier(state.step, curriculum)

    def micro_loss(params, tokens, valid, micro_key):
        loss_key, dropout_key = jax.random.split(micro_key)

        def log_score_fn(x, sigma):
            return model.apply(
                {"params": params},
                x,
                sigma,
                valid,
                deterministic=False,
                rngs={"dropout": dropout_key},
            )

        t, noise_key = loss_times(loss_key, tokens.shape[0], sampling_eps, state.step, curriculum)
        losses = per_token_loss(
            log_score_fn, graph, noise, tokens, valid, t, noise_key, sigma_scale=sigma_scale
        )
        return losses.sum(), (valid.sum().astype(jnp.float32), t.mean())

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def accumulate(carry, inputs):
        grads, loss_sum, count, t_sum = carry
        tokens, valid, index = inputs
        (loss, (n, mean_t)), g = grad_fn(
            state.params, tokens, valid, jax.random.fold_in(key, index)
        )
        grads = jax.tree_util.tree_map(jnp.add, grads, g)
        return (grads, loss_sum + loss, count + n, t_sum + mean_t), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    micro = jnp.arange(batch["tokens"].shape[0])
    (grads, loss_sum, count, t_sum), _ = jax.lax.scan(
        accumulate, (zeros, 0.0, 0.0, 0.0), (batch["tokens"], batch["valid"], micro)
    )
    mean_t = t_sum / micro.shape[0]
    loss_sum, count, grads, mean_t = jax.lax.pmean((loss_sum, count, grads, mean_t), axis_name)
    count = jnp.maximum(count, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / count, grads)
    loss = loss_sum / count
    grad_norm = optax.global_norm(grads)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = update_ema(state.ema_params, params, ema_decay(ema, state.step + 1))
    new_state = state.replace(
        step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state
    )
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), new_state, state
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": lr_schedule(state.step),
        "tokens": count * jax.lax.psum(1, axis_name),
        "finite": finite.astype(jnp.float32),
        "curriculum_progress": progress(state.step, curriculum),
        "mean_t": mean_t,
    }
    return new_state, metrics


def make_pmap_train_step(**kwargs):
    """pmap over local devices; state replicated with a leading device axis.

    kwargs are those of `train_step` after `batch`: model, graph, noise, tx, lr_schedule,
    ema, sampling_eps and, optionally, curriculum (a `config.curriculum` block; None or
    type "none": no curriculum).
    """
    check_curriculum(kwargs.get("curriculum"))
    return jax.pmap(
        functools.partial(train_step, axis_name=AXIS, **kwargs),
        axis_name=AXIS,
        donate_argnums=(0,),
    )


def replicate(tree, num_devices: int):
    """`num_devices` copies along a new leading axis, laid out as pmap lays out its outputs
    (so the first and later steps share one compilation)."""
    mesh = jax.sharding.Mesh(jax.local_devices()[:num_devices], (AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))

    def put(x):
        return jax.device_put(jnp.stack([x] * num_devices), sharding)

    return jax.tree_util.tree_map(put, tree)


def unreplicate(tree):
    """The first device's copy of a replicated tree."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)
