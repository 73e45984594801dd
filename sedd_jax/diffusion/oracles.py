"""Analytic scores for data with known structure: baselines and exactness checks.

For i.i.d. tokens x_i ~ p the concrete score factorises over positions: the ratio of
the sequence with position i changed to y over the sequence itself is
p_t(y) / p_t(x_i), with the single-token marginal p_t = p exp(sigma Q):

* absorbing: p_t(y) = e^-sigma p(y) for real y, p_t(m) = 1 - e^-sigma, so a masked
  position has ratios p(y) / (e^sigma - 1), and a real token's only move (to m) is not
  a score entry the loss or the samplers use;
* uniform: p_t(y) = e^-sigma p(y) + (1 - e^-sigma) / n for every token.

A network can do no better than this unless positions interact, so its loss is the
"best position-independent predictor" baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.diffusion.graphs import esigm1, expand_sigma


def _absorbing_unigram(log_p: jax.Array, graph):
    """Masked positions: log p(y) - log(e^sigma - 1) (mask column 0); real tokens: 0 at
    themselves and -inf elsewhere."""

    def fn(x, sigma):
        sigma = expand_sigma(sigma, x.ndim + 1)
        masked_row = jnp.concatenate([log_p, jnp.zeros((1,))])[None, None, :] - jnp.log(
            esigm1(sigma)
        )
        masked_row = jnp.where(jnp.arange(graph.dim) == graph.mask_id, 0.0, masked_row)
        real_row = jnp.where(jax.nn.one_hot(x, graph.dim, dtype=bool), 0.0, -jnp.inf)
        return jnp.where((x == graph.mask_id)[..., None], masked_row, real_row)

    return fn


def _uniform_unigram(log_p: jax.Array, graph):
    """log p_t(y) - log p_t(x) with p_t = e^-sigma p + (1 - e^-sigma) / n."""

    def fn(x, sigma):
        sigma = expand_sigma(sigma, x.ndim + 1)
        log_pt = jnp.logaddexp(-sigma + log_p, jnp.log(-jnp.expm1(-sigma) / graph.n))
        log_pt = jnp.broadcast_to(log_pt, x.shape + (graph.dim,))
        return log_pt - jnp.take_along_axis(log_pt, x[..., None], axis=-1)

    return fn


def unigram_log_score_fn(log_p: jax.Array, graph):
    """fn(x [B, L], sigma [B]) -> [B, L, V]: exact log-scores for i.i.d. tokens with log p [n]."""
    log_p = jnp.asarray(log_p, jnp.float32)
    return (_absorbing_unigram if graph.absorb else _uniform_unigram)(log_p, graph)
