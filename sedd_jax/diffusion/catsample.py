"""Categorical sampling by the exponential race, without float32 bias on rare events.

`argmax_y p_y / E_y` with E_y ~ Exp(1) draws y with probability p_y / sum(p): p may be
unnormalised, and zero or negative entries are never chosen. A rare y (p_y / p_x = r
against the favourite x) wins only when E_y < r E_x, so E must be resolved down to
~r. The reference recipe E = 1e-10 - log(u + 1e-10) with float32 uniforms on a 2^-23
grid has no E below -log(1 - 2^-23) ~ 1.2e-7: events with r below ~1e-7 are cut or
never happen, and a sampler with many steps (tiny moves per step) runs at a lower
effective temperature (Zheng et al. 2024, "Masked diffusion models are secretly
time-agnostic masked models and exploit inaccurate categorical sampling").

Here the race takes `race_uniform`s: float32 values in (0, 1) built from 47 random bits,
(H + (2 L + 1) 2^-24) 2^-24 with H a 24-bit and L a 23-bit integer, so values below
2^-24 keep 23 bits of their own and every value has float32's relative precision down
to 2^-48 ~ 3.6e-15. E = -log1p(-v) keeps that relative precision for small E, and the
race is compared in logs (no overflow for large p). Everything is float32 under jit;
x64 is not needed. Taking the uniforms explicitly lets the PyTorch twin reproduce a JAX
draw bit for bit (`uniform_from_parts` is the same float32 arithmetic on both sides).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ONE_BELOW = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # 1 - 2^-24


def uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """U[0, 1) of `shape`, drawn flat and reshaped (corruption, lengths; not the race).

    The values equal `jax.random.uniform(key, shape)` (threefry counters are laid out
    flat), but XLA:CPU compiles the flat draw several times faster: about 1 s instead of
    3-9 s for a rank-3 [B, L, V] draw on the 2-core development machine.
    """
    return jax.random.uniform(key, (math.prod(shape),), dtype).reshape(shape)


def uniform_from_parts(high: jax.Array, low: jax.Array) -> jax.Array:
    """float32 (high + (2 low + 1) 2^-24) 2^-24, at most 1 - 2^-24.

    high: integers in [0, 2^24), low: integers in [0, 2^23) (any integer dtype). Both
    terms are exact in float32; their sum is rounded to nearest once, so a value keeps
    float32's relative precision wherever it lies in (0, 1), down to 2^-48.
    """
    coarse = high.astype(jnp.float32)
    fine = (low.astype(jnp.int32) * 2 + 1).astype(jnp.float32) * jnp.float32(2.0**-24)
    return jnp.minimum((coarse + fine) * jnp.float32(2.0**-24), jnp.float32(_ONE_BELOW))


def race_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 uniforms in (0, 1) for `categorical_from_uniform`: 47 bits each (two
    uint32 draws, flat for fast compilation), see `uniform_from_parts`."""
    bits = jax.random.bits(key, (2, math.prod(shape)), jnp.uint32)
    return uniform_from_parts(bits[0] >> 8, bits[1] >> 9).reshape(shape)


def categorical_from_uniform(probs: jax.Array, u: jax.Array) -> jax.Array:
    """Exponential race with given uniforms. probs, u: [..., V] -> ids [...] int32.

    E = -log1p(-u) (exact near 0, where rare events are decided); the winner is
    argmax(log p - log E) over the entries with p > 0 (id 0 when there are none).
    Computed in the dtype of `probs` and `u` (float32; the parity tests use float64).
    """
    dtype = jnp.result_type(probs, u)
    probs, u = probs.astype(dtype), u.astype(dtype)
    log_exp = jnp.log(-jnp.log1p(-u))
    positive = probs > 0
    keys = jnp.where(positive, jnp.log(jnp.where(positive, probs, 1.0)) - log_exp, -jnp.inf)
    return jnp.argmax(keys, axis=-1).astype(jnp.int32)


def sample_categorical(key: jax.Array, probs: jax.Array) -> jax.Array:
    """Draw one id per row of probs [..., V] (unnormalised) -> [...] int32."""
    return categorical_from_uniform(probs, race_uniform(key, probs.shape))


def forbid(probs: jax.Array, forbidden: jax.Array | None) -> jax.Array:
    """probs [..., V'] with the ids where `forbidden` [V] (bool) is True set to 0.

    V' <= V: the absorbing denoiser drops the last (mask) column, and the mask is never
    forbidden. None leaves probs as they are.
    """
    if forbidden is None:
        return probs
    return jnp.where(forbidden[: probs.shape[-1]], jnp.zeros((), probs.dtype), probs)
