"""Joint (dual-track) diffusion parity: two-track loss, gradients and the pair sampler."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax import conversion
from sedd_jax.diffusion import joint as jax_joint
from sedd_jax.diffusion import joint_sampling as jax_joint_sampling
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_torch.diffusion import joint as torch_joint
from sedd_torch.diffusion import joint_sampling as torch_joint_sampling
from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
from tests.helpers import (
    LIGAND_V,
    PROTEIN_V,
    dual_pair,
    max_error,
    pair_parity_batch,
    parity_pair_graphs,
    replay_pair_corruption,
    t,
)

LOSS_TOL, GRAD_TOL = 1e-5, 1e-4
STEPS = 16


@pytest.mark.slow
def test_joint_loss_and_gradients_match_for_mixed_tasks(record):
    model, params, twin = dual_pair("protlig")
    batch = pair_parity_batch()
    graphs_j, graphs_t = parity_pair_graphs()
    times = np.array([0.3, 0.4, 0.1], np.float32)  # every track keeps some clean tokens
    task_ids = np.array(
        [jax_joint.TASKS.index(n) for n in ("joint", "ligand_given_protein", "protein_only")],
        np.int32,
    )
    key = jax.random.key(4)

    @jax.jit
    def jax_loss(params):
        score_fn = functools.partial(model.apply, {"params": params})
        p, l, p_n, l_n = jax_joint.joint_per_token_loss(
            score_fn, graphs_j, LogLinearNoise(), batch, times, task_ids, key
        )
        return (p.sum() + l.sum()) / (p_n.sum() + l_n.sum()), (p, l)

    (loss_j, (p_j, l_j)), grads_j = jax.value_and_grad(jax_loss, has_aux=True)(params)

    rand = replay_pair_corruption(key, batch)
    batch_t = {k: t(v) for k, v in batch.items()}
    p_t, l_t, p_n, l_n = torch_joint.joint_per_token_loss(
        twin, graphs_t, TorchLogLinear(), batch_t, t(times), t(task_ids), rand
    )
    loss_t = (p_t.sum() + l_t.sum()) / (p_n.sum() + l_n.sum())
    loss_t.backward()
    assert rand.exhausted()

    error = max(max_error(p_j, p_t.detach().numpy()), max_error(l_j, l_t.detach().numpy()))
    record("per-token loss max|d|/(1+max)", error, LOSS_TOL)
    assert error <= LOSS_TOL and float(loss_j) > 0.1
    assert np.all(np.asarray(l_j)[2] == 0)  # protein_only: the ligand is not scored

    jax_grads = conversion.flax_to_torch(grads_j, "protlig")
    torch_grads = {n: p.grad for n, p in twin.named_parameters()}
    # a gradient below 1e-6 of the largest is zero up to rounding (e.g. attention over
    # identical keys): it must be as small on the torch side, not equal
    floor = 1e-6 * max(np.linalg.norm(g) for g in jax_grads.values())
    worst = 0.0
    for name, g in jax_grads.items():
        got = torch_grads[name]
        got = np.zeros_like(g) if got is None else got.numpy()
        if np.linalg.norm(g) <= floor:
            assert np.linalg.norm(got) <= 2 * floor, name
            continue
        worst = max(worst, np.linalg.norm(got - g) / np.linalg.norm(g))
    record("gradient max_p |dg|/|g| (per param)", worst, GRAD_TOL)
    assert worst <= GRAD_TOL


@pytest.mark.parametrize("task", ["joint", "ligand_given_protein"])
def test_pair_sampler_gives_identical_tokens(task, record):
    model, params, twin = dual_pair("protlig")
    batch = pair_parity_batch()
    graphs_j, graphs_t = parity_pair_graphs()
    rng = np.random.default_rng(7)
    uniforms = (
        rng.random((STEPS + 1, *batch["protein"].shape, PROTEIN_V)),
        rng.random((STEPS + 1, *batch["ligand"].shape, LIGAND_V)),
    )
    kwargs = dict(task=task, steps=STEPS, predictor="euler", eps=1e-5, denoise_last=True)
    with jax.enable_x64(True):

        @jax.jit
        def run(uniforms):
            score_fn = functools.partial(model.apply, {"params": params})
            return jax_joint_sampling.sample_pairs(
                score_fn,
                graphs_j,
                LogLinearNoise(),
                batch["protein"],
                batch["ligand"],
                batch["protein_valid"],
                batch["ligand_valid"],
                uniforms=uniforms,
                **kwargs,
            )

        expected = jax.device_get(run(tuple(jnp.asarray(u) for u in uniforms)))
    batch_t = {k: t(v) for k, v in batch.items()}
    got = torch_joint_sampling.sample_pairs(
        twin,
        graphs_t,
        TorchLogLinear(),
        batch_t["protein"],
        batch_t["ligand"],
        batch_t["protein_valid"],
        batch_t["ligand_valid"],
        uniforms=tuple(torch.from_numpy(u) for u in uniforms),
        **kwargs,
    )
    mismatches = sum(
        int((np.asarray(e) != g.numpy()).sum()) for e, g in zip(expected, got, strict=True)
    )
    record("tokens differing after full run", mismatches, 0)
    protein_out = np.asarray(expected[0])
    if task == "ligand_given_protein":
        assert np.array_equal(protein_out, batch["protein"])  # the context is held
    else:
        assert (protein_out != batch["protein"])[batch["protein_valid"]].mean() > 0.5
    assert mismatches == 0
