"""The dsigma-weighted denoising score-entropy loss (SEDD, Lou et al. 2024, eq. 10).

A `log_score_fn(x_t [B, L], sigma [B]) -> log-scores [B, L, V]` stands for the network;
the loss never sees parameters, so it is shared by training, evaluation and tests
(an analytic oracle plugs in the same way).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LogScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def sample_times(key: jax.Array, batch: int, sampling_eps: float = 1e-3) -> jax.Array:
    """t ~ U[eps, 1] per sequence: [B]."""
    return (1.0 - sampling_eps) * jax.random.uniform(key, (batch,)) + sampling_eps


def per_token_loss(
    log_score_fn: LogScoreFn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    t: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """dsigma(t_b) * score_entropy at every position, zero at pads: [B, L].

    The sigma that corrupts x0 is the sigma that conditions the network and sets the
    target ratio (the reference's curriculum broke this; defect B3).
    """
    sigma, dsigma = noise(t)
    x_t = graph.sample_transition(key, x0, sigma, valid)
    log_score = log_score_fn(x_t, sigma)
    entropy = graph.score_entropy(log_score.astype(jnp.float32), sigma, x_t, x0)
    return dsigma[:, None] * entropy * valid


def score_entropy_loss(
    log_score_fn: LogScoreFn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    key: jax.Array,
    sampling_eps: float = 1e-3,
) -> tuple[jax.Array, jax.Array]:
    """Mean over valid tokens of the weighted score entropy, for one fresh t per sequence.

    Returns (loss_sum [], num_valid []) so that callers can average across devices or
    micro-batches exactly: loss = loss_sum / num_valid. Its expectation over t is the
    diffusion ELBO in nats per token (up to the prior term and the [0, eps] sliver).
    """
    time_key, noise_key = jax.random.split(key)
    t = sample_times(time_key, x0.shape[0], sampling_eps)
    losses = per_token_loss(log_score_fn, graph, noise, x0, valid, t, noise_key)
    return losses.sum(), valid.sum().astype(jnp.float32)
