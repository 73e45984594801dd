"""Padding: a padded batch scores, bounds and samples each sequence as if it were alone.

A tiny real `SEDD` with fixed parameters. Random draws depend on the batch shape, so the
padded batch and the single sequences are compared on the same explicit draws (times,
corrupted tokens x_t, sampler uniforms), sliced to each sequence's length. The batch mixes
lengths 7 and 12; the two padded sequences (length 7) are compared one by one, so every
function compiles for two shapes only.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.likelihood import (
    dataset_likelihood,
    elbo_from_draws,
    likelihood_times,
    make_likelihood_fn,
)
from sedd_jax.diffusion.losses import per_token_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.sampling import pc_sample, with_padding
from sedd_jax.models.sedd import SEDD

V = 26  # absorbing over 25 tokenizer ids, or uniform over 26: same parameter shapes
GRAPHS = {"absorb": Absorbing(V - 1), "uniform": Uniform(V)}
NOISE = LogLinearNoise()
LENGTHS = (7, 12, 7)
PADDED = (0, 2)
L, K = 12, 4
PAD = 1


def tiny_model(graph):
    return SEDD(V, hidden=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0, absorb=graph.absorb)


def make_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 25, (len(LENGTHS), L)).astype(np.int32)
    valid = np.arange(L)[None, :] < np.array(LENGTHS)[:, None]
    garbage = rng.integers(0, 25, tokens.shape)  # pads hold anything; none of it may leak
    return jnp.asarray(np.where(valid, tokens, garbage), jnp.int32), jnp.asarray(valid)


TOKENS, VALID = make_batch()
PARAMS = jax.jit(tiny_model(GRAPHS["absorb"]).init)(
    jax.random.key(0), TOKENS, jnp.ones(len(LENGTHS)), VALID
)


def score_fn(graph, valid):
    model = tiny_model(graph)
    return lambda x, sigma: model.apply(PARAMS, x, sigma, valid)


@functools.partial(jax.jit, static_argnums=0)
def loss_and_bound(graph, x0, valid, t, x_t, t_k, x_t_k):
    """Token losses [B, L] for times t [B] and x_t [B, L], and the bound for the K draws
    t_k [K, B], x_t_k [K, B, L]: one compilation per graph and shape."""
    fn = score_fn(graph, valid)
    losses = per_token_loss(fn, graph, NOISE, x0, valid, t, x_t=x_t)
    return losses, elbo_from_draws(fn, graph, NOISE, x0, valid, t_k, x_t_k)


@functools.cache
def padded_and_alone(graph_name):
    """(draws, results for the padded batch, {b: results for sequence b alone})."""
    graph = GRAPHS[graph_name]
    t = jnp.array([0.7, 0.8, 0.9])
    x_t = graph.sample_transition(jax.random.key(1), TOKENS, NOISE(t)[0], VALID)
    t_k = likelihood_times(jax.random.key(2), K, len(LENGTHS), "stratified")
    keys = jax.random.split(jax.random.key(3), K)
    draws = zip(keys, NOISE(t_k)[0], strict=True)
    x_t_k = jnp.stack([graph.sample_transition(k, TOKENS, sigma, VALID) for k, sigma in draws])
    padded = loss_and_bound(graph, TOKENS, VALID, t, x_t, t_k, x_t_k)
    alone = {}
    for b in PADDED:
        n = LENGTHS[b]
        alone[b] = loss_and_bound(
            graph,
            TOKENS[b : b + 1, :n],
            jnp.ones((1, n), bool),
            t[b : b + 1],
            x_t[b : b + 1, :n],
            t_k[:, b : b + 1],
            x_t_k[:, b : b + 1, :n],
        )
    return (x_t, x_t_k), padded, alone


@pytest.mark.slow
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_loss_of_a_padded_batch_equals_the_loss_of_each_sequence(graph_name):
    (x_t, x_t_k), (padded, _), alone = padded_and_alone(graph_name)
    for x in (x_t, *x_t_k):  # pads are never corrupted
        pads = ~np.asarray(VALID)
        np.testing.assert_array_equal(np.asarray(x)[pads], np.asarray(TOKENS)[pads])
    padded = np.asarray(padded)
    assert np.all(padded[~np.asarray(VALID)] == 0.0)
    for b, (single, _) in alone.items():
        n = LENGTHS[b]
        np.testing.assert_allclose(padded[b, :n], np.asarray(single)[0], rtol=2e-5, atol=1e-6)
        assert float(single.sum()) > 0


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_likelihood_of_a_padded_batch_equals_that_of_each_sequence(graph_name):
    _, (_, padded), alone = padded_and_alone(graph_name)
    np.testing.assert_array_equal(np.asarray(padded["tokens"]), LENGTHS)
    for b, (_, single) in alone.items():
        for name in ("nll", "diffusion", "prior"):
            np.testing.assert_allclose(
                float(padded[name][b]), float(single[name][0]), rtol=2e-5, err_msg=name
            )


def test_keyed_likelihood_ignores_what_the_pads_hold():
    graph = GRAPHS["absorb"]
    likelihood = make_likelihood_fn(tiny_model(graph), graph, NOISE, time_samples=K)
    key = jax.random.key(4)
    first = likelihood(PARAMS["params"], TOKENS, VALID, key)
    other = jnp.where(VALID, TOKENS, PAD)
    second = likelihood(PARAMS["params"], other, VALID, key)
    np.testing.assert_allclose(np.asarray(first["nll"]), np.asarray(second["nll"]), rtol=1e-6)
    arrays = {"tokens": np.asarray(other), "valid": np.asarray(VALID)}
    summary = dataset_likelihood(
        likelihood, PARAMS["params"], arrays, batch_size=len(LENGTHS), pad_id=PAD, seed=0
    )
    assert summary["tokens"] == sum(LENGTHS)
    assert summary["perplexity"] == pytest.approx(np.exp(summary["nats_per_token"]))
    assert 0.5 < summary["nats_per_token"] < 20.0


@functools.partial(jax.jit, static_argnums=0)
def sample(graph, x_init, valid, uniforms):
    x_init, clamp = with_padding(x_init, jnp.zeros_like(valid), valid, PAD)
    return pc_sample(
        score_fn(graph, valid),
        graph,
        NOISE,
        x_init,
        steps=3,
        predictor="analytic",
        clamp=clamp,
        uniforms=uniforms,
    )


def test_sampling_a_padded_batch_equals_sampling_each_sequence():
    graph = GRAPHS["absorb"]
    uniforms = uniform(jax.random.key(5), (4, len(LENGTHS), L, graph.dim))
    padded = np.asarray(sample(graph, TOKENS, VALID, uniforms))
    np.testing.assert_array_equal(padded[~np.asarray(VALID)], PAD)
    assert np.all(padded[np.asarray(VALID)] < graph.mask_id)
    for b in PADDED:
        n = LENGTHS[b]
        x0, valid = TOKENS[b : b + 1, :n], jnp.ones((1, n), bool)
        single = np.asarray(sample(graph, x0, valid, uniforms[:, b : b + 1, :n]))
        np.testing.assert_array_equal(padded[b, :n], single[0])
