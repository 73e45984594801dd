"""Likelihood constants and summaries both backends report (`sedd_jax.diffusion.likelihood`)."""

from __future__ import annotations

import math

T_MIN = 1e-6  # times are clipped to [T_MIN, 1]: sigma_bar(0) = 0 makes the ratio 1 / 0


def summarize(nll_sum: float, tokens: float) -> dict:
    """nats/token, bits/token and perplexity = exp(NLL bound / tokens)."""
    nats = float(nll_sum) / max(float(tokens), 1.0)
    return {
        "nats_per_token": nats,
        "bits_per_token": nats / math.log(2.0),
        "perplexity": math.exp(nats),
        "tokens": float(tokens),
    }
