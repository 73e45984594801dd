"""The cached sampler (absorbing graph): with a sigma-free oracle score it draws exactly
what the analytic sampler draws for the same uniforms, with fewer network calls, and its
final draws follow the oracle's token law."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.catsample import race_uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.sampling import pc_sample
from sedd_jax.models.sedd import SEDD
from tests.helpers import VOCAB, race_oracle_sample, random_params, tiny_kwargs

P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def run(predictor, steps, shape=(64, 16)):
    return race_oracle_sample(P, predictor, steps, shape)


def test_cached_equals_analytic_with_sigma_free_oracle():
    x_a, calls_a = run("analytic", 256)
    x_c, calls_c = run("cached", 256)
    np.testing.assert_array_equal(x_c, x_a)
    assert calls_a == 257
    assert calls_c < calls_a


def test_cached_skips_calls_with_one_row():
    _, calls = run("cached", 1024, shape=(1, 16))
    assert calls <= 17 + 1  # at most one call per reveal, one first call, the denoiser


def test_cached_token_law():
    x, _ = run("cached", 64, shape=(256, 64))
    counts = np.bincount(x.ravel(), minlength=len(P))[: len(P)]
    tv = 0.5 * np.abs(counts / counts.sum() - P).sum()
    assert tv < 0.02, tv


def test_first_hitting_token_law_and_calls():
    graph = Absorbing(len(P))
    fn = unigram_log_score_fn(jnp.log(P), graph)
    x0 = jnp.full((256, 32), graph.mask_id, jnp.int32)
    sample = jax.jit(
        lambda key: pc_sample(
            fn,
            graph,
            LogLinearNoise(1e-3),
            x0,
            key,
            steps=1024,
            predictor="first_hitting",
            return_calls=True,
        )
    )
    x, calls = sample(jax.random.PRNGKey(1))
    x = np.asarray(x)
    assert int(calls) <= 32
    assert (x < len(P)).all()
    counts = np.bincount(x.ravel(), minlength=len(P))[: len(P)]
    tv = 0.5 * np.abs(counts / counts.sum() - P).sum()
    assert tv < 0.02, tv


@pytest.mark.slow
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_a_sigma_free_network_samples_the_same_cached_and_uncached(time_conditioning):
    """`model.time_conditioning=False`: the network's output is its sigma-free part plus
    the known factor -log(e^sigma - 1) (RADD), so the cached sampler draws exactly what
    the analytic one draws, with fewer calls. With sigma conditioning the sigma-free
    part moves with sigma (the cache is then an approximation)."""
    model = SEDD(**tiny_kwargs("protlig", time_conditioning=time_conditioning))
    graph, noise, steps, shape = Absorbing(VOCAB - 1), LogLinearNoise(1e-3), 64, (8, 12)
    x0 = jnp.full(shape, graph.mask_id, jnp.int32)
    params = random_params(model, x0, jnp.ones(shape[0]), None, seed=1)

    def free_part(sigma):
        out = model.apply({"params": params}, x0, jnp.full(shape[0], sigma))
        return np.asarray(out[..., :-1] + jnp.log(jnp.expm1(sigma)))

    moved = np.abs(free_part(0.5) - free_part(3.0)).max()
    if time_conditioning:
        assert moved > 1e-3, moved
        return
    assert moved < 1e-5, moved
    u = race_uniform(jax.random.PRNGKey(3), (steps + 1,) + shape + (graph.dim,))

    @functools.partial(jax.jit, static_argnums=0)
    def sample(predictor, u):
        def fn(x, sigma):
            return model.apply({"params": params}, x, sigma)

        return pc_sample(
            fn, graph, noise, x0, steps=steps, predictor=predictor, uniforms=u, return_calls=True
        )

    (x_a, calls_a), (x_c, calls_c) = sample("analytic", u), sample("cached", u)
    assert int(calls_c) < int(calls_a) == steps + 1
    np.testing.assert_array_equal(x_c, x_a)
