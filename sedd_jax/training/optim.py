"""Optimizer and learning-rate schedule, counted in optimizer steps.

lr(k) rises linearly from `warmup_init_fraction * lr` to `lr` over `warmup` steps, then
follows a cosine to `final_lr_fraction * lr` at `total_steps` and stays there (the
reference's schedule, fixed: one unit for every count, clamped after the end; defect D7).
"""

from __future__ import annotations

import jax
import optax

from sedd_jax.common.optim_options import check_optimizer, is_muon_module


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    lr = optim_config.lr
    warmup = max(int(optim_config.warmup), 0)
    ramp = optax.linear_schedule(optim_config.warmup_init_fraction * lr, lr, max(warmup, 1))
    decay = optax.cosine_decay_schedule(
        lr, max(total_steps - warmup, 1), alpha=optim_config.final_lr_fraction
    )
    return optax.join_schedules([ramp, decay], [warmup])


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """`optax.clip_by_global_norm` (same formula, same empty state) that takes the norm
    the step already computed: `tx.update(grads, state, params, grad_norm=norm)`."""

    def update_fn(updates, state, params=None, *, grad_norm=None, **extra):
        del params, extra
        norm = optax.global_norm(updates) if grad_norm is None else grad_norm
        trigger = norm < max_norm
        clipped = jax.tree_util.tree_map(
            lambda t: jax.lax.select(trigger, t, (t / norm.astype(t.dtype)) * max_norm), updates
        )
        return clipped, state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def muon_dimension_numbers(params):
    """Which leaves Muon orthogonalises: the 2-D kernels of the transformer blocks and
    cross-attention layers (top-level modules `blocks*`, `cross*`). Embeddings, output
    layers, the sigma map, length heads, biases and norms stay with AdamW. A kernel is
    (inputs, outputs), optax's default layout."""

    def rule(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        top = next((n for n in names if n != "params"), "")
        hidden = is_muon_module(top) and names[-1] == "kernel"
        return optax.contrib.MuonDimensionNumbers(0, 1) if hidden and leaf.ndim == 2 else None

    return jax.tree_util.tree_map_with_path(rule, params)


def make_optimizer(optim_config, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (if grad_clip > 0) then AdamW with the schedule above, or
    (`optim.optimizer = muon`) Muon on the blocks' kernels and AdamW on the rest, one
    schedule for both; `optim.muon_rms` scales each Muon update to the RMS an AdamW update
    has (sqrt(max(fan_in, fan_out)) x muon_rms), so the same `lr` serves both.

    Weight decay applies to every parameter, as in the reference (one parameter group).
    Pass the gradients' global norm as `grad_norm=` to `update` to avoid recomputing it.
    """
    check_optimizer(optim_config.optimizer)
    schedule = learning_rate_schedule(optim_config, total_steps)
    if optim_config.optimizer == "adamw":
        base = optax.adamw(
            schedule,
            b1=optim_config.beta1,
            b2=optim_config.beta2,
            eps=optim_config.eps,
            weight_decay=optim_config.weight_decay,
        )
    else:
        base = optax.contrib.muon(
            schedule,
            beta=optim_config.muon_beta,
            weight_decay=optim_config.weight_decay,
            adam_b1=optim_config.beta1,
            adam_b2=optim_config.beta2,
            eps=optim_config.eps,
            adam_weight_decay=optim_config.weight_decay,
            adam_learning_rate=schedule,
            muon_weight_dimension_numbers=muon_dimension_numbers,
            consistent_rms=optim_config.muon_rms,
        )
    if optim_config.grad_clip > 0:
        return optax.chain(clip_by_global_norm(optim_config.grad_clip), base)
    return optax.with_extra_args_support(base)


def schedule_count(opt_state, default: jax.Array) -> jax.Array:
    """The count optax's learning-rate schedule reads: the updates applied so far.

    A float16 step skipped for overflow advances `TrainState.step` but not this count, so
    the LR the next update applies is `schedule(schedule_count(...))`, not
    `schedule(step)`. `default` when the optimizer has no schedule state.
    """
    is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
    for node in jax.tree_util.tree_leaves(opt_state, is_leaf=is_schedule):
        if is_schedule(node):
            return node.count
    return default
