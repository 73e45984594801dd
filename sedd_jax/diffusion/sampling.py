"""Reverse-process samplers: one jitted scan over steps of a predictor (`predictors.py`:
the one-step predictors, the final denoiser, the transition reshaper), and the
absorbing-graph samplers with their own loops.

Every predictor has one signature:
    predictor(log_score_fn, graph, noise, x [B, L], t [], dt [], u [B, L, V]) -> x [B, L]
where `u` are the uniforms of the categorical draw (`catsample.race_uniform`; explicit
so that the PyTorch twin can replay the same draw). The time grid is
linspace(1, eps, steps + 1), as upstream. `reshape(probs, x) -> probs` edits each
position's distribution before the draw: it removes the forbidden ids (special tokens)
and applies temperature / top-p (`transition_reshaper`).

Conditioning is by clamping: `clamp` [B, L] marks positions held at their `x_init`
values at every step (prompts, pads, a conditioning track); `prefix_prompt`,
`position_prompt` and `with_padding` build (x_init, clamp) pairs.

"remdm" (`diffusion/remdm.py`, absorbing graph) is a one-step predictor that may
re-mask decoded tokens; `pc_sample` runs it through `remdm_scan` with `remdm`
(`RemdmSettings`: schedule, eta, switch time), `joint_sampling.sample_pairs` at the defaults.
Beside the one-step PREDICTORS, `pc_sample` runs the SAMPLERS with their own loops
(absorbing graph, single track only; `joint_sampling.sample_pairs` and guidance do not take them
yet): "cached" (`cached_scan`: analytic steps, the network called only when a token of
the batch changed since the last call; exact for sigma-free scores, an approximation for
sigma-conditioned networks) and "first_hitting" (`first_hitting_sample`: one token per
call at its exact reveal time, at most L calls, key only). Both honour clamps and
`reshape` (forbidden ids, temperature, top-p).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sedd_jax.diffusion.catsample import categorical_from_uniform, race_uniform
from sedd_jax.diffusion.graphs import esigm1
from sedd_jax.diffusion.predictors import (  # noqa: F401  (re-exported)
    analytic_predictor,
    batched_time,
    denoise,
    euler_predictor,
    none_predictor,
    sharpen,
    transition_reshaper,
)
from sedd_jax.diffusion.remdm import RemdmSettings, remdm_predictor, remdm_scan

PREDICTORS = {
    "euler": euler_predictor,
    "analytic": analytic_predictor,
    "none": none_predictor,
    "remdm": remdm_predictor,  # at RemdmSettings(); pc_sample passes its `remdm`
}
# samplers that are not one-step predictors: pc_sample runs them with their own loop
SAMPLERS = ("cached", "first_hitting")


def _sigma_factor(graph, x, sigma):
    """log(e^sigma - 1) at masked positions' real-token columns, 0 elsewhere [B, L, V]:
    log s_t(y) + this = log p(y | x_t), the sigma-free conditional (RADD)."""
    c = jnp.log(esigm1(sigma))[:, None, None]
    real = (jnp.arange(graph.dim) != graph.mask_id)[None, None, :]
    return jnp.where((x == graph.mask_id)[..., None] & real, c, 0.0)


def cached_scan(log_score_fn, graph, noise, x_start, keep, x_init, ts, dt, draw, reshape, steps):
    """Analytic (Tweedie) steps that call the network only when x changed since the last
    call (absorbing graph). The cached output is kept as the conditional
    log p(y | x_t) = log s + log(e^sigma - 1) (masked rows, real columns) and re-scaled to
    each step's sigma. Exact (same draws as `analytic`, up to float rounding of the
    re-scaling) when the score is sigma-free in that sense (e.g. `oracles`, RADD); for a
    sigma-conditioned SEDD network the skipped calls reuse the output at an older sigma,
    an approximation. Returns (x, network calls [])."""
    if not graph.absorb:
        raise ValueError("sampling.predictor='cached' needs the absorbing graph")

    def call(x, t):
        sigma, _ = noise(batched_time(t, x))
        return log_score_fn(x, sigma).astype(jnp.float32) + _sigma_factor(graph, x, sigma)

    def body(carry, i):
        x, x_seen, cond, calls = carry
        t = ts[i]
        fresh = jnp.any(x != x_seen)
        cond = jax.lax.cond(fresh, lambda: call(x, t), lambda: cond)
        sigma, _ = noise(batched_time(t, x))
        next_sigma, _ = noise(batched_time(t - dt, x))
        score = jnp.exp(cond - _sigma_factor(graph, x, sigma))
        step_sigma = sigma - next_sigma
        probs = graph.staggered_score(score, step_sigma) * graph.transp_transition(x, step_sigma)
        x_new = categorical_from_uniform(probs if reshape is None else reshape(probs, x), draw(i))
        x_new = jnp.where(keep, x_init, x_new)
        return (x_new, x, cond, calls + fresh.astype(jnp.int32)), None

    cond0 = jnp.zeros(x_start.shape + (graph.dim,), jnp.float32)
    x_never = jnp.full_like(x_start, -1)  # forces the first call
    carry = (x_start, x_never, cond0, jnp.int32(0))
    (x, _, _, calls), _ = jax.lax.scan(body, carry, jnp.arange(steps))
    return x, calls


def first_hitting_uniforms(key, k, batch: int, length: int, dim: int):
    """Call k's uniforms of `first_hitting_sample`: (reveal time [B], position [B, L],
    token [B, V]), from split(fold_in(key, k), 3); the denoiser's come from
    fold_in(key, max_calls + 2)."""
    kv, kp, kt = jax.random.split(jax.random.fold_in(key, k), 3)
    return (
        race_uniform(kv, (batch,)),
        race_uniform(kp, (batch, length)),
        race_uniform(kt, (batch, dim)),
    )


def first_hitting_sample(
    log_score_fn, graph, noise, x_start, keep, key, *, eps, reshape, max_calls
):
    """First-hitting sampler (absorbing graph): reveal one token per network call at its
    exact reveal time, so there is no discretisation error and at most L calls.

    Worked in sigma: a position masked at sigma stays masked at sigma' < sigma with
    probability (1 - e^-sigma') / (1 - e^-sigma); the next of n masked positions to be
    revealed goes at the max of n such times: 1 - e^-sigma' = (1 - e^-sigma) v^(1/n), v ~
    U(0, 1). A uniformly chosen masked position then draws its token from the model's
    conditional at sigma' (the masked row's real-token columns of the score). Rows whose
    next time falls below sigma_bar(eps) stop, and their masks go to the denoiser at eps.
    Returns (x, network calls []). Each row has its own sigma; one call serves the batch.
    """
    if not graph.absorb:
        raise ValueError("sampling.predictor='first_hitting' needs the absorbing graph")
    batch, length = x_start.shape
    sigma_end = noise.total(jnp.float32(eps))
    sigma0 = jnp.full((batch,), noise.total(jnp.float32(1.0)), jnp.float32)
    real = jnp.arange(graph.dim) != graph.mask_id

    def active(x, sigma):
        return (jnp.sum((x == graph.mask_id) & ~keep, axis=1) > 0) & (sigma > sigma_end)

    def next_sigma(x, sigma, v):
        n = jnp.sum((x == graph.mask_id) & ~keep, axis=1)
        frac = v ** (1.0 / jnp.maximum(n, 1).astype(jnp.float32))
        return -jnp.log1p(jnp.expm1(-sigma) * frac)

    def cond_fn(carry):
        x, sigma, k, _ = carry
        return (k < max_calls) & jnp.any(active(x, sigma))

    def body(carry):
        x, sigma, k, calls = carry
        v, pos_u, tok_u = first_hitting_uniforms(key, k, batch, length, graph.dim)
        go = active(x, sigma)
        new = next_sigma(x, sigma, v)
        go = go & (new > sigma_end)
        sigma = jnp.where(active(x, sigma), new, sigma)
        masked = (x == graph.mask_id) & ~keep
        pos = categorical_from_uniform(masked.astype(jnp.float32), pos_u)
        score = jnp.exp(log_score_fn(x, jnp.maximum(sigma, sigma_end)).astype(jnp.float32))
        probs = jnp.where(real, score, 0.0)
        probs = probs if reshape is None else reshape(probs, x)
        row = jnp.take_along_axis(probs, pos[:, None, None], axis=1)[:, 0]
        tok = categorical_from_uniform(row, tok_u)
        hit = go[:, None] & (jnp.arange(length)[None, :] == pos[:, None])
        x = jnp.where(hit, tok[:, None], x)
        return x, sigma, k + 1, calls + 1

    x, sigma, _, calls = jax.lax.while_loop(
        cond_fn, body, (x_start, sigma0, jnp.int32(0), jnp.int32(0))
    )
    left = jnp.any((x == graph.mask_id) & ~keep)
    x = jax.lax.cond(
        left,
        lambda: denoise(
            log_score_fn,
            graph,
            noise,
            x,
            jnp.float32(eps),
            race_uniform(jax.random.fold_in(key, max_calls + 2), x.shape + (graph.dim,)),
            reshape,
        ),
        lambda: x,
    )
    return x, calls + left.astype(jnp.int32)


def time_grid(steps: int, eps: float) -> jax.Array:
    """[steps + 1] times from 1 down to eps."""
    return jnp.linspace(1.0, eps, steps + 1)


def pc_sample(
    log_score_fn,
    graph,
    noise,
    x_init: jax.Array,
    key: jax.Array | None = None,
    *,
    steps: int,
    predictor: str = "euler",
    eps: float = 1e-5,
    denoise_last: bool = True,
    clamp: jax.Array | None = None,
    uniforms: jax.Array | None = None,
    start_from_limit: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    forbidden: jax.Array | None = None,
    return_calls: bool = False,
    remdm: RemdmSettings | None = None,
) -> jax.Array:
    """Run the reverse process for x [B, L]; one `lax.scan` over the steps.

    x_init [B, L] holds the clamped tokens; every other position starts from the graph's
    limit `graph.sample_limit` (all-mask for absorbing, uniform tokens for uniform, drawn
    with fold_in(key, steps + 1)), unless `start_from_limit` is False: then x_init is the
    start state as given. clamp [B, L] bool: positions held at their x_init values at
    every step. Uniforms are drawn from `key`, or taken from `uniforms`
    [steps + 1, B, L, V] (the last slice feeds the denoiser) for parity runs. Wrap in
    jax.jit with `steps`, `predictor`, `eps`, `denoise_last`, `start_from_limit` static.
    `temperature` / `top_p` (static) reshape every step's transition distribution
    (`sharpen`); at 1 and 1 the sampler is the plain one, draw for draw. `forbidden`
    [V] bool (e.g. `common.generation.forbidden_ids` of the tokenizer's special ids):
    ids never drawn, at any step or by the denoiser (the mask id must not be one).
    predictor "cached" (`cached_scan`) skips network calls while no token changed;
    `return_calls` (static) returns (x, network calls) instead of x. predictor "remdm":
    `remdm` (static) its schedule, eta and switch time (None: `RemdmSettings()`).
    """
    if predictor not in PREDICTORS and predictor not in SAMPLERS:
        choices = sorted(PREDICTORS) + list(SAMPLERS)
        raise ValueError(f"sampling.predictor={predictor!r}; choose one of {choices}")
    if key is None and uniforms is None:
        raise ValueError("pc_sample needs a key or explicit uniforms")
    step_fn = PREDICTORS.get(predictor)
    reshape = transition_reshaper(temperature, top_p, forbidden)
    shape = x_init.shape + (graph.dim,)
    ts = time_grid(steps, eps)
    dt = (1.0 - eps) / steps
    keep = jnp.zeros(x_init.shape, bool) if clamp is None else clamp
    x_start = x_init
    if start_from_limit:
        if key is None and not graph.absorb:
            raise ValueError(
                "the uniform graph starts from random tokens: pass a key, or an explicit "
                "start state with start_from_limit=False"
            )
        limit_key = None if key is None else jax.random.fold_in(key, steps + 1)
        x_start = jnp.where(keep, x_init, graph.sample_limit(limit_key, x_init.shape))

    def draw(i):
        if uniforms is not None:
            return uniforms[i]
        return race_uniform(jax.random.fold_in(key, i), shape)

    def body(x, i):
        x = step_fn(log_score_fn, graph, noise, x, ts[i], dt, draw(i), reshape)
        return jnp.where(keep, x_init, x), None

    if predictor == "first_hitting":
        if key is None:
            raise ValueError("sampling.predictor='first_hitting' draws from a key")
        x, calls = first_hitting_sample(
            log_score_fn,
            graph,
            noise,
            x_start,
            keep,
            key,
            eps=eps,
            reshape=reshape,
            max_calls=x_init.shape[1],
        )
        x = jnp.where(keep, x_init, x)
        return (x, calls) if return_calls else x
    if predictor == "remdm":
        settings = RemdmSettings() if remdm is None else remdm
        args = (x_start, keep, x_init, ts, dt, draw, reshape, steps, settings)
        x = remdm_scan(log_score_fn, graph, noise, *args)
        calls = jnp.int32(steps)
    elif predictor == "cached":
        x, calls = cached_scan(
            log_score_fn, graph, noise, x_start, keep, x_init, ts, dt, draw, reshape, steps
        )
    else:
        x, _ = jax.lax.scan(body, x_start, jnp.arange(steps))
        calls = jnp.int32(steps if predictor != "none" else 0)
    if denoise_last:
        x = denoise(log_score_fn, graph, noise, x, ts[-1], draw(steps), reshape)
        x = jnp.where(keep, x_init, x)
        calls = calls + 1
    return (x, calls) if return_calls else x


def _rows(a: jax.Array, batch: int | None) -> jax.Array:
    a = jnp.asarray(a, jnp.int32)
    if a.ndim == 1:
        return jnp.broadcast_to(a, (1 if batch is None else batch, a.shape[0]))
    return a


def position_prompt(
    positions: jax.Array, tokens: jax.Array, length: int, batch: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """(x_init [B, L], clamp [B, L]) with tokens [B, P] fixed at positions [B, P].

    1-D positions or tokens [P] are shared by all `batch` rows. Unclamped entries of
    x_init are 0; `pc_sample` replaces them by the graph's limit.
    """
    positions, tokens = _rows(positions, batch), _rows(tokens, batch)
    positions, tokens = jnp.broadcast_arrays(positions, tokens)
    rows = jnp.arange(positions.shape[0])[:, None]
    x_init = jnp.zeros((positions.shape[0], length), jnp.int32).at[rows, positions].set(tokens)
    clamp = jnp.zeros((positions.shape[0], length), bool).at[rows, positions].set(True)
    return x_init, clamp


def prefix_prompt(
    prefix: jax.Array, length: int, batch: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """(x_init [B, L], clamp [B, L]) with prefix [B, P] (or [P]) fixed at positions 0..P-1."""
    prefix = _rows(prefix, batch)
    return position_prompt(jnp.arange(prefix.shape[1]), prefix, length, prefix.shape[0])


def with_padding(
    x_init: jax.Array, clamp: jax.Array, valid: jax.Array, pad_id: int
) -> tuple[jax.Array, jax.Array]:
    """Clamp the pads (valid False) to `pad_id`; pass `valid` to the model as well."""
    return jnp.where(valid, x_init, pad_id), clamp | ~valid
