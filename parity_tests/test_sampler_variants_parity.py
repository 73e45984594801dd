"""Parity of the absorbing-graph sampler variants: remdm (each schedule), cached and
first_hitting make the same tokens in sedd_jax and the twin, on the tiny model with pads.

remdm and cached take injected float64 uniforms (the race in float64 on both sides, as
test_sampling_parity); first_hitting takes sedd_jax's own float32 uniforms of a key
(`sampling.first_hitting_uniforms`), so its race runs at float32 rounding on both sides.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax.common.remdm import RemdmSettings
from sedd_jax.diffusion.catsample import race_uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.sampling import first_hitting_uniforms, pc_sample
from sedd_torch.diffusion import graphs as torch_graphs
from sedd_torch.diffusion import noise as torch_noise
from sedd_torch.diffusion import sampling as torch_sampling
from tests.helpers import example_inputs, t, twin_pair

N = 25
STEPS = 24
CASES = {
    "remdm_cap": ("remdm", RemdmSettings("cap", 0.3)),
    "remdm_rescale_switch": ("remdm", RemdmSettings("rescale", 0.8, 0.5)),
    "remdm_conf": ("remdm", RemdmSettings("conf")),
    "cached": ("cached", None),
}


def models(variant="sedd"):
    model, params, twin, _ = twin_pair(variant, vocab_size=N + 1, absorb=True)
    _, _, valid = example_inputs()
    x_init = np.where(valid, N, 1).astype(np.int32)  # all-mask, pads clamped to token 1
    return model, params, twin, valid, x_init


def run_twin(twin, valid, x_init, **kwargs):
    valid_t = t(valid)
    return torch_sampling.pc_sample(
        lambda x, sigma: twin(x, sigma, valid_t),
        torch_graphs.Absorbing(N),
        torch_noise.LogLinearNoise(),
        t(x_init),
        clamp=~valid_t,
        start_from_limit=False,
        return_calls=True,
        **kwargs,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_variant_gives_identical_tokens(case, record):
    predictor, settings = CASES[case]
    model, params, twin, valid, x_init = models()
    kwargs = dict(steps=STEPS, predictor=predictor, eps=1e-5, remdm=settings)
    uniforms = np.random.default_rng(9).random((STEPS + 1, *valid.shape, N + 1))  # float64
    with jax.enable_x64(True):

        def log_score_fn(x, sigma):
            return model.apply({"params": params}, x, sigma, valid)

        run = jax.jit(
            lambda x, u: pc_sample(
                log_score_fn,
                Absorbing(N),
                LogLinearNoise(),
                x,
                uniforms=u,
                clamp=~valid,
                start_from_limit=False,
                return_calls=True,
                **kwargs,
            )
        )
        expected, calls = run(jnp.asarray(x_init), jnp.asarray(uniforms))
    expected = np.asarray(expected)
    got, twin_calls = run_twin(twin, valid, x_init, uniforms=torch.from_numpy(uniforms), **kwargs)
    mismatches = int((expected != got.numpy()).sum())
    record("tokens differing after full run", mismatches, 0)
    assert not (expected == N).any() and (expected[~valid] == 1).all()
    assert mismatches == 0
    assert twin_calls == int(calls)
    if predictor == "remdm":  # the run re-masked: it differs from the analytic run
        analytic, _ = run_twin(
            twin,
            valid,
            x_init,
            uniforms=torch.from_numpy(uniforms),
            steps=STEPS,
            predictor="analytic",
        )
        assert (analytic.numpy() != expected)[valid].any()


@pytest.mark.slow
def test_first_hitting_gives_identical_tokens(record):
    model, params, twin, valid, x_init = models("protlig")
    key = jax.random.key(7)
    batch, length = valid.shape

    def log_score_fn(x, sigma):
        return model.apply({"params": params}, x, sigma, valid)

    run = jax.jit(
        lambda x: pc_sample(
            log_score_fn,
            Absorbing(N),
            LogLinearNoise(),
            x,
            key,
            steps=STEPS,
            predictor="first_hitting",
            clamp=~valid,
            start_from_limit=False,
            return_calls=True,
        )
    )
    expected, calls = run(jnp.asarray(x_init))
    expected = np.asarray(expected)
    draws = [first_hitting_uniforms(key, k, batch, length, N + 1) for k in range(length)]
    v, pos_u, tok_u = (
        torch.from_numpy(np.stack([np.asarray(d[i]) for d in draws])) for i in range(3)
    )
    final_u = torch.from_numpy(
        np.array(race_uniform(jax.random.fold_in(key, length + 2), (batch, length, N + 1)))
    )
    got, twin_calls = run_twin(
        twin,
        valid,
        x_init,
        steps=STEPS,
        predictor="first_hitting",
        uniforms=(v, pos_u, tok_u, final_u),
    )
    mismatches = int((expected != got.numpy()).sum())
    record("tokens differing after full run", mismatches, 0)
    assert not (expected == N).any() and (expected[~valid] == 1).all()
    assert mismatches == 0
    assert twin_calls == int(calls) <= length
