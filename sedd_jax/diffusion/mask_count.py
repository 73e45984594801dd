"""The masked-diffusion ELBO estimated over the number of masked tokens (absorbing graph).

For the absorbing graph a token is masked at noise sigma with probability
m = 1 - exp(-sigma), whatever the schedule, and the masked cross-entropy term of MDLM/MD4
weighs each masked position by dsigma / expm1(sigma) = dm / m. Writing the time integral
over m and splitting it by the number k of masked tokens among a sequence's n:

    int_0^1 dm/m sum_k Bin(k; n, m) E[sum_masked CE | k, m]
      = sum_{k=1}^{n} (1/k) int_0^1 Beta(m; k, n - k + 1) E[sum_masked CE | k, m] dm

(C(n, k) B(k, n - k + 1) = 1/k). So with k ~ Uniform{1..n}, m | k ~ Beta(k, n - k + 1)
and exactly k of the n positions masked (uniformly), n/k * sum_masked CE is an unbiased
estimate of the same bound (its eps -> 0 limit): the "time-agnostic" form of Zheng et
al. 2024 and the any-order autoregressive bound of ARDM (Hoogeboom et al. 2022). It
keeps the binomial noise of the masked count and the 1/t weight out of the gradient:
every row carries the same total weight n, spread over the tokens it masks. With
`u` stratified over the global batch (`losses.antithetic_times`), k covers 1..n evenly.

The network is conditioned on sigma = -log(1 - m), clipped to the schedule's range
[sigma_bar(eps), sigma_bar(1)] so it never sees a sigma that training by time would not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.diffusion import keys
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.losses import TokenLosses, masked_ce_terms


def mask_counts(u: jax.Array, n: jax.Array) -> jax.Array:
    """k = 1 + floor(u * n) in 1..n for u [B] in [0, 1) and n [B] valid tokens: [B] int."""
    return jnp.clip(1 + jnp.floor(u * n).astype(jnp.int32), 1, jnp.maximum(n, 1))


def counted_masks(scores: jax.Array, valid: jax.Array, k: jax.Array):
    """(masked [B, L] bool, m [B]) from i.i.d. uniform `scores` [B, L]: the k_b valid
    positions of smallest score are masked (a uniform subset of that size) and m is the
    k-th smallest valid score, ~ Beta(k, n - k + 1) and independent of the subset (order
    statistics of uniforms)."""
    scores = jnp.where(valid, scores, 2.0)
    order = jnp.argsort(scores, axis=-1)
    rank = jnp.argsort(order, axis=-1)
    kth_at = jnp.take_along_axis(order, (k - 1)[:, None], axis=-1)
    return valid & (rank < k[:, None]), jnp.take_along_axis(scores, kth_at, axis=-1)[:, 0]


def counted_corruption(key, x0, valid, u, noise, sampling_eps: float, mask_id: int):
    """(sigma [B], dsigma' [B], x_t [B, L]) of the masked-count estimate: k =
    `mask_counts(u, n)` of each row's n `valid` tokens masked and m | k ~ Beta(k, n - k + 1)
    (`counted_masks` of uniforms drawn from `key`, one key or per-example keys [B]),
    sigma = -log(1 - m) clipped to the schedule's range, and dsigma' = (n / k)
    expm1(sigma), so that `losses.masked_ce_terms`' weight dsigma' / expm1(sigma) is n / k."""
    n = valid.sum(axis=-1).astype(jnp.int32)
    k = mask_counts(u, n)
    scores = keys.rowwise(lambda kk, x: uniform(kk, x.shape), key, x0)
    masked, m = counted_masks(scores, valid, k)
    lo, hi = noise(jnp.float32(sampling_eps))[0], noise(jnp.float32(1.0))[0]
    sigma = jnp.clip(-jnp.log1p(-jnp.minimum(m, 1.0 - 1e-7)), lo, hi)
    x_t = jnp.where(masked, mask_id, x0)
    weight = jnp.maximum(n, 1).astype(jnp.float32) / k.astype(jnp.float32)
    return sigma, weight * jnp.expm1(sigma), x_t


def masked_ce_count_loss(
    logits_fn,
    graph,
    noise,
    x0: jax.Array,
    valid: jax.Array,
    key: jax.Array,
    sampling_eps: float = 1e-3,
    *,
    u: jax.Array | None = None,
) -> TokenLosses:
    """One draw of the masked-count estimate: [B, L] terms (n/k * -log p(x0 | x_t) at the
    k masked positions) and `t` [B] = u, which picks k = 1 + floor(u n) (so about the
    masked fraction; stratified in training, drawn from `key` when None). Keys:
    `count_key, key = split(key)`, then `counted_corruption`'s."""
    if not graph.absorb:
        raise ValueError("training.time_sampling=mask_count needs the absorbing graph")
    count_key, key = keys.split(key)
    if u is None:
        u = keys.draw(lambda k, b: uniform(k, (b,)), count_key, x0.shape[0])
    sigma, dsigma, x_t = counted_corruption(key, x0, valid, u, noise, sampling_eps, graph.mask_id)
    terms = masked_ce_terms(logits_fn(x_t, sigma), graph, sigma, dsigma, x_t, x0, valid)
    return TokenLosses(terms, u)


def counted_pair_corruption(key, batch, p_scored, l_scored, u, noise, sampling_eps, graphs):
    """`counted_corruption` of a pair: the k masked tokens are drawn from the scored
    positions of both tracks together (one sigma per pair drives both, as in the time
    form), each track then written with its own mask id. (sigma, dsigma', protein_t,
    ligand_t); keys as in `counted_corruption`."""
    split = batch["protein"].shape[1]
    x0 = jnp.concatenate([batch["protein"], batch["ligand"]], axis=1)
    scored = jnp.concatenate([p_scored, l_scored], axis=1)
    sigma, dsigma, x_t = counted_corruption(key, x0, scored, u, noise, sampling_eps, -1)

    def track(graph, x):
        return jnp.where(x == -1, graph.mask_id, x)

    return (
        sigma,
        dsigma,
        track(graphs.protein, x_t[:, :split]),
        track(graphs.ligand, x_t[:, split:]),
    )
