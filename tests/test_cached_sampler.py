"""The cached sampler (absorbing graph): with a sigma-free oracle score it draws exactly
what the analytic sampler draws for the same uniforms, with fewer network calls, and its
final draws follow the oracle's token law."""

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.diffusion.catsample import race_uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.sampling import pc_sample

P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def run(predictor, steps, shape=(64, 16)):
    graph = Absorbing(len(P))
    noise = LogLinearNoise(1e-3)
    fn = unigram_log_score_fn(jnp.log(P), graph)
    u = race_uniform(jax.random.PRNGKey(0), (steps + 1,) + shape + (graph.dim,))
    x0 = jnp.full(shape, graph.mask_id, jnp.int32)
    sample = jax.jit(
        lambda u: pc_sample(
            fn, graph, noise, x0, steps=steps, predictor=predictor, uniforms=u, return_calls=True
        )
    )
    x, calls = sample(u)
    return np.asarray(x), int(calls)


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
