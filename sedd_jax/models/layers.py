"""Building blocks of the DDiT (diffusion transformer) used by SEDD.

Parameter names follow the PyTorch reference (`transformer_v100.SEDD`) so that
checkpoints convert by a fixed rule: torch `a.b.weight` [out, in] <-> flax `a/b/kernel`
[in, out]; LayerNorm weights and embedding tables keep the name `weight`.

Dense layers act on flattened tokens [N, d] (N = B * L): on CPU, XLA computes the weight
gradient of a [B, L, d] dense markedly slower than the same matmul on [N, d].
"""

from __future__ import annotations

import inspect
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

FREQUENCY_DIM = 256
NEG_INF = -1e30
REMAT = ("none", "block")
ATTENTION = ("auto", "xla", "cudnn")  # model.attention (`resolve_attention`)


def torch_uniform(fan_in: int):
    """nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Dense(nn.Module):
    """y = x W + b on [..., d_in]; params float32, matmul in `dtype`; torch-style init."""

    features: int
    use_bias: bool = True
    zero_init: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        init = nn.initializers.zeros if self.zero_init else torch_uniform(fan_in)
        kernel = self.param("kernel", init, (fan_in, self.features), jnp.float32)
        y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", init, (self.features,), jnp.float32).astype(self.dtype)
        return y


class LayerNorm(nn.Module):
    """Weight-only LayerNorm (no bias), eps 1e-5, always computed in float32."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * weight


class TimestepEmbedder(nn.Module):
    """sigma [B] -> [B, cond]: cos-first sinusoids (256 features) then Linear-SiLU-Linear."""

    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, sigma):
        half = FREQUENCY_DIM // 2
        freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
        args = sigma.astype(jnp.float32)[:, None] * freqs[None]
        emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
        h = nn.silu(Dense(self.hidden, name="mlp_0")(emb))
        return Dense(self.hidden, name="mlp_2")(h)


def rotary_cos_sin(length: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """NeoX rotary tables [L, Dh]: inv_freq_k = 10000^(-2k/Dh), angles repeated twice."""
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def sinusoidal_positions(length: int, hidden: int) -> jax.Array:
    """Absolute positions [L, d]: sin/cos of position * 10000^(-2k/d) (Vaswani et al. 2017),
    scaled by 1/sqrt(d) to the embeddings' size. Rotary attention sees only relative
    offsets; these tell a token where it stands in its track (and, read through
    attention over the valid tokens, the track's length)."""
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, hidden, 2, dtype=jnp.float32) / hidden))
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None]
    table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return table / math.sqrt(hidden)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, H, Dh] -> x cos + rotate_half(x) sin, rotate_half([a, b]) = [-b, a]."""
    a, b = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-b, a], axis=-1)
    return x * cos[None, :, None, :].astype(x.dtype) + rotated * sin[None, :, None, :].astype(
        x.dtype
    )


def _masked_logits(spec: str, q, k, key_valid) -> jax.Array:
    """q k^T / sqrt(Dh) as [B, H, Lq, Lk] float32 (einsum `spec`), pad keys at NEG_INF."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    # accumulate and return q k^T in float32: a half-precision result would round the
    # logits (bfloat16) or overflow past 65504 (float16) before the float32 softmax
    logits = jnp.einsum(spec, q, k, preferred_element_type=jnp.float32) * scale
    if key_valid is not None:
        logits = jnp.where(key_valid[:, None, None, :], logits, NEG_INF)
    return logits


def softmax_attention(q, k, v, key_valid: jax.Array | None) -> jax.Array:
    """The definition: bidirectional softmax(q k^T / sqrt(Dh)) v per sequence, pad keys
    excluded (differentiated by autodiff; `attention` computes the same, faster).

    q [B, Lq, H, Dh], k, v [B, Lk, H, Dh]; key_valid [B, Lk] bool or None -> [B, Lq, H, Dh].
    Logits and softmax in float32 whatever the compute dtype.
    """
    logits = _masked_logits("bqhd,bkhd->bhqk", q, k, key_valid)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _attention_forward(q, k, v, key_valid):
    """(output, (e, 1/l)): e = exp(logits - rowmax) [B, H, Lq, Lk] float32, never divided;
    the output is (e v) / l with l = rowsum(e), applied per [B, Lq, H] row."""
    logits = _masked_logits("bqhd,bkhd->bhqk", q, k, key_valid)
    e = jnp.exp(logits - logits.max(-1, keepdims=True))
    inv = (1.0 / e.sum(-1)).transpose(0, 2, 1)[..., None]  # [B, Lq, H, 1]
    out = jnp.einsum("bhqk,bkhd->bqhd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out * inv).astype(v.dtype), (e, inv)


@jax.custom_vjp
def attention(q, k, v, key_valid: jax.Array | None) -> jax.Array:
    """`softmax_attention` with a hand-written backward (same shapes and dtypes).

    Neither pass materialises the normalised weights p = e / l over [B, H, Lq, Lk]: the
    forward divides the [B, Lq, H, Dh] output instead, and the backward uses
    rowsum(p * dp) = rowsum(do * o) (Dh terms, not Lk), so the softmax gradient is one
    elementwise pass ds = e / l * (dp - rowsum(do * o)); dv = e^T (do / l). On this CPU that
    cuts one attention layer's forward + backward from 63 to 53 ms at B 4, L 512, H 12
    (docs/benchmarks.md). Rows with no valid key attend uniformly, as the definition.

    Undifferentiated (sampling, evaluation), it runs head-major: q, k, v transposed to
    [B, H, L, Dh] first, which XLA:CPU lays out for its batched dots more cheaply than the
    [B, L, H, Dh] operands the backward wants (one layer's forward: 17 vs 25 ms, same
    shapes). As any `custom_vjp`, it supports reverse mode (grad, vjp, remat) but not
    forward mode (`jax.jvp`); use `softmax_attention` for that.
    """
    qh, kh, vh = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    logits = _masked_logits("bhqd,bhkd->bhqk", qh, kh, key_valid)
    e = jnp.exp(logits - logits.max(-1, keepdims=True))
    out = jnp.einsum("bhqk,bhkd->bhqd", e.astype(v.dtype), vh, preferred_element_type=jnp.float32)
    return (out / e.sum(-1, keepdims=True)).astype(v.dtype).transpose(0, 2, 1, 3)


def _attention_fwd(q, k, v, key_valid):
    out, (e, inv) = _attention_forward(q, k, v, key_valid)
    return out, (q, k, v, key_valid, out, e, inv)


def _attention_bwd(residuals, d_out):
    q, k, v, key_valid, out, e, inv = residuals
    scale = 1.0 / math.sqrt(q.shape[-1])
    d_out32 = d_out.astype(jnp.float32)
    dv = jnp.einsum("bhqk,bqhd->bkhd", e.astype(v.dtype), (d_out32 * inv).astype(v.dtype))
    dp = jnp.einsum("bqhd,bkhd->bhqk", d_out, v, preferred_element_type=jnp.float32)
    row = (d_out32 * out.astype(jnp.float32)).sum(-1).transpose(0, 2, 1)[..., None]
    coef = (inv[..., 0] * scale).transpose(0, 2, 1)[..., None]  # [B, H, Lq, 1]
    ds = e * coef * (dp - row)
    if key_valid is not None:
        ds = jnp.where(key_valid[:, None, None, :], ds, 0.0)
    ds = ds.astype(q.dtype)
    dq = jnp.einsum("bhqk,bkhd->bqhd", ds, k)
    dk = jnp.einsum("bhqk,bqhd->bkhd", ds, q)
    return dq, dk, dv.astype(v.dtype), None


attention.defvjp(_attention_fwd, _attention_bwd)


def cudnn_unusable(dtype, head_dim: int) -> str | None:
    """Why cuDNN's fused (flash) attention cannot run here, or None when it can.

    It needs a CUDA device of compute capability >= 8.0 (Ampere; V100 is 7.0), bfloat16 or
    float16 operands and a head dimension that is a multiple of 8, at most 128. Judged at
    trace time on the default backend's first device.
    """
    device = jax.devices()[0]
    version = getattr(getattr(device, "client", None), "platform_version", "")
    if device.platform != "gpu" or "cuda" not in version.lower():
        return f"no CUDA device ({device.platform})"
    capability = getattr(device, "compute_capability", "0.0")
    if tuple(int(x) for x in capability.split(".")) < (8, 0):
        return f"{device.device_kind} has compute capability {capability} < 8.0"
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return f"compute dtype {jnp.dtype(dtype).name} (cuDNN flash attention: bf16 / fp16)"
    if head_dim % 8 or head_dim > 128:
        return f"head dimension {head_dim} (cuDNN: a multiple of 8, at most 128)"
    return None


def resolve_attention(choice: str, dtype, head_dim: int) -> str:
    """`model.attention` -> the implementation that runs: "xla" (`attention`) or "cudnn"
    (`fused_attention`). auto: cudnn wherever `cudnn_unusable` finds no obstacle."""
    if choice not in ATTENTION:
        raise ValueError(f"model.attention={choice!r}; choose one of {ATTENTION}")
    if choice == "xla":
        return "xla"
    reason = cudnn_unusable(dtype, head_dim)
    if reason is None:
        return "cudnn"
    if choice == "cudnn":
        raise ValueError(f"model.attention='cudnn' cannot run here: {reason}")
    return "xla"


def sequence_lengths(valid: jax.Array | None) -> jax.Array | None:
    """valid [B, L] bool, a prefix mask (right padding) -> lengths [B] int32, at least 1.

    A row with no valid position gets length 1: its outputs are discarded by every caller
    (pad queries are never scored; a cross-attention with no valid key returns x), and
    cuDNN has no defined result for an empty row.
    """
    if valid is None:
        return None
    return jnp.maximum(valid.sum(-1, dtype=jnp.int32), 1)


def fused_attention(q, k, v, query_valid, key_valid, implementation: str = "cudnn"):
    """`jax.nn.dot_product_attention` with the padding given as sequence lengths.

    q [B, Lq, H, Dh], k, v [B, Lk, H, Dh]; query_valid [B, Lq], key_valid [B, Lk] bool
    prefix masks or None -> [B, Lq, H, Dh]. Lengths instead of a boolean mask: cuDNN then
    skips the padded blocks and no [B, H, Lq, Lk] bias is materialised. Equal to
    `attention` at every valid query of a right-padded batch whose rows have a valid key;
    pad queries come out 0. Valid masks with holes would be read as their count: every
    batch of this project is right-padded (docs/architecture.md, "padding is a prefix").
    """
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        query_seq_lengths=sequence_lengths(query_valid),
        key_value_seq_lengths=sequence_lengths(key_valid),
        implementation=implementation,
    )


def attend(q, k, v, query_valid, key_valid, choice: str = "auto") -> jax.Array:
    """Attention as `model.attention` chooses (`resolve_attention`): q [B, Lq, H, Dh],
    k, v [B, Lk, H, Dh], *_valid [B, L] bool prefix masks or None -> [B, Lq, H, Dh]."""
    if resolve_attention(choice, q.dtype, q.shape[-1]) == "cudnn":
        return fused_attention(q, k, v, query_valid, key_valid, "cudnn")
    return attention(q, k, v, key_valid)


class Dropout(nn.Module):
    """Inverted dropout whose mask of row b depends only on that row's example id.

    x [B, ...] -> x * mask / (1 - rate). With example_ids [B] int, row b's mask is drawn
    from fold_in(k, example_ids[b]), k = this layer's `dropout` rng (one per step and
    layer, the same on every device), so masks do not depend on which device or
    micro-batch holds the row. Without example_ids the whole mask comes from k (as
    flax's `nn.Dropout`). No parameters.
    """

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool, example_ids: jax.Array | None = None):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        key = self.make_rng("dropout")
        if example_ids is None:
            mask = jax.random.bernoulli(key, keep, x.shape)
        else:
            mask = jax.vmap(
                lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), keep, x.shape[1:])
            )(example_ids)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def modulate(x, shift, scale):
    """adaLN: x (1 + scale) + shift."""
    return x * (1.0 + scale) + shift


class MLP(nn.Module):
    """fc1 (d -> ratio d) -> GELU -> fc2, both with bias; GELU exact or tanh by variant."""

    hidden: int
    ratio: int = 4
    approximate_gelu: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = Dense(self.ratio * self.hidden, name="fc1", dtype=self.dtype)(x)
        h = nn.gelu(h, approximate=self.approximate_gelu)
        return Dense(self.hidden, name="fc2", dtype=self.dtype)(h)


class DDiTBlock(nn.Module):
    """adaLN-zero pre-LN transformer block with rotary self-attention.

    x [B, L, d], c [B, cond] -> [B, L, d]. adaLN_modulation gives (shift, scale, gate) for
    attention and for the MLP, zero-initialised, so a new block is the identity.
    example_ids [B] (optional) key the dropout masks per example (`Dropout`).
    """

    hidden: int
    n_heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    approximate_gelu: bool = False
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # model.attention: auto | xla | cudnn (`resolve_attention`)

    @nn.compact
    def __call__(self, x, c, rotary, valid, deterministic: bool = True, example_ids=None):
        batch, length, d = x.shape
        heads, head_dim = self.n_heads, d // self.n_heads
        mod = Dense(6 * d, zero_init=True, name="adaLN_modulation")(c)[:, None, :]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, -1)
        dropout = Dropout(self.dropout)

        def drop(y):
            return dropout(y, deterministic, example_ids)

        h = modulate(LayerNorm(name="norm1")(x), shift_msa, scale_msa)
        qkv = Dense(3 * d, use_bias=False, dtype=self.dtype, name="attn_qkv")(
            h.reshape(batch * length, d)
        )
        qkv = qkv.reshape(batch, length, 3, heads, head_dim)
        q = apply_rotary(qkv[:, :, 0], *rotary)
        k = apply_rotary(qkv[:, :, 1], *rotary)
        out = attend(q, k, qkv[:, :, 2], valid, valid, self.attention)
        out = out.reshape(batch * length, d)
        out = Dense(d, use_bias=False, dtype=self.dtype, name="attn_out")(out)
        x = x + gate_msa * drop(out.reshape(batch, length, d).astype(jnp.float32))

        h = modulate(LayerNorm(name="norm2")(x), shift_mlp, scale_mlp)
        out = MLP(d, self.mlp_ratio, self.approximate_gelu, self.dtype, name="mlp")(
            h.reshape(batch * length, d)
        )
        return x + gate_mlp * drop(out.reshape(batch, length, d).astype(jnp.float32))


class OutputLayer(nn.Module):
    """Final adaLN (shift, scale) + LayerNorm + linear to the vocabulary: [B, L, d] -> [B, L, V]."""

    vocab_size: int
    use_bias: bool = False
    zero_init: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        batch, length, d = x.shape
        mod = Dense(2 * d, zero_init=True, name="adaLN_modulation")(c)[:, None, :]
        shift, scale = jnp.split(mod, 2, -1)
        h = modulate(LayerNorm(name="norm")(x), shift, scale).reshape(batch * length, d)
        logits = Dense(
            self.vocab_size,
            use_bias=self.use_bias,
            zero_init=self.zero_init,
            dtype=self.dtype,
            name="linear",
        )(h)
        return logits.reshape(batch, length, self.vocab_size).astype(jnp.float32)


def remat_block(module_class, remat: str):
    """`module_class` as is (`remat="none"`) or under `nn.remat` (`"block"`).

    With `"block"` the backward pass recomputes each block's activations from its input
    instead of storing them: activation memory per block falls from all its intermediates
    (the [B, H, L, L] attention weights, the [B L, 4 d] MLP hidden) to its [B, L, d] input,
    for about one more forward pass of compute. Parameter names are unchanged (the lifted
    module keeps its scope). `deterministic`, a Python bool, is a static argument.
    """
    if remat not in REMAT:
        raise ValueError(f"model.remat={remat!r}; choose one of {REMAT}")
    if remat == "none":
        return module_class
    arguments = list(inspect.signature(module_class.__call__).parameters)  # self is 0
    return nn.remat(module_class, static_argnums=(arguments.index("deterministic"),))
