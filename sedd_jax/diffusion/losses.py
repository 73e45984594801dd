"""The dsigma-weighted denoising score-entropy loss (SEDD, Lou et al. 2024, eq. 10).

A `log_score_fn(x_t [B, L], sigma [B]) -> log-scores [B, L, V]` stands for the network;
the loss never sees parameters, so it is shared by training, evaluation, the likelihood
bound and tests (an analytic oracle plugs in the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sedd_jax.diffusion import keys
from sedd_jax.diffusion.curriculum import (
    sample_curriculum_times,
    sample_times,
    sigma_multiplier,
)
from sedd_jax.diffusion.parametrisation import mean_log_probs

LogScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
LOSS_TYPES = ("score_entropy", "masked_ce")


def antithetic_times(
    key: jax.Array, example_id: jax.Array, global_batch: int, sampling_eps: float
) -> jax.Array:
    """Stratified times over the global batch: t = eps + (1 - eps) * ((u0 + id / B) mod 1),
    u0 ~ U[0, 1) from `key` (one key, the same on every device), `example_id` [b] the rows'
    global positions: one t per 1/B bin, whatever the device count. [b]"""
    u = stratified_u(key, example_id, global_batch)
    return (1.0 - sampling_eps) * u + sampling_eps


def stratified_u(key: jax.Array, example_id: jax.Array, global_batch: int) -> jax.Array:
    """(u0 + id / B) mod 1, u0 ~ U[0, 1) from `key`: one value per 1/B bin of the global
    batch, whatever the device count (antithetic times, masked counts). [b]"""
    u0 = jax.random.uniform(key, ())
    return jnp.mod(u0 + example_id.astype(jnp.float32) / global_batch, 1.0)


__all__ = [
    "LogScoreFn",
    "TokenLosses",
    "LOSS_TYPES",
    "antithetic_times",
    "loss_times",
    "masked_ce_loss",
    "masked_ce_per_token",
    "masked_ce_terms",
    "per_token_loss",
    "sample_times",
    "score_entropy_loss",
    "stratified_u",
    "score_entropy_terms",
    "TERMS",
]


class TokenLosses(NamedTuple):
    """One draw of the loss: `losses` [B, L] (dsigma'-weighted score entropy, 0 at pads)
    and the times `t` [B] it was drawn at."""

    losses: jax.Array
    t: jax.Array


def loss_times(
    key: jax.Array, batch: int, sampling_eps: float, step: jax.Array | int = 0, curriculum=None
) -> tuple[jax.Array, jax.Array]:
    """Split a loss key into the times t [B] (curriculum-aware) and the corruption key.

    `key` is one key or per-example keys [B] (`diffusion/keys.py`); the corruption key
    comes back in the same form.
    """
    time_key, noise_key = keys.split(key)

    def times(k, n):
        return sample_curriculum_times(k, n, step, curriculum, sampling_eps)

    return keys.draw(times, time_key, batch), noise_key


def noised(graph, noise, x0, valid, t, key, x_t=None, sigma_scale=1.0):
    """(sigma', dsigma' [B], x_t [B, L]) at times t [B]: sigma' = sigma_scale * sigma_bar(t),
    dsigma' = sigma_scale * dsigma(t), and x0 corrupted with `key` (one key or per-example
    keys [B]) unless x_t is given."""
    sigma, dsigma = noise(t)
    sigma, dsigma = sigma_scale * sigma, sigma_scale * dsigma
    if x_t is None:
        x_t = keys.rowwise(graph.sample_transition, key, x0, sigma, valid)
    return sigma, dsigma, x_t


def per_token_loss(
    log_score_fn: LogScoreFn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    t: jax.Array,
    key: jax.Array | None = None,
    *,
    x_t: jax.Array | None = None,
    sigma_scale: jax.Array | float = 1.0,
) -> jax.Array:
    """dsigma'(t_b) * score_entropy at every position, zero at pads: [B, L].

    sigma' = sigma_scale * sigma_bar(t) and dsigma' = sigma_scale * dsigma(t) (a scaled
    schedule, see `curriculum`). The sigma' that corrupts x0 is the sigma' that
    conditions the network and sets the target ratio (the reference's curriculum broke
    this; defect B3). x0 is corrupted with `key` (one key, or per-example keys [B]),
    unless the corrupted tokens x_t [B, L] are given (then `key` is unused): that makes
    the loss a deterministic function of (x0, valid, t, x_t), e.g. to compare a padded
    batch with its sequences one by one.
    """
    sigma, dsigma, x_t = noised(graph, noise, x0, valid, t, key, x_t, sigma_scale)
    return score_entropy_terms(log_score_fn(x_t, sigma), graph, sigma, dsigma, x_t, x0, valid)


def score_entropy_terms(log_score, graph, sigma, dsigma, x_t, x0, scored) -> jax.Array:
    """dsigma * score entropy [B, L] of network log-scores [B, L, V] at sigma, dsigma [B],
    zero where not `scored`."""
    log_score = log_score.astype(jnp.float32)
    # unscored positions never reach an exponential (an overflow there would turn into NaN
    # gradients through the product with `scored`; see `Absorbing.score_entropy`)
    entropy = graph.score_entropy(jnp.where(scored[..., None], log_score, 0.0), sigma, x_t, x0)
    return jnp.where(scored, dsigma[:, None] * entropy, 0.0)


def masked_ce_terms(logits, graph, sigma, dsigma, x_t, x0, scored) -> jax.Array:
    """MDLM/MD4's term [B, L] of mean logits [B, L, V]: dsigma / expm1(sigma) times
    -log p(x0 | x_t) at the masked `scored` positions, zero elsewhere."""
    log_p = mean_log_probs(logits, graph.mask_id)
    nll = -jnp.take_along_axis(log_p, x0[..., None], axis=-1)[..., 0]
    weight = dsigma / jnp.expm1(sigma)
    hit = scored & (x_t == graph.mask_id)
    return jnp.where(hit, weight[:, None] * jnp.where(hit, nll, 0.0), 0.0)


TERMS = {"score_entropy": score_entropy_terms, "masked_ce": masked_ce_terms}


def score_entropy_loss(
    log_score_fn: LogScoreFn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    key: jax.Array,
    sampling_eps: float = 1e-3,
    *,
    step: jax.Array | int = 0,
    curriculum=None,
    t: jax.Array | None = None,
) -> TokenLosses:
    """The single-track loss of training and evaluation: one fresh t per sequence.

    Keys: `time_key, noise_key = split(key)` (`loss_times`), `key` being one key or
    per-example keys [B] (training: one per row, `diffusion/keys.py`). With `curriculum`
    (a `config.curriculum` block; None: none) the times are biased and sigma is scaled as
    the curriculum prescribes at `step` (`diffusion/curriculum.py`); evaluation passes
    none. The optimised loss is `losses.sum() / valid.sum()` (summed over micro-batches
    and devices first); without a curriculum its expectation over t is the diffusion
    ELBO in nats per token (up to the prior term and the [0, eps] sliver; `likelihood`
    computes the full bound). Given times `t` [B] (e.g. `antithetic_times`) replace the
    drawn ones; the corruption key is the same either way.
    """
    return _over_times(
        per_token_loss,
        log_score_fn,
        graph,
        noise,
        x0,
        valid,
        key,
        sampling_eps,
        step,
        curriculum,
        t,
    )


def masked_ce_per_token(
    logits_fn: LogScoreFn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    t: jax.Array,
    key: jax.Array | None = None,
    *,
    x_t: jax.Array | None = None,
    sigma_scale: jax.Array | float = 1.0,
) -> jax.Array:
    """MDLM/MD4's absorbing-graph ELBO term at every position, zero at pads and unmasked
    tokens: [B, L].

    With alpha = exp(-sigma'), the weight is -alpha'/(1 - alpha) = dsigma' / expm1(sigma'),
    times -log p(x0 | x_t), p the softmax of `logits_fn(x_t, sigma')` [B, L, V] over the
    non-mask ids. Pointwise equal to `per_token_loss` of the same outputs mapped by
    `parametrisation.mean_to_log_score` (RADD). Keys and `x_t` as in `per_token_loss`.
    """
    if not graph.absorb:
        raise ValueError("loss.type=masked_ce needs the absorbing graph (uniform: score_entropy)")
    sigma, dsigma, x_t = noised(graph, noise, x0, valid, t, key, x_t, sigma_scale)
    return masked_ce_terms(logits_fn(x_t, sigma), graph, sigma, dsigma, x_t, x0, valid)


def masked_ce_loss(
    logits_fn: LogScoreFn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    key: jax.Array,
    sampling_eps: float = 1e-3,
    *,
    step: jax.Array | int = 0,
    curriculum=None,
    t: jax.Array | None = None,
) -> TokenLosses:
    """`score_entropy_loss` with the masked cross-entropy term (`masked_ce_per_token`):
    same keys, times, curriculum and reduction."""
    return _over_times(
        masked_ce_per_token,
        logits_fn,
        graph,
        noise,
        x0,
        valid,
        key,
        sampling_eps,
        step,
        curriculum,
        t,
    )


def _over_times(per_token, fn, graph, noise, x0, valid, key, sampling_eps, step, curriculum, t):
    """`per_token` at one time per sequence: drawn (curriculum-aware; `loss_times` splits
    `key` into time and corruption keys) unless given, sigma scaled by the curriculum."""
    drawn, noise_key = loss_times(key, x0.shape[0], sampling_eps, step, curriculum)
    t = drawn if t is None else t
    scale = sigma_multiplier(step, curriculum)
    return TokenLosses(per_token(fn, graph, noise, x0, valid, t, noise_key, sigma_scale=scale), t)


LOSSES = {"score_entropy": score_entropy_loss, "masked_ce": masked_ce_loss}
