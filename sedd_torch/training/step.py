"""The train step (twin of sedd_jax/training/step.py), on one device.

`train_step(state, batch)` takes arrays [A, B, ...] with A micro-batches accumulated
inside the step (one optimizer step per call); what is optimised is a task adapter's
objective (`training/tasks/`: one track or pairs). The loss is the sum of token losses
over all micro-batches divided by the number of scored tokens, as in sedd_jax. The
curriculum is a pure function of `state.step`, applied inside the objective. A
non-finite loss or gradient leaves the parameters, the EMA and the step unchanged and
reports `finite = 0`.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_torch.diffusion.catsample import generator_rand
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
    objective,
    step_metrics,
    lr_schedule,
    ema: float,
    grad_clip: float,
    seed: int,
    rand=None,
):
    """One optimizer step on a batch whose arrays are [A, b, ...] (tensors on the model's
    device), A micro-batches accumulated.

    objective(model, micro_batch, rand, step) -> (loss_sum, count, aux) of one micro-batch
    (a task adapter's, `sedd_torch.training.tasks`); step_metrics(aux, step) turns the
    summed aux into metrics. As sedd_jax, the gradient is that of the summed loss divided
    by the summed count. The draws come from `rand` (default: a generator seeded by
    (seed, step)), in the objective's order per micro-batch.
    """
    model = state.model.train()
    if rand is None:
        device = next(iter(batch.values())).device
        rand = generator_rand(step_generator(seed, state.step), device)
    loss_sum, count, aux = 0.0, 0.0, {}
    accum = next(iter(batch.values())).shape[0]
    for micro in ({k: v[a] for k, v in batch.items()} for a in range(accum)):
        micro_sum, micro_count, micro_aux = objective(model, micro, rand, state.step)
        micro_sum.backward()
        loss_sum = loss_sum + micro_sum.detach()
        count += float(micro_count)
        for k, v in micro_aux.items():
            aux[k] = aux.get(k, 0.0) + v
    count = max(count, 1.0)
    for p in model.parameters():
        if p.grad is not None:
            p.grad.div_(count)
    metrics = dict(step_metrics(aux, state.step), tokens=count)
    metrics.update(
        apply_gradients(
            state, loss_sum / count, lr_schedule=lr_schedule, ema=ema, grad_clip=grad_clip
        )
    )
    return metrics
