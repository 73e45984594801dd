"""The SEDD likelihood bound per sequence (Lou et al. 2024, Thm. 3.6), by Monte Carlo over t.

For a sequence x0 with valid positions i (pads are no part of it):

    -log p_theta(x0) <= D(x0) + P(x0),
    D(x0) = int_0^1 dsigma(t) E_{x_t ~ p_{t|0}(. | x0)} sum_i l_i(x_t, x0, t) dt,
    P(x0) = sum_i KL(p_{1|0}(. | x0_i) || p_base),

with l the graph's closed-form score entropy of s_theta(x_t, sigma_bar(t)). D is estimated
from K times per sequence, `stratified` (t_k = (k + 1 - U_k) / K, one per stratum of
[0, 1]) or `antithetic` (U and 1 - U in pairs), each with one corruption draw x_t. The
integral starts at t = 0, not at the training `sampling_eps`.

The prior p_base is the t = 1 marginal of the forward chain started from the uniform
distribution over the graph's n real tokens: data-independent, and for the uniform graph
equal to its stationary distribution. For the absorbing graph p_base =
(1 - e^-sigma_bar(1)) delta_mask + e^-sigma_bar(1) Uniform(n), so P = e^-sigma_bar(1) log n
per token (loglinear eps = 1e-3, n = 25: 3.2e-3 nats), finite where an all-mask base
would give KL = infinity. (The sampler starts from all-mask, which differs from p_base by
e^-sigma_bar(1) per token in total variation.) MD4 drops this term because its schedule
masks everything at t = 1; SEDD ignores it.

For i.i.d. tokens and the exact score (`oracles.unigram_log_score_fn`) the bound is
E_{x_1}[-log q(x0 | x_1)] + P(x0): for the absorbing graph
(1 - e^-sigma_bar(1)) sum_i -log p(x0_i) + P(x0).

Reconstruction. Schedules with sigma_bar(0) = sigma_0 > 0 (geometric, cosine) start the
chain from x_0' ~ p_{0|0}(. | x0), already corrupted; D + P bounds -log p(x_0') and a
decoder term R(x0) = E[-log p_dec(x0 | x_0')] completes the bound:
    -log p(x0) <= R + D + P.
The decoders are data-independent: absorbing keeps unmasked tokens and decodes a mask
uniformly over the n real tokens, R = (1 - e^-sigma_0) log n per token (MD4's `recon`);
uniform keeps the token with probability a = e^-sigma_0 + (1 - e^-sigma_0) / n (the
chance that x_0' = x0) and spreads 1 - a over the other n - 1, so
R = -a log a - (1 - a) log((1 - a) / (n - 1)) per token. Both are 0 at sigma_0 = 0.

Length. The bound is of -log p(x0 | L). With the training length distribution p_hat
(mixed with a uniform over 1..max_len at weight `LENGTH_FLOOR`, so that unseen lengths
stay finite), -log p(x0) <= bound - log p_hat(L). For the conditional tasks of a pair
model with length heads the length term is the model's own, -log p(L_gen | context):
-log p(x_gen | context) <= bound - log p(L_gen | context).

Reported: nats per token = sum of bounds / number of valid tokens (a ratio estimator,
with a delta-method standard error over sequences), bits per token = nats / log 2,
perplexity = exp(nats per token).

The pair bound per task is in `pair_likelihood.py`, the statistics over sequences in
`likelihood_stats.py`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.common.likelihood import T_MIN, summarize  # noqa: F401  (re-exported)
from sedd_jax.data.batching import iter_eval_batches
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.likelihood_stats import summarize_sequences
from sedd_jax.diffusion.losses import per_token_loss
from sedd_jax.diffusion.parametrisation import applied_log_score_fn


def _stratified(key, time_samples, batch):
    u = uniform(key, (time_samples, batch))
    return (jnp.arange(time_samples)[:, None] + 1.0 - u) / time_samples


def _antithetic(key, time_samples, batch):
    if time_samples % 2:
        raise ValueError(f"antithetic time sampling needs an even K, got {time_samples}")
    u = uniform(key, (time_samples // 2, batch))
    return jnp.concatenate([u, 1.0 - u])


TIME_SAMPLERS = {"stratified": _stratified, "antithetic": _antithetic}


def likelihood_times(key: jax.Array, time_samples: int, batch: int, method: str) -> jax.Array:
    """t [K, B] in [T_MIN, 1], K per sequence, by `method` (stratified | antithetic)."""
    if method not in TIME_SAMPLERS:
        raise ValueError(f"likelihood method={method!r}; choose one of {sorted(TIME_SAMPLERS)}")
    return jnp.clip(TIME_SAMPLERS[method](key, time_samples, batch), T_MIN, 1.0)


def prior_term(graph, noise, valid: jax.Array) -> jax.Array:
    """P(x0) [B]: per-token KL(p_{1|0} || p_base) times the number of valid tokens."""
    sigma_one, _ = noise(jnp.ones((), jnp.float32))
    return graph.prior_kl(sigma_one) * valid.sum(axis=-1)


def reconstruction_per_token(graph, noise) -> jax.Array:
    """R per valid token (module docstring): 0 when sigma_bar(0) = 0."""
    sigma0 = jnp.asarray(noise.total(jnp.zeros((), jnp.float32)), jnp.float32)
    moved = -jnp.expm1(-sigma0)  # 1 - e^-sigma_0
    n = graph.n
    if graph.absorb:
        return moved * math.log(n)
    keep = 1.0 - moved + moved / n
    return -jax.scipy.special.xlogy(keep, keep) - jax.scipy.special.xlogy(
        1.0 - keep, (1.0 - keep) / (n - 1)
    )


def reconstruction_term(graph, noise, valid: jax.Array) -> jax.Array:
    """R(x0) [B] = per-token decoder cost times the number of valid tokens."""
    return reconstruction_per_token(graph, noise) * valid.sum(axis=-1)


def _bound(diffusion_terms, graph, noise, valid):
    """diffusion_terms [K, B] -> the per-sequence dict of `sequence_elbo`."""
    diffusion = diffusion_terms.mean(axis=0)
    prior = prior_term(graph, noise, valid)
    reconstruction = reconstruction_term(graph, noise, valid)
    return {
        "nll": reconstruction + diffusion + prior,
        "reconstruction": reconstruction,
        "diffusion": diffusion,
        "prior": prior,
        "diffusion_std": diffusion_terms.std(axis=0),
        "tokens": valid.sum(axis=-1).astype(jnp.float32),
    }


def elbo_from_draws(
    log_score_fn, graph, noise, x0: jax.Array, valid: jax.Array, t: jax.Array, x_t: jax.Array
) -> dict:
    """The bound from given times t [K, B] and corrupted tokens x_t [K, B, L].

    Deterministic in its inputs, so a padded batch and its sequences one by one can be
    compared on the same draws. Returns the dict of `sequence_elbo`.
    """

    def term(carry, inputs):
        t_k, x_k = inputs
        loss = per_token_loss(log_score_fn, graph, noise, x0, valid, t_k, x_t=x_k)
        return carry, loss.sum(axis=-1)

    _, terms = jax.lax.scan(term, None, (t, x_t))
    return _bound(terms, graph, noise, valid)


def sequence_elbo(
    log_score_fn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    key: jax.Array,
    *,
    time_samples: int,
    method: str = "stratified",
) -> dict:
    """The likelihood bound of each sequence of x0 [B, L] (pads: valid False), in nats.

    Returns {"nll": D + P, "diffusion": D, "prior": P, "diffusion_std": the spread of the
    K integrand samples, "tokens": valid tokens}, each [B]. One model call per time
    sample (a `lax.scan` over K).
    """
    time_key, noise_key = jax.random.split(key)
    t = likelihood_times(time_key, time_samples, x0.shape[0], method)

    def term(carry, inputs):
        t_k, k = inputs
        sigma, _ = noise(t_k)
        x_k = graph.sample_transition(jax.random.fold_in(noise_key, k), x0, sigma, valid)
        loss = per_token_loss(log_score_fn, graph, noise, x0, valid, t_k, x_t=x_k)
        return carry, loss.sum(axis=-1)

    _, terms = jax.lax.scan(term, None, (t, jnp.arange(time_samples)))
    return _bound(terms, graph, noise, valid)


LENGTH_FLOOR = 1e-3  # weight of the uniform over 1..max_len mixed into the length law


def length_log_probs(distribution, max_len: int) -> np.ndarray:
    """log p_hat(L) [max_len + 1] (L = 0 impossible): the training length distribution
    mixed with a uniform over 1..max_len at weight LENGTH_FLOOR (a proper law, finite at
    every length the model can score)."""
    dist = np.zeros(max_len + 1)
    given = np.asarray(distribution, np.float64)[: max_len + 1]
    dist[: len(given)] = given
    dist[0] = 0.0
    dist /= dist.sum()
    uniform = np.full(max_len + 1, 1.0 / max_len)
    uniform[0] = 0.0
    with np.errstate(divide="ignore"):
        return np.log((1.0 - LENGTH_FLOOR) * dist + LENGTH_FLOOR * uniform)


def make_likelihood_fn(
    model,
    graph,
    noise,
    *,
    time_samples: int,
    method: str = "stratified",
    parametrisation: str = "score",
):
    """jit fn(params, tokens [B, L], valid [B, L], key) -> `sequence_elbo` dict."""

    @jax.jit
    def likelihood(params, tokens, valid, key):
        log_score_fn = applied_log_score_fn(model, params, valid, parametrisation, graph.mask_id)
        return sequence_elbo(
            log_score_fn, graph, noise, tokens, valid, key, time_samples=time_samples, method=method
        )

    return likelihood


def dataset_likelihood(
    likelihood_fn,
    params,
    arrays: dict,
    *,
    batch_size: int,
    pad_id: int,
    seed: int,
    length_distribution=None,
    keep_rows: bool = False,
) -> dict:
    """`summarize_sequences` over every sequence of arrays {"tokens", "valid"} [N, L], with
    fixed keys; `length_distribution` (the training one) adds the length term.
    `keep_rows`: also "rows", the per-sequence arrays {"nll", "tokens"[, "length_log_prob"]}
    (numpy, [N]; not JSON)."""
    base = jax.random.fold_in(jax.random.key(seed), 0x11CE)
    n = len(arrays["tokens"])
    nll, tokens = [], []
    batches = iter_eval_batches(arrays, batch_size, fill={"tokens": pad_id})
    for b, batch in enumerate(batches):
        out = likelihood_fn(params, batch["tokens"], batch["valid"], jax.random.fold_in(base, b))
        nll.append(np.asarray(out["nll"]))
        tokens.append(np.asarray(out["tokens"]))
    nll, tokens = np.concatenate(nll)[:n], np.concatenate(tokens)[:n]
    length_log_prob = None
    if length_distribution is not None:
        log_p = length_log_probs(length_distribution, arrays["tokens"].shape[1])
        length_log_prob = log_p[np.asarray(arrays["valid"]).sum(axis=1)]
    out = summarize_sequences(nll, tokens, length_log_prob)
    if keep_rows:
        out["rows"] = {"nll": nll, "tokens": tokens}
        if length_log_prob is not None:
            out["rows"]["length_log_prob"] = length_log_prob
    return out
