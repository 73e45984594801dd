"""Every draw of the train step follows the example, not the batch it sits in: a row gets
the same times, corruption, task and dropout masks in the whole batch and in any slice."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion import keys
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.joint import PairGraphs, TaskMixture, joint_score_entropy_loss
from sedd_jax.diffusion.losses import score_entropy_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.dual import init_dual_params
from sedd_jax.models.sedd import SEDD
from tests.helpers import tiny_dual

ROOT = jax.random.key(11)
IDS = jnp.arange(8, dtype=jnp.int32) + 100


def halves(fn):
    """fn(rows) on rows 0..7 at once, and on rows 0..2 and 3..7 separately, concatenated."""
    whole = fn(slice(0, 8))
    parts = [fn(slice(0, 3)), fn(slice(3, 8))]
    return whole, jax.tree_util.tree_map(lambda *p: jnp.concatenate(p), *parts)


@pytest.mark.slow
def test_single_track_loss_and_dropout_of_a_row_do_not_depend_on_its_batch():
    graph, noise = Absorbing(25), LogLinearNoise()
    model = SEDD(graph.dim, hidden=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.5)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(5, 25, (8, 12)), jnp.int32)
    valid = jnp.ones((8, 12), bool)
    init = jax.jit(model.init)  # one compilation, not one per op
    params = init(jax.random.key(0), tokens[:1], jnp.ones((1,)), valid[:1])["params"]
    dropout_key = jax.random.key(5)

    @jax.jit  # compiled once per batch size (8, 3, 5): far cheaper than op-by-op
    def row_losses(tokens, valid, ids):
        def score(x, sigma):
            return model.apply(
                {"params": params},
                x,
                sigma,
                valid,
                deterministic=False,
                rngs={"dropout": dropout_key},
                example_ids=ids,
            )

        row_keys = keys.example_keys(ROOT, ids)
        out = score_entropy_loss(score, graph, noise, tokens, valid, row_keys)
        return out.t, out.losses

    def losses(rows):
        return row_losses(tokens[rows], valid[rows], IDS[rows])

    (t, whole), (t_parts, parts) = halves(losses)
    np.testing.assert_array_equal(t, t_parts)
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-6)
    assert float(whole.sum()) > 0


@pytest.mark.slow
def test_pair_tasks_corruption_and_dual_dropout_of_a_row_do_not_depend_on_its_batch():
    graphs = PairGraphs(Absorbing(25), Absorbing(12))
    model = tiny_dual(26, 13, hidden=32, cond_dim=16, dropout=0.5)
    params = init_dual_params(model, jax.random.key(0))
    rng = np.random.default_rng(1)
    batch = {
        "protein": jnp.asarray(rng.integers(5, 25, (8, 10)), jnp.int32),
        "protein_valid": jnp.ones((8, 10), bool),
        "ligand": jnp.asarray(rng.integers(0, 11, (8, 6)), jnp.int32),
        "ligand_valid": jnp.ones((8, 6), bool),
    }
    mixture = TaskMixture.parse({"joint": 1.0, "ligand_given_protein": 1.0, "protein_only": 1.0})

    @jax.jit  # compiled once per batch size (8, 3, 5): far cheaper than op-by-op
    def row_losses(part, ids):
        score = functools.partial(
            model.apply,
            {"params": params},
            deterministic=False,
            rngs={"dropout": jax.random.key(5)},
            example_ids=ids,
        )
        row_keys = keys.example_keys(ROOT, ids)
        out = joint_score_entropy_loss(score, graphs, LogLinearNoise(), part, row_keys, mixture)
        return out.task_ids, out.t, out.protein, out.ligand

    def losses(rows):
        return row_losses({k: v[rows] for k, v in batch.items()}, IDS[rows])

    (tasks, t, p, lig), (tasks_parts, t_parts, p_parts, l_parts) = halves(losses)
    np.testing.assert_array_equal(tasks, tasks_parts)
    np.testing.assert_array_equal(t, t_parts)
    assert len(set(np.asarray(tasks).tolist())) > 1  # a real mixture of tasks
    np.testing.assert_allclose(p, p_parts, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lig, l_parts, rtol=1e-5, atol=1e-6)
