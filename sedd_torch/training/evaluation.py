"""Validation loss with fixed randomness (twin of sedd_jax/training/evaluation.py).

For each validation batch b and time sample k the generator is seeded from
(seed, 0x5EDD, b * K + k), hence the number depends only on the parameters. It estimates
the diffusion ELBO in nats per valid token (without the prior term). The draws differ
from sedd_jax's (torch and JAX generators differ), not the estimator.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_jax.data.batching import iter_eval_batches
from sedd_torch.diffusion.losses import score_entropy_loss


def _generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, 0x5EDD, index]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


@torch.no_grad()
def validation_loss(
    model,
    graph,
    noise,
    val: dict,
    *,
    batch_size: int,
    time_samples: int,
    max_batches: int,
    pad_id: int,
    seed: int,
    sampling_eps: float,
) -> float:
    """Mean weighted score entropy per valid token over the validation split."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    batches = iter_eval_batches(val, batch_size, fill={"tokens": pad_id})
    for b, batch in enumerate(batches):
        if max_batches and b >= max_batches:
            break
        tokens = torch.as_tensor(batch["tokens"], dtype=torch.long, device=device)
        valid = torch.as_tensor(batch["valid"], device=device)

        def log_score_fn(x, sigma, valid=valid):
            return model(x, sigma, valid)

        for k in range(time_samples):
            generator = _generator(seed, b * time_samples + k)
            loss_sum, n = score_entropy_loss(
                log_score_fn, graph, noise, tokens, valid, generator, sampling_eps
            )
            total += float(loss_sum)
            count += float(n)
    return total / max(count, 1.0)
