"""Categorical draws without float32 bias: the race's uniforms, its exponentials' lower
tail (where rare outcomes are decided), and the twin making the same draw."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
import torch

from sedd_jax.diffusion import catsample
from sedd_torch.diffusion import catsample as torch_catsample

LOW_BITS = 1 << 23


def _lower_tail(max_high: int) -> np.ndarray:
    """Every race exponential the generator can give with high part < max_high (each of
    probability 2^-47), sorted: the exact lower tail of its distribution."""
    low = jnp.arange(LOW_BITS, dtype=jnp.uint32)
    exps = []
    for high in range(max_high):
        v = catsample.uniform_from_parts(jnp.full_like(low, high), low)
        exps.append(np.asarray(-jnp.log1p(-v)))
    return np.sort(np.concatenate(exps))


def test_race_exponentials_have_the_exp1_lower_tail_down_to_1e_minus_12():
    """P(E < c) = 1 - exp(-c), to within the 2^-47 grid, for c from 1e-12 to 2e-7 (the
    reference recipe has no E below 1.2e-7: an outcome with p_y / p_x below that
    never wins)."""
    exps = _lower_tail(4)  # all values below 4 * 2^-24 = 2.4e-7
    for c in (1e-12, 1e-10, 1e-9, 1e-8, 5e-8, 1e-7, 2e-7):
        frequency = np.searchsorted(exps, c) * 2.0**-47
        np.testing.assert_allclose(frequency, -np.expm1(-c), rtol=2.0**-47 / c + 1e-6)


def test_race_uniforms_are_strictly_inside_the_unit_interval():
    parts = jnp.array([0, 0, (1 << 24) - 1, (1 << 24) - 1], jnp.uint32)
    low = jnp.array([0, LOW_BITS - 1, 0, LOW_BITS - 1], jnp.uint32)
    v = np.asarray(catsample.uniform_from_parts(parts, low))
    assert v[0] == 2.0**-48 and v[1] == (2.0**24 - 1) * 2.0**-48
    assert (v > 0).all() and (v < 1).all()
    u = np.asarray(catsample.race_uniform(jax.random.key(0), (1 << 16,)))
    assert u.dtype == np.float32 and 0 < u.min() and u.max() < 1
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3


def test_rare_outcome_frequency_matches_a_two_token_race():
    """P(y wins [1, r]) = r / (1 + r), from the exact lower tail of the generator's E_y
    and the Exp(1) law of E_x: y wins iff E_y < r E_x, so P = E_v[exp(-E_y / r)]."""
    exps = _lower_tail(2)
    for r in (1e-10, 1e-9, 1e-8):  # E_y / r > 11.9 beyond the enumerated tail
        win = np.exp(-exps.astype(np.float64) / r).sum() * 2.0**-47
        np.testing.assert_allclose(win, r / (1 + r), rtol=1e-4)


def test_draws_follow_a_moderate_distribution():
    probs = jnp.array([0.5, 0.3, 0.15, 0.05, 1e-3, 0.0])
    ids = np.asarray(catsample.sample_categorical(jax.random.key(3), jnp.tile(probs, (200_000, 1))))
    counts = np.bincount(ids, minlength=6)
    assert counts[5] == 0
    expected = np.asarray(probs[:5], np.float64)
    expected = expected / expected.sum() * len(ids)
    assert scipy.stats.chisquare(counts[:5], expected).pvalue > 1e-3


def test_the_twin_makes_the_same_uniforms_and_draws_bit_for_bit():
    rng = np.random.default_rng(0)
    high = rng.integers(0, 1 << 24, size=(64, 40, 30)).astype(np.uint32)
    low = rng.integers(0, LOW_BITS, size=high.shape).astype(np.uint32)
    high[0, 0] = 0  # values below 2^-24 too
    v_jax = np.asarray(catsample.uniform_from_parts(jnp.asarray(high), jnp.asarray(low)))
    v_torch = torch_catsample.uniform_from_parts(
        torch.from_numpy(high.astype(np.int64)), torch.from_numpy(low.astype(np.int64))
    ).numpy()
    np.testing.assert_array_equal(v_jax.view(np.uint32), v_torch.view(np.uint32))
    probs = rng.dirichlet(np.full(30, 0.3), size=(64, 40)).astype(np.float32)
    probs[..., 0] = 1e-9  # a rare id
    ids_jax = np.asarray(catsample.categorical_from_uniform(jnp.asarray(probs), v_jax))
    ids_torch = torch_catsample.categorical_from_uniform(
        torch.from_numpy(probs), torch.from_numpy(v_torch)
    ).numpy()
    np.testing.assert_array_equal(ids_jax, ids_torch)


def test_twin_race_uniforms_take_24_and_23_bits_of_torch_rand():
    u = torch_catsample.race_uniform(
        torch_catsample.generator_rand(torch.Generator().manual_seed(1)), (1 << 16,)
    ).numpy()
    assert u.dtype == np.float32 and 0 < u.min() and u.max() < 1
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3
