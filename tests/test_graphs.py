"""Graphs: closed forms against matrix exponentials and the score-entropy definition."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from sedd_jax.defaults import base_config
from sedd_jax.diffusion.graphs import GRAPHS, Absorbing, Uniform, get_graph

N = 5
SIGMAS = (1e-3, 0.3, 0.7, 2.5)
GRAPH_LIST = [Absorbing(N), Uniform(N)]
IDS = ["absorb", "uniform"]


@functools.partial(jax.jit, static_argnums=0)
def score_entropy(graph, log_score, sigma, x, x0):
    return graph.score_entropy(log_score, sigma, x, x0)


def rate_matrix(graph) -> np.ndarray:
    """Q[i, j]: rate of the jump i -> j (rows sum to 0)."""
    if graph.absorb:
        q = -np.eye(graph.dim)
        q[:, graph.mask_id] += 1.0
        return q
    return np.full((graph.dim, graph.dim), 1.0 / graph.n) - np.eye(graph.dim)


def every_state(graph):
    """x [dim, 1]: one sequence per state."""
    return jnp.arange(graph.dim, dtype=jnp.int32)[:, None]


def per_sequence(sigma, graph):
    return jnp.full((graph.dim,), sigma, jnp.float32)


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
def test_transp_rate_is_a_column_of_the_rate_matrix(graph):
    got = np.asarray(graph.transp_rate(every_state(graph)))[:, 0, :]
    np.testing.assert_allclose(got, rate_matrix(graph).T, atol=1e-7)


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_transp_transition_rows_are_columns_of_expm(graph, sigma):
    expm = scipy.linalg.expm(sigma * rate_matrix(graph))
    got = np.asarray(graph.transp_transition(every_state(graph), per_sequence(sigma, graph)))
    np.testing.assert_allclose(got[:, 0, :], expm.T, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
@pytest.mark.parametrize("dsigma", (0.01, 0.4))
def test_staggered_score_applies_the_inverse_transition(graph, dsigma):
    score = np.random.default_rng(0).uniform(0.1, 1.1, (3, 4, graph.dim)).astype(np.float32)
    inverse = scipy.linalg.expm(-dsigma * rate_matrix(graph))
    expected = np.einsum("yz,bly->blz", inverse, score)
    got = graph.staggered_score(jnp.asarray(score), jnp.full((3,), dsigma))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
def test_reverse_rate_rows_sum_to_zero_and_scale_the_score(graph):
    x = jnp.array([[0, 1, graph.dim - 1]], jnp.int32)
    score = np.random.default_rng(1).uniform(0.5, 1.5, (1, 3, graph.dim)).astype(np.float32)
    rate = np.asarray(graph.reverse_rate(x, jnp.asarray(score)))
    np.testing.assert_allclose(rate.sum(-1), 0.0, atol=1e-6)
    transp = np.asarray(graph.transp_rate(x))
    off = 1.0 - np.eye(graph.dim)[np.asarray(x)]
    np.testing.assert_allclose(rate * off, transp * score * off, rtol=1e-6)


def score_entropy_by_definition(graph, log_score, sigma, x, x0):
    """sum_{y != x} Q(y, x) [e^{s_y} - r_y s_y + r_y (log r_y - 1)], r_y = p(y|x0) / p(x|x0)."""
    trans = scipy.linalg.expm(sigma * rate_matrix(graph))  # trans[x0, y] = p_sigma(y | x0)
    rates = rate_matrix(graph)[:, x]
    total = 0.0
    for y in range(graph.dim):
        if y == x or rates[y] == 0:
            continue
        r = trans[x0, y] / trans[x0, x]
        k = r * (math.log(r) - 1.0) if r > 0 else 0.0
        total += rates[y] * (math.exp(log_score[y]) - r * log_score[y] + k)
    return total


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
def test_score_entropy_equals_its_definition(graph):
    pairs = [(x, x0) for x in range(graph.dim) for x0 in range(graph.n)]
    x = np.array([[p[0] for p in pairs]] * len(SIGMAS))
    x0 = np.array([[p[1] for p in pairs]] * len(SIGMAS))
    log_score = np.random.default_rng(0).normal(size=x.shape + (graph.dim,)).astype(np.float32)
    sigma = np.array(SIGMAS, np.float32)
    got = np.asarray(score_entropy(graph, *map(jnp.asarray, (log_score, sigma, x, x0))))
    for b, sig in enumerate(SIGMAS):
        for i, (xi, x0i) in enumerate(pairs):
            expected = score_entropy_by_definition(graph, log_score[b, i], sig, xi, x0i)
            if graph.absorb and xi != graph.mask_id:
                expected = 0.0  # a real token of the absorbing graph is never scored
            np.testing.assert_allclose(got[b, i], expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
def test_score_entropy_is_nonnegative_for_random_scores(graph):
    shape = (8, 64)
    rng = np.random.default_rng(2)
    log_score = 3.0 * rng.normal(size=shape + (graph.dim,)).astype(np.float32)
    x0 = rng.integers(0, graph.n, shape)
    x = rng.integers(0, graph.dim, shape)
    sigma = np.geomspace(1e-3, 5.0, shape[0]).astype(np.float32)
    entropy = np.asarray(score_entropy(graph, *map(jnp.asarray, (log_score, sigma, x, x0))))
    assert entropy.shape == shape
    assert entropy.min() >= -1e-5
    assert entropy.max() > 1.0


def test_absorbing_score_entropy_is_zero_at_the_true_ratio():
    graph = Absorbing(N)
    sigma = jnp.array([1e-3, 0.1, 0.49, 0.51, 3.0])
    x0 = jnp.array([[0], [1], [2], [3], [4]])
    x = jnp.full_like(x0, graph.mask_id)
    log_r = jnp.log(1.0 / jnp.expm1(sigma))
    best = jnp.where(jax.nn.one_hot(x0, graph.dim, dtype=bool), log_r[:, None, None], -jnp.inf)
    best = best.at[..., graph.mask_id].set(0.0)
    np.testing.assert_allclose(np.asarray(score_entropy(graph, best, sigma, x, x0)), 0.0, atol=2e-3)
    # relative to the size of the terms (r up to 1e3), the optimum is exact
    assert float(jnp.abs(score_entropy(graph, best, sigma, x, x0)).max()) < 1e-6 * 1e3
    worse = best.at[..., graph.mask_id - 1].set(-1.0)
    assert np.all(np.asarray(score_entropy(graph, worse, sigma, x, x0))[x0[:, 0] != 4] > 0.3)
    unmasked = score_entropy(graph, jnp.zeros((5, 1, graph.dim)), sigma, x0, x0)
    np.testing.assert_array_equal(np.asarray(unmasked), 0.0)


def test_uniform_score_entropy_is_zero_at_the_true_ratios():
    graph = Uniform(N)
    sigma = jnp.array([1e-3, 0.1, 0.49, 0.51, 3.0])
    em1 = np.expm1(np.asarray(sigma))[:, None]
    x0 = np.array([[0, 1, 2, 3, 4]] * 5)
    x = np.array([[0, 3, 2, 0, 1]] * 5)
    log_score = np.zeros((5, 5, N), np.float32)
    same = (x == x0)[..., None]
    log_stay = np.log(em1 / (em1 + N))[..., None]
    log_back = np.log1p(N / em1)[..., None]
    is_x0 = np.eye(N, dtype=bool)[x0]
    log_score = np.where(same, log_stay, np.where(is_x0, log_back, 0.0)).astype(np.float32)
    entropy = score_entropy(graph, jnp.asarray(log_score), sigma, jnp.asarray(x), jnp.asarray(x0))
    scale = np.exp(np.abs(log_score)).max()
    np.testing.assert_allclose(np.asarray(entropy), 0.0, atol=2e-6 * scale)
    perturbed = score_entropy(
        graph, jnp.asarray(log_score) + 0.3, sigma, jnp.asarray(x), jnp.asarray(x0)
    )
    assert float(perturbed.min()) > 5e-6


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
def test_sample_transition_moves_at_rate_one_minus_exp_minus_sigma(graph):
    sigma = jnp.array([0.05, 0.5, 2.0])
    x0 = jnp.full((3, 20_000), 2, jnp.int32)
    valid = jnp.ones_like(x0, bool).at[:, -1000:].set(False)
    x = np.asarray(graph.sample_transition(jax.random.key(3), x0, sigma, valid))
    assert x.shape == x0.shape  # sigma is [B] (defect B1/B11 cannot arise)
    assert np.all(x[:, -1000:] == 2)
    moved = -np.expm1(-np.asarray(sigma))
    stay = (x[:, :-1000] == 2).mean(axis=1)
    expected_stay = 1.0 - moved * (1.0 if graph.absorb else (N - 1) / N)
    np.testing.assert_allclose(stay, expected_stay, atol=0.012)
    if not graph.absorb:
        counts = np.bincount(x[2, :-1000], minlength=N) / 19_000
        expected = moved[2] / N + np.eye(N)[2] * (1 - moved[2])
        np.testing.assert_allclose(counts, expected, atol=0.012)


def test_sample_limit_is_all_mask_or_uniform_tokens():
    absorbing = Absorbing(N).sample_limit(None, (2, 3))
    np.testing.assert_array_equal(np.asarray(absorbing), N)
    tokens = np.asarray(Uniform(N).sample_limit(jax.random.key(4), (100, 200)))
    assert tokens.min() == 0 and tokens.max() == N - 1
    np.testing.assert_allclose(np.bincount(tokens.ravel()) / tokens.size, 1 / N, atol=0.01)


@pytest.mark.parametrize("graph", GRAPH_LIST, ids=IDS)
@pytest.mark.parametrize("sigma", (0.2, math.log(1e3)))
def test_prior_kl_is_kl_to_the_uniform_start_marginal(graph, sigma):
    trans = scipy.linalg.expm(sigma * rate_matrix(graph))
    base = trans[: graph.n].mean(axis=0)  # the t=1 marginal from Uniform(real tokens)
    for x0 in range(graph.n):
        q = trans[x0]
        kl = float(np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1) / base), 0.0)))
        np.testing.assert_allclose(float(graph.prior_kl(sigma)), kl, rtol=1e-4, atol=1e-7)
    if graph.absorb:
        assert float(graph.prior_kl(sigma)) == pytest.approx(math.exp(-sigma) * math.log(N))


def test_uniform_graph_has_no_mask_and_every_id_is_a_token():
    config = base_config()
    config.graph.type = "uniform"
    graph = get_graph(config.graph, 25)
    assert sorted(GRAPHS) == ["absorb", "uniform"]
    assert graph == Uniform(25)
    assert (graph.dim, graph.mask_id, graph.absorb) == (25, None, False)
    absorbing = get_graph(base_config().graph, 25)
    assert (absorbing.dim, absorbing.mask_id, absorbing.absorb) == (26, 25, True)
    with pytest.raises(ValueError, match="graph.type='absorbing'"):
        config.graph.type = "absorbing"
        get_graph(config.graph, 25)


@pytest.mark.slow
def test_uniform_graph_trains_the_demo_below_the_unigram_baseline(tmp_path):
    """A tiny SEDD on the uniform graph beats the best position-independent predictor.

    Both losses come from `training.evaluation` with the same validation batches and keys.
    """
    from sedd_jax.common.metrics_log import read_metrics
    from sedd_jax.data.fasta import read_fasta
    from sedd_jax.data.track_data import run_data
    from sedd_jax.diffusion.noise import get_noise
    from sedd_jax.diffusion.oracles import unigram_log_score_fn
    from sedd_jax.training.evaluation import (
        make_oracle_eval_step,
        unigram_log_probs,
        validation_loss,
    )
    from sedd_jax.training.loop import train_and_evaluate

    c = base_config()
    c.graph.type = "uniform"  # model.scale_by_sigma is ignored for the uniform graph
    c.data.max_len = 32
    c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 64, 2, 4, 32
    c.model.dropout = 0.0
    c.training.batch_size, c.training.n_steps, c.training.ema = 32, 400, 0.99
    c.training.log_every, c.training.eval_every, c.training.checkpoint_every = 100, 10**4, 10**4
    c.optim.lr, c.optim.warmup = 3e-3, 30
    c.eval.time_samples = 8
    c.sampling.steps, c.sampling.num_samples = 16, 4
    c.logging.progress_bar = False
    summary = train_and_evaluate(c, str(tmp_path))

    data = run_data(c)
    tokenizer, train = data.tokenizers["tokens"], data.train_arrays()
    graph = get_graph(c.graph, tokenizer.vocab_size)
    oracle = make_oracle_eval_step(
        unigram_log_score_fn, graph, get_noise(c.noise), c.training.sampling_eps
    )
    log_p = unigram_log_probs(train["tokens"], train["valid"], graph.n)
    unigram = validation_loss(
        oracle,
        jnp.asarray(log_p),
        data.val,
        batch_size=c.eval.batch_size,
        time_samples=c.eval.time_samples,
        max_batches=c.eval.max_batches,
        pad_id=tokenizer.pad_id,
        seed=c.seed,
    )
    initial = [r["val/loss_ema"] for r in read_metrics(str(tmp_path)) if "val/loss_ema" in r][0]
    final = summary["loss_ema"]
    print(f"uniform graph val loss: step0 {initial:.4f} final {final:.4f} unigram {unigram:.4f}")
    assert final < 0.75 * initial
    assert final < unigram - 0.015
    records = read_fasta(summary["samples"])  # the uniform graph samples from random tokens
    assert len(records) == 4
    assert all(set(r.sequence) <= set("ACDEFGHIKLMNPQRSTVWYX") for r in records)
