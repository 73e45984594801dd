"""Samplers with the exact score of i.i.d. tokens: frequencies, clamping, never the mask."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion import sampling
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.noise import GeometricNoise, LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.sampling import (
    PREDICTORS,
    analytic_predictor,
    euler_predictor,
    pc_sample,
    position_prompt,
    time_grid,
    with_padding,
)
from tests.helpers import oracle_sample

P = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
N = len(P)
B, L, STEPS = 64, 32, 32
NOISE = LogLinearNoise(1e-3)
GRAPHS = {"absorb": Absorbing(N), "uniform": Uniform(N)}
CHI2_LIMIT = 25.0  # chi-square, 5 degrees of freedom: P(> 25) = 1.4e-4

PROMPT_POSITIONS = np.array([0, 1, 2, 9, 17, 31])
PROMPT_TOKENS = np.array([5, 5, 4, 3, 5, 0])


@functools.partial(jax.jit, static_argnames=("graph", "predictor"))
def sample(graph, predictor, x_init, clamp, key):
    return oracle_sample(P, graph, x_init, key, steps=STEPS, predictor=predictor, clamp=clamp)


@functools.cache
def samples(graph_name, predictor):
    """One sampler run per (graph, predictor): rows with a prompt at PROMPT_POSITIONS."""
    x_init, clamp = position_prompt(PROMPT_POSITIONS, PROMPT_TOKENS, L, batch=B)
    out = sample(GRAPHS[graph_name], predictor, x_init, clamp, jax.random.key(7))
    return np.asarray(out), np.asarray(clamp)


def chi_square(tokens):
    counts = np.bincount(tokens.ravel(), minlength=N + 1)
    expected = P * tokens.size
    return float(((counts[:N] - expected) ** 2 / expected).sum()), counts


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
@pytest.mark.parametrize("predictor", ["euler", "analytic"])
def test_oracle_samples_have_the_unigram_frequencies(graph_name, predictor):
    x, clamp = samples(graph_name, predictor)
    chi2, counts = chi_square(x[~clamp])
    assert chi2 < CHI2_LIMIT, (chi2, counts)
    assert counts[N] == 0  # never the mask id (absorbing) / never out of range (uniform)


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
def test_clamped_positions_are_identical_after_sampling(graph_name, predictor):
    if predictor == "remdm" and graph_name == "uniform":
        with pytest.raises(ValueError, match="needs the absorbing graph"):
            samples(graph_name, predictor)
        return
    x, clamp = samples(graph_name, predictor)
    np.testing.assert_array_equal(x[:, PROMPT_POSITIONS], np.tile(PROMPT_TOKENS, (B, 1)))
    assert clamp.sum() == B * len(PROMPT_POSITIONS)
    assert x.min() >= 0 and x.max() < N  # denoised: no mask anywhere


def test_absorbing_denoiser_alone_draws_masks_from_the_score():
    """predictor 'none' + denoise on all-mask input is one Tweedie draw at t = eps."""
    x, clamp = samples("absorb", "none")
    chi2, counts = chi_square(x[~clamp])
    assert chi2 < CHI2_LIMIT, (chi2, counts)


def test_analytic_step_unmasks_at_the_exact_tweedie_rate():
    """With the geometric schedule, where Euler's first-order step is visibly off.

    (For absorbing + loglinear the two coincide: both unmask with probability dt / t.)
    """
    graph, noise = GRAPHS["absorb"], GeometricNoise(1e-3, 20.0)
    x = jnp.full((4, 4096), graph.mask_id, jnp.int32)
    t, dt = 0.6, 0.1
    u = uniform(jax.random.key(3), x.shape + (graph.dim,))
    fn = unigram_log_score_fn(jnp.log(P), graph)

    @jax.jit
    def both(x, u):
        return (
            analytic_predictor(fn, graph, noise, x, t, dt, u),
            euler_predictor(fn, graph, noise, x, t, dt, u),
        )

    analytic, euler = (np.asarray(a) for a in both(x, u))
    sigma, next_sigma = (float(noise.total(s)) for s in (t, t - dt))
    stay = -np.expm1(-next_sigma) / -np.expm1(-sigma)  # P(masked at t - dt | masked at t)
    assert (analytic == graph.mask_id).mean() == pytest.approx(stay, abs=0.01)
    assert abs((euler == graph.mask_id).mean() - stay) > 0.05
    unmasked = analytic[analytic != graph.mask_id]
    np.testing.assert_allclose(np.bincount(unmasked, minlength=N) / unmasked.size, P, atol=0.02)


def test_explicit_uniforms_replay_the_keyed_draw():
    graph = GRAPHS["absorb"]
    fn = unigram_log_score_fn(jnp.log(P), graph)
    run = functools.partial(pc_sample, fn, graph, NOISE, steps=4, predictor="analytic")

    @jax.jit
    def keyed_and_replayed(x_init, key):
        shape = x_init.shape + (graph.dim,)
        uniforms = jnp.stack([uniform(jax.random.fold_in(key, i), shape) for i in range(5)])
        return run(x_init, key), run(x_init, uniforms=uniforms)

    keyed, replayed = keyed_and_replayed(jnp.zeros((2, 8), jnp.int32), jax.random.key(11))
    np.testing.assert_array_equal(np.asarray(keyed), np.asarray(replayed))
    assert np.all(np.asarray(keyed) < N)


def test_uniform_graph_needs_a_key_for_its_random_start():
    graph = GRAPHS["uniform"]
    uniforms = jnp.zeros((3, 1, 4, N))
    fn = unigram_log_score_fn(jnp.log(P), graph)
    with pytest.raises(ValueError, match="random tokens"):
        pc_sample(fn, graph, NOISE, jnp.zeros((1, 4), jnp.int32), steps=2, uniforms=uniforms)
    with pytest.raises(ValueError, match="sampling.predictor='tweedie'"):
        pc_sample(
            fn,
            graph,
            NOISE,
            jnp.zeros((1, 4), jnp.int32),
            jax.random.key(0),
            steps=2,
            predictor="tweedie",
        )


def test_time_grid_runs_from_one_to_eps():
    grid = np.asarray(time_grid(4, 1e-3))
    np.testing.assert_allclose(grid, [1.0, 0.75025, 0.5005, 0.25075, 1e-3], rtol=1e-6)


def test_prompt_helpers_place_tokens_and_clamp_them():
    prefix_prompt = jax.jit(sampling.prefix_prompt, static_argnums=(1, 2))
    position_prompt = jax.jit(sampling.position_prompt, static_argnums=(2, 3))
    x_init, clamp = prefix_prompt(jnp.array([[3, 4], [5, 6]]), 5)
    np.testing.assert_array_equal(np.asarray(x_init), [[3, 4, 0, 0, 0], [5, 6, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(clamp), [[1, 1, 0, 0, 0]] * 2)
    x_init, clamp = position_prompt(jnp.array([4, 1]), jnp.array([7, 8]), 5, batch=3)
    np.testing.assert_array_equal(np.asarray(x_init), [[0, 8, 0, 0, 7]] * 3)
    np.testing.assert_array_equal(np.asarray(clamp), [[0, 1, 0, 0, 1]] * 3)
    valid = jnp.array([[True] * 4 + [False]] * 3)
    x_init, clamp = with_padding(x_init, clamp, valid, pad_id=1)
    np.testing.assert_array_equal(np.asarray(x_init), [[0, 8, 0, 0, 1]] * 3)
    np.testing.assert_array_equal(np.asarray(clamp), [[0, 1, 0, 0, 1]] * 3)
