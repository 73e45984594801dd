"""Optimizer-step parity: AdamW + warmup/cosine lr + global-norm clipping + EMA warm-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from sedd_jax import conversion
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.state import TrainState
from sedd_jax.training.step import micro_batches, step_keys, train_step
from sedd_jax.training.tasks import single_track_objective
from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing
from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
from sedd_torch.training import optim as torch_optim
from sedd_torch.training.state import create_train_state
from sedd_torch.training.step import train_step as torch_train_step
from sedd_torch.training.tasks import single_track_objective as torch_single_objective
from tests.helpers import STEP_EPS, ReplayRand, example_inputs, step_optim_config, t, twin_pair

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


def max_error(a: dict, b: dict) -> float:
    scale = 1.0 + max(np.abs(v).max() for v in a.values())
    return max(np.abs(a[k] - b[k]).max() for k in a) / scale


def test_optimizer_steps_leave_equal_params_and_ema(record):
    model, params, twin, _ = twin_pair("protlig")
    _, _, valid = example_inputs()
    x0 = np.random.default_rng(3).integers(0, 25, size=valid.shape).astype(np.int32)
    oc, total, ema = step_optim_config(), 20, 0.999
    tx, schedule = make_optimizer(oc, total), learning_rate_schedule(oc, total)
    rng = jax.random.key_data(jax.random.key(7))
    state = TrainState(jnp.zeros((), jnp.int32), params, params, tx.init(params), rng)
    objective, step_metrics = single_track_objective(
        model, Absorbing(25), LogLinearNoise(), STEP_EPS
    )
    j_step = jax.jit(
        lambda s, b: train_step(
            s,
            micro_batches(b, 1),
            objective=objective,
            step_metrics=step_metrics,
            tx=tx,
            lr_schedule=schedule,
            ema=ema,
            axis_name=None,
        )
    )
    ids = np.arange(x0.shape[0], dtype=np.int32)
    batch_j = {"tokens": x0, "valid": valid, "example_id": ids}

    torch_state = create_train_state(twin, lambda ps: torch_optim.make_optimizer(ps, oc))
    t_objective, t_step_metrics = torch_single_objective(
        TorchAbsorbing(25), TorchLogLinear(), STEP_EPS
    )
    batch_t = {"tokens": t(x0)[None], "valid": t(valid)[None]}
    for step in range(STEPS):
        state, metrics_j = j_step(state, batch_j)
        metrics_t = torch_train_step(
            torch_state,
            batch_t,
            objective=t_objective,
            step_metrics=t_step_metrics,
            lr_schedule=torch_optim.learning_rate_schedule(oc, total),
            ema=ema,
            grad_clip=oc.grad_clip,
            seed=0,
            rand=ReplayRand(*jax_step_draws(rng, step, x0.shape)),
        )
        assert np.isclose(float(metrics_j["loss"]), metrics_t["loss"], rtol=1e-5)
        assert np.isclose(float(metrics_j["grad_norm"]), metrics_t["grad_norm"], rtol=1e-4)
        assert np.isclose(float(metrics_j["learning_rate"]), metrics_t["learning_rate"])
        assert metrics_t["grad_norm"] > oc.grad_clip  # clipping is exercised

    final = state
    assert int(final.step) == torch_state.step == STEPS
    for name, tree, module in (
        ("params", final.params, torch_state.model),
        ("EMA", final.ema_params, torch_state.ema_model),
    ):
        expected = conversion.flax_to_torch(jax.device_get(tree), "protlig")
        got = {n: p.detach().numpy() for n, p in module.named_parameters()}
        moved = max(
            np.abs(expected[k] - conversion.flax_to_torch(params, "protlig")[k]).max()
            for k in expected
        )
        error = max_error(expected, got)
        record(f"{name} after {STEPS} steps max|d|/(1+max)", error, TOL)
        worst = max(np.abs(expected[k] - got[k]).max() for k in expected)
        record(f"{name}: max|d| / max|update|", worst / moved, None)
        assert moved > 1e-3  # the steps changed the weights
        assert error <= TOL
    with torch.no_grad():
        assert torch_state.optimizer.param_groups[0]["lr"] == schedule(STEPS - 1)
