"""jax.grad of the training losses on tiny real networks matches a central finite
difference along a random direction, at extreme times (sigma from ~1e-4 to ~7) and with
log-scores pushed to +-100 at positions the loss does not score."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import dual_base_config
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.joint import TASKS, PairGraphs, joint_per_token_loss
from sedd_jax.diffusion.losses import per_token_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.dual import build_dual_model, init_dual_params
from sedd_jax.models.sedd import SEDD

NOISE = LogLinearNoise(1e-3)
TIMES = jnp.array([1e-4, 0.5, 0.999, 0.3])  # sigma ~1e-4 .. ~6.9


def directional_check(loss, params, *args, seed=0, h=1e-2):
    """(grad . v, central difference along v), v a random unit-RMS direction; `loss` is
    jitted and takes (params, *args), its gradient is compiled once per loss. The direction,
    the dot product and the shifts are numpy (op by op in JAX, every leaf shape compiles)."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(np.asarray, params)
    v = jax.tree_util.tree_map(lambda x: rng.standard_normal(x.shape).astype(x.dtype), params)
    grad = jax.tree_util.tree_map(np.asarray, _grad(loss)(params, *args))
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grad))
    analytic = sum(
        float(np.vdot(g.astype(np.float64), d))
        for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(v), strict=True)
    )
    shift = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * h * d, params, v)  # noqa: E731
    numeric = (float(loss(shift(1.0), *args)) - float(loss(shift(-1.0), *args))) / (2 * h)
    return analytic, numeric


@functools.cache
def _grad(loss):
    return jax.jit(jax.grad(loss))


@pytest.mark.parametrize("graph", [Absorbing(6), Uniform(6)], ids=["absorb", "uniform"])
def test_single_track_loss_gradient_matches_finite_differences(graph):
    model = SEDD(
        graph.dim,
        hidden=16,
        n_blocks=1,
        n_heads=2,
        cond_dim=8,
        dropout=0.0,
        scale_by_sigma=graph.absorb,
        absorb=graph.absorb,
    )
    rng = np.random.default_rng(1)
    x0 = jnp.asarray(rng.integers(0, 6, (4, 10)), jnp.int32)
    valid = jnp.arange(10)[None] < jnp.array([[10], [7], [4], [10]])
    params = jax.jit(model.init)(jax.random.key(0), x0, jnp.ones((4,)), valid)["params"]
    # a fixed corruption, so the loss is a smooth function of the parameters
    x_t = graph.sample_transition(jax.random.key(2), x0, NOISE(TIMES)[0], valid)
    # the pushed log-scores sit where the loss reads nothing: pads, and for the absorbing
    # graph also the unmasked positions
    unscored = ~valid if not graph.absorb else ~valid | (x_t != graph.mask_id)

    @jax.jit
    def loss(p, push):
        def log_score_fn(x, sigma):
            s = model.apply({"params": p}, x, sigma, valid)
            return jnp.where(unscored[..., None], s + push, s)

        out = per_token_loss(log_score_fn, graph, NOISE, x0, valid, TIMES, x_t=x_t)
        return out.sum() / valid.sum()

    plain = None
    for push in (0.0, 100.0, -100.0):
        analytic, numeric = directional_check(loss, params, jnp.float32(push))
        assert analytic == pytest.approx(numeric, rel=3e-2, abs=1e-3), push
        plain = analytic if plain is None else plain
        assert analytic == pytest.approx(plain, rel=1e-4)  # the pushed entries are unread


@pytest.mark.slow
def test_joint_loss_gradient_matches_finite_differences():
    c = dual_base_config().model
    c.hidden, c.n_heads, c.cond_dim, c.n_blocks_protein, c.n_blocks_ligand = 16, 2, 8, 1, 1
    c.dropout = 0.0
    graphs = PairGraphs(Absorbing(25), Absorbing(9))
    model = build_dual_model(c, graphs.protein.dim, graphs.ligand.dim, True, (8, 6))
    params = init_dual_params(model, jax.random.key(0))
    rng = np.random.default_rng(2)
    batch = {
        "protein": jnp.asarray(rng.integers(5, 25, (4, 8)), jnp.int32),
        "protein_valid": jnp.arange(8)[None] < jnp.array([[8], [5], [8], [3]]),
        "ligand": jnp.asarray(rng.integers(2, 9, (4, 6)), jnp.int32),
        "ligand_valid": jnp.arange(6)[None] < jnp.array([[6], [6], [2], [4]]),
    }

    @jax.jit
    def loss(p, task_ids):
        score_fn = functools.partial(model.apply, {"params": p})
        p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
            score_fn, graphs, NOISE, batch, TIMES, task_ids, jax.random.key(3), "joint"
        )
        return (p_loss.sum() + l_loss.sum()) / (p_scored.sum() + l_scored.sum())

    # one pair per task in one batch, then every pair in each task (traced task ids)
    mixes = [jnp.array([TASKS.index(t) for t in TASKS[:3]] + [0])]
    mixes += [jnp.full((4,), TASKS.index(t), jnp.int32) for t in TASKS[:3]]  # one compile
    for task_ids in mixes:
        analytic, numeric = directional_check(loss, params, task_ids, seed=1)
        assert analytic == pytest.approx(numeric, rel=3e-2, abs=1e-3), task_ids
