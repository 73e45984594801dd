"""Likelihood-bound parity: the same time draws and corruptions give the same bound."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sedd_jax.diffusion import graphs as jax_graphs
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.likelihood import sequence_elbo
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_torch.diffusion import likelihood as torch_likelihood
from tests.helpers import ReplayRand, example_inputs, t, twin_diffusion, twin_pair

N = 25
K = 4
TOL = 1e-5  # relative
CASES = [("protlig", "absorb", "stratified"), ("sedd", "uniform", "antithetic")]


def elbo_draws(graph_type, key, method, batch, shape):
    """The uniforms sedd_jax's sequence_elbo draws from `key`, in order."""
    time_key, noise_key = jax.random.split(key)
    times = uniform(time_key, (K, batch) if method == "stratified" else (K // 2, batch))
    draws = [times]
    for k in range(K):
        corrupt_key = jax.random.fold_in(noise_key, k)
        if graph_type == "absorb":
            draws.append(uniform(corrupt_key, shape))
        else:
            draws.extend(uniform(sub, shape) for sub in jax.random.split(corrupt_key))
    return draws


@pytest.mark.parametrize(("variant", "graph_type", "method"), CASES)
def test_likelihood_bound_matches_for_the_same_draws(variant, graph_type, method, record):
    absorb = graph_type == "absorb"
    model, params, twin, _ = twin_pair(variant, vocab_size=N + absorb, absorb=absorb)
    _, _, valid = example_inputs()
    x0 = np.random.default_rng(6).integers(0, N, size=valid.shape).astype(np.int32)
    key = jax.random.key(21)

    @jax.jit
    def jax_bound(params):
        return sequence_elbo(
            lambda x, sigma: model.apply({"params": params}, x, sigma, valid),
            jax_graphs.GRAPHS[graph_type](N),
            LogLinearNoise(),
            x0,
            valid,
            key,
            time_samples=K,
            method=method,
        )

    expected = jax.device_get(jax_bound(params))
    rand = ReplayRand(*elbo_draws(graph_type, key, method, x0.shape[0], x0.shape))
    got = torch_likelihood.sequence_elbo(
        *twin_diffusion(twin, graph_type, N, valid),
        t(x0),
        t(valid),
        rand,
        time_samples=K,
        method=method,
    )
    assert rand.exhausted()
    errors = {}
    for name in ("nll", "diffusion", "prior", "tokens"):
        a, b = np.asarray(expected[name], np.float64), got[name].numpy().astype(np.float64)
        errors[name] = float(np.max(np.abs(a - b) / np.abs(a)))
    # the uniform graph's prior KL (~1e-5 nats/token) is a difference of two ~1e-3 terms:
    # float32 keeps ~5 digits of it on both sides
    record("bound (nll) per sequence max rel.", errors["nll"], TOL)
    record("prior term max rel.", errors["prior"], TOL)
    worst = max(errors.values())
    prior = np.asarray(expected["prior"])
    assert np.all(np.asarray(expected["nll"]) > prior) and np.all(prior > 0)
    assert worst <= TOL
