"""The SEDD likelihood bound per sequence (twin of sedd_jax/diffusion/likelihood.py).

-log p(x0) <= D(x0) + P(x0): D the dsigma-weighted score entropy integrated over
t in [0, 1] by K Monte Carlo times per sequence (stratified or antithetic), P the prior
KL per token times the number of valid tokens. `summarize` is sedd_jax's.
"""

from __future__ import annotations

import torch

from sedd_jax.common.likelihood import T_MIN, summarize  # noqa: F401  (re-exported)
from sedd_torch.diffusion.losses import per_token_loss


def _stratified(rand, time_samples, batch):
    u = rand((time_samples, batch))
    return (torch.arange(time_samples, device=u.device)[:, None] + 1.0 - u) / time_samples


def _antithetic(rand, time_samples, batch):
    if time_samples % 2:
        raise ValueError(f"antithetic time sampling needs an even K, got {time_samples}")
    u = rand((time_samples // 2, batch))
    return torch.cat([u, 1.0 - u])


TIME_SAMPLERS = {"stratified": _stratified, "antithetic": _antithetic}


def likelihood_times(rand, time_samples: int, batch: int, method: str) -> torch.Tensor:
    """t [K, B] in [T_MIN, 1], K per sequence, by `method` (stratified | antithetic)."""
    if method not in TIME_SAMPLERS:
        raise ValueError(f"likelihood method={method!r}; choose one of {sorted(TIME_SAMPLERS)}")
    return torch.clamp(TIME_SAMPLERS[method](rand, time_samples, batch), T_MIN, 1.0)


def prior_term(graph, noise, valid) -> torch.Tensor:
    """P(x0) [B]: per-token KL(p_{1|0} || p_base) times the number of valid tokens."""
    sigma_one, _ = noise(torch.ones((), dtype=torch.float32))
    return graph.prior_kl(sigma_one).to(valid.device) * valid.sum(dim=-1)


def _bound(diffusion_terms, graph, noise, valid) -> dict:
    """diffusion_terms [K, B] -> the per-sequence dict of `sequence_elbo`."""
    diffusion = diffusion_terms.mean(dim=0)
    prior = prior_term(graph, noise, valid)
    return {
        "nll": diffusion + prior,
        "diffusion": diffusion,
        "prior": prior,
        "diffusion_std": diffusion_terms.std(dim=0, correction=0),
        "tokens": valid.sum(dim=-1).float(),
    }


@torch.no_grad()
def elbo_from_draws(log_score_fn, graph, noise, x0, valid, t, x_t) -> dict:
    """The bound from given times t [K, B] and corrupted tokens x_t [K, B, L]."""
    terms = [
        per_token_loss(log_score_fn, graph, noise, x0, valid, t_k, x_t=x_k).sum(dim=-1)
        for t_k, x_k in zip(t, x_t, strict=True)
    ]
    return _bound(torch.stack(terms), graph, noise, valid)


@torch.no_grad()
def sequence_elbo(
    log_score_fn, graph, noise, x0, valid, rand, *, time_samples: int, method="stratified"
) -> dict:
    """The likelihood bound of each sequence of x0 [B, L] (pads: valid False), in nats:
    {"nll", "diffusion", "prior", "diffusion_std", "tokens"}, each [B]."""
    t = likelihood_times(rand, time_samples, x0.shape[0], method).to(x0.device)
    terms = []
    for t_k in t:
        sigma, _ = noise(t_k)
        x_k = graph.sample_transition(rand, x0, sigma, valid)
        loss = per_token_loss(log_score_fn, graph, noise, x0, valid, t_k, x_t=x_k)
        terms.append(loss.sum(dim=-1))
    return _bound(torch.stack(terms), graph, noise, valid)
