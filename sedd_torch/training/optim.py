"""Optimizer and learning-rate schedule (twin of sedd_jax/training/optim.py).

lr(k), k = optimizer steps taken: a linear ramp from `warmup_init_fraction * lr` to `lr`
over `warmup` steps, then a cosine to `final_lr_fraction * lr` at `total_steps`, constant
afterwards (optax's linear_schedule, cosine_decay_schedule and join_schedules, written
out). Clipping is optax's clip_by_global_norm: g -> g * max_norm / |g| when |g| >= max_norm.
"""

from __future__ import annotations

import math

import torch


def learning_rate_schedule(optim_config, total_steps: int):
    """k -> lr(k) as a Python float."""
    lr = optim_config.lr
    warmup = max(int(optim_config.warmup), 0)
    ramp_steps = max(warmup, 1)
    start = optim_config.warmup_init_fraction * lr
    decay_steps = max(total_steps - warmup, 1)
    alpha = optim_config.final_lr_fraction

    def schedule(k: int) -> float:
        if k < warmup:
            fraction = 1.0 - min(max(k, 0), ramp_steps) / ramp_steps
            return (start - lr) * fraction + lr
        count = min(k - warmup, decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * count / decay_steps))
        return lr * ((1.0 - alpha) * cosine + alpha)

    return schedule


def make_optimizer(params, optim_config) -> torch.optim.AdamW:
    """AdamW over every parameter (one group: weight decay everywhere, as the reference).

    The learning rate is set before each step from `learning_rate_schedule`.
    """
    if optim_config.optimizer != "adamw":
        raise ValueError(f"optim.optimizer={optim_config.optimizer!r}; only 'adamw' exists")
    return torch.optim.AdamW(
        params,
        lr=optim_config.lr,
        betas=(optim_config.beta1, optim_config.beta2),
        eps=optim_config.eps,
        weight_decay=optim_config.weight_decay,
    )


def global_norm(tensors) -> torch.Tensor:
    """sqrt(sum of squares) over a list of tensors, as a float32 scalar."""
    return torch.sqrt(sum(torch.sum(t.float().square()) for t in tensors))


@torch.no_grad()
def clip_by_global_norm_(grads, norm: torch.Tensor, max_norm: float) -> None:
    """In place: g -> (g / norm) * max_norm for every g, unless norm < max_norm."""
    if max_norm > 0 and not bool(norm < max_norm):
        for g in grads:
            g.div_(norm).mul_(max_norm)
