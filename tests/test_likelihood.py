"""The likelihood bound is exact for the exact score of i.i.d. tokens, for both graphs."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.likelihood import (
    T_MIN,
    length_log_probs,
    likelihood_times,
    prior_term,
    reconstruction_per_token,
    sequence_elbo,
    summarize,
)
from sedd_jax.diffusion.likelihood_stats import ratio_standard_error, summarize_sequences
from sedd_jax.diffusion.noise import CosineNoise, GeometricNoise, LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn

P = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
N = len(P)
B, L = 64, 16
NOISE = LogLinearNoise(1e-3)
GRAPHS = {"absorb": Absorbing(N), "uniform": Uniform(N)}
X0 = np.random.default_rng(0).choice(N, size=(B, L), p=P).astype(np.int32)
VALID = np.ones((B, L), bool)


@functools.partial(jax.jit, static_argnames=("graph", "time_samples", "method"))
def oracle_elbo(graph, log_p, x0, valid, key, time_samples, method="stratified"):
    log_score_fn = unigram_log_score_fn(log_p, graph)
    return sequence_elbo(
        log_score_fn, graph, NOISE, x0, valid, key, time_samples=time_samples, method=method
    )


def exact_bound(graph, x0, valid):
    """E_{x_1}[-log q(x0 | x_1)] + prior, per sequence, for i.i.d. x0 ~ P (numpy)."""
    sigma_one = -math.log(NOISE.eps)
    rates = np.full((N, N), 1.0 / N) - np.eye(N)  # the uniform graph's Q
    if graph.absorb:
        keep = math.exp(-sigma_one)
        per_token = (1.0 - keep) * -np.log(P)
    else:
        q = scipy.linalg.expm(sigma_one * rates)  # q[a, b] = p(x_1 = b | x0 = a)
        posterior = P[:, None] * q / (P @ q)[None, :]  # q(x0 = a | x_1 = b)
        per_token = -(q * np.log(posterior)).sum(axis=1)
    prior = float(graph.prior_kl(sigma_one))
    return ((per_token[x0] + prior) * valid).sum(axis=1)


@functools.cache
def errors(graph_name, time_samples, method="stratified"):
    graph = GRAPHS[graph_name]
    out = oracle_elbo(
        graph, jnp.log(P), X0, VALID, jax.random.key(1), time_samples=time_samples, method=method
    )
    return np.asarray(out["nll"]) - exact_bound(graph, X0, VALID), out


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_oracle_bound_equals_entropy_plus_prior_within_mc_error(graph_name):
    for k in (16, 256):
        err, out = errors(graph_name, k)
        standard_error = float(np.std(err)) / math.sqrt(B)
        assert abs(err.mean()) < 4 * standard_error, (k, err.mean(), standard_error)
        if k == 256:  # about 25 nats per sequence, known to 1.5 %
            assert abs(err.mean()) < 0.015 * exact_bound(GRAPHS[graph_name], X0, VALID).mean()
        # the K integrand samples predict the error of their mean
        predicted = float(np.mean(np.asarray(out["diffusion_std"]))) / math.sqrt(k)
        assert 0.3 * predicted < float(np.sqrt(np.mean(err**2))) < 1.5 * predicted


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_mc_error_shrinks_as_k_grows(graph_name):
    coarse = np.sqrt(np.mean(errors(graph_name, 16)[0] ** 2))
    fine = np.sqrt(np.mean(errors(graph_name, 256)[0] ** 2))
    assert fine < 0.5 * coarse, (coarse, fine)  # 1 / sqrt(16) = 0.25 expected


def test_antithetic_times_are_unbiased_too():
    err, _ = errors("absorb", 64, "antithetic")
    assert abs(err.mean()) < 4 * float(np.std(err)) / math.sqrt(B)


def test_a_wrong_unigram_gives_a_larger_bound():
    graph = GRAPHS["absorb"]
    wrong = np.full(N, 1.0 / N)
    out = oracle_elbo(graph, jnp.log(wrong), X0, VALID, jax.random.key(1), time_samples=16)
    truth = errors("absorb", 16)[1]
    gap = float(np.mean(np.asarray(out["nll"]) - np.asarray(truth["nll"])))
    expected = L * (1 - NOISE.eps) * float(np.sum(P * (np.log(P) - np.log(wrong))))  # L * KL
    assert gap == pytest.approx(expected, rel=0.15)


def test_prior_term_is_eps_log_n_per_valid_token_for_absorbing():
    valid = jnp.array([[True] * 10 + [False] * 6, [True] * 16])
    prior = np.asarray(prior_term(GRAPHS["absorb"], NOISE, valid))
    np.testing.assert_allclose(prior, [10 * 1e-3 * math.log(N), 16 * 1e-3 * math.log(N)], rtol=1e-3)
    uniform_prior = np.asarray(prior_term(GRAPHS["uniform"], NOISE, valid))
    assert 0 < uniform_prior[1] < 1e-3


def test_time_samplers_cover_zero_to_one():
    t = np.asarray(likelihood_times(jax.random.key(0), 8, 1000, "stratified"))
    assert t.min() >= T_MIN and t.max() <= 1.0
    strata = np.floor(t * 8 - 1e-6)
    np.testing.assert_array_equal(strata, np.tile(np.arange(8)[:, None], (1, 1000)))
    t = np.asarray(likelihood_times(jax.random.key(0), 8, 1000, "antithetic"))
    np.testing.assert_allclose(t[:4] + t[4:], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="even K"):
        likelihood_times(jax.random.key(0), 7, 3, "antithetic")
    with pytest.raises(ValueError, match="method='sobol'"):
        likelihood_times(jax.random.key(0), 8, 3, "sobol")


def test_summary_reports_nats_bits_and_perplexity():
    out = summarize(nll_sum=2.0 * 50, tokens=50)
    assert out["nats_per_token"] == pytest.approx(2.0)
    assert out["bits_per_token"] == pytest.approx(2.0 / math.log(2))
    assert out["perplexity"] == pytest.approx(math.exp(2.0))


# --- a true bound for every schedule; error bars; the length term ------------------------


def exact_nll(x0, valid):
    """-log p(x0) of i.i.d. tokens ~ P, per sequence: the quantity every bound must exceed."""
    return (-np.log(P)[x0] * valid).sum(axis=1)


SCHEDULES = {
    "loglinear": LogLinearNoise(1e-3),
    "geometric": GeometricNoise(1e-3, 20.0),
    "geometric_coarse": GeometricNoise(0.5, 20.0),  # sigma_bar(0) = 0.5: 39 % corrupted at t=0
    "cosine": CosineNoise(0.3, 12.0),
}


@functools.partial(jax.jit, static_argnames=("graph", "noise", "time_samples"))
def schedule_elbo(graph, noise, x0, valid, key, time_samples):
    return sequence_elbo(
        unigram_log_score_fn(jnp.log(P), graph),
        graph,
        noise,
        x0,
        valid,
        key,
        time_samples=time_samples,
    )


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_bound_holds_for_every_schedule_and_graph(graph_name, schedule):
    graph, noise = GRAPHS[graph_name], SCHEDULES[schedule]
    out = schedule_elbo(graph, noise, X0, VALID, jax.random.key(2), time_samples=64)
    nll = np.asarray(out["nll"])
    gap = nll - exact_nll(X0, VALID)
    se = float(np.std(gap)) / math.sqrt(B)
    assert gap.mean() > -3 * se, (gap.mean(), se)
    recon = np.asarray(out["reconstruction"])
    sigma0 = float(noise.total(0.0))
    if graph.absorb:  # (1 - e^-sigma_0) log n per token
        np.testing.assert_allclose(recon, L * -math.expm1(-sigma0) * math.log(N), rtol=1e-5)
    if schedule == "geometric_coarse":
        # without the decoder term the "bound" falls below the exact NLL: the term matters
        assert (nll - recon).mean() < exact_nll(X0, VALID).mean() - 3 * se


def test_uniform_reconstruction_is_the_decoder_entropy_by_hand():
    graph, sigma0 = GRAPHS["uniform"], 0.5
    keep = math.exp(-sigma0) + (1 - math.exp(-sigma0)) / N
    by_hand = -keep * math.log(keep) - (1 - keep) * math.log((1 - keep) / (N - 1))
    got = float(reconstruction_per_token(graph, GeometricNoise(sigma0, 20.0)))
    assert got == pytest.approx(by_hand, rel=1e-5)
    assert float(reconstruction_per_token(graph, LogLinearNoise(1e-3))) == 0.0


def test_standard_error_shrinks_as_one_over_root_n():
    rng = np.random.default_rng(5)
    errors = []
    for n in (64, 1024):
        x0 = rng.choice(N, size=(n, L), p=P).astype(np.int32)
        valid = np.arange(L)[None] < rng.integers(4, L + 1, n)[:, None]
        out = schedule_elbo(GRAPHS["absorb"], NOISE, x0, valid, jax.random.key(n), time_samples=8)
        errors.append(ratio_standard_error(np.asarray(out["nll"]), np.asarray(out["tokens"])))
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.25)  # sqrt(1024 / 64)


def test_ratio_standard_error_by_hand():
    nll, tokens = np.array([10.0, 14.0, 9.0]), np.array([5.0, 6.0, 4.0])
    ratio = 33.0 / 15.0
    residual = nll - ratio * tokens
    by_hand = math.sqrt((residual**2).sum() / 6.0) / 5.0
    assert ratio_standard_error(nll, tokens) == pytest.approx(by_hand)


def test_length_term_by_hand():
    dist = np.array([0.0, 0.0, 0.5, 0.5, 0.0])  # lengths 2 and 3 seen, max_len 4
    log_p = length_log_probs(dist, 4)
    floor = 1e-3
    assert log_p[0] == -np.inf
    assert log_p[2] == pytest.approx(math.log((1 - floor) * 0.5 + floor / 4))
    assert log_p[4] == pytest.approx(math.log(floor / 4))  # unseen, yet finite
    assert np.exp(log_p).sum() == pytest.approx(1.0)
    out = summarize_sequences([6.0, 9.0], [2.0, 3.0], log_p[[2, 3]])
    full = (15.0 - 2 * log_p[2]) / 5.0
    assert out["with_length_nats_per_token"] == pytest.approx(full)
    assert out["nats_per_token"] == pytest.approx(3.0)
    assert out["length_nats_per_sequence"] == pytest.approx(-log_p[2])
