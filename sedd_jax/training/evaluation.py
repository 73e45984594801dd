"""Validation loss with fixed randomness, so successive evaluations are comparable.

For each validation batch and each of K time samples the key is fixed
(fold_in(seed key, batch * K + k)), hence the number depends only on the parameters.
It estimates the diffusion ELBO in nats per valid token (without the prior term).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.common.evaluation import unigram_log_probs  # noqa: F401  (re-exported)
from sedd_jax.data.batching import iter_eval_batches
from sedd_jax.diffusion.losses import score_entropy_loss
from sedd_jax.diffusion.parametrisation import applied_log_score_fn


def _sums(out, valid) -> tuple[jax.Array, jax.Array]:
    """(loss_sum [], num_valid []) of a `losses.TokenLosses`."""
    return out.losses.sum(), valid.sum().astype(jnp.float32)


def make_eval_step(model, graph, noise, sampling_eps: float, parametrisation: str = "score"):
    """jit fn(params, tokens [B, L], valid [B, L], key) -> (loss_sum, num_valid)."""

    @jax.jit
    def eval_step(params, tokens, valid, key):
        log_score_fn = applied_log_score_fn(model, params, valid, parametrisation, graph.mask_id)
        return _sums(
            score_entropy_loss(log_score_fn, graph, noise, tokens, valid, key, sampling_eps), valid
        )

    return eval_step


def make_oracle_eval_step(score_fn_builder, graph, noise, sampling_eps: float):
    """Like `make_eval_step` for an analytic score: fn(oracle_params, tokens, valid, key).

    `score_fn_builder(oracle_params, graph)` returns a log_score_fn, e.g.
    `oracles.unigram_log_score_fn` with oracle_params = log p [n].
    """

    @jax.jit
    def eval_step(oracle_params, tokens, valid, key):
        log_score_fn = score_fn_builder(oracle_params, graph)
        return _sums(
            score_entropy_loss(log_score_fn, graph, noise, tokens, valid, key, sampling_eps), valid
        )

    return eval_step


def validation_sums(
    eval_fn,
    val: dict,
    *,
    batch_size: int,
    time_samples: int,
    max_batches: int,
    fill: dict,
    seed: int,
) -> dict:
    """Sum of eval_fn(batch, key) -> {name: scalar} over validation batches and time samples.

    Keys are fixed per (batch, time sample), so the result depends only on what eval_fn
    closes over (the parameters).
    """
    base = jax.random.fold_in(jax.random.key(seed), 0x5EDD)
    totals: dict[str, float] = {}
    for b, batch in enumerate(iter_eval_batches(val, batch_size, fill=fill)):
        if max_batches and b >= max_batches:
            break
        for k in range(time_samples):
            out = eval_fn(batch, jax.random.fold_in(base, b * time_samples + k))
            for name, value in out.items():
                totals[name] = totals.get(name, 0.0) + float(value)
    return totals


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

    def eval_fn(batch, key):
        loss_sum, n = eval_step(params, batch["tokens"], batch["valid"], key)
        return {"sum": loss_sum, "count": n}

    totals = validation_sums(
        eval_fn,
        val,
        batch_size=batch_size,
        time_samples=time_samples,
        max_batches=max_batches,
        fill={"tokens": pad_id},
        seed=seed,
    )
    return totals["sum"] / max(totals["count"], 1.0)
