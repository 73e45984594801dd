"""Noise schedules: reference values, derivatives, and the absorbing-schedule warning."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import base_config
from sedd_jax.diffusion.noise import (
    NOISES,
    CosineNoise,
    GeometricNoise,
    LogLinearNoise,
    absorbing_schedule_warning,
    get_noise,
)

TIMES = np.array([1e-3, 0.05, 0.25, 0.5, 0.75, 0.999, 1.0], np.float32)
SCHEDULES = [LogLinearNoise(1e-3), GeometricNoise(1e-3, 20.0), CosineNoise(1e-4, 0.5)]


def test_loglinear_total_noise_at_one_is_minus_log_eps():
    for eps in (1e-3, 1e-4, 1e-5):
        noise = LogLinearNoise(eps)
        sigma, dsigma = noise(jnp.float32(1.0))
        # float32 rounds 1 - (1 - eps) t by up to ~6e-8, i.e. sigma by 6e-8 / eps at t = 1
        assert float(sigma) == pytest.approx(-math.log(eps), abs=6e-8 / eps + 1e-6)
        assert float(dsigma) == pytest.approx((1 - eps) / eps, rel=1e-4)
        assert noise.mask_probability_at_one() == pytest.approx(1 - eps)
        assert -math.expm1(-float(sigma)) == pytest.approx(1 - eps, abs=1e-7)


@pytest.mark.parametrize("eps", (1e-3, 1e-5))
def test_loglinear_masked_weight_is_one_over_t_whatever_eps(eps):
    """The absorbing ELBO's weight dsigma / expm1(sigma) is 1/t for every eps: eps enters
    the bound only through the masked fraction (1 - eps) t and the prior eps log n."""
    sigma, dsigma = LogLinearNoise(eps)(jnp.asarray(TIMES))
    weight = np.asarray(dsigma / jnp.expm1(sigma))
    # float32: 1 - (1 - eps) t is rounded by up to ~6e-8, relative 6e-8 / (1 - t + eps t)
    bound = 2e-5 + 6e-8 / (1.0 - TIMES + eps * TIMES)
    assert np.all(np.abs(weight * TIMES - 1.0) <= bound), weight * TIMES


def test_schedules_reproduce_the_reference_tables():
    loglinear = np.asarray(LogLinearNoise(1e-3).total(TIMES))
    np.testing.assert_allclose(
        loglinear, [0.001, 0.051, 0.287, 0.692, 1.383, 6.215, 6.908], atol=6e-4
    )
    cosine = np.asarray(CosineNoise(0.01, 0.95).total(TIMES))
    np.testing.assert_allclose(cosine, [0.010, 0.016, 0.148, 0.480, 0.812, 0.950, 0.950], atol=6e-4)
    geometric = np.asarray(GeometricNoise(1e-3, 20.0).total(np.array([0.0, 1.0], np.float32)))
    np.testing.assert_allclose(geometric, [1e-3, 20.0], rtol=1e-5)


@pytest.mark.parametrize("noise", SCHEDULES, ids=lambda n: type(n).__name__)
def test_dsigma_is_the_derivative_of_the_total_noise(noise):
    t = np.linspace(0.02, 0.98, 25).astype(np.float32)
    h = 1e-3  # float32: rounding ~1e-7 / h and truncation h^2 sigma_bar"' / 6 both < 1e-3
    central = (noise.total(t + h) - noise.total(t - h)) / (2 * h)
    np.testing.assert_allclose(np.asarray(noise.rate(t)), np.asarray(central), rtol=2e-3)
    autodiff = jax.vmap(jax.grad(noise.total))(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(
        np.asarray(autodiff), np.asarray(noise.rate(t)), rtol=2e-4, atol=1e-6
    )


def test_cosine_rate_vanishes_at_both_ends():
    _, dsigma = CosineNoise(1e-4, 0.5)(np.array([0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(dsigma), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("noise", "shown"),
    [
        (CosineNoise(1e-4, 0.5), "0.39"),
        (CosineNoise(1e-4, 0.8), "0.55"),
        (CosineNoise(0.01, 0.95), "0.61"),
        (GeometricNoise(1e-3, 2.0), "0.86"),
    ],
)
def test_schedule_warning_prints_the_mask_probability(noise, shown):
    message = absorbing_schedule_warning(noise)
    assert f"P(mask | t=1) = {shown}" in message
    assert "loglinear" in message


def test_full_masking_schedules_do_not_warn():
    assert absorbing_schedule_warning(LogLinearNoise(1e-3)) is None
    assert absorbing_schedule_warning(LogLinearNoise(1e-2)) is None  # exactly 0.99
    assert absorbing_schedule_warning(GeometricNoise(1e-3, 20.0)) is None


def test_get_noise_builds_the_configured_schedule_and_rejects_unknown_types():
    config = base_config().noise
    assert get_noise(config) == LogLinearNoise(1e-3)
    assert sorted(NOISES) == ["cosine", "geometric", "loglinear"]
    config.type = "linear"
    with pytest.raises(ValueError, match="noise.type='linear'"):
        get_noise(config)
