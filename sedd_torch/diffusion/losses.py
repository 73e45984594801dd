"""The dsigma-weighted denoising score-entropy loss (twin of sedd_jax/diffusion/losses.py).

A `log_score_fn(x_t [B, L], sigma [B]) -> log-scores [B, L, V]` stands for the network.
Where sedd_jax takes a key this takes `rand` (see `catsample`), drawn in the same order:
the times first, then the corruption.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sedd_torch.diffusion.curriculum import (
    sample_curriculum_times,
    sample_times,  # noqa: F401  (re-exported, as sedd_jax)
    sigma_multiplier,
)
from sedd_torch.diffusion.parametrisation import mean_log_probs


class TokenLosses(NamedTuple):
    """One draw of the loss: `losses` [B, L] (dsigma'-weighted score entropy, 0 at pads)
    and the times `t` [B] it was drawn at."""

    losses: torch.Tensor
    t: torch.Tensor


def antithetic_times(u0, example_id: torch.Tensor, global_batch: int, sampling_eps: float):
    """Stratified times over the global batch (sedd_jax's `antithetic_times` given its
    offset u0 in [0, 1)): t = eps + (1 - eps) * ((u0 + id / B) mod 1). [b]"""
    u = stratified_u(u0, example_id, global_batch)
    return (1.0 - sampling_eps) * u + sampling_eps


def stratified_u(u0, example_id: torch.Tensor, global_batch: int):
    """(u0 + id / B) mod 1 (sedd_jax's `stratified_u` given its offset u0). [b]"""
    u0 = torch.as_tensor(u0, dtype=torch.float32, device=example_id.device)
    return torch.remainder(u0 + example_id.float() / global_batch, 1.0)


def loss_times(rand, batch: int, sampling_eps: float, step=0, curriculum=None):
    """The times t [B] (curriculum-aware) of a loss evaluation."""
    return sample_curriculum_times(rand, batch, step, curriculum, sampling_eps)


def noised(graph, noise, x0, valid, t, rand, x_t=None, sigma_scale=1.0):
    """(sigma', dsigma' [B], x_t [B, L]): the scaled schedule at t and x0 corrupted with
    `rand` unless x_t is given."""
    sigma, dsigma = noise(t)
    sigma_scale = torch.as_tensor(sigma_scale, dtype=torch.float32, device=sigma.device)
    sigma, dsigma = sigma_scale * sigma, sigma_scale * dsigma
    if x_t is None:
        x_t = graph.sample_transition(rand, x0, sigma, valid)
    return sigma, dsigma, x_t


def per_token_loss(
    log_score_fn, graph, noise, x0, valid, t, rand=None, *, x_t=None, sigma_scale=1.0
):
    """dsigma'(t_b) * score_entropy at every position, zero at pads: [B, L].

    sigma' = sigma_scale * sigma_bar(t), dsigma' = sigma_scale * dsigma(t); x0 is
    corrupted with `rand` unless x_t [B, L] is given.
    """
    sigma, dsigma, x_t = noised(graph, noise, x0, valid, t, rand, x_t, sigma_scale)
    return score_entropy_terms(log_score_fn(x_t, sigma), graph, sigma, dsigma, x_t, x0, valid)


def score_entropy_terms(log_score, graph, sigma, dsigma, x_t, x0, scored) -> torch.Tensor:
    """dsigma * score entropy [B, L] of log-scores at sigma, dsigma [B], 0 off `scored`."""
    log_score = torch.where(scored[..., None], log_score.float(), 0.0)  # no exp off scored
    entropy = graph.score_entropy(log_score, sigma, x_t, x0)
    return torch.where(scored, dsigma[:, None] * entropy, 0.0)


def masked_ce_terms(logits, graph, sigma, dsigma, x_t, x0, scored) -> torch.Tensor:
    """dsigma / expm1(sigma) * -log p(x0 | x_t) [B, L] at masked `scored` positions, else 0
    (MDLM/MD4; p = softmax of the logits over non-mask ids)."""
    log_p = mean_log_probs(logits, graph.mask_id)
    nll = -torch.gather(log_p, -1, x0.long()[..., None])[..., 0]
    hit = scored & (x_t == graph.mask_id)
    weight = (dsigma / torch.expm1(sigma))[:, None]
    return torch.where(hit, weight * torch.where(hit, nll, 0.0), 0.0)


TERMS = {"score_entropy": score_entropy_terms, "masked_ce": masked_ce_terms}


def score_entropy_loss(
    log_score_fn,
    graph,
    noise,
    x0,
    valid,
    rand,
    sampling_eps=1e-3,
    *,
    step=0,
    curriculum=None,
    t=None,
) -> TokenLosses:
    """The single-track loss of training and evaluation: one fresh t per sequence, drawn
    (curriculum-biased at `step`) before the corruption; with `sigma_scale` the scaled
    sigma corrupts, conditions and weights. loss = losses.sum() / valid.sum(). Given
    times `t` [B] replace the drawn ones (drawn all the same: sedd_jax's draw order)."""
    return _over_times(
        per_token_loss,
        log_score_fn,
        graph,
        noise,
        x0,
        valid,
        rand,
        sampling_eps,
        step,
        curriculum,
        t,
    )


def masked_ce_per_token(
    logits_fn, graph, noise, x0, valid, t, rand=None, *, x_t=None, sigma_scale=1.0
):
    """dsigma' / expm1(sigma') * -log p(x0 | x_t) at masked valid positions, else 0: [B, L]
    (MDLM/MD4; p = softmax of the logits over non-mask ids)."""
    if not graph.absorb:
        raise ValueError("loss.type=masked_ce needs the absorbing graph (uniform: score_entropy)")
    sigma, dsigma, x_t = noised(graph, noise, x0, valid, t, rand, x_t, sigma_scale)
    return masked_ce_terms(logits_fn(x_t, sigma), graph, sigma, dsigma, x_t, x0, valid)


def masked_ce_loss(
    logits_fn,
    graph,
    noise,
    x0,
    valid,
    rand,
    sampling_eps=1e-3,
    *,
    step=0,
    curriculum=None,
    t=None,
) -> TokenLosses:
    """`score_entropy_loss` with the masked cross-entropy term (`masked_ce_per_token`)."""
    return _over_times(
        masked_ce_per_token,
        logits_fn,
        graph,
        noise,
        x0,
        valid,
        rand,
        sampling_eps,
        step,
        curriculum,
        t,
    )


def _over_times(per_token, fn, graph, noise, x0, valid, rand, sampling_eps, step, curriculum, t):
    """`per_token` at one time per sequence, drawn (curriculum-aware) before the corruption
    (or given: `t`), sigma scaled by the curriculum."""
    drawn = loss_times(rand, x0.shape[0], sampling_eps, step, curriculum)
    t = drawn if t is None else torch.as_tensor(t, device=drawn.device)
    scale = sigma_multiplier(step, curriculum)
    return TokenLosses(per_token(fn, graph, noise, x0, valid, t, rand, sigma_scale=scale), t)


LOSSES = {"score_entropy": score_entropy_loss, "masked_ce": masked_ce_loss}
