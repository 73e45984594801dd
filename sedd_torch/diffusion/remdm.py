"""ReMDM: ancestral steps of the absorbing graph that may re-mask decoded tokens (twin of
sedd_jax/diffusion/remdm.py, where the posterior and the schedules are derived).

A masked row is the analytic row plus sigma_t (s_y at real ids, -sum_y s_y at the mask
id); a decoded row keeps its token w.p. 1 - sigma_t and is re-masked w.p. sigma_t.
Schedules (`RemdmSettings`, shared with sedd_jax): "cap" min(eta, sigma_max), "rescale"
eta sigma_max, "conf" sigma_max softmax(-psi) over decoded positions; zero while t > t_on.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_jax.common.remdm import SCHEDULES, RemdmSettings
from sedd_torch.diffusion.catsample import categorical_from_uniform
from sedd_torch.diffusion.parametrisation import mean_log_probs

__all__ = ["SCHEDULES", "RemdmSettings", "remdm_predictor", "remdm_loop"]


def sigma_max(sigma_t, sigma_s):
    """min(1, (1 - alpha_s) / alpha_t) [B] from sigma_bar at t and s (alpha = e^-sigma)."""
    return torch.clamp(-torch.expm1(-sigma_s) * torch.exp(sigma_t), max=1.0)


def remask_probability(settings, t, sigma_t, sigma_s, weights=None):
    """sigma_t per position [B, L] (cap / rescale: [B, 1]); `weights` [B, L] the conf
    schedule's softmax(-psi) (None otherwise)."""
    top = sigma_max(sigma_t, sigma_s)[:, None]
    if settings.schedule == "cap":
        r = torch.clamp(top, max=settings.eta)
    elif settings.schedule == "rescale":
        r = settings.eta * top
    else:
        r = top * weights
    on = np.float32(t) <= np.float32(settings.t_on)  # compared in float32, as sedd_jax
    return r if on else torch.zeros_like(r)


def remdm_probs(graph, x, score, sigma_t, sigma_s, remask):
    """Unnormalised q_sigma(z_s | z_t) [B, L, V] (as sedd_jax)."""
    step = sigma_t - sigma_s
    analytic = graph.staggered_score(score, step) * graph.transp_transition(x, step)
    is_mask_col = torch.arange(graph.dim, device=x.device) == graph.mask_id
    s_real = torch.where(is_mask_col, 0.0, score)
    shift = s_real - torch.where(is_mask_col, s_real.sum(dim=-1, keepdim=True), 0.0)
    r = remask[..., None]
    one_hot = torch.nn.functional.one_hot(x.long(), graph.dim).to(score.dtype)
    decoded = one_hot * (1.0 - r) + is_mask_col.to(score.dtype) * r
    return torch.where((x == graph.mask_id)[..., None], analytic + r * shift, decoded)


def _sigmas(noise, t, dt, x):
    batch = torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)
    return noise(batch)[0], noise(batch - dt)[0]


def remdm_predictor(log_score_fn, graph, noise, x, t, dt, u, reshape=None, settings=None):
    """One ReMDM step (cap / rescale) with the `sampling.PREDICTORS` signature."""
    settings = RemdmSettings() if settings is None else settings
    if not graph.absorb:
        raise ValueError("sampling.predictor='remdm' needs the absorbing graph")
    if settings.schedule == "conf":
        raise ValueError("remdm_schedule='conf' carries confidences across steps: remdm_loop")
    sigma_t, sigma_s = _sigmas(noise, t, dt, x)
    score = torch.exp(log_score_fn(x, sigma_t).float())
    remask = remask_probability(settings, t, sigma_t, sigma_s)
    probs = remdm_probs(graph, x, score, sigma_t, sigma_s, remask)
    return categorical_from_uniform(probs if reshape is None else reshape(probs, x), u)


def remdm_loop(
    log_score_fn, graph, noise, x_start, keep, x_init, ts, dt, draw, reshape, steps, settings
):
    """ReMDM steps over the grid `ts` (sedd_jax's `remdm_scan`); the conf schedule carries
    -psi [B, L] (-inf where no confidence counts). Returns x [B, L]."""
    if not graph.absorb:
        raise ValueError("sampling.predictor='remdm' needs the absorbing graph")
    conf = settings.schedule == "conf"
    x = x_start
    neg_psi = torch.full(tuple(x.shape), -torch.inf, dtype=torch.float32, device=x.device)
    for i in range(steps):
        t = ts[i]
        sigma_t, sigma_s = _sigmas(noise, t, dt, x)
        log_score = log_score_fn(x, sigma_t).float()
        weights = None
        if conf:
            counted = torch.isfinite(neg_psi)
            weights = torch.where(counted, torch.softmax(neg_psi, dim=-1), 0.0)
            weights = torch.where(counted.any(dim=-1, keepdim=True), weights, 0.0)
        remask = remask_probability(settings, t, sigma_t, sigma_s, weights)
        probs = remdm_probs(graph, x, torch.exp(log_score), sigma_t, sigma_s, remask)
        x_new = categorical_from_uniform(probs if reshape is None else reshape(probs, x), draw(i))
        x_new = torch.where(keep, x_init, x_new)
        if conf:
            masked = x == graph.mask_id
            log_p = mean_log_probs(log_score, graph.mask_id)
            p_new = torch.exp(torch.gather(log_p, -1, x_new[..., None].long())[..., 0])
            revealed = masked & (x_new != graph.mask_id) & ~keep
            neg_psi = torch.where(revealed, -p_new, neg_psi)
            neg_psi = torch.where(x_new == graph.mask_id, -torch.inf, neg_psi)
        x = x_new
    return x
