"""One-step predictors, the final denoiser and the transition reshaper (twin of
`sedd_jax/diffusion/predictors.py`).
"""

from __future__ import annotations

import torch

from sedd_torch.diffusion.catsample import categorical_from_uniform, forbid


def batched_time(t, x):
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def one_hot(x, dim, dtype):
    return torch.nn.functional.one_hot(x.long(), dim).to(dtype)


def euler_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None):
    """tau-leaping (SEDD eq. 17): jump x -> y with intensity dt sigma(t) Q^T(x, y) s_y."""
    sigma, dsigma = noise(batched_time(t, x))
    score = torch.exp(log_score_fn(x, sigma).float())
    rate = (dt * dsigma)[:, None, None] * graph.reverse_rate(x, score)
    if reshape is None:
        return graph.sample_rate(x, rate, u)
    probs = one_hot(x, graph.dim, rate.dtype) + rate
    return categorical_from_uniform(reshape(probs, x), u)


def analytic_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None):
    """Tweedie tau-leaping (SEDD eq. 19): p(y) = staggered_score(s, dsigma)_y *
    exp(dsigma Q)^T(x, y) with dsigma = sigma_bar(t) - sigma_bar(t - dt)."""
    sigma, _ = noise(batched_time(t, x))
    next_sigma, _ = noise(batched_time(t - dt, x))
    step_sigma = sigma - next_sigma
    score = torch.exp(log_score_fn(x, sigma).float())
    probs = graph.staggered_score(score, step_sigma) * graph.transp_transition(x, step_sigma)
    return categorical_from_uniform(probs if reshape is None else reshape(probs, x), u)


def none_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None):
    """Leave x unchanged (for corrector-only or debugging schedules)."""
    del log_score_fn, graph, noise, t, dt, u, reshape
    return x


def denoise(log_score_fn, graph, noise, x, t, u, reshape=None):
    """Final step at t = eps: draw every mask from the Tweedie posterior, mask column dropped."""
    sigma, _ = noise(batched_time(t, x))
    score = torch.exp(log_score_fn(x, sigma).float())
    probs = graph.staggered_score(score, sigma) * graph.transp_transition(x, sigma)
    if graph.absorb:
        probs = probs[..., :-1]
        u = u[..., :-1]
    return categorical_from_uniform(probs if reshape is None else reshape(probs, x), u)


def sharpen(probs, x, temperature: float, top_p: float):
    """Temperature and nucleus (top-p) on a per-position transition distribution
    [B, L, V]; the stay probability and the total move mass are kept (as sedd_jax)."""
    probs = torch.clamp(probs, min=0.0)
    here = torch.nn.functional.one_hot(x.long(), probs.shape[-1] + 1)[..., :-1].bool()
    moves = torch.where(here, torch.zeros_like(probs), probs)
    mass = moves.sum(dim=-1, keepdim=True)
    peak = moves.amax(dim=-1, keepdim=True)
    ratio = (moves / torch.clamp(peak, min=1e-30)) ** (1.0 / temperature)
    tempered = torch.where(moves > 0, ratio, torch.zeros_like(probs))
    order = torch.sort(tempered, dim=-1, descending=True).values
    share = torch.cumsum(order, dim=-1) / torch.clamp(order.sum(dim=-1, keepdim=True), min=1e-30)
    cut_index = torch.clamp((share < top_p).sum(dim=-1, keepdim=True), max=probs.shape[-1] - 1)
    cut = torch.gather(order, -1, cut_index)
    tempered = torch.where(tempered >= cut, tempered, torch.zeros_like(tempered))
    scale = mass / torch.clamp(tempered.sum(dim=-1, keepdim=True), min=1e-30)
    return torch.where(here, probs, tempered * scale)


def transition_reshaper(temperature: float = 1.0, top_p: float = 1.0, forbidden=None):
    """reshape(probs, x): zero the `forbidden` [V] ids, then `sharpen`; None for the
    plain sampler (as sedd_jax)."""
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
