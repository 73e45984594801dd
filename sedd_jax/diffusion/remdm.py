"""ReMDM: ancestral steps of the absorbing graph that may re-mask decoded tokens.

Wang, Schiff, Sahoo & Kuleshov 2025, "Remasking Discrete Diffusion Models with
Inference-Time Scaling". With alpha = e^-sigma_bar, a step from t to s < t draws each
position from the posterior q_sigma(z_s | z_t, x0), x0 ~ p(x0 | z_t):

    z_t decoded (= x):  x w.p. 1 - sigma_t,  mask w.p. sigma_t
    z_t masked:         y w.p. p(y | z_t) (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t),
                        mask w.p. (1 - alpha_s - sigma_t alpha_t) / (1 - alpha_t)

which keeps MDLM's marginals q(z_s | x0) for any 0 <= sigma_t <= sigma_max =
min(1, (1 - alpha_s) / alpha_t); sigma_t = 0 is the MDLM / Tweedie (`analytic`) step.
In SEDD's terms p(y | z_t) alpha_t / (1 - alpha_t) is the score s_y (RADD), so a masked
row is the analytic row plus sigma_t (s_y at real ids, -sum_y s_y at the mask id); at
sigma_t = 0 it is the analytic row itself, float for float.

Schedules of sigma_t (`RemdmSettings.schedule`), all zero while t > `t_on` (the switch:
MDLM steps first, remasking from t_on on; t_on = 1: from the start):
* "cap": min(eta, sigma_max) (ReMDM-cap);
* "rescale": eta sigma_max, eta in [0, 1] (ReMDM-rescale);
* "conf": sigma_max softmax_l(-psi_l) over the decoded positions of the row, psi_l the
  probability p(x_l | z) the token had when it was decoded (ReMDM-conf; eta unused);
  masked, clamped and never-scored positions get weight 0. This one is not
  marginal-preserving: low-confidence tokens are re-masked more, by design.
The paper's "loop" strategy (a remapped schedule with alpha held at alpha_on between
t_off and t_on) is not implemented.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.common.remdm import SCHEDULES, RemdmSettings
from sedd_jax.diffusion.catsample import categorical_from_uniform
from sedd_jax.diffusion.parametrisation import log_score_to_mean_log_probs

__all__ = ["SCHEDULES", "RemdmSettings", "remdm_predictor", "remdm_scan"]


def sigma_max(sigma_t: jax.Array, sigma_s: jax.Array) -> jax.Array:
    """min(1, (1 - alpha_s) / alpha_t) [B] from sigma_bar at t and s (alpha = e^-sigma)."""
    return jnp.minimum(1.0, -jnp.expm1(-sigma_s) * jnp.exp(sigma_t))


def remask_probability(settings, t, sigma_t, sigma_s, weights=None) -> jax.Array:
    """sigma_t per position [B, L] (cap / rescale: [B, 1]); `weights` [B, L] the conf
    schedule's softmax(-psi) (None otherwise)."""
    top = sigma_max(sigma_t, sigma_s)[:, None]
    if settings.schedule == "cap":
        r = jnp.minimum(settings.eta, top)
    elif settings.schedule == "rescale":
        r = settings.eta * top
    else:
        r = top * weights
    return jnp.where(t <= settings.t_on, r, 0.0)


def remdm_probs(graph, x, score, sigma_t, sigma_s, remask) -> jax.Array:
    """Unnormalised q_sigma(z_s | z_t) [B, L, V] from scores [B, L, V] (exp of the
    log-scores), sigma_bar at t and s [B] and remask probabilities [B, L] (or [B, 1])."""
    step = sigma_t - sigma_s
    analytic = graph.staggered_score(score, step) * graph.transp_transition(x, step)
    is_mask_col = jnp.arange(graph.dim) == graph.mask_id
    s_real = jnp.where(is_mask_col, 0.0, score)
    shift = s_real - jnp.where(is_mask_col, s_real.sum(axis=-1, keepdims=True), 0.0)
    r = remask[..., None]
    decoded = jax.nn.one_hot(x, graph.dim, dtype=score.dtype) * (1.0 - r) + is_mask_col * r
    return jnp.where((x == graph.mask_id)[..., None], analytic + r * shift, decoded)


def _sigmas(noise, t, dt, x):
    batch = jnp.full((x.shape[0],), t, jnp.float32)
    return noise(batch)[0], noise(batch - dt)[0]


def remdm_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None, settings=None):
    """One ReMDM step (cap / rescale) with the `sampling.PREDICTORS` signature; `settings`
    None: `RemdmSettings()`. The conf schedule carries confidences: `remdm_scan`."""
    settings = RemdmSettings() if settings is None else settings
    if not graph.absorb:
        raise ValueError("sampling.predictor='remdm' needs the absorbing graph")
    if settings.schedule == "conf":
        raise ValueError("remdm_schedule='conf' carries confidences across steps: remdm_scan")
    sigma_t, sigma_s = _sigmas(noise, t, dt, x)
    score = jnp.exp(log_score_fn(x, sigma_t).astype(jnp.float32))
    remask = remask_probability(settings, t, sigma_t, sigma_s)
    probs = remdm_probs(graph, x, score, sigma_t, sigma_s, remask)
    return categorical_from_uniform(probs if reshape is None else reshape(probs, x), u)


def remdm_scan(
    log_score_fn, graph, noise, x_start, keep, x_init, ts, dt, draw, reshape, steps, settings
):
    """ReMDM steps over the grid `ts` (one network call each), for every schedule; the
    conf schedule carries -psi [B, L] (-inf where no confidence counts). Clamped
    positions (`keep`) are reset to x_init after each step. Returns x [B, L]."""
    if not graph.absorb:
        raise ValueError("sampling.predictor='remdm' needs the absorbing graph")
    conf = settings.schedule == "conf"

    def body(carry, i):
        x, neg_psi = carry
        t = ts[i]
        sigma_t, sigma_s = _sigmas(noise, t, dt, x)
        log_score = log_score_fn(x, sigma_t).astype(jnp.float32)
        weights = None
        if conf:
            counted = jnp.isfinite(neg_psi)
            weights = jnp.where(counted, jax.nn.softmax(neg_psi, axis=-1), 0.0)
            weights = jnp.where(counted.any(axis=-1, keepdims=True), weights, 0.0)
        remask = remask_probability(settings, t, sigma_t, sigma_s, weights)
        probs = remdm_probs(graph, x, jnp.exp(log_score), sigma_t, sigma_s, remask)
        x_new = categorical_from_uniform(probs if reshape is None else reshape(probs, x), draw(i))
        x_new = jnp.where(keep, x_init, x_new)
        if conf:
            masked = x == graph.mask_id
            log_p = log_score_to_mean_log_probs(log_score, sigma_t, graph.mask_id)
            p_new = jnp.exp(jnp.take_along_axis(log_p, x_new[..., None], axis=-1)[..., 0])
            revealed = masked & (x_new != graph.mask_id) & ~keep
            neg_psi = jnp.where(revealed, -p_new, neg_psi)
            neg_psi = jnp.where(x_new == graph.mask_id, -jnp.inf, neg_psi)
        return (x_new, neg_psi), None

    neg_psi0 = jnp.full(x_start.shape, -jnp.inf, jnp.float32)
    (x, _), _ = jax.lax.scan(body, (x_start, neg_psi0), jnp.arange(steps))
    return x
