"""Baselines both backends evaluate: the training unigram."""

from __future__ import annotations

import numpy as np


def unigram_log_probs(tokens: np.ndarray, valid: np.ndarray, num_tokens: int) -> np.ndarray:
    """log p [num_tokens] of the tokens at valid positions, add-1/2 smoothed."""
    return unigram_log_p_from_counts(np.bincount(tokens[valid], minlength=num_tokens)[:num_tokens])


def unigram_log_p_from_counts(counts: np.ndarray) -> np.ndarray:
    """log p [n] of token counts [n], add-1/2 smoothed."""
    counts = np.asarray(counts, np.float64) + 0.5
    return np.log(counts / counts.sum()).astype(np.float32)
