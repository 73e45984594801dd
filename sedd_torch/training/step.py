"""The train step (twin of sedd_jax/training/step.py), on one device.

`train_step(state, batch)` takes tokens/valid [A, B, L] with A micro-batches accumulated
inside the step (one optimizer step per call). The loss is the sum of token losses over
all micro-batches divided by the number of valid tokens, as in sedd_jax. The curriculum
(`config.curriculum`) is a pure function of `state.step`. A non-finite loss or gradient
leaves the parameters, the EMA and the step unchanged and reports `finite = 0`.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.curriculum import check_curriculum, progress, sigma_multiplier
from sedd_torch.diffusion.losses import loss_times, per_token_loss
from sedd_torch.training.optim import clip_by_global_norm_, global_norm
from sedd_torch.training.state import TrainState, ema_decay, update_ema


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator unique to (run, step): the draws of a step are pure in the step."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def apply_gradients(state: TrainState, loss, *, lr_schedule, ema: float, grad_clip: float):
    """Clip the accumulated `.grad`s by global norm, take an AdamW step at lr(step), update
    the EMA with decay min(ema, (1 + n) / (10 + n)); skip all of it when not finite."""
    params = list(state.model.parameters())
    for p in params:
        if p.grad is None:  # an unused parameter: optax would see a zero gradient
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    grad_norm = global_norm(grads)
    learning_rate = lr_schedule(state.step)
    finite = bool(torch.isfinite(loss) & torch.isfinite(grad_norm))
    if finite:
        clip_by_global_norm_(grads, grad_norm, grad_clip)
        for group in state.optimizer.param_groups:
            group["lr"] = learning_rate
        state.optimizer.step()
        state.step += 1
        update_ema(list(state.ema_model.parameters()), params, ema_decay(ema, state.step))
    state.optimizer.zero_grad(set_to_none=True)
    return {
        "loss": float(loss),
        "grad_norm": float(grad_norm),
        "learning_rate": learning_rate,
        "finite": float(finite),
    }


def train_step(
    state: TrainState,
    batch: dict,
    *,
    graph,
    noise,
    lr_schedule,
    ema: float,
    grad_clip: float,
    sampling_eps: float,
    seed: int,
    curriculum=None,
    rand=None,
):
    """One optimizer step on batch tokens/valid [A, B, L] (tensors on the model's device).

    The step's draws come from `rand` (default: a generator seeded by (seed, step)), in
    sedd_jax's order: per micro-batch the times, then the corruption.
    """
    model = state.model.train()
    curriculum = check_curriculum(curriculum)
    sigma_scale = sigma_multiplier(state.step, curriculum)
    if rand is None:
        rand = generator_rand(step_generator(seed, state.step), batch["tokens"].device)
    count = torch.clamp_min(batch["valid"].sum().float(), 1.0)
    loss_sum = torch.zeros((), device=count.device)
    t_sum = 0.0
    for tokens, valid in zip(batch["tokens"], batch["valid"], strict=True):

        def log_score_fn(x, sigma, valid=valid):
            return model(x, sigma, valid)

        t = loss_times(rand, tokens.shape[0], sampling_eps, state.step, curriculum)
        losses = per_token_loss(
            log_score_fn, graph, noise, tokens, valid, t, rand, sigma_scale=sigma_scale
        )
        micro_sum = losses.sum()
        (micro_sum / count).backward()
        loss_sum = loss_sum + micro_sum.detach()
        t_sum += float(t.mean())
    metrics = {
        "curriculum_progress": float(progress(state.step, curriculum)),
        "mean_t": t_sum / batch["tokens"].shape[0],
        "tokens": float(count),
    }
    metrics.update(
        apply_gradients(
            state, loss_sum / count, lr_schedule=lr_schedule, ema=ema, grad_clip=grad_clip
        )
    )
    return metrics
