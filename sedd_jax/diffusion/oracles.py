"""Analytic scores for data with known structure: baselines and exactness checks.

For i.i.d. tokens x_i ~ p under the absorbing graph, the true concrete score at a masked
position is p_t(y) / p_t(m) = p(y) / (e^sigma - 1) for every real token y, independently
of the other positions. A network can do no better than this unless positions interact,
so its loss is the "best position-independent predictor" baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.diffusion.graphs import esigm1, expand_sigma


def unigram_log_score_fn(log_p: jax.Array, graph):
    """fn(x [B, L], sigma [B]) -> [B, L, V] exact log-scores for i.i.d. tokens with log_p [n].

    Masked positions get log p(y) - log(e^sigma - 1) (mask column 0); real tokens get 0 at
    themselves and -inf elsewhere (their only move under the absorbing graph is to m).
    """
    log_p = jnp.asarray(log_p, jnp.float32)

    def fn(x, sigma):
        sigma = expand_sigma(sigma, x.ndim + 1)
        masked_row = jnp.concatenate([log_p, jnp.zeros((1,))])[None, None, :] - jnp.log(
            esigm1(sigma)
        )
        masked_row = jnp.where(jnp.arange(graph.dim) == graph.mask_id, 0.0, masked_row)
        real_row = jnp.where(jax.nn.one_hot(x, graph.dim, dtype=bool), 0.0, -jnp.inf)
        return jnp.where((x == graph.mask_id)[..., None], masked_row, real_row)

    return fn
