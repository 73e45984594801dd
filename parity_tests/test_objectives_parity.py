"""masked_ce and the mean -> score conversion: JAX and the twin agree in float32."""

from __future__ import annotations

import numpy as np

from sedd_jax.diffusion import graphs as jax_graphs
from sedd_jax.diffusion.losses import masked_ce_per_token
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.parametrisation import mean_to_log_score
from sedd_torch.diffusion import graphs as torch_graphs
from sedd_torch.diffusion import losses as torch_losses
from sedd_torch.diffusion import noise as torch_noise
from sedd_torch.diffusion import parametrisation as torch_param
from tests.helpers import max_error, t

N, TOL = 7, 1e-5


def test_masked_ce_and_radd_conversion_match(record):
    rng = np.random.default_rng(0)
    graph_j, graph_t = jax_graphs.GRAPHS["absorb"](N), torch_graphs.GRAPHS["absorb"](N)
    noise_j, noise_t = LogLinearNoise(1e-3), torch_noise.LogLinearNoise(1e-3)
    logits = (3 * rng.standard_normal((4, 9, N + 1))).astype(np.float32)
    x0 = rng.integers(0, N, size=(4, 9)).astype(np.int32)
    x_t = np.where(rng.random((4, 9)) < 0.5, N, x0).astype(np.int32)
    valid = np.ones((4, 9), bool)
    valid[:, -2:] = False
    times = np.array([1e-3, 0.3, 0.7, 1.0], np.float32)

    expected = masked_ce_per_token(lambda x, s: logits, graph_j, noise_j, x0, valid, times, x_t=x_t)
    got = torch_losses.masked_ce_per_token(
        lambda x, s: t(logits), graph_t, noise_t, t(x0), t(valid), t(times), x_t=t(x_t)
    )
    loss_err = max_error(expected, got.numpy())
    sigma = np.array([1e-3, 0.3, 2.0, 7.0], np.float32)
    score_j = mean_to_log_score(logits, sigma, x_t, N)
    score_t = torch_param.mean_to_log_score(t(logits), t(sigma), t(x_t), N)
    score_err = max_error(score_j, score_t.numpy())
    record("masked_ce max|d|/(1+max)", loss_err, TOL)
    record("mean->score max|d|/(1+max)", score_err, TOL)
    assert loss_err <= TOL and score_err <= TOL
