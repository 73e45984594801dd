"""Categorical sampling by the exponential race.

`argmax_y p_y / E_y` with E_y ~ Exp(1) draws y with probability p_y / sum(p): p may be
unnormalised, and zero or negative entries are never chosen. Taking the uniforms
explicitly lets the PyTorch twin reproduce a JAX draw bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_TINY = 1e-10


def categorical_from_uniform(probs: jax.Array, u: jax.Array) -> jax.Array:
    """Exponential race with given uniforms. probs, u: [..., V] -> ids [...] int32.

    E = 1e-10 - log(u + 1e-10), as the reference, so u = 0 is safe.
    """
    gumbel_exp = _TINY - jnp.log(u + _TINY)
    return jnp.argmax(probs / gumbel_exp, axis=-1).astype(jnp.int32)


def sample_categorical(key: jax.Array, probs: jax.Array) -> jax.Array:
    """Draw one id per row of probs [..., V] (unnormalised) -> [...] int32."""
    u = jax.random.uniform(key, probs.shape, dtype=probs.dtype)
    return categorical_from_uniform(probs, u)
