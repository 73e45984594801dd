"""Reverse-process samplers (twin of sedd_jax/diffusion/sampling.py).

Every predictor has one signature:
    predictor(log_score_fn, graph, noise, x [B, L], t [], dt, u [B, L, V]) -> x [B, L]
where `u` are the uniforms of the categorical draw (`catsample.race_uniform`); given
sedd_jax's uniforms the twin makes sedd_jax's draws. The time grid is
linspace(1, eps, steps + 1), as upstream. `reshape(probs, x) -> probs` removes the
forbidden ids and applies temperature / top-p before each draw, as sedd_jax.
(sedd_jax's prompt builders make plain (x_init, clamp) arrays; they are not repeated.)
"remdm" (`diffusion/remdm.py`) and the SAMPLERS "cached" and "first_hitting" (absorbing
graph) mirror sedd_jax's, draw for draw given its uniforms.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_torch.diffusion.catsample import categorical_from_uniform, race_uniform
from sedd_torch.diffusion.graphs import esigm1
from sedd_torch.diffusion.predictors import (  # noqa: F401  (re-exported)
    analytic_predictor,
    batched_time,
    denoise,
    euler_predictor,
    none_predictor,
    one_hot,
    sharpen,
    transition_reshaper,
)
from sedd_torch.diffusion.remdm import RemdmSettings, remdm_loop, remdm_predictor

PREDICTORS = {
    "euler": euler_predictor,
    "analytic": analytic_predictor,
    "none": none_predictor,
    "remdm": remdm_predictor,  # at RemdmSettings(); pc_sample passes its `remdm`
}
# samplers that are not one-step predictors: pc_sample runs them with their own loop
SAMPLERS = ("cached", "first_hitting")


def _sigma_factor(graph, x, sigma):
    """log(e^sigma - 1) at masked positions' real-token columns, 0 elsewhere [B, L, V]."""
    c = torch.log(esigm1(sigma))[:, None, None]
    real = (torch.arange(graph.dim, device=x.device) != graph.mask_id)[None, None, :]
    return torch.where((x == graph.mask_id)[..., None] & real, c, 0.0)


def cached_loop(log_score_fn, graph, noise, x_start, keep, x_init, ts, dt, draw, reshape, steps):
    """Analytic steps that call the network only when x changed since the last call
    (sedd_jax's `cached_scan`). Returns (x, network calls)."""
    if not graph.absorb:
        raise ValueError("sampling.predictor='cached' needs the absorbing graph")
    x, x_seen, cond, calls = x_start, None, None, 0
    for i in range(steps):
        sigma, _ = noise(batched_time(ts[i], x))
        next_sigma, _ = noise(batched_time(ts[i] - dt, x))
        if x_seen is None or bool((x != x_seen).any()):
            cond = log_score_fn(x, sigma).float() + _sigma_factor(graph, x, sigma)
            calls += 1
        score = torch.exp(cond - _sigma_factor(graph, x, sigma))
        step_sigma = sigma - next_sigma
        probs = graph.staggered_score(score, step_sigma) * graph.transp_transition(x, step_sigma)
        x_new = categorical_from_uniform(probs if reshape is None else reshape(probs, x), draw(i))
        x, x_seen = torch.where(keep, x_init, x_new), x
    return x, calls


def first_hitting_sample(
    log_score_fn, graph, noise, x_start, keep, draw, final_u, *, eps, reshape, max_calls
):
    """One token per network call at its exact reveal time (sedd_jax's
    `first_hitting_sample`). draw(k) -> (reveal time [B], position [B, L], token [B, V])
    uniforms of call k; final_u [B, L, V] the denoiser's. Returns (x, network calls)."""
    if not graph.absorb:
        raise ValueError("sampling.predictor='first_hitting' needs the absorbing graph")
    batch, length = x_start.shape
    device = x_start.device
    sigma_end = noise.total(torch.tensor(eps, dtype=torch.float32))
    sigma = torch.full((batch,), float(noise.total(torch.tensor(1.0))), device=device)
    real = torch.arange(graph.dim, device=device) != graph.mask_id
    x = x_start

    def open_masks(x):
        return ((x == graph.mask_id) & ~keep).sum(dim=1)

    def active(x, sigma):
        return (open_masks(x) > 0) & (sigma > sigma_end)

    calls = 0
    while calls < max_calls and bool(active(x, sigma).any()):
        v, pos_u, tok_u = draw(calls)
        n = torch.clamp(open_masks(x), min=1).float()
        new = -torch.log1p(torch.expm1(-sigma) * v ** (1.0 / n))
        go = active(x, sigma) & (new > sigma_end)
        sigma = torch.where(active(x, sigma), new, sigma)
        masked = (x == graph.mask_id) & ~keep
        pos = categorical_from_uniform(masked.float(), pos_u)
        score = torch.exp(log_score_fn(x, torch.clamp(sigma, min=sigma_end)).float())
        probs = torch.where(real, score, 0.0)
        probs = probs if reshape is None else reshape(probs, x)
        row = torch.gather(probs, 1, pos[:, None, None].expand(-1, 1, graph.dim))[:, 0]
        tok = categorical_from_uniform(row, tok_u)
        hit = go[:, None] & (torch.arange(length, device=device)[None, :] == pos[:, None])
        x = torch.where(hit, tok[:, None], x)
        calls += 1
    if bool(((x == graph.mask_id) & ~keep).any()):
        x = denoise(log_score_fn, graph, noise, x, eps, final_u, reshape)
        calls += 1
    return x, calls


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
    temperature: float = 1.0,
    top_p: float = 1.0,
    forbidden=None,
    return_calls: bool = False,
    remdm: RemdmSettings | None = None,
):
    """Run the reverse process for x [B, L].

    x_init [B, L] holds the clamped tokens; every other position starts from the graph's
    limit (all-mask for absorbing, uniform tokens for uniform, drawn with `rand`), unless
    `start_from_limit` is False. clamp [B, L] bool: positions held at their x_init values
    at every step. The step uniforms come from `rand`, or from `uniforms`
    [steps + 1, B, L, V] (the last slice feeds the denoiser) for parity runs.
    `temperature`, `top_p` and `forbidden` [V] bool reshape every draw, as sedd_jax.
    "first_hitting" takes `uniforms` = (reveal times [K, B], positions [K, B, L], tokens
    [K, B, V], denoiser [B, L, V]) with K >= L (`sampling.first_hitting_uniforms` of
    sedd_jax), or draws them from `rand` in that order per call. `return_calls` returns
    (x, network calls); `remdm` the "remdm" settings (None: `RemdmSettings()`).
    """
    if predictor not in PREDICTORS and predictor not in SAMPLERS:
        choices = sorted(PREDICTORS) + list(SAMPLERS)
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {choices}")
    if rand is None and uniforms is None:
        raise ValueError("pc_sample needs rand or explicit uniforms")
    step_fn = PREDICTORS.get(predictor)
    reshape = transition_reshaper(temperature, top_p, forbidden)
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
        return uniforms[i] if uniforms is not None else race_uniform(rand, shape)

    if predictor == "first_hitting":
        x, calls = _first_hitting(log_score_fn, graph, noise, x, keep, rand, uniforms, eps, reshape)
        x = torch.where(keep, x_init, x)
        return (x, calls) if return_calls else x
    if predictor == "remdm":
        settings = RemdmSettings() if remdm is None else remdm
        args = (x, keep, x_init, ts, dt, draw, reshape, steps, settings)
        x, calls = remdm_loop(log_score_fn, graph, noise, *args), steps
    elif predictor == "cached":
        args = (x, keep, x_init, ts, dt, draw, reshape, steps)
        x, calls = cached_loop(log_score_fn, graph, noise, *args)
    else:
        for i in range(steps):
            x = step_fn(log_score_fn, graph, noise, x, ts[i], dt, draw(i), reshape)
            x = torch.where(keep, x_init, x)
        calls = steps if predictor != "none" else 0
    if denoise_last:
        x = denoise(log_score_fn, graph, noise, x, ts[-1], draw(steps), reshape)
        x = torch.where(keep, x_init, x)
        calls += 1
    return (x, calls) if return_calls else x


def _first_hitting(log_score_fn, graph, noise, x, keep, rand, uniforms, eps, reshape):
    """first_hitting_sample with explicit uniforms (see pc_sample) or draws from `rand`."""
    batch, length = x.shape
    if uniforms is not None:
        v, pos_u, tok_u, final_u = uniforms

        def draw(k):
            return v[k], pos_u[k], tok_u[k]

    else:
        shapes = ((batch,), (batch, length), (batch, graph.dim))

        def draw(k):
            return tuple(race_uniform(rand, shape) for shape in shapes)

        final_u = race_uniform(rand, (batch, length, graph.dim))
    args = (x, keep, draw, final_u)
    return first_hitting_sample(
        log_score_fn, graph, noise, *args, eps=eps, reshape=reshape, max_calls=length
    )
