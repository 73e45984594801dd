"""Optimizer and learning-rate schedule (twin of sedd_jax/training/optim.py).

lr(k), k = optimizer steps taken: a linear ramp from `warmup_init_fraction * lr` to `lr`
over `warmup` steps, then a cosine to `final_lr_fraction * lr` at `total_steps`, constant
afterwards (optax's linear_schedule, cosine_decay_schedule and join_schedules, written
out). Clipping is optax's clip_by_global_norm: g -> g * max_norm / |g| when |g| >= max_norm.
"""

from __future__ import annotations

import math

import torch

from sedd_jax.common.optim_options import check_optimizer, is_muon_module


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


# the quintic Newton-Schulz coefficients and step count of optax.contrib.muon's default
NS_COEFFS, NS_STEPS = (3.4445, -4.775, 2.0315), 5


def is_muon_matrix(name: str, param: torch.Tensor) -> bool:
    """sedd_jax's `muon_dimension_numbers` in torch names: the 2-D weights of the blocks
    and cross-attention layers (top-level modules `blocks*`, `cross*`)."""
    top = name.split(".")[0]
    return is_muon_module(top) and name.endswith(".weight") and param.ndim == 2


def orthogonalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """optax's `orthogonalize_via_newton_schulz` (Frobenius preconditioning): x / (|x|_F +
    eps), then NS_STEPS of x <- a x + (b A + c A A) x with A = x x^T, on the wide side.
    The result for x^T is the transpose of that for x, so a torch (out, in) weight gets
    what the flax (in, out) kernel gets."""
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (torch.linalg.matrix_norm(x) + eps)
    a, b, c = NS_COEFFS
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class MuonAdamW(torch.optim.Optimizer):
    """optax.contrib.muon written out (the twin of sedd_jax's `optim.optimizer = muon`):
    group 0 (`is_muon_matrix`) takes Nesterov momentum (`muon_beta`, bias-corrected),
    orthogonalised and scaled by sqrt(max(fan_in, fan_out)) x `muon_rms`; group 1 takes
    optax's Nesterov AdamW (NAdam-style: b1 m_hat_{k+1} + (1 - b1) g_hat_k). Both add
    `weight_decay` x param and step by -lr; one count per parameter."""

    def __init__(self, named_params, optim_config):
        muon, adam = [], []
        for name, param in named_params:
            (muon if is_muon_matrix(name, param) else adam).append(param)
        c = optim_config
        defaults = {"lr": c.lr, "eps": c.eps, "weight_decay": c.weight_decay}
        super().__init__(
            [
                {"params": muon, "muon": True, "b1": c.muon_beta, "rms": c.muon_rms},
                {"params": adam, "muon": False, "b1": c.beta1, "b2": c.beta2},
            ],
            defaults,
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, eps = group["b1"], group["eps"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["count"] = 0
                    state["mu"] = torch.zeros_like(p)
                    if not group["muon"]:
                        state["nu"] = torch.zeros_like(p)
                g = p.grad
                state["count"] = k = state["count"] + 1
                mu = state["mu"].mul_(b1).add_(g, alpha=1 - b1)
                m_hat = b1 * (mu / (1 - b1 ** (k + 1))) + (1 - b1) * (g / (1 - b1**k))
                if group["muon"]:
                    scale = math.sqrt(max(p.shape)) * group["rms"]
                    update = orthogonalize(m_hat, eps) * scale
                else:
                    b2 = group["b2"]
                    nu = state["nu"].mul_(b2).add_(g.square(), alpha=1 - b2)
                    update = m_hat / (torch.sqrt(nu / (1 - b2**k)) + eps)
                update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
        return None


def make_optimizer(named_params, optim_config) -> torch.optim.Optimizer:
    """`optim.optimizer = adamw`: AdamW over every parameter (one group: weight decay
    everywhere, as the reference); `muon`: `MuonAdamW`. `named_params`: (name,
    parameter) pairs, `model.named_parameters()`.

    The learning rate is set before each step from `learning_rate_schedule`.
    """
    check_optimizer(optim_config.optimizer)
    if optim_config.optimizer == "muon":
        return MuonAdamW(named_params, optim_config)
    return torch.optim.AdamW(
        [param for _, param in named_params],
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
