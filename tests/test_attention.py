"""`layers.attention` (hand-written backward) against its definition
`layers.softmax_attention` (autodiff): outputs and all three gradients, with padded keys,
a row with no valid key, cross-attention lengths and half precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.models import layers


def _inputs(lq, lk, dtype, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    b, h, d = 3, 4, 16
    q = 2.0 * jax.random.normal(keys[0], (b, lq, h, d))
    k = jax.random.normal(keys[1], (b, lk, h, d))
    v = jax.random.normal(keys[2], (b, lk, h, d))
    d_out = jax.random.normal(keys[3], (b, lq, h, d))
    valid = jnp.arange(lk)[None] < jnp.array([lk, lk // 2, 0])[:, None]  # last: no key
    return [x.astype(dtype) for x in (q, k, v, d_out)] + [valid]


def _value_and_grads(fn, q, k, v, d_out, valid):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, valid), q, k, v)
    return (out, *vjp(d_out))


@pytest.mark.parametrize("lq,lk", [(24, 24), (24, 40), (40, 8)])
@pytest.mark.parametrize("masked", [True, False])
def test_matches_definition_float32(lq, lk, masked):
    q, k, v, d_out, valid = _inputs(lq, lk, jnp.float32)
    valid = valid if masked else None
    fast = jax.jit(lambda *a: _value_and_grads(layers.attention, *a, valid))(q, k, v, d_out)
    ref = jax.jit(lambda *a: _value_and_grads(layers.softmax_attention, *a, valid))(q, k, v, d_out)
    primal = jax.jit(lambda q, k, v: layers.attention(q, k, v, valid))(q, k, v)  # no vjp
    names = ("primal", "out", "dq", "dk", "dv")
    for name, a, b in zip(names, (primal, *fast), (ref[0], *ref), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        scale = float(jnp.abs(b).max())
        assert scale > 0.1, name  # a real signal, not zeros on both sides
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6 * scale, err_msg=name)


def test_masked_keys_get_no_weight_or_gradient():
    q, k, v, d_out, valid = _inputs(16, 16, jnp.float32)
    out, dq, dk, dv = _value_and_grads(layers.attention, q, k, v, d_out, valid)
    # row 1: keys 8.. are padding; changing them changes nothing and they get no gradient
    k2 = k.at[1, 8:].set(100.0)
    v2 = v.at[1, 8:].set(-100.0)
    np.testing.assert_allclose(layers.attention(q, k2, v2, valid)[1], out[1], atol=1e-6)
    assert float(jnp.abs(dk[1, 8:]).max()) == 0.0 and float(jnp.abs(dv[1, 8:]).max()) == 0.0
    # row 2 has no valid key: a uniform average of v, as the definition
    uniform = jnp.broadcast_to(v[2].mean(0), out[2].shape)
    np.testing.assert_allclose(out[2], uniform, atol=1e-5)
    np.testing.assert_allclose(layers.attention(q, k, v, valid)[2], uniform, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tol", [(jnp.bfloat16, 3e-2), (jnp.float16, 4e-3)])
def test_half_precision_tracks_float32(dtype, tol):
    """In bf16/fp16 both implementations stay within rounding of the float32 result."""
    q, k, v, d_out, valid = _inputs(32, 32, jnp.float32)
    exact = _value_and_grads(layers.softmax_attention, q, k, v, d_out, valid)
    half = _value_and_grads(layers.attention, *(x.astype(dtype) for x in (q, k, v, d_out)), valid)
    primal = layers.attention(*(x.astype(dtype) for x in (q, k, v)), valid)
    half = (primal, *half)
    exact = (exact[0], *exact)
    ref_half = _value_and_grads(
        layers.softmax_attention, *(x.astype(dtype) for x in (q, k, v, d_out)), valid
    )
    ref_half = (ref_half[0], *ref_half)
    names = ("primal", "out", "dq", "dk", "dv")
    for name, a, r, e in zip(names, half, ref_half, exact, strict=True):
        assert a.dtype == dtype, name
        scale = float(jnp.abs(e).max())
        err = float(jnp.abs(a.astype(jnp.float32) - e).max()) / scale
        ref_err = float(jnp.abs(r.astype(jnp.float32) - e).max()) / scale
        assert err < tol and err < 2 * ref_err + 1e-3, (name, err, ref_err)
