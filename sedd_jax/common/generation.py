"""Sampling inputs both backends build the same way: lengths and padded start rows."""

from __future__ import annotations

import numpy as np

from sedd_jax.data.batching import sample_lengths


def initial_tokens(lengths: np.ndarray, max_len: int, mask_id: int | None, pad_id: int):
    """Rows of the given lengths, padded: (x_init [B, L] int32, valid [B, L] bool).

    Valid positions hold the mask id (pad for graphs without one); samplers replace
    every unclamped valid position by a draw from the graph's limit anyway.
    """
    valid = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
    fill = pad_id if mask_id is None else mask_id
    return np.where(valid, fill, pad_id).astype(np.int32), valid


def draw_lengths(num: int, length: int, max_len: int, length_dist, rng) -> np.ndarray:
    """[num] lengths: `length` when > 0, else draws from the training distribution."""
    if length > 0:
        return np.full(num, min(length, max_len), np.int32)
    return np.maximum(sample_lengths(np.asarray(length_dist), num, rng), 1)
