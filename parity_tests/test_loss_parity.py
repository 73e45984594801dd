"""Loss and gradient parity at fixed times and fixed corruption draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax import conversion
from sedd_jax.diffusion import graphs as jax_graphs
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.losses import per_token_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_torch.diffusion import graphs as torch_graphs
from sedd_torch.diffusion import losses as torch_losses
from sedd_torch.diffusion import noise as torch_noise
from tests.helpers import ReplayRand, example_inputs, max_error, t, twin_pair

N = 25
LOSS_TOL = 1e-5
GRAD_TOL = 1e-4  # relative, per parameter: |g_torch - g_jax| / |g_jax|
# each variant and each graph once (an XLA compilation per case is most of the cost)
CASES = [("protlig", "absorb"), ("sedd", "uniform")]


def corruption_draws(graph_type: str, key, shape):
    """The uniforms sedd_jax's sample_transition draws from `key`, in order."""
    if graph_type == "absorb":
        return [uniform(key, shape)]
    move_key, token_key = jax.random.split(key)
    return [uniform(move_key, shape), uniform(token_key, shape)]


def setup(variant, graph_type):
    absorb = graph_type == "absorb"
    model, params, twin, _ = twin_pair(variant, vocab_size=N + absorb, absorb=absorb)
    graphs = (jax_graphs.GRAPHS[graph_type](N), torch_graphs.GRAPHS[graph_type](N))
    _, _, valid = example_inputs()
    x0 = np.random.default_rng(5).integers(0, N, size=valid.shape).astype(np.int32)
    times = np.array([0.9, 0.35, 0.05], np.float32)
    return model, params, twin, graphs, x0, valid, times


def jax_loss(model, params, graph, x0, valid, times, key):
    def loss_fn(params):
        def log_score_fn(x, sigma):
            return model.apply({"params": params}, x, sigma, valid)

        noise = LogLinearNoise()
        per_token = per_token_loss(log_score_fn, graph, noise, x0, valid, times, key)
        return per_token.sum() / valid.sum(), per_token

    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)


def torch_loss(twin, graph, x0, valid, times, rand):
    valid_t = t(valid)

    def log_score_fn(x, sigma):
        return twin(x, sigma, valid_t)

    noise = torch_noise.LogLinearNoise()
    per_token = torch_losses.per_token_loss(
        log_score_fn, graph, noise, t(x0), valid_t, t(times), rand
    )
    loss = per_token.sum() / valid_t.sum()
    twin.zero_grad()
    loss.backward()
    return loss, per_token


@pytest.mark.parametrize(("variant", "graph_type"), CASES)
def test_loss_and_gradients_match_for_the_same_draws(variant, graph_type, record):
    model, params, twin, (graph_j, graph_t), x0, valid, times = setup(variant, graph_type)
    key = jax.random.key(11)
    (loss_j, per_token_j), grads_j = jax_loss(model, params, graph_j, x0, valid, times, key)
    rand = ReplayRand(*corruption_draws(graph_type, key, x0.shape))
    loss_t, per_token_t = torch_loss(twin, graph_t, x0, valid, times, rand)
    assert rand.exhausted()

    loss_error = max_error(per_token_j, per_token_t.detach().numpy())
    record("per-token loss max|d|/(1+max)", loss_error, LOSS_TOL)
    assert float(loss_j) > 0.1  # corrupted positions exist and are scored
    assert loss_error <= LOSS_TOL
    assert abs(float(loss_j) - float(loss_t)) <= LOSS_TOL * (1 + abs(float(loss_j)))

    torch_grads = {n: p.grad.numpy() for n, p in twin.named_parameters()}
    jax_grads = conversion.flax_to_torch(grads_j, variant)
    assert torch_grads.keys() == jax_grads.keys()
    worst = max(
        np.linalg.norm(torch_grads[n] - g) / max(np.linalg.norm(g), 1e-12)
        for n, g in jax_grads.items()
        if np.linalg.norm(g) > 0
    )
    record("gradient max_p |dg|/|g| (per param)", worst, GRAD_TOL)
    assert worst <= GRAD_TOL


def test_score_entropy_matches_on_random_log_scores(record):
    """Both graphs' closed forms, on log-scores of magnitude ~3, at every position type."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for graph_type in ("absorb", "uniform"):
        graph_j, graph_t = jax_graphs.GRAPHS[graph_type](N), torch_graphs.GRAPHS[graph_type](N)
        dim = graph_j.dim
        log_score = (3 * rng.standard_normal((4, 9, dim))).astype(np.float32)
        x0 = rng.integers(0, N, size=(4, 9)).astype(np.int32)
        x = np.where(rng.random((4, 9)) < 0.5, rng.integers(0, dim, size=(4, 9)), x0)
        sigma = np.array([1e-3, 0.3, 2.0, 7.0], np.float32)
        expected = graph_j.score_entropy(jnp.asarray(log_score), sigma, x, x0)
        got = graph_t.score_entropy(t(log_score), t(sigma), t(x), t(x0))
        worst = max(worst, max_error(expected, got.numpy()))
    record("score entropy max|d|/(1+max)", worst, LOSS_TOL)
    assert worst <= LOSS_TOL


def test_twin_sample_transition_replays_jax_corruption():
    key = jax.random.key(2)
    x0 = np.random.default_rng(1).integers(0, N, size=(3, 50)).astype(np.int32)
    _, _, valid = example_inputs(length=50)
    sigma = np.array([0.2, 1.0, 4.0], np.float32)
    for graph_type in ("absorb", "uniform"):
        graph_j, graph_t = jax_graphs.GRAPHS[graph_type](N), torch_graphs.GRAPHS[graph_type](N)
        expected = np.asarray(graph_j.sample_transition(key, x0, sigma, valid))
        rand = ReplayRand(*corruption_draws(graph_type, key, x0.shape))
        got = graph_t.sample_transition(rand, t(x0), t(sigma), t(valid)).numpy()
        assert np.array_equal(expected, got)
        assert (expected != x0).sum() > 10
        assert torch.equal(t(expected)[~t(valid)], t(x0)[~t(valid)])
