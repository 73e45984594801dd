"""Optimizer and learning-rate schedule, counted in optimizer steps.

lr(k) rises linearly from `warmup_init_fraction * lr` to `lr` over `warmup` steps, then
follows a cosine to `final_lr_fraction * lr` at `total_steps` and stays there (the
reference's schedule, fixed: one unit for every count, clamped after the end; defect D7).
"""

from __future__ import annotations

import optax


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    lr = optim_config.lr
    warmup = max(int(optim_config.warmup), 0)
    ramp = optax.linear_schedule(optim_config.warmup_init_fraction * lr, lr, max(warmup, 1))
    decay = optax.cosine_decay_schedule(
        lr, max(total_steps - warmup, 1), alpha=optim_config.final_lr_fraction
    )
    return optax.join_schedules([ramp, decay], [warmup])


def make_optimizer(optim_config, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (if grad_clip > 0) then AdamW with the schedule above.

    Weight decay applies to every parameter, as in the reference (one parameter group).
    """
    if optim_config.optimizer != "adamw":
        raise ValueError(f"optim.optimizer={optim_config.optimizer!r}; only 'adamw' exists")
    adamw = optax.adamw(
        learning_rate_schedule(optim_config, total_steps),
        b1=optim_config.beta1,
        b2=optim_config.beta2,
        eps=optim_config.eps,
        weight_decay=optim_config.weight_decay,
    )
    if optim_config.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip), adamw)
    return adamw
