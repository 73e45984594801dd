"""Reverse-process samplers (twin of sedd_jax/diffusion/sampling.py).

Every predictor has one signature:
    predictor(log_score_fn, graph, noise, x [B, L], t [], dt, u [B, L, V]) -> x [B, L]
where `u` are the uniforms of the categorical draw; given sedd_jax's uniforms the twin
makes sedd_jax's draws. The time grid is linspace(1, eps, steps + 1), as upstream.
(sedd_jax's prompt builders make plain (x_init, clamp) arrays; they are not repeated.)
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_torch.diffusion.catsample import categorical_from_uniform


def _batched(t, x):
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def euler_predictor(log_score_fn, graph, noise, x, t, dt, u):
    """tau-leaping (SEDD eq. 17): jump x -> y with intensity dt sigma(t) Q^T(x, y) s_y."""
    sigma, dsigma = noise(_batched(t, x))
    score = torch.exp(log_score_fn(x, sigma).float())
    rate = (dt * dsigma)[:, None, None] * graph.reverse_rate(x, score)
    return graph.sample_rate(x, rate, u)


def analytic_predictor(log_score_fn, graph, noise, x, t, dt, u):
    """Tweedie tau-leaping (SEDD eq. 19): p(y) = staggered_score(s, dsigma)_y *
    exp(dsigma Q)^T(x, y) with dsigma = sigma_bar(t) - sigma_bar(t - dt)."""
    sigma, _ = noise(_batched(t, x))
    next_sigma, _ = noise(_batched(t - dt, x))
    step_sigma = sigma - next_sigma
    score = torch.exp(log_score_fn(x, sigma).float())
    probs = graph.staggered_score(score, step_sigma) * graph.transp_transition(x, step_sigma)
    return categorical_from_uniform(probs, u)


def none_predictor(log_score_fn, graph, noise, x, t, dt, u):
    """Leave x unchanged (for corrector-only or debugging schedules)."""
    del log_score_fn, graph, noise, t, dt, u
    return x


def denoise(log_score_fn, graph, noise, x, t, u):
    """Final step at t = eps: draw every mask from the Tweedie posterior, mask column dropped."""
    sigma, _ = noise(_batched(t, x))
    score = torch.exp(log_score_fn(x, sigma).float())
    probs = graph.staggered_score(score, sigma) * graph.transp_transition(x, sigma)
    if graph.absorb:
        probs = probs[..., :-1]
        u = u[..., :-1]
    return categorical_from_uniform(probs, u)


PREDICTORS = {"euler": euler_predictor, "analytic": analytic_predictor, "none": none_predictor}


def time_grid(steps: int, eps: float) -> np.ndarray:
    """[steps + 1] times from 1 down to eps (float64 on the host; each step rounds its t
    to float32, as sedd_jax does)."""
    return np.linspace(1.0, eps, steps + 1)


@torch.no_grad()
def pc_sample(
    log_score_fn,
    graph,
    noise,
    x_init,
    rand=None,
    *,
    steps: int,
    predictor: str = "euler",
    eps: float = 1e-5,
    denoise_last: bool = True,
    clamp=None,
    uniforms=None,
    start_from_limit: bool = True,
):
    """Run the reverse process for x [B, L].

    x_init [B, L] holds the clamped tokens; every other position starts from the graph's
    limit (all-mask for absorbing, uniform tokens for uniform, drawn with `rand`), unless
    `start_from_limit` is False. clamp [B, L] bool: positions held at their x_init values
    at every step. The step uniforms come from `rand`, or from `uniforms`
    [steps + 1, B, L, V] (the last slice feeds the denoiser) for parity runs.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {sorted(PREDICTORS)}")
    if rand is None and uniforms is None:
        raise ValueError("pc_sample needs rand or explicit uniforms")
    step_fn = PREDICTORS[predictor]
    shape = tuple(x_init.shape) + (graph.dim,)
    ts = time_grid(steps, eps)
    dt = (1.0 - eps) / steps
    keep = torch.zeros_like(x_init, dtype=torch.bool) if clamp is None else clamp
    x = x_init
    if start_from_limit:
        if rand is None and not graph.absorb:
            raise ValueError(
                "the uniform graph starts from random tokens: pass rand, or an explicit "
                "start state with start_from_limit=False"
            )
        x = torch.where(keep, x_init, graph.sample_limit(rand, x_init.shape, x_init.device))

    def draw(i):
        return uniforms[i] if uniforms is not None else rand(shape)

    for i in range(steps):
        x = step_fn(log_score_fn, graph, noise, x, ts[i], dt, draw(i))
        x = torch.where(keep, x_init, x)
    if denoise_last:
        x = denoise(log_score_fn, graph, noise, x, ts[-1], draw(steps))
        x = torch.where(keep, x_init, x)
    return x
