"""Reverse-process samplers (twin of sedd_jax/diffusion/sampling.py).

Every predictor has one signature:
    predictor(log_score_fn, graph, noise, x [B, L], t [], dt, u [B, L, V]) -> x [B, L]
where `u` are the uniforms of the categorical draw; given sedd_jax's uniforms, the twin
makes sedd_jax's draws. The time grid is linspace(1, eps, steps + 1), as upstream.
"""

from __future__ import annotations

import torch

from sedd_torch.diffusion.catsample import categorical_from_uniform, uniform


def _batched(t, x):
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def euler_predictor(log_score_fn, graph, noise, x, t, dt, u):
    """tau-leaping (SEDD eq. 17): jump x -> y with intensity dt sigma(t) Q^T(x, y) s_y."""
    sigma, dsigma = noise(_batched(t, x))
    score = torch.exp(log_score_fn(x, sigma).float())
    rate = (dt * dsigma)[:, None, None] * graph.reverse_rate(x, score)
    return graph.sample_rate(x, rate, u)


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


PREDICTORS = {"euler": euler_predictor, "none": none_predictor}


def time_grid(steps: int, eps: float) -> torch.Tensor:
    """[steps + 1] float32 times from 1 down to eps."""
    return torch.linspace(1.0, eps, steps + 1, dtype=torch.float32)


@torch.no_grad()
def pc_sample(
    log_score_fn,
    graph,
    noise,
    x_init,
    generator=None,
    *,
    steps: int,
    predictor: str = "euler",
    eps: float = 1e-5,
    denoise_last: bool = True,
    clamp=None,
    uniforms=None,
):
    """Run the reverse process from x_init [B, L] (mask where generated, tokens elsewhere).

    clamp [B, L] bool: positions held at their x_init values at every step. Uniforms are
    drawn from `generator`, or taken from `uniforms` [steps + 1, B, L, V] (the last slice
    feeds the denoiser) for parity runs.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {sorted(PREDICTORS)}")
    step_fn = PREDICTORS[predictor]
    shape = tuple(x_init.shape) + (graph.dim,)
    ts = time_grid(steps, eps)
    dt = (1.0 - eps) / steps
    keep = torch.zeros_like(x_init, dtype=torch.bool) if clamp is None else clamp

    def draw(i):
        if uniforms is not None:
            return uniforms[i]
        return uniform(generator, shape, x_init.device)

    x = x_init
    for i in range(steps):
        x = step_fn(log_score_fn, graph, noise, x, ts[i], dt, draw(i))
        x = torch.where(keep, x_init, x)
    if denoise_last:
        x = denoise(log_score_fn, graph, noise, x, ts[-1], draw(steps))
        x = torch.where(keep, x_init, x)
    return x
