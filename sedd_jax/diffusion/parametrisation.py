"""Mean (MDLM/MD4) and score (SEDD) parametrisations of an absorbing-graph network.

For the absorbing graph with alpha = exp(-sigma_bar), the concrete score at a masked
position is s(x_t -> y) = alpha / (1 - alpha) * p(x0 = y | x_t) (RADD, Ou et al. 2024), so

    log s_y = log p_y - log(expm1(sigma_bar)),   y != mask.

A mean-parametrised network gives logits [B, L, V]; p is their softmax over the non-mask
ids. Both functions are pure maps on outputs, so samplers and the likelihood bound can
consume a log-score whichever way the network was trained.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "PARAMETRISATIONS",
    "as_dual_log_score_fn",
    "as_log_score_fn",
    "applied_log_score_fn",
    "log_score_to_mean_log_probs",
    "mean_log_probs",
    "mean_to_log_score",
    "parametrisation_of",
]

PARAMETRISATIONS = ("score", "mean")


def _sigma(sigma: jax.Array, ndim: int) -> jax.Array:
    sigma = jnp.asarray(sigma, jnp.float32)
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def mean_log_probs(logits: jax.Array, mask_id: int) -> jax.Array:
    """log p(x0 = y | x_t) [B, L, V]: log-softmax over non-mask ids, -inf at the mask id."""
    is_mask = jnp.arange(logits.shape[-1]) == mask_id
    return jax.nn.log_softmax(jnp.where(is_mask, -jnp.inf, logits.astype(jnp.float32)), axis=-1)


def mean_to_log_score(
    logits: jax.Array, sigma: jax.Array, x_t: jax.Array, mask_id: int
) -> jax.Array:
    """SEDD log-scores [B, L, V] from mean logits [B, L, V] at sigma_bar [B].

    Masked positions: log p_y - log(expm1(sigma)) for y != mask and 0 at the mask id (the
    score at the current token, as the SEDD network sets it). Unmasked positions carry no
    score on the absorbing graph (score entropy is zero there): 0 everywhere.
    """
    log_p = mean_log_probs(logits, mask_id)
    log_ratio = -jnp.log(jnp.maximum(jnp.expm1(_sigma(sigma, logits.ndim)), 1e-30))
    is_mask_col = jnp.arange(logits.shape[-1]) == mask_id
    scores = jnp.where(is_mask_col, 0.0, log_p + log_ratio)
    return jnp.where((x_t == mask_id)[..., None], scores, 0.0)


def log_score_to_mean_log_probs(log_score: jax.Array, sigma: jax.Array, mask_id: int) -> jax.Array:
    """Inverse map at masked positions: log p(x0 = y | x_t) [B, L, V] from SEDD log-scores,
    renormalised over the non-mask ids (exact when the scores obey RADD's relation; a
    projection onto it otherwise)."""
    return mean_log_probs(log_score, mask_id)


def parametrisation_of(config) -> str:
    """What a run's network outputs: "mean" logits when trained with loss.type=masked_ce,
    else "score" (SEDD log-scores). Configs without a `loss` block predate masked_ce."""
    loss = config.get("loss", None)
    return "mean" if loss is not None and loss.get("type", "") == "masked_ce" else "score"


def as_log_score_fn(output_fn, parametrisation: str, mask_id: int):
    """fn(x_t [B, L], sigma [B]) -> log-scores [B, L, V] from the network's
    `output_fn(x_t, sigma)`, whichever parametrisation it was trained in."""
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation={parametrisation!r}: expected one of {PARAMETRISATIONS}")
    if parametrisation == "score":
        return output_fn

    def log_score_fn(x, sigma):
        return mean_to_log_score(output_fn(x, sigma), sigma, x, mask_id)

    return log_score_fn


def applied_log_score_fn(model, params, valid, parametrisation: str, mask_id: int):
    """`as_log_score_fn` of the single-track network `model` at `params`, pads hidden by
    valid [B, L]: fn(x_t [B, L], sigma [B]) -> log-scores [B, L, V]."""

    def output_fn(x, sigma):
        return model.apply({"params": params}, x, sigma, valid)

    return as_log_score_fn(output_fn, parametrisation, mask_id)


def as_dual_log_score_fn(output_fn, parametrisation: str, mask_ids: tuple[int, int]):
    """The pair network's `output_fn(protein_t, ligand_t, sigma, protein_valid,
    ligand_valid, mode) -> (protein out | None, ligand out | None)` as log-scores
    (`joint.DualScoreFn`), each track mapped by `mean_to_log_score` with its own mask id
    (`mask_ids` = (protein, ligand)) when the network is mean-parametrised."""
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation={parametrisation!r}: expected one of {PARAMETRISATIONS}")
    if parametrisation == "score":
        return output_fn

    def score_fn(protein, ligand, sigma, protein_valid, ligand_valid, mode):
        outs = output_fn(protein, ligand, sigma, protein_valid, ligand_valid, mode)
        return tuple(
            None if out is None else mean_to_log_score(out, sigma, x, mask_id)
            for out, x, mask_id in zip(outs, (protein, ligand), mask_ids, strict=True)
        )

    return score_fn
