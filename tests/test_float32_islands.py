"""With `model.dtype = bfloat16 / float16`, LayerNorm, the attention logits and softmax, the
sigma-embedding and the loss are computed in float32 (DESIGN: mixed precision).

Two views of the same program: the dtypes of module outputs (flax `capture_intermediates`)
and the dtypes of every transcendental / normalising primitive in the jaxpr of the loss;
and the half-precision loss stays near the float32 loss of the same parameters."""

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

TINY = dict(hidden=32, n_heads=2, cond_dim=16, dropout=0.0)
B, L = 3, 12
# primitives that must never see a half-precision operand: LayerNorm (rsqrt), softmax
# (reduce_max, exp), sinusoids of the sigma-embedding (sin, cos), the score entropy and
# scale_by_sigma (exp, log, expm1, log1p)
FLOAT32_ONLY = {"rsqrt", "reduce_max", "exp", "exp2", "log", "expm1", "log1p", "sin", "cos"}


def eqns(jaxpr):
    """Every equation of a jaxpr, sub-jaxprs (pjit, custom_jvp, remat, scan...) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if hasattr(sub, "eqns"):
                    yield from eqns(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    yield from eqns(sub.jaxpr)


def single_setup(dtype, abstract=False):
    """abstract: the parameters as shapes only (enough to trace the loss), nothing run."""
    graph, noise = Absorbing(26), LogLinearNoise()
    model = SEDD(graph.dim, n_blocks=2, dtype=dtype, **TINY)
    x = jax.random.randint(jax.random.key(1), (B, L), 5, 25)
    valid = jnp.arange(L)[None] < jnp.array([[L], [8], [5]])

    def init(key):
        params = model.init(key, x, jnp.ones((B,)), valid)["params"]
        # open the zero-initialised adaLN gates so every block contributes
        return jax.tree_util.tree_map_with_path(
            lambda path, p: p + 0.05 if "adaLN" in jax.tree_util.keystr(path) else p, params
        )

    key = jax.random.key(0)
    params = jax.eval_shape(init, key) if abstract else jax.jit(init)(key)
    loss = fixed_draw_loss(model, graph, noise, x, valid)

    return model, params, x, valid, loss


def dual_setup(dtype):
    """The dual model's forward pass; its parameters as shapes only (nothing run)."""
    model = DualTrackSEDD(26, 12, n_blocks_protein=1, n_blocks_ligand=1, dtype=dtype, **TINY)
    protein = jax.random.randint(jax.random.key(1), (2, 9), 5, 26)
    ligand = jax.random.randint(jax.random.key(2), (2, 6), 0, 12)
    pv = jnp.arange(9)[None] < jnp.array([[9], [4]])
    lv = jnp.arange(6)[None] < jnp.array([[6], [3]])
    sigma = jnp.array([0.3, 2.0])
    args = (protein, ligand, sigma, pv, lv)
    init = functools.partial(model.init, mode="joint")
    params = jax.eval_shape(lambda k: init(k, *args)["params"], jax.random.key(0))

    def forward(p):
        sp, sl = model.apply({"params": p}, *args, mode="joint")
        return jnp.sum(jnp.where(pv[..., None], sp, 0.0)) + jnp.sum(
            jnp.where(lv[..., None], sl, 0.0)
        )

    return model, params, args, forward


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_normalisation_softmax_sigma_embedding_and_loss_primitives_are_float32(dtype):
    _, params, _, _, loss = single_setup(dtype, abstract=True)  # traced, never run
    _, dual_params, _, dual_forward = dual_setup(dtype)
    for fn, p in ((loss, params), (dual_forward, dual_params)):
        jaxpr = jax.make_jaxpr(fn)(p).jaxpr
        seen = set()
        half = []
        for eqn in eqns(jaxpr):
            name = eqn.primitive.name
            if name in FLOAT32_ONLY:
                seen.add(name)
                dtypes = {str(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype")}
                if dtypes - {"float32"}:
                    half.append((name, dtypes))
            if name == "dot_general":
                (lhs_contract, rhs_contract), _ = eqn.params["dimension_numbers"]
                # attention logits q k^T: [B, L, H, Dh] x [B, L, H, Dh] over Dh
                over_dh = tuple(lhs_contract) == tuple(rhs_contract) == (3,)
                if eqn.invars[0].aval.ndim == 4 and over_dh:
                    seen.add("attention_logits")
                    if eqn.outvars[0].aval.dtype != jnp.float32:
                        half.append(("attention logits", {str(eqn.outvars[0].aval.dtype)}))
        assert not half, half
        assert {"rsqrt", "reduce_max", "exp", "sin", "cos", "attention_logits"} <= seen
        # and the matmuls do run in the compute dtype (the islands are islands)
        dot_dtypes = {
            str(e.invars[0].aval.dtype) for e in eqns(jaxpr) if e.primitive.name == "dot_general"
        }
        assert dtype in dot_dtypes
    assert jax.eval_shape(loss, params).dtype == jnp.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_module_outputs_of_the_float32_islands_are_float32(dtype):
    model, params, x, valid, _ = single_setup(dtype, abstract=True)

    def forward(p):
        return model.apply({"params": p}, x, jnp.ones((B,)), valid, capture_intermediates=True)

    _, state = jax.eval_shape(forward, params)  # the dtypes of the traced program
    inter = state["intermediates"]
    out_dtype = lambda *path: functools.reduce(lambda d, k: d[k], path, inter)["__call__"][0].dtype  # noqa: E731
    assert out_dtype("sigma_map") == jnp.float32
    for block in ("blocks_0", "blocks_1"):
        assert out_dtype(block, "norm1") == jnp.float32
        assert out_dtype(block, "norm2") == jnp.float32
        assert out_dtype(block) == jnp.float32  # the residual stream
        assert out_dtype(block, "attn_qkv") == jnp.dtype(dtype)  # matmuls in half
    assert out_dtype("output_layer", "norm") == jnp.float32
    assert out_dtype("output_layer") == jnp.float32


@functools.cache
def float32_loss():
    """The float32 parameters and their float32 loss (computed once for both dtypes)."""
    _, params, _, _, loss32 = single_setup("float32")
    return params, float(jax.jit(loss32)(params))


@pytest.mark.slow
@pytest.mark.parametrize("dtype, rtol", [("bfloat16", 2e-2), ("float16", 2e-3)])
def test_half_precision_loss_is_close_to_the_float32_loss(dtype, rtol):
    params, a = float32_loss()
    _, _, _, _, loss_half = single_setup(dtype, abstract=True)  # the float32 parameters
    b = float(jax.jit(loss_half)(params))
    print(f"{dtype}: loss {b:.6f} vs float32 {a:.6f} (rel {abs(b - a) / a:.2e})")
    assert np.isfinite(b)
    np.testing.assert_allclose(b, a, rtol=rtol)
