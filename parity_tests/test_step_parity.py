"""Optimizer-step parity: AdamW + warmup/cosine lr + global-norm clipping + EMA warm-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion import keys
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.training.state import TrainState
from sedd_jax.training.step import step_keys
from sedd_jax.training.tasks import single_track_objective
from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing
from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
from sedd_torch.training.tasks import single_track_objective as torch_single_objective
from tests.helpers import STEP_EPS, ParitySteps, ReplayRand, example_inputs, t, twin_pair

STEPS = 3
# max |p_torch - p_jax| / (1 + max |p_jax|), params and EMA. Data-dependent: Adam's
# update of an embedding row with a tiny gradient amplifies float32 summation order
# (keys 1, 2, 3, 7 of the per-example draws: 2.8e-6, 3.9e-7, 9.0e-7, 3.8e-6; the loss and
# the gradient norm agree to 1e-5 and 1e-4 on every step)
TOL = 5e-6


def jax_step_draws(rng, step, shape):
    """The uniforms sedd_jax's train_step draws for rows 0..B-1: row i's times and
    corruption come from split(fold_in(example_root, i)) (`step.step_keys`)."""
    root, _ = step_keys(TrainState(jnp.int32(step), {}, {}, (), rng))
    time_key, noise_key = keys.split(keys.example_keys(root, jnp.arange(shape[0])))
    t = jax.vmap(lambda k: jax.random.uniform(k, (1,))[0])(time_key)
    u = jax.vmap(lambda k: uniform(k, (1, shape[1]))[0])(noise_key)
    return [t, u]


@pytest.mark.slow
def test_optimizer_steps_leave_equal_params_and_ema(record):
    model, params, twin, _ = twin_pair("protlig")
    _, _, valid = example_inputs()
    x0 = np.random.default_rng(3).integers(0, 25, size=valid.shape).astype(np.int32)
    steps = ParitySteps(
        params,
        twin,
        single_track_objective(model, Absorbing(25), LogLinearNoise(), STEP_EPS),
        torch_single_objective(TorchAbsorbing(25), TorchLogLinear(), STEP_EPS),
        seed=7,
    )
    ids = np.arange(x0.shape[0], dtype=np.int32)
    batch_j = {"tokens": x0, "valid": valid, "example_id": ids}
    batch_t = {"tokens": t(x0)[None], "valid": t(valid)[None]}
    for step in range(STEPS):
        metrics_j = steps.jax(batch_j)
        metrics_t = steps.torch(batch_t, ReplayRand(*jax_step_draws(steps.rng, step, x0.shape)))
        assert np.isclose(float(metrics_j["loss"]), metrics_t["loss"], rtol=1e-5)
        assert np.isclose(float(metrics_j["grad_norm"]), metrics_t["grad_norm"], rtol=1e-4)
        assert np.isclose(float(metrics_j["learning_rate"]), metrics_t["learning_rate"])
        assert metrics_t["grad_norm"] > steps.oc.grad_clip  # clipping is exercised
    steps.assert_weights_match(STEPS, "protlig", record, TOL)
