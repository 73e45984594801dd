"""Optimizer-step parity: AdamW (or Muon on the blocks' kernels) + warmup/cosine lr +
global-norm clipping + EMA warm-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from sedd_jax.diffusion import keys
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.training.optim import learning_rate_schedule
from sedd_jax.training.state import TrainState
from sedd_jax.training.step import step_keys
from sedd_jax.training.tasks import single_track_objective
from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing
from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
from sedd_torch.training.tasks import single_track_objective as torch_single_objective
from tests.helpers import (
    STEP_EPS,
    ParitySteps,
    ReplayRand,
    example_inputs,
    step_optim_config,
    t,
    twin_pair,
)

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


def test_muon_twin_matches_optax_muon(record):
    """sedd_torch's MuonAdamW against optax.contrib.muon (`optim.optimizer = muon`) on a
    tree with a wide and a tall block kernel (torch holds them transposed), a cross
    kernel and AdamW leaves (embedding, output kernel, a block's 1-D norm): 6 steps of
    random gradients at a varying lr, weight decay on; params within float32 rounding."""
    import torch

    from sedd_jax.training.optim import make_optimizer, muon_dimension_numbers
    from sedd_torch.training.optim import MuonAdamW

    rng = np.random.default_rng(0)
    shapes = {
        ("blocks_0", "mlp", "kernel"): (6, 10),
        ("blocks_0", "attn_out", "kernel"): (12, 5),
        ("blocks_0", "norm1", "weight"): (6,),
        ("cross_protein_0", "attn_q", "kernel"): (7, 7),
        ("output_layer", "linear", "kernel"): (6, 9),
        ("vocab_embed",): (9, 6),
    }
    flat = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    params = {"params": traverse_util.unflatten_dict(flat)}
    is_dims = lambda x: isinstance(x, optax.contrib.MuonDimensionNumbers)  # noqa: E731
    muon = jax.tree_util.tree_leaves(muon_dimension_numbers(params), is_leaf=is_dims)
    assert len(muon) == 3 and all(map(is_dims, muon))  # the block and cross kernels

    oc = step_optim_config()
    oc.optimizer, oc.grad_clip = "muon", 0.0
    schedule = learning_rate_schedule(oc, 20)
    tx = make_optimizer(oc, 20)
    state = tx.init(params)
    # torch names and layout: a.b.kernel -> a.b.weight, transposed; other leaves as they are
    names = {k: ".".join(k[:-1] + ("weight",)) if k[-1] == "kernel" else ".".join(k) for k in flat}
    layout = {k: (v.T if k[-1] == "kernel" else v) for k, v in flat.items()}
    tparams = {k: torch.nn.Parameter(torch.tensor(layout[k].copy())) for k in flat}
    opt = MuonAdamW([(names[k], tparams[k]) for k in flat], oc)
    assert [len(g["params"]) for g in opt.param_groups] == [3, 3]
    for step in range(6):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in flat.items()}
        gtree = {"params": traverse_util.unflatten_dict(grads)}
        updates, state = tx.update(gtree, state, params)
        params = optax.apply_updates(params, updates)
        for k, g in grads.items():
            tparams[k].grad = torch.tensor((g.T if k[-1] == "kernel" else g).copy())
        for group in opt.param_groups:
            group["lr"] = float(schedule(step))
        opt.step()
    worst = 0.0
    final = traverse_util.flatten_dict(params["params"])
    for k in flat:
        node = final[k]
        got = tparams[k].detach().numpy()
        got = got.T if k[-1] == "kernel" else got
        moved = np.abs(np.asarray(node) - flat[k]).max()
        assert moved > 1e-3, k
        worst = max(worst, np.abs(np.asarray(node) - got).max() / (1 + np.abs(node).max()))
    record("Muon + AdamW params after 6 steps max|d|/(1+max)", worst, 1e-6)
    assert worst <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_optimizer_steps_leave_equal_params_and_ema(record, optimizer):
    model, params, twin, _ = twin_pair("protlig")
    _, _, valid = example_inputs()
    x0 = np.random.default_rng(3).integers(0, 25, size=valid.shape).astype(np.int32)
    steps = ParitySteps(
        params,
        twin,
        single_track_objective(model, Absorbing(25), LogLinearNoise(), STEP_EPS),
        torch_single_objective(TorchAbsorbing(25), TorchLogLinear(), STEP_EPS),
        seed=7,
        optimizer=optimizer,
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
    steps.assert_weights_match(STEPS, "protlig", record, TOL, label=f"{optimizer}: ")
