"""Validation loss with fixed randomness, so successive evaluations are comparable.

For each validation batch and each of K time samples the key is fixed
(fold_in(seed key, batch * K + k)), hence the number depends only on the parameters.
It estimates the diffusion ELBO in nats per valid token (without the prior term).
"""

from __future__ import annotations

import jax
import numpy as np

from sedd_jax.data.batching import iter_eval_batches
from sedd_jax.diffusion.losses import score_entropy_loss


def make_eval_step(model, graph, noise, sampling_eps: float):
    """jit fn(params, tokens [B, L], valid [B, L], key) -> (loss_sum, num_valid)."""

    @jax.jit
    def eval_step(params, tokens, valid, key):
        def log_score_fn(x, sigma):
            return model.apply({"params": params}, x, sigma, valid)

        return score_entropy_loss(log_score_fn, graph, noise, tokens, valid, key, sampling_eps)

    return eval_step


def make_oracle_eval_step(score_fn_builder, graph, noise, sampling_eps: float):
    """Like `make_eval_step` for an analytic score: fn(oracle_params, tokens, valid, key).

    `score_fn_builder(oracle_params, graph)` returns a log_score_fn, e.g.
    `oracles.unigram_log_score_fn` with oracle_params = log p [n].
    """

    @jax.jit
    def eval_step(oracle_params, tokens, valid, key):
        log_score_fn = score_fn_builder(oracle_params, graph)
        return score_entropy_loss(log_score_fn, graph, noise, tokens, valid, key, sampling_eps)

    return eval_step


def validation_loss(
    eval_step,
    params,
    val: dict,
    *,
    batch_size: int,
    time_samples: int,
    max_batches: int,
    pad_id: int,
    seed: int,
) -> float:
    """Mean weighted score entropy per valid token over the validation split."""
    base = jax.random.fold_in(jax.random.key(seed), 0x5EDD)
    total, count = 0.0, 0.0
    batches = iter_eval_batches(val, batch_size, fill={"tokens": pad_id})
    for b, batch in enumerate(batches):
        if max_batches and b >= max_batches:
            break
        for k in range(time_samples):
            key = jax.random.fold_in(base, b * time_samples + k)
            loss_sum, n = eval_step(params, batch["tokens"], batch["valid"], key)
            total += float(loss_sum)
            count += float(n)
    return total / max(count, 1.0)


def unigram_log_probs(tokens: np.ndarray, valid: np.ndarray, num_tokens: int) -> np.ndarray:
    """log p [num_tokens] of the tokens at valid positions, add-1/2 smoothed."""
    counts = np.bincount(tokens[valid], minlength=num_tokens)[:num_tokens] + 0.5
    return np.log(counts / counts.sum()).astype(np.float32)
