"""Reverse-process samplers: predictors, the final denoiser, and one jitted scan over steps.

Every predictor has one signature:
    predictor(log_score_fn, graph, noise, x [B, L], t [], dt [], u [B, L, V]) -> x [B, L]
where `u` are the uniforms of the categorical draw (explicit so that the PyTorch twin
can replay the same draw). The time grid is linspace(1, eps, steps + 1), as upstream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.diffusion.catsample import categorical_from_uniform


def _batched(t: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.full((x.shape[0],), t, dtype=jnp.float32)


def euler_predictor(log_score_fn, graph, noise, x, t, dt, u):
    """tau-leaping (SEDD eq. 17): jump x -> y with intensity dt sigma(t) Q^T(x, y) s_y."""
    sigma, dsigma = noise(_batched(t, x))
    score = jnp.exp(log_score_fn(x, sigma).astype(jnp.float32))
    rate = (dt * dsigma)[:, None, None] * graph.reverse_rate(x, score)
    return graph.sample_rate(x, rate, u)


def none_predictor(log_score_fn, graph, noise, x, t, dt, u):
    """Leave x unchanged (for corrector-only or debugging schedules)."""
    del log_score_fn, graph, noise, t, dt, u
    return x


def denoise(log_score_fn, graph, noise, x, t, u):
    """Final step at t = eps: draw every mask from the Tweedie posterior, mask column dropped.

    p(y) = staggered_score(s, sigma)_y * exp(sigma Q)^T(x, y); unmasked tokens keep their
    value because the transition row of a real token is one-hot.
    """
    sigma, _ = noise(_batched(t, x))
    score = jnp.exp(log_score_fn(x, sigma).astype(jnp.float32))
    probs = graph.staggered_score(score, sigma) * graph.transp_transition(x, sigma)
    if graph.absorb:
        probs = probs[..., :-1]
        u = u[..., :-1]
    return categorical_from_uniform(probs, u)


PREDICTORS = {"euler": euler_predictor, "none": none_predictor}


def time_grid(steps: int, eps: float) -> jax.Array:
    """[steps + 1] times from 1 down to eps."""
    return jnp.linspace(1.0, eps, steps + 1)


def pc_sample(
    log_score_fn,
    graph,
    noise,
    x_init: jax.Array,
    key: jax.Array | None = None,
    *,
    steps: int,
    predictor: str = "euler",
    eps: float = 1e-5,
    denoise_last: bool = True,
    clamp: jax.Array | None = None,
    uniforms: jax.Array | None = None,
) -> jax.Array:
    """Run the reverse process from x_init [B, L] (mask where generated, tokens elsewhere).

    clamp [B, L] bool: positions held at their x_init values at every step (prompts,
    pads, a conditioning track). Uniforms are drawn from `key`, or taken from
    `uniforms` [steps + 1, B, L, V] (the last slice feeds the denoiser) for parity runs.
    Wrap in jax.jit with `steps`, `predictor`, `eps`, `denoise_last` static.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {sorted(PREDICTORS)}")
    step_fn = PREDICTORS[predictor]
    shape = x_init.shape + (graph.dim,)
    ts = time_grid(steps, eps)
    dt = (1.0 - eps) / steps
    keep = jnp.zeros(x_init.shape, bool) if clamp is None else clamp

    def draw(i):
        if uniforms is not None:
            return uniforms[i]
        return jax.random.uniform(jax.random.fold_in(key, i), shape)

    def body(x, i):
        x = step_fn(log_score_fn, graph, noise, x, ts[i], dt, draw(i))
        return jnp.where(keep, x_init, x), None

    x, _ = jax.lax.scan(body, x_init, jnp.arange(steps))
    if denoise_last:
        x = denoise(log_score_fn, graph, noise, x, ts[-1], draw(steps))
        x = jnp.where(keep, x_init, x)
    return x
