"""ReMDM (absorbing graph) against the exact oracle of i.i.d. tokens.

At eta = 0 (or before the switch time) it is the analytic / MDLM sampler draw for draw.
For eta > 0 one step follows its closed-form posterior (decoded tokens re-masked with
sigma_t, masked ones revealed with the adjusted probability), the state at an
intermediate time keeps MDLM's marginal (alpha_s p, 1 - alpha_s) without a denoiser to
hide errors, and finished samples follow p (chi-square, P = 1e-4 limit, and TV against
the sampling error sqrt(V / (2 pi N))).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.catsample import race_uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.joint_sampling import sample_pairs
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.remdm import RemdmSettings, remdm_predictor
from tests.helpers import (
    JOINT,
    PAIR_GRAPHS,
    PAIR_NOISE,
    K,
    chi_square_p_value,
    oracle_pair_score,
    race_oracle_sample,
)

P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
GRAPH = Absorbing(len(P))
NOISE = LogLinearNoise(1e-3)
FN = unigram_log_score_fn(jnp.log(P), GRAPH)


# the sampler from all-mask rows: run(predictor, steps, shape, seed=0, **pc_sample options)
run = functools.partial(race_oracle_sample, P)


def token_tv(x):
    counts = np.bincount(x.ravel(), minlength=GRAPH.dim)
    return 0.5 * np.abs(counts[: len(P)] / x.size - P).sum() + 0.5 * counts[-1] / x.size


@pytest.mark.parametrize(
    "settings",
    [RemdmSettings("cap", 0.0), RemdmSettings("rescale", 0.0), RemdmSettings("cap", 0.5, 0.0)],
    ids=["cap_eta0", "rescale_eta0", "switched_off"],
)
def test_remdm_without_remasking_draws_what_analytic_draws(settings):
    x_a, calls_a = run("analytic", 128, (32, 16))
    x_r, calls_r = run("remdm", 128, (32, 16), remdm=settings)
    np.testing.assert_array_equal(x_r, x_a)
    assert calls_r == calls_a == 129


def test_remdm_with_remasking_draws_differently():
    x_a, _ = run("analytic", 128, (32, 16))
    x_r, _ = run("remdm", 128, (32, 16), remdm=RemdmSettings("cap", 0.2))
    assert (x_r != x_a).mean() > 0.3


@pytest.mark.parametrize("settings", [RemdmSettings("cap", 0.3), RemdmSettings("rescale", 0.7)])
def test_remdm_step_follows_its_closed_form_posterior(settings):
    """From half-masked, half-decoded (token 0) rows at t = 0.6, one step to s = 0.45."""
    shape, t, dt = (8, 4096), 0.6, 0.15
    x = jnp.where(jnp.arange(shape[1]) % 2 == 0, GRAPH.mask_id, 0) * jnp.ones(shape, jnp.int32)
    u = race_uniform(jax.random.PRNGKey(3), shape + (GRAPH.dim,))
    step = jax.jit(lambda x, u: remdm_predictor(FN, GRAPH, NOISE, x, t, dt, u, settings=settings))
    out = np.asarray(step(x, u))
    sigma_t = float(NOISE.total(jnp.float32(t)))
    sigma_s = float(NOISE.total(jnp.float32(t - dt)))
    alpha_t, alpha_s = np.exp(-sigma_t), np.exp(-sigma_s)
    top = min(1.0, (1 - alpha_s) / alpha_t)
    r = min(settings.eta, top) if settings.schedule == "cap" else settings.eta * top
    assert 0.1 < r < 0.9  # the step re-masks a real fraction of decoded tokens
    reveal = P * (alpha_s - (1 - r) * alpha_t) / (1 - alpha_t)
    masked_law = np.append(reveal, (1 - alpha_s - r * alpha_t) / (1 - alpha_t))
    decoded_law = np.zeros(GRAPH.dim)
    decoded_law[0], decoded_law[-1] = 1 - r, r
    np.testing.assert_allclose(masked_law.sum(), 1.0, rtol=1e-6)
    masked, decoded = out[:, 0::2].ravel(), out[:, 1::2].ravel()
    assert chi_square_p_value(np.bincount(masked, minlength=GRAPH.dim), masked_law) > 1e-4
    assert chi_square_p_value(np.bincount(decoded, minlength=GRAPH.dim), decoded_law) > 1e-4
    # the MDLM step (no remasking) is rejected by the same test
    mdlm = np.append(P * (alpha_s - alpha_t) / (1 - alpha_t), (1 - alpha_s) / (1 - alpha_t))
    assert chi_square_p_value(np.bincount(masked, minlength=GRAPH.dim), mdlm) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("settings", [RemdmSettings("cap", 0.1), RemdmSettings("rescale", 0.9)])
def test_remdm_keeps_the_mdlm_marginal_at_an_intermediate_time(settings):
    """64 steps from t = 1 to t = 0.3, no denoiser: each token is y w.p. alpha p_y and the
    mask w.p. 1 - alpha (the all-mask start differs from it by alpha(1) = 1e-3)."""
    x, _ = run("remdm", 64, (8, 4096), remdm=settings, eps=0.3, denoise_last=False)
    alpha = float(np.exp(-NOISE.total(jnp.float32(0.3))))
    law = np.append(alpha * P, 1 - alpha)
    assert chi_square_p_value(np.bincount(x.ravel(), minlength=GRAPH.dim), law) > 1e-4


@pytest.mark.parametrize(
    "settings", [RemdmSettings(), RemdmSettings("cap", 0.2), RemdmSettings("rescale", 0.5, 0.55)]
)
@pytest.mark.slow
def test_remdm_samples_follow_the_oracle(settings):
    x, calls = run("remdm", 128, (128, 128), remdm=settings)
    assert calls == 129 and (x < len(P)).all()
    tv = token_tv(x)
    assert tv < 3 * np.sqrt(len(P) / (2 * np.pi * x.size)), tv  # 3x the sampling error
    assert chi_square_p_value(np.bincount(x.ravel(), minlength=GRAPH.dim), np.append(P, 0.0)) > 1e-4


@pytest.mark.slow
def test_remdm_conf_remasks_low_confidence_tokens():
    """conf re-masks the least likely tokens most, so rare tokens get rarer (a tilt of p,
    not its law); no mask is left."""
    x, _ = run("remdm", 128, (128, 128), remdm=RemdmSettings("conf"))
    x_a, _ = run("analytic", 128, (128, 128))
    assert (x < len(P)).all()
    freq = np.bincount(x.ravel(), minlength=GRAPH.dim)[: len(P)] / x.size
    freq_a = np.bincount(x_a.ravel(), minlength=GRAPH.dim)[: len(P)] / x.size
    assert freq[0] > freq_a[0] and freq[-1] < freq_a[-1], (freq, freq_a)


def test_remdm_settings_reject_bad_values():
    with pytest.raises(ValueError, match="remdm_schedule"):
        RemdmSettings("loop")
    with pytest.raises(ValueError, match="remdm_eta"):
        RemdmSettings("rescale", 1.5)
    with pytest.raises(ValueError, match="remdm_t_on"):
        RemdmSettings("cap", 0.1, 2.0)


def test_remdm_defaults_match_the_config_defaults():
    from sedd_jax.defaults import base_config

    assert RemdmSettings.from_config(base_config().sampling) == RemdmSettings()


@pytest.mark.slow
def test_pair_sampler_takes_remdm_and_draws_the_oracle_joint():
    size = 20_000
    start = jnp.zeros((size, 1), jnp.int32)
    ones = jnp.ones(start.shape, bool)
    run_pairs = jax.jit(
        lambda key: sample_pairs(
            oracle_pair_score,
            PAIR_GRAPHS,
            PAIR_NOISE,
            start,
            start,
            ones,
            ones,
            key,
            task="joint",
            steps=256,
            predictor="remdm",
        )
    )
    p, l = run_pairs(jax.random.key(5))
    p, l = np.asarray(p)[:, 0], np.asarray(l)[:, 0]
    assert p.max() < K and l.max() < K
    assert chi_square_p_value(np.bincount(p * K + l, minlength=K * K), JOINT.ravel()) > 1e-4


def test_pair_sampler_refuses_remdm_settings_it_would_ignore():
    from sedd_jax.defaults import base_config
    from sedd_jax.training.generation import make_pair_sampler

    sampling = base_config().sampling
    sampling.predictor, sampling.remdm_eta = "remdm", 0.1
    with pytest.raises(ValueError, match="only at its defaults"):
        make_pair_sampler(None, PAIR_GRAPHS, PAIR_NOISE, sampling, "joint")
    sampling.remdm_eta = RemdmSettings().eta
    assert callable(make_pair_sampler(None, PAIR_GRAPHS, PAIR_NOISE, sampling, "joint"))
