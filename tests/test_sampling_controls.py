"""Temperature and top-p on the transition distribution: exact at 1, exact laws on an
oracle otherwise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.sampling import sharpen, transition_reshaper
from tests.helpers import chi_square_p_value, oracle_sample

P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
GRAPH, NOISE = Absorbing(len(P)), LogLinearNoise(1e-3)


@functools.partial(jax.jit, static_argnames=("predictor", "temperature", "top_p"))
def draw(key, predictor="euler", temperature=1.0, top_p=1.0):
    x = jnp.full((64, 128), GRAPH.mask_id, jnp.int32)
    return oracle_sample(
        P, GRAPH, x, key, steps=32, predictor=predictor, temperature=temperature, top_p=top_p
    )


def p_value(tokens, probs):
    counts = np.bincount(np.asarray(tokens).ravel(), minlength=len(P))
    return chi_square_p_value(counts, probs)


def test_sharpen_at_temperature_one_and_top_p_one_is_the_identity():
    rng = np.random.default_rng(0)
    probs = jnp.asarray(rng.random((3, 7, 6)), jnp.float32)
    x = jnp.asarray(rng.integers(0, 6, (3, 7)))
    np.testing.assert_allclose(sharpen(probs, x, 1.0, 1.0), probs, rtol=1e-6)
    assert transition_reshaper(1.0, 1.0) is None  # the plain sampler, draw for draw


def test_sharpen_keeps_the_stay_probability_and_the_move_mass():
    probs = jnp.asarray([[[0.1, 0.2, 0.3, 0.4]]])
    x = jnp.asarray([[3]])
    out = np.asarray(sharpen(probs, x, 0.5, 1.0))[0, 0]
    assert out[3] == pytest.approx(0.4)
    np.testing.assert_allclose(out[:3], 0.6 * np.array([1, 4, 9]) / 14, rtol=1e-6)
    nucleus = np.asarray(sharpen(probs, x, 1.0, 0.6))[0, 0]  # 0.3 + 0.2 >= 0.6 * 0.6
    np.testing.assert_allclose(nucleus, [0.0, 0.6 * 0.4, 0.6 * 0.6, 0.4], rtol=1e-6)


def test_unit_controls_reproduce_the_plain_sampler_token_for_token():
    key = jax.random.key(4)
    plain = np.asarray(draw(key))
    np.testing.assert_array_equal(np.asarray(draw(key, temperature=1.0, top_p=1.0)), plain)


@pytest.mark.parametrize("predictor", ["euler", "analytic"])
def test_temperature_half_samples_the_squared_unigram_and_lowers_entropy(predictor):
    key = jax.random.key(5)
    cold = np.asarray(draw(key, predictor, temperature=0.5))
    plain = np.asarray(draw(key, predictor))
    squared = P**2 / (P**2).sum()
    assert p_value(cold, squared) > 1e-4
    assert p_value(cold, P) < 1e-12

    def entropy(rows):
        freq = np.stack([np.bincount(r, minlength=len(P)) for r in rows]) / rows.shape[1]
        return -(freq * np.log(np.where(freq > 0, freq, 1))).sum(axis=1)

    assert entropy(cold).mean() < entropy(plain).mean() - 0.1


def test_top_p_keeps_only_the_nucleus():
    tokens = np.asarray(draw(jax.random.key(6), top_p=0.5))  # 0.4 + 0.25 >= 0.5
    nucleus = np.array([0.4, 0.25, 0, 0, 0]) / 0.65
    assert p_value(tokens, nucleus) > 1e-4


def test_bad_controls_are_refused():
    with pytest.raises(ValueError, match="temperature=0"):
        transition_reshaper(0.0, 1.0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        transition_reshaper(1.0, 1.5)
