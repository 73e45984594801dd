"""Validation loss with fixed randomness (twin of sedd_jax/training/evaluation.py).

For each validation batch b and time sample k the draws come from a generator seeded
with (seed, 0x5EDD, b * K + k), hence the number depends only on the score function. It
estimates the diffusion ELBO in nats per valid token (without the prior term). The draws
differ from sedd_jax's (torch and JAX generators differ), not the estimator.
`unigram_log_probs` is sedd_jax's.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_jax.common.evaluation import unigram_log_probs  # noqa: F401  (re-exported)
from sedd_jax.data.batching import iter_eval_batches
from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.losses import score_entropy_loss


def model_score_fn(model):
    """valid -> log_score_fn of `model` in eval mode (pads hidden from attention)."""

    def for_batch(valid):
        model.eval()
        return lambda x, sigma: model(x, sigma, valid)

    return for_batch


def _generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, 0x5EDD, index]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


@torch.no_grad()
def validation_loss(
    score_fn_for_batch,
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
    device,
) -> float:
    """Mean weighted score entropy per valid token over the validation split.

    score_fn_for_batch(valid [B, L]) -> log_score_fn (`model_score_fn(model)`, or an oracle).
    """
    total, count = 0.0, 0.0
    batches = iter_eval_batches(val, batch_size, fill={"tokens": pad_id})
    for b, batch in enumerate(batches):
        if max_batches and b >= max_batches:
            break
        tokens = torch.as_tensor(batch["tokens"], dtype=torch.long, device=device)
        valid = torch.as_tensor(batch["valid"], device=device)
        log_score_fn = score_fn_for_batch(valid)
        for k in range(time_samples):
            rand = generator_rand(_generator(seed, b * time_samples + k), device)
            out = score_entropy_loss(log_score_fn, graph, noise, tokens, valid, rand, sampling_eps)
            total += float(out.losses.sum())
            count += float(valid.sum())
    return total / max(count, 1.0)
