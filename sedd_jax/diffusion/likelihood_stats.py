"""Statistics over per-sequence likelihood bounds (numpy): the ratio estimator's standard
error, the summary of a data set's bounds, and the paired difference of two bounds on the
same sequences.
"""

from __future__ import annotations

import math

import numpy as np

from sedd_jax.common.likelihood import summarize


def ratio_standard_error(nll: np.ndarray, tokens: np.ndarray) -> float:
    """Delta-method standard error of R = sum(nll) / sum(tokens) over N sequences:
    sqrt(sum_i (nll_i - R tokens_i)^2 / (N (N - 1))) / mean(tokens). NaN for N < 2.

    It counts every source of spread between sequences, the Monte Carlo error of each
    sequence's bound included (that error is independent across sequences).
    """
    nll, tokens = np.asarray(nll, np.float64), np.asarray(tokens, np.float64)
    n = len(nll)
    if n < 2:
        return float("nan")
    ratio = nll.sum() / tokens.sum()
    residual = nll - ratio * tokens
    return float(np.sqrt((residual**2).sum() / (n * (n - 1))) / tokens.mean())


def summarize_sequences(nll, tokens, length_log_prob=None) -> dict:
    """`summarize` plus its standard error; with `length_log_prob` [N] (log p_hat(L_i))
    also the full bound -log p(x0) <= bound - log p_hat(L), per token and per sequence."""
    nll, tokens = np.asarray(nll, np.float64), np.asarray(tokens, np.float64)
    out = summarize(nll.sum(), tokens.sum())
    se = ratio_standard_error(nll, tokens)
    out.update(
        nats_per_token_se=se,
        bits_per_token_se=se / math.log(2.0),
        sequences=len(nll),
        nats_per_sequence=float(nll.mean()),
    )
    if length_log_prob is not None:
        full = nll - np.asarray(length_log_prob, np.float64)
        out.update(
            with_length_nats_per_token=float(full.sum() / max(tokens.sum(), 1.0)),
            with_length_nats_per_token_se=ratio_standard_error(full, tokens),
            with_length_nats_per_sequence=float(full.mean()),
            length_nats_per_sequence=float(-np.mean(length_log_prob)),
        )
    return out


def paired_difference(alone, given, tokens) -> dict:
    """Mean of alone - given [N] (two bounds on the same N sequences) per sequence and per
    token of `tokens` [N], each with its standard error over the sequences: the paired
    error, smaller than that of two independent means when the bounds share their draws."""
    d = np.asarray(alone, np.float64) - np.asarray(given, np.float64)
    tokens = np.asarray(tokens, np.float64)
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "nats_per_sequence": float(d.mean()),
        "nats_per_sequence_se": se,
        "nats_per_token": float(d.sum() / max(tokens.sum(), 1.0)),
        "nats_per_token_se": ratio_standard_error(d, tokens),
        "sequences": n,
    }
