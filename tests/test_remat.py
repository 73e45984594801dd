"""`model.remat = "block"` recomputes blocks in the backward pass: same parameter names, same
loss, same gradients (to float32 rounding), less memory for the compiled train step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.dual import DualTrackSEDD
from sedd_jax.models.sedd import SEDD
from tests.helpers import fixed_draw_loss

TINY = dict(hidden=32, n_heads=2, cond_dim=16, dropout=0.1)


def tokens(key, shape, low, high):
    return jax.random.randint(key, shape, low, high)


def single_loss_and_grads(remat, length=12):
    graph, noise = Absorbing(26), LogLinearNoise()
    model = SEDD(graph.dim, n_blocks=2, remat=remat, **TINY)
    x = tokens(jax.random.key(1), (3, length), 5, 25)
    valid = jnp.arange(length)[None, :] < jnp.array([[length], [length - 3], [5]])
    loss = fixed_draw_loss(model, graph, noise, x, valid)

    @jax.jit  # one compilation: initialisation, loss and gradients
    def run():
        params = model.init(jax.random.key(0), x, jnp.ones((3,)), valid)["params"]
        return params, *jax.value_and_grad(loss)(params)

    return run()


def dual_loss_and_grads(remat):
    model = DualTrackSEDD(26, 12, n_blocks_protein=1, n_blocks_ligand=2, remat=remat, **TINY)
    protein = tokens(jax.random.key(1), (2, 9), 5, 26)
    ligand = tokens(jax.random.key(2), (2, 6), 0, 12)
    p_valid = jnp.arange(9)[None] < jnp.array([[9], [4]])
    l_valid = jnp.arange(6)[None] < jnp.array([[6], [3]])
    sigma = jnp.array([0.3, 2.0])
    weights = (
        jax.random.normal(jax.random.key(4), (2, 9, 26)),
        jax.random.normal(jax.random.key(5), (2, 6, 12)),
    )

    def loss(p):
        sp, sl = model.apply(
            {"params": p},
            protein,
            ligand,
            sigma,
            p_valid,
            l_valid,
            mode="joint",
            deterministic=False,
            rngs={"dropout": jax.random.key(6)},
        )
        return jnp.sum(jnp.where(p_valid[..., None], sp * weights[0], 0.0)) + jnp.sum(
            jnp.where(l_valid[..., None], sl * weights[1], 0.0)
        )

    @jax.jit  # one compilation: initialisation, loss and gradients
    def run():
        init = functools.partial(model.init, mode="joint")
        params = init(jax.random.key(0), protein, ligand, sigma, p_valid, l_valid)["params"]
        # open every zero-initialised adaLN gate, so the gradient reaches every parameter
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p + 0.05 if "adaLN" in jax.tree_util.keystr(path) else p, params
        )
        return params, *jax.value_and_grad(loss)(params)

    return run()


@pytest.mark.slow  # two compiled gradients per case
@pytest.mark.parametrize("case", [single_loss_and_grads, dual_loss_and_grads])
def test_remat_keeps_parameter_names_loss_and_gradients(case):
    params_a, loss_a, grads_a = case("none")
    params_b, loss_b, grads_b = case("block")
    flat_a = jax.tree_util.tree_flatten_with_path(params_a)[0]
    flat_b = jax.tree_util.tree_flatten_with_path(params_b)[0]
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]  # same names, same order
    for (path, a), (_, b) in zip(flat_a, flat_b, strict=True):
        assert np.array_equal(a, b), jax.tree_util.keystr(path)  # same initialisation
    assert float(loss_a) != 0.0
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
    largest = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree_util.tree_leaves(grads_a))
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_flatten_with_path(grads_a)[0],
        jax.tree_util.tree_flatten_with_path(grads_b)[0],
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * largest, err_msg=str(path))
    assert any(float(np.abs(np.asarray(g)).max()) > 0 for g in jax.tree_util.tree_leaves(grads_a))


def test_remat_keeps_only_block_inputs_for_the_backward_pass():
    """Residuals of the VJP (what the backward pass keeps), backend-independent: without
    remat every block's [B, H, L, L] attention weights are kept; with it, block inputs.
    (XLA on CPU merges the recomputation back into the forward pass, so its compiled
    memory does not show this; `scripts/bench_memory.py` reports both.)"""

    def residual_bytes(remat):
        graph, noise = Absorbing(26), LogLinearNoise()
        model = SEDD(graph.dim, n_blocks=4, remat=remat, **{**TINY, "dropout": 0.0})
        x = jnp.zeros((4, 256), jnp.int32)
        valid = jnp.ones((4, 256), bool)
        params = jax.eval_shape(
            lambda: model.init(jax.random.key(0), x[:1], jnp.ones((1,)), valid[:1])["params"]
        )
        loss = fixed_draw_loss(model, graph, noise, x, valid)
        vjp = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
        return sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(vjp))

    without, with_remat = residual_bytes("none"), residual_bytes("block")
    attention_weights = 4 * 2 * 256 * 256 * 4  # [B, H, L, L] float32, one block
    print(f"residual bytes: none {without:,}  block {with_remat:,}")
    assert without > 4 * attention_weights
    assert with_remat < attention_weights


def test_unknown_remat_is_an_error():
    model = SEDD(26, n_blocks=1, remat="layer", **TINY)
    with pytest.raises(ValueError, match="model.remat"):  # raised while tracing
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1,)))
