"""Per-example randomness: a row's draws depend on its own key and nothing else.

A `key` argument of the diffusion functions is either one key for the whole batch
(evaluation, sampling, tests) or a key array [B], one key per example. Training passes
`fold_in(example_root(step), example_id)` per row (`training/step.py`), so the times,
corruptions and task choices of a row are the same whichever device, host or
micro-batch holds it: a run's trajectory does not depend on its topology.
"""

from __future__ import annotations

import jax


def is_per_example(key: jax.Array) -> bool:
    """True for a typed key array [B] (one key per example), False for one key."""
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 1


def split(key: jax.Array, num: int = 2) -> tuple[jax.Array, ...]:
    """`jax.random.split(key, num)` as a tuple, row by row for per-example keys."""
    if is_per_example(key):
        keys = jax.vmap(lambda k: jax.random.split(k, num))(key)  # [B, num]
        return tuple(keys[:, i] for i in range(num))
    return tuple(jax.random.split(key, num))


def example_keys(root: jax.Array, example_ids: jax.Array) -> jax.Array:
    """fold_in(root, example_id) for every row: [B] keys from example_ids [B] int."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, example_ids)


def draw(fn, key: jax.Array, batch: int) -> jax.Array:
    """fn(key, n) -> [n, ...] for one key; row b = fn(key_b, 1)[0] for per-example keys."""
    if is_per_example(key):
        return jax.vmap(lambda k: fn(k, 1)[0])(key)
    return fn(key, batch)


def rowwise(fn, key: jax.Array, *rows: jax.Array) -> jax.Array:
    """fn(key, *rows) with rows [B, ...]; per-example keys call it on each row alone."""
    if is_per_example(key):
        return jax.vmap(lambda k, *r: fn(k, *(x[None] for x in r))[0])(key, *rows)
    return fn(key, *rows)
