"""Curriculum: the reference formulas, the B3/B4 fixes, and the train-step hook."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import base_config
from sedd_jax.diffusion.curriculum import (
    Curriculum,
    check_curriculum,
    progress,
    sample_curriculum_times,
    sample_times,
    sigma_multiplier,
    time_bias,
)
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.losses import per_token_loss, score_entropy_loss
from sedd_jax.diffusion.noise import LogLinearNoise

T = 1000
PROGRESS = (0.0, 0.5, 1.0, 2.0)
STEPS = [int(p * T) for p in PROGRESS]
E3 = math.exp(-3.0)


def curriculum(kind, ramp, bias=2.0):
    return Curriculum(kind, ramp, T, bias)


def values(fn, cfg):
    return [float(fn(step, cfg)) for step in STEPS]


# Reference (§2.3) sigma multiplier 0.1 + 0.9 f at progress 0, .5, 1, 2.
REFERENCE_MULTIPLIER = {
    "linear": [0.10, 0.55, 1.0, 1.0],
    "cosine": [0.10, 0.55, 1.0, 1.0],
    "exponential": [0.10, 0.80, 0.955, 0.998],  # min(1, 1 - e^{-3p}): never 1 (B4)
}
EXP_HALF = (1 - math.exp(-1.5)) / (1 - E3)  # the normalised exponential ramp at p = 0.5


def test_sigma_multiplier_matches_the_reference_where_it_was_right():
    for ramp in ("linear", "cosine"):
        got = values(sigma_multiplier, curriculum("sigma_scale", ramp))
        np.testing.assert_allclose(got, REFERENCE_MULTIPLIER[ramp], atol=1e-6)
    got = values(sigma_multiplier, curriculum("sigma_scale", "exponential"))
    np.testing.assert_allclose(got, [0.1, 0.1 + 0.9 * EXP_HALF, 1.0, 1.0], atol=1e-6)
    assert got[1] == pytest.approx(0.8358, abs=1e-4)
    reference = [min(1.0, 0.1 + 0.9 * (1 - math.exp(-3 * p))) for p in PROGRESS]
    np.testing.assert_allclose(reference, REFERENCE_MULTIPLIER["exponential"], atol=1e-3)


def test_time_bias_matches_the_reference_where_it_was_right():
    for ramp in ("linear", "cosine"):
        got = values(time_bias, curriculum("time_bias", ramp))
        reference = [1 - p if p < 1 else 0.0 for p in PROGRESS]
        if ramp == "cosine":
            reference = [0.5 * (1 + math.cos(math.pi * p)) if p < 1 else 0.0 for p in PROGRESS]
        np.testing.assert_allclose(got, reference, atol=1e-6)
    got = values(time_bias, curriculum("time_bias", "exponential"))
    np.testing.assert_allclose(got, [1.0, 1.0 - EXP_HALF, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("ramp", ["linear", "exponential", "cosine"])
def test_every_ramp_is_continuous_at_the_end_of_preschool(ramp):
    before, at = T - 1, T
    m = curriculum("sigma_scale", ramp)
    assert float(sigma_multiplier(at, m)) == 1.0
    assert abs(float(sigma_multiplier(before, m)) - 1.0) < 0.01
    b = curriculum("time_bias", ramp)
    assert float(time_bias(at, b)) == 0.0
    assert float(time_bias(before, b)) < 0.01
    # mean t = eps + (1 - eps) / (2 + b bias): the reference's exponential ramp jumped
    # 0.440 -> 0.5005 here (b = e^{-2} before, 0 after)
    eps = 1e-3
    mean_before = eps + (1 - eps) / (2 + float(time_bias(before, b)) * 2.0)
    assert mean_before == pytest.approx(0.5005, abs=0.005)
    reference_before = 1e-3 + (1 - 2e-3) / (2 + math.exp(-2.0) * 2.0)
    assert reference_before == pytest.approx(0.440, abs=1e-3)


def test_no_curriculum_is_the_plain_loss():
    for cfg in (None, base_config().curriculum, curriculum("none", "exponential")):
        assert float(progress(123, cfg)) == 1.0
        assert float(sigma_multiplier(0, cfg)) == 1.0
        assert float(time_bias(0, cfg)) == 0.0
        key = jax.random.key(0)
        np.testing.assert_array_equal(
            np.asarray(sample_curriculum_times(key, 16, 0, cfg, 1e-3)),
            np.asarray(sample_times(key, 16, 1e-3)),
        )
    assert base_config().curriculum.type == "none"


def test_biased_times_follow_the_formula_and_lower_the_mean():
    cfg = curriculum("time_bias", "linear", bias=2.0)
    key = jax.random.key(1)
    t = np.asarray(sample_curriculum_times(key, 20_000, 0, cfg, 1e-3))
    u = np.asarray(jax.random.uniform(key, (20_000,)))
    np.testing.assert_allclose(t, 1e-3 + (1 - 1e-3) * u**3.0, rtol=1e-5)
    assert t.min() >= 1e-3 and t.max() <= 1.0
    assert t.mean() == pytest.approx(1e-3 + (1 - 1e-3) / 4, abs=0.005)
    late = np.asarray(sample_curriculum_times(key, 20_000, 2 * T, cfg, 1e-3))
    np.testing.assert_array_equal(late, np.asarray(sample_times(key, 20_000, 1e-3)))


def test_curriculum_functions_trace_with_a_step_array():
    cfg = curriculum("sigma_scale", "cosine")
    jitted = jax.jit(lambda s: (progress(s, cfg), sigma_multiplier(s, cfg)))
    p, m = jitted(jnp.int32(T // 2))
    assert (float(p), float(m)) == pytest.approx((0.5, 0.55))


def test_bad_curriculum_config_is_rejected_by_name():
    config = base_config().curriculum
    config.type = "probabilistic"
    with pytest.raises(ValueError, match="curriculum.type='probabilistic'"):
        check_curriculum(config)
    config.type, config.ramp = "time_bias", "step"
    with pytest.raises(ValueError, match="curriculum.ramp='step'"):
        check_curriculum(config)


class ScaledNoise:
    """The curriculum schedule written out: sigma_bar' = m sigma_bar, dsigma' = m dsigma."""

    def __init__(self, noise, m):
        self.noise, self.m = noise, m

    def __call__(self, t):
        sigma, dsigma = self.noise(t)
        return self.m * sigma, self.m * dsigma


def test_sigma_scale_corrupts_conditions_and_weights_with_one_sigma():
    """B3: the scaled sigma corrupts, conditions the model and sets the target ratio."""
    graph, noise, m = Absorbing(6), LogLinearNoise(), 0.3
    x0 = jnp.tile(jnp.arange(6, dtype=jnp.int32), (4, 50))[:, :256]
    valid = jnp.ones_like(x0, bool)
    t = jnp.array([0.2, 0.5, 0.8, 0.95])
    seen = {}

    def log_score_fn(x, sigma):
        seen["sigma"] = sigma
        seen["masked"] = (x == graph.mask_id).mean(axis=1)
        return jnp.zeros(x.shape + (graph.dim,))

    key = jax.random.key(2)
    scaled = per_token_loss(log_score_fn, graph, noise, x0, valid, t, key, sigma_scale=m)
    sigma_seen, masked = seen["sigma"], seen["masked"]
    explicit = per_token_loss(log_score_fn, graph, ScaledNoise(noise, m), x0, valid, t, key)
    np.testing.assert_allclose(np.asarray(sigma_seen), m * np.asarray(noise(t)[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(explicit), rtol=1e-6)
    expected_masked = -np.expm1(-m * np.asarray(noise(t)[0]))
    np.testing.assert_allclose(np.asarray(masked), expected_masked, atol=0.07)


def test_score_entropy_loss_with_sigma_scale_is_the_loss_of_the_scaled_schedule():
    graph, noise = Absorbing(6), LogLinearNoise()
    x0 = jnp.tile(jnp.arange(6, dtype=jnp.int32), (8, 4))
    valid = jnp.ones_like(x0, bool).at[:, 20:].set(False)
    key = jax.random.key(5)

    def log_score_fn(x, sigma):
        return jnp.log(jnp.ones(x.shape + (graph.dim,)) * sigma[:, None, None])

    cfg = curriculum("sigma_scale", "linear")
    out = score_entropy_loss(
        log_score_fn, graph, noise, x0, valid, key, 1e-3, step=T // 2, curriculum=cfg
    )
    scaled = score_entropy_loss(log_score_fn, graph, ScaledNoise(noise, 0.55), x0, valid, key)
    np.testing.assert_array_equal(out.t, scaled.t)  # sigma_scale leaves the times alone
    loss = out.losses.sum()
    assert float(loss) == pytest.approx(float(scaled.losses.sum()), rel=1e-6)
    assert float((out.losses != 0).sum()) <= 8 * 20  # pads score nothing
    plain = score_entropy_loss(log_score_fn, graph, noise, x0, valid, key, 1e-3).losses.sum()
    none = score_entropy_loss(
        log_score_fn,
        graph,
        noise,
        x0,
        valid,
        key,
        1e-3,
        step=3,
        curriculum=base_config().curriculum,
    ).losses.sum()
    assert float(none) == float(plain)
    assert abs(float(loss) - float(plain)) > 0.01 * abs(float(plain))


@pytest.mark.slow
def test_training_follows_the_configured_curriculum_and_logs_it(tmp_path):
    """`config.curriculum` reaches the train step; progress and mean t are logged per step."""
    from sedd_jax.common.metrics_log import read_metrics
    from sedd_jax.training.loop import train_and_evaluate

    c = base_config()
    c.data.max_len = 16
    c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 32, 1, 2, 16
    # separates E[U^5] = 1/6 (bias_strength 4) from E[U^4] = 1/5 (bias_strength 3)
    c.training.batch_size, c.training.n_steps, c.training.log_every = 1536, 6, 1
    c.eval.max_batches, c.sampling.steps, c.sampling.num_samples = 1, 2, 1
    c.logging.progress_bar = False
    c.curriculum.type, c.curriculum.ramp, c.curriculum.preschool_steps = "time_bias", "linear", 4
    c.curriculum.bias_strength = 4.0
    train_and_evaluate(c, str(tmp_path))
    rows = [r for r in read_metrics(str(tmp_path)) if "train/curriculum_progress" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    progress_logged = [r["train/curriculum_progress"] for r in rows]
    np.testing.assert_allclose(progress_logged, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    mean_t = [r["train/mean_t"] for r in rows]
    eps = c.training.sampling_eps

    def expected_mean(strength, p):  # t = eps + (1 - eps) U^(1 + strength (1 - p))
        return eps + (1 - eps) / (2 + strength * (1 - p))

    # steps 0..3 (progress 0, 1/4, 1/2, 3/4): the sum of the four means has sd ~0.014 at
    # 1536 sequences a step, against a gap of 0.135 to what bias_strength 3 would give
    during = sum(mean_t[:4])
    assert during == pytest.approx(sum(expected_mean(4.0, p / 4) for p in range(4)), abs=0.045)
    assert abs(during - sum(expected_mean(3.0, p / 4) for p in range(4))) > 0.09
    # after preschool: plain U[eps, 1], E = (1 + eps) / 2 (sd of the mean 0.0074)
    assert mean_t[-1] == pytest.approx((1 + eps) / 2, abs=0.025)
