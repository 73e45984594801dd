"""One-step reverse-process predictors, the final denoiser, and the transition reshaper.

    predictor(log_score_fn, graph, noise, x [B, L], t [], dt [], u [B, L, V]) -> x [B, L]

`u` are the uniforms of the categorical draw (`catsample.race_uniform`), explicit so that
the twin replays the same draw; `reshape(probs, x) -> probs` removes forbidden ids and
applies temperature / top-p (`transition_reshaper`). `sampling.py` runs them over a time
grid; `joint.py` over two tracks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.diffusion.catsample import categorical_from_uniform, forbid


def batched_time(t: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.full((x.shape[0],), t, dtype=jnp.float32)


def euler_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None):
    """tau-leaping (SEDD eq. 17): jump x -> y with intensity dt sigma(t) Q^T(x, y) s_y.

    `reshape(probs [B, L, V], x) -> probs` (e.g. `sharpen`) edits the per-position
    transition distribution before the draw; None draws from it as is.
    """
    sigma, dsigma = noise(batched_time(t, x))
    score = jnp.exp(log_score_fn(x, sigma).astype(jnp.float32))
    rate = (dt * dsigma)[:, None, None] * graph.reverse_rate(x, score)
    if reshape is None:
        return graph.sample_rate(x, rate, u)
    probs = jax.nn.one_hot(x, graph.dim, dtype=rate.dtype) + rate
    return categorical_from_uniform(reshape(probs, x), u)


def analytic_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None):
    """Tweedie tau-leaping (SEDD eq. 19): the exact one-step reverse of each position.

    With dsigma = sigma_bar(t) - sigma_bar(t - dt):
    p(y) = staggered_score(s, dsigma)_y * exp(dsigma Q)^T(x, y). Masked positions of the
    absorbing graph stay masked with the remaining mass.
    """
    sigma, _ = noise(batched_time(t, x))
    next_sigma, _ = noise(batched_time(t - dt, x))
    step_sigma = sigma - next_sigma
    score = jnp.exp(log_score_fn(x, sigma).astype(jnp.float32))
    probs = graph.staggered_score(score, step_sigma) * graph.transp_transition(x, step_sigma)
    return categorical_from_uniform(probs if reshape is None else reshape(probs, x), u)


def none_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None):
    """Leave x unchanged (for corrector-only or debugging schedules)."""
    del log_score_fn, graph, noise, t, dt, u, reshape
    return x


def denoise(log_score_fn, graph, noise, x, t, u, reshape=None):
    """Final step at t = eps: draw every mask from the Tweedie posterior, mask column dropped.

    p(y) = staggered_score(s, sigma)_y * exp(sigma Q)^T(x, y); unmasked tokens keep their
    value because the transition row of a real token is one-hot.
    """
    sigma, _ = noise(batched_time(t, x))
    score = jnp.exp(log_score_fn(x, sigma).astype(jnp.float32))
    probs = graph.staggered_score(score, sigma) * graph.transp_transition(x, sigma)
    if graph.absorb:
        probs = probs[..., :-1]
        u = u[..., :-1]
    return categorical_from_uniform(probs if reshape is None else reshape(probs, x), u)


def sharpen(probs: jax.Array, x: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """Temperature and nucleus (top-p) on a per-position transition distribution.

    probs [B, L, V] (unnormalised, V may lack the mask column), x [B, L] the current
    tokens. The probability of staying at x is kept, so the schedule of changes is the
    sampler's; only the choice among the other targets changes: their probabilities are
    raised to 1 / temperature, cut to the smallest set holding `top_p` of their mass, and
    rescaled to their original total. A heuristic: samples no longer follow the model,
    and the likelihood bound does not describe them.
    """
    probs = jnp.maximum(probs, 0.0)
    here = jax.nn.one_hot(x, probs.shape[-1], dtype=bool)  # all False for a dropped mask id
    moves = jnp.where(here, 0.0, probs)
    mass = moves.sum(axis=-1, keepdims=True)
    peak = moves.max(axis=-1, keepdims=True)
    tempered = jnp.where(moves > 0, (moves / jnp.maximum(peak, 1e-30)) ** (1.0 / temperature), 0.0)
    order = jnp.sort(tempered, axis=-1)[..., ::-1]
    share = jnp.cumsum(order, axis=-1) / jnp.maximum(order.sum(axis=-1, keepdims=True), 1e-30)
    # the smallest probability kept: the first sorted entry whose cumulative share >= top_p
    cut_index = jnp.minimum((share < top_p).sum(axis=-1, keepdims=True), probs.shape[-1] - 1)
    cut = jnp.take_along_axis(order, cut_index, axis=-1)
    tempered = jnp.where(tempered >= cut, tempered, 0.0)
    scale = mass / jnp.maximum(tempered.sum(axis=-1, keepdims=True), 1e-30)
    return jnp.where(here, probs, tempered * scale)


def transition_reshaper(
    temperature: float = 1.0, top_p: float = 1.0, forbidden: jax.Array | None = None
):
    """reshape(probs, x): zero the `forbidden` [V] ids (`catsample.forbid`), then
    `sharpen`; None for the plain sampler (temperature 1, top_p 1, nothing forbidden)."""
    if temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(
            f"sampling.temperature={temperature} must be > 0 and sampling.top_p={top_p} in (0, 1]"
        )
    plain = temperature == 1.0 and top_p == 1.0
    if plain and forbidden is None:
        return None

    def reshape(probs, x):
        probs = forbid(probs, forbidden)
        return probs if plain else sharpen(probs, x, temperature, top_p)

    return reshape
