"""Sampler parity: identical injected uniforms give identical tokens over full runs.

The exponential race argmax_y p_y / E_y is where rounding could flip a draw, so the
runs inject float64 uniforms under `jax.enable_x64` (scoped to these calls) and the race
runs in float64 on both sides. The networks compute in float32 on both sides (the JAX
model has no float64 path); their log-scores agree to ~1e-7, far from any near-tie at
these sizes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax.diffusion import graphs as jax_graphs
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.sampling import pc_sample
from sedd_torch.diffusion import sampling as torch_sampling
from tests.helpers import example_inputs, t, twin_diffusion, twin_pair

N = 25
STEPS = 24
# every predictor on every graph, each variant twice
CASES = [
    ("protlig", "absorb", "euler"),
    ("sedd", "absorb", "analytic"),
    ("sedd", "uniform", "euler"),
    ("protlig", "uniform", "analytic"),
]


def start_state(graph_type, valid, seed=4):
    """Pads clamped to token 1; the uniform graph starts from given random tokens."""
    rng = np.random.default_rng(seed)
    if graph_type == "absorb":
        x = np.full(valid.shape, N, np.int32)
    else:
        x = rng.integers(0, N, size=valid.shape).astype(np.int32)
    return np.where(valid, x, 1).astype(np.int32)


@pytest.mark.parametrize(("variant", "graph_type", "predictor"), CASES)
def test_full_sampling_run_gives_identical_tokens(variant, graph_type, predictor, record):
    absorb = graph_type == "absorb"
    model, params, twin, _ = twin_pair(variant, vocab_size=N + absorb, absorb=absorb)
    _, _, valid = example_inputs()
    x_init = start_state(graph_type, valid)
    dim = N + absorb
    kwargs = dict(
        steps=STEPS,
        predictor=predictor,
        eps=1e-5,
        denoise_last=True,
        clamp=None,
        start_from_limit=False,
    )

    uniforms = np.random.default_rng(9).random((STEPS + 1, *valid.shape, dim))  # float64
    with jax.enable_x64(True):

        def log_score_fn(x, sigma):
            return model.apply({"params": params}, x, sigma, valid)

        sample = functools.partial(
            pc_sample, log_score_fn, jax_graphs.GRAPHS[graph_type](N), LogLinearNoise()
        )
        run = jax.jit(lambda x, u: sample(x, uniforms=u, **kwargs | {"clamp": ~valid}))
        expected = np.asarray(run(jnp.asarray(x_init), jnp.asarray(uniforms)))

    got = torch_sampling.pc_sample(
        *twin_diffusion(twin, graph_type, N, valid),
        t(x_init),
        **kwargs | {"clamp": ~t(valid)},
        uniforms=torch.from_numpy(uniforms),
    ).numpy()

    mismatches = int((expected != got).sum())
    record("tokens differing after full run", mismatches, 0)
    assert uniforms.dtype == np.float64
    assert np.array_equal(expected[~valid], x_init[~valid])  # pads stayed clamped
    if absorb:
        assert not (expected == N).any()  # the denoiser left no mask
    assert (expected != x_init)[valid].mean() > 0.5  # the run moved most positions
    assert mismatches == 0
