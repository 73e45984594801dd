"""The train step, written per device; `training/parallel.py` wraps it (pmap, shard_map, jit).

`train_step(state, batch)` sees one device's shard (or, under plain `jit`, the global
batch): every array of `batch` is [A, b, ...], A micro-batches accumulated inside the
step (one optimizer step per call), and `batch["example_id"]` [A, b] holds each row's
position in the global batch. Gradients and token counts are averaged over the `data`
axis with `lax.pmean` (no axis under plain `jit`: the compiler inserts the collectives),
so the update equals the single-device update on the global batch: loss = sum of token
losses / number of valid tokens, over all micro-batches and devices.

Randomness is keyed by example, never by device or micro-batch: with
`example_root, dropout_key = split(fold_in(rng, step))`, row i draws its times,
corruption and task from `fold_in(example_root, example_id_i)`, and its dropout masks from
`fold_in(<layer key of dropout_key>, example_id_i)` (`models/layers.Dropout`). The same
global batch therefore gives the same losses and parameters on any number of devices or
hosts, in any mode, with any accumulation split (up to float32 summation order).

What is optimised comes from a task adapter (`sedd_jax.training.tasks`): its
`objective` gives the loss sum, the number of scored tokens and auxiliary sums of one
micro-batch, as a pure function of (params, batch, keys, step, dropout_key).

A step whose loss or gradient is not finite leaves params, EMA and optimizer state
unchanged (`lax.cond`, no select over the state). The loss scaler
(`training/loss_scale.py`) decides whether the run may go on (`stop` metric): float16
skips and lowers its scale, bfloat16/float32 stop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from sedd_jax.diffusion import keys
from sedd_jax.training.loss_scale import LossScaler
from sedd_jax.training.optim import schedule_count
from sedd_jax.training.state import TrainState, ema_decay, update_ema

AXIS = "data"
EXAMPLE_ID = "example_id"
FIXED_SCALE = LossScaler()  # bfloat16 / float32: scale 1, stop on the first non-finite step


def step_keys(state: TrainState) -> tuple[jax.Array, jax.Array]:
    """(example_root, dropout_key) of this step: split(fold_in(rng, step)); the same on
    every device. Row keys are `keys.example_keys(example_root, example_id)`."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    example_root, dropout_key = jax.random.split(key)
    return example_root, dropout_key


def train_step(
    state: TrainState,
    batch: dict,
    *,
    objective,
    step_metrics,
    tx,
    lr_schedule,
    ema: float,
    scaler: LossScaler = FIXED_SCALE,
    axis_name: str | None = AXIS,
):
    """One optimizer step on this device's shard: every array of `batch` is [A, b, ...].

    objective(params, micro_batch, keys [b], step, dropout_key) -> (loss_sum, count, aux)
    for one micro-batch (a task adapter's, `sedd_jax.training.tasks`); step_metrics(aux,
    step) turns the summed aux into metrics. axis_name=None: no pmean (plain jit).
    """
    example_root, dropout_key = step_keys(state)
    scale = state.loss_scale.scale

    def scaled_objective(params, micro):
        """The differentiated value: loss_sum, or with float16 scale * (its token mean)."""
        row_keys = keys.example_keys(example_root, micro[EXAMPLE_ID])
        loss_sum, count, aux = objective(params, micro, row_keys, state.step, dropout_key)
        value = loss_sum * (scale / jnp.maximum(count, 1.0)) if scaler.dynamic else loss_sum
        return value, (loss_sum, count, aux)

    grad_fn = jax.value_and_grad(scaled_objective, has_aux=True)
    add = functools.partial(jax.tree_util.tree_map, jnp.add)

    def accumulate(carry, micro):
        grads, loss_sum, count, aux_sum = carry
        (_, (loss, n, aux)), g = grad_fn(state.params, micro)
        if scaler.dynamic:  # unscale: back to the gradient of this micro-batch's loss sum
            g = jax.tree_util.tree_map(lambda x: x * (jnp.maximum(n, 1.0) / scale), g)
        return (add(grads, g), loss_sum + loss, count + n, add(aux_sum, aux)), None

    first = jax.tree_util.tree_map(lambda a: a[0], batch)
    aux_shape = jax.eval_shape(lambda: scaled_objective(state.params, first)[1][2])
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    aux_zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), aux_shape)
    (grads, loss_sum, count, aux), _ = jax.lax.scan(accumulate, (zeros, 0.0, 0.0, aux_zeros), batch)
    devices = 1
    if axis_name is not None:
        loss_sum, count, grads, aux = jax.lax.pmean((loss_sum, count, grads, aux), axis_name)
        devices = jax.lax.psum(1, axis_name)
    count = jnp.maximum(count, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / count, grads)
    loss = loss_sum / count
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply(s):  # the clip of `optim.make_optimizer` reuses grad_norm; others ignore it
        updates, opt_state = optax.with_extra_args_support(tx).update(
            grads, s.opt_state, s.params, grad_norm=grad_norm
        )
        params = optax.apply_updates(s.params, updates)
        ema_params = update_ema(s.ema_params, params, ema_decay(ema, s.step + 1))
        return s.replace(params=params, ema_params=ema_params, opt_state=opt_state)

    new_state = jax.lax.cond(finite, apply, lambda s: s, state)
    loss_scale = scaler.update(state.loss_scale, finite)
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": lr_schedule(schedule_count(state.opt_state, state.step)),
        "tokens": count * devices,
        "stop": scaler.stop(loss_scale, finite).astype(jnp.float32),
        **scaler.metrics(loss_scale),
        **step_metrics(aux, state.step),
    }
    return new_state.replace(step=state.step + 1, loss_scale=loss_scale), metrics


def micro_batches(batch: dict, accum: int) -> dict:
    """Rows [b, ...] -> [accum, b / accum, ...]; micro-batch a holds rows a, a + accum, ...

    (the row dimension stays outermost in memory, so under a sharded `jit` each device's
    rows stay on it). Which rows share a micro-batch does not change any draw (keys
    follow `example_id`), only the float32 summation order.
    """

    def split(a):
        b = a.shape[0]
        return a.reshape(b // accum, accum, *a.shape[1:]).swapaxes(0, 1)

    return jax.tree_util.tree_map(split, batch)
