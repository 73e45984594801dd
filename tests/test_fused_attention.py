"""The fused attention path (`layers.fused_attention`: jax.nn.dot_product_attention with
padding as sequence lengths) against `layers.attention` on right-padded batches, values
and gradients, self and cross; and the `model.attention` dispatch rule.

cuDNN needs a GPU, so these run the same call with implementation="xla" (the reference
semantics of jax.nn.dot_product_attention); scripts/gpu_check.sh compares cuDNN itself.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import base_config, dual_base_config
from sedd_jax.models import layers
from sedd_jax.models.dual import build_dual_model, init_dual_params
from sedd_jax.models.sedd import build_model


def _prefix(length, lengths):
    return jnp.arange(length)[None] < jnp.asarray(lengths)[:, None]


def _inputs(lq, lk, q_lengths, k_lengths, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    b, h, d = len(q_lengths), 4, 16
    q = 2.0 * jax.random.normal(keys[0], (b, lq, h, d))
    k = jax.random.normal(keys[1], (b, lk, h, d))
    v = jax.random.normal(keys[2], (b, lk, h, d))
    q_valid, k_valid = _prefix(lq, q_lengths), _prefix(lk, k_lengths)
    # pad queries are never scored: their outputs get no cotangent in the model
    d_out = jax.random.normal(keys[3], (b, lq, h, d)) * q_valid[:, :, None, None]
    return q, k, v, d_out, q_valid, k_valid


def _value_and_grads(fn, q, k, v, d_out):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(d_out))


@pytest.mark.parametrize(
    "lq,lk,q_lengths,k_lengths",
    [
        (24, 24, (24, 13, 1), (24, 13, 1)),  # self-attention: queries and keys share lengths
        (24, 40, (24, 7, 20), (40, 33, 1)),  # cross: each track its own lengths
        (40, 8, (40, 40, 2), (5, 8, 3)),
    ],
)
def test_sequence_lengths_match_attention_on_right_padded_batches(lq, lk, q_lengths, k_lengths):
    q, k, v, d_out, q_valid, k_valid = _inputs(lq, lk, q_lengths, k_lengths)
    fused = functools.partial(
        layers.fused_attention, query_valid=q_valid, key_valid=k_valid, implementation="xla"
    )
    ours = jax.jit(_value_and_grads, static_argnums=0)
    got = ours(fused, q, k, v, d_out)
    ref = ours(lambda q, k, v: layers.attention(q, k, v, k_valid), q, k, v, d_out)
    at_valid = np.asarray(q_valid)[:, :, None, None]
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if name in ("out", "dq"):  # rows of pad queries: fused gives 0, ours a value
            a, b = a * at_valid, b * at_valid
        scale = np.abs(b).max()
        assert scale > 0.1, name
        np.testing.assert_allclose(a, b, atol=1e-5 * scale, rtol=0, err_msg=name)
    np.testing.assert_array_equal(np.asarray(got[0])[~np.asarray(q_valid)], 0.0)


def test_sequence_lengths_are_prefix_counts_at_least_one():
    valid = _prefix(6, [6, 2, 0])
    np.testing.assert_array_equal(layers.sequence_lengths(valid), [6, 2, 1])
    assert layers.sequence_lengths(None) is None


def test_dispatch_rule_on_cpu():
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        assert layers.resolve_attention("auto", dtype, 64) == "xla"
        assert layers.resolve_attention("xla", dtype, 64) == "xla"
        with pytest.raises(ValueError, match="cannot run here: no CUDA device"):
            layers.resolve_attention("cudnn", dtype, 64)
    with pytest.raises(ValueError, match="model.attention='flash'"):
        layers.resolve_attention("flash", jnp.bfloat16, 64)


def test_dispatch_rule_on_a_capable_gpu(monkeypatch):
    """What `cudnn_unusable` allows: bf16 / fp16, head dim a multiple of 8 up to 128."""

    class Device:
        platform, device_kind, compute_capability = "gpu", "NVIDIA H100 80GB HBM3", "9.0"
        client = type("Client", (), {"platform_version": "PJRT C API\ncuda 12080"})

    monkeypatch.setattr(jax, "devices", lambda *a: [Device()])
    assert layers.resolve_attention("auto", jnp.bfloat16, 64) == "cudnn"
    assert layers.resolve_attention("auto", jnp.float16, 128) == "cudnn"
    assert layers.resolve_attention("auto", jnp.float32, 64) == "xla"
    assert layers.resolve_attention("auto", jnp.bfloat16, 160) == "xla"
    assert layers.resolve_attention("auto", jnp.bfloat16, 20) == "xla"
    Device.compute_capability, Device.device_kind = "7.0", "Tesla V100-SXM2-16GB"
    assert layers.resolve_attention("auto", jnp.float16, 64) == "xla"
    with pytest.raises(ValueError, match="compute capability 7.0 < 8.0"):
        layers.resolve_attention("cudnn", jnp.float16, 64)


@pytest.fixture
def fused_as_xla(monkeypatch):
    """Route the cuDNN branch of `layers.attend` through implementation="xla" on CPU;
    yields the list of calls it took (one per attention layer traced)."""
    monkeypatch.setattr(layers, "cudnn_unusable", lambda dtype, head_dim: None)
    fused, calls = layers.fused_attention, []

    def as_xla(q, k, v, query_valid, key_valid, implementation):
        calls.append((q.shape, k.shape, implementation))
        return fused(q, k, v, query_valid, key_valid, implementation="xla")

    monkeypatch.setattr(layers, "fused_attention", as_xla)
    return calls


def _perturbed(params):
    """Non-zero adaLN gates (zero at init: every block would be the identity)."""
    return jax.tree_util.tree_map(
        lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size, dtype=jnp.float32)).reshape(p.shape),
        params,
    )


def _value_and_grad(loss, params):
    return jax.jit(jax.value_and_grad(loss))(params)


def _assert_trees_close(a, b, rtol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, atol=rtol * (np.abs(y).max() + 1e-12), rtol=0)


@pytest.mark.slow  # two compiled gradients of the model
def test_single_track_model_same_loss_and_gradients_through_fused_path(fused_as_xla):
    config = base_config()
    config.model.update(hidden=64, n_blocks=2, n_heads=4, cond_dim=32, dropout=0.0)
    x = jax.random.randint(jax.random.key(1), (3, 24), 0, 25)
    valid = _prefix(24, [24, 11, 3])
    sigma = jnp.array([0.1, 1.0, 3.0])
    base = build_model(config.model, 26, True)
    params = jax.jit(lambda k: _perturbed(base.init(k, x, sigma, valid)["params"]))(
        jax.random.key(0)
    )

    def loss(model, p):
        scores = model.apply({"params": p}, x, sigma, valid)
        return jnp.where(valid[..., None], jnp.tanh(scores), 0.0).sum()

    ref = _value_and_grad(functools.partial(loss, base.clone(attention="xla")), params)
    got = _value_and_grad(functools.partial(loss, base.clone(attention="cudnn")), params)
    np.testing.assert_allclose(float(got[0]), float(ref[0]), rtol=1e-5)
    _assert_trees_close(got[1], ref[1], 1e-5)
    assert fused_as_xla  # the cudnn model took the fused branch


@pytest.mark.slow  # two compiled gradients of the model
def test_dual_track_model_same_scores_and_gradients_through_fused_path(fused_as_xla):
    config = dual_base_config()
    config.model.update(
        hidden=64, n_blocks_protein=1, n_blocks_ligand=1, n_heads=4, cond_dim=32, dropout=0.0
    )
    protein = jax.random.randint(jax.random.key(1), (3, 20), 0, 25)
    ligand = jax.random.randint(jax.random.key(2), (3, 12), 0, 30)
    p_valid, l_valid = _prefix(20, [20, 9, 4]), _prefix(12, [5, 12, 0])  # last: no ligand
    sigma = jnp.array([0.1, 1.0, 3.0])
    max_lens = (config.data.max_protein_len, config.data.max_ligand_len)
    base = build_dual_model(config.model, 26, 31, True, max_lens)
    params = jax.jit(_perturbed)(init_dual_params(base, jax.random.key(0)))

    def loss(model, p):
        s_p, s_l = model.apply({"params": p}, protein, ligand, sigma, p_valid, l_valid)
        return (
            jnp.where(p_valid[..., None], jnp.tanh(s_p), 0.0).sum()
            + jnp.where(l_valid[..., None], jnp.tanh(s_l), 0.0).sum()
        )

    ref = _value_and_grad(functools.partial(loss, base.clone(attention="xla")), params)
    got = _value_and_grad(functools.partial(loss, base.clone(attention="cudnn")), params)
    np.testing.assert_allclose(float(got[0]), float(ref[0]), rtol=1e-5)
    _assert_trees_close(got[1], ref[1], 1e-5)
    shapes = {(q[1], k[1]) for q, k, _ in fused_as_xla}  # self and cross, both ways
    assert shapes >= {(20, 20), (12, 12), (20, 12), (12, 20)}
