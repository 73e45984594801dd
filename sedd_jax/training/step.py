"""The train step, written per device, and its `jax.pmap` wrapper.

`train_step(state, batch)` sees one device's shard: tokens/valid [A, B, L] with A
micro-batches accumulated inside the step (one optimizer step per call). Gradients and
token counts are averaged over the `data` axis with `lax.pmean`, so the update equals the
single-device update on the global batch: loss = sum of token losses / number of valid
tokens, over all micro-batches and devices.

What is optimised comes from a task adapter (`sedd_jax.training.tasks`): its
`objective` gives the loss sum, the number of scored tokens and auxiliary sums of one
micro-batch, as a pure function of (params, batch, key, step) -- the curriculum, for
example, is a function of `state.step`.

A non-finite loss or gradient leaves the state unchanged and reports `finite = 0`, so the
loop can stop with the last good state intact.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

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
    objective,
    step_metrics,
    tx,
    lr_schedule,
    ema: float,
    axis_name: str = AXIS,
):
    """One optimizer step on this device's shard: every array of `batch` is [A, b, ...].

    objective(params, micro_batch, key, step, dropout_key) -> (loss_sum, count, aux) for
    one micro-batch (a task adapter's, `sedd_jax.training.tasks`); step_metrics(aux, step)
    turns the summed aux into metrics.
    """
    key = step_key(state, axis_name)
    grad_fn = jax.value_and_grad(
        lambda params, micro, k: _split_objective(objective, params, micro, k, state.step),
        has_aux=True,
    )

    def accumulate(carry, inputs):
        grads, loss_sum, count, aux_sum = carry
        micro, index = inputs
        (loss, (n, aux)), g = grad_fn(state.params, micro, jax.random.fold_in(key, index))
        add = functools.partial(jax.tree_util.tree_map, jnp.add)
        return (add(grads, g), loss_sum + loss, count + n, add(aux_sum, aux)), None

    first = jax.tree_util.tree_map(lambda a: a[0], batch)
    aux_shape = jax.eval_shape(
        lambda: _split_objective(objective, state.params, first, key, state.step)[1][1]
    )
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    aux_zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), aux_shape)
    micro_ids = jnp.arange(jax.tree_util.tree_leaves(batch)[0].shape[0])
    (grads, loss_sum, count, aux), _ = jax.lax.scan(
        accumulate, (zeros, 0.0, 0.0, aux_zeros), (batch, micro_ids)
    )
    loss_sum, count, grads, aux = jax.lax.pmean((loss_sum, count, grads, aux), axis_name)
    count = jnp.maximum(count, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / count, grads)
    loss = loss_sum / count
    grad_norm = optax.global_norm(grads)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = update_ema(state.ema_params, params, ema_decay(ema, state.step + 1))
    new_state = state.replace(params=params, ema_params=ema_params, opt_state=opt_state)
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
        **step_metrics(aux, state.step),
    }
    return new_state.replace(step=state.step + 1), metrics


def _split_objective(objective, params, micro, key, step):
    """objective with its dropout key split off; returns (loss_sum, (count, aux))."""
    loss_key, dropout_key = jax.random.split(key)
    loss_sum, count, aux = objective(params, micro, loss_key, step, dropout_key)
    return loss_sum, (count, aux)


def make_pmap_train_step(**kwargs):
    """pmap over local devices; state replicated with a leading device axis.

    kwargs are those of `train_step` after `batch`: objective, step_metrics, tx,
    lr_schedule, ema.
    """
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
