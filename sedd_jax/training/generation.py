"""Unconditional protein generation with a trained single-track model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.data.batching import sample_lengths
from sedd_jax.diffusion.sampling import pc_sample


def make_sampler(model, graph, noise, sampling_config):
    """jit fn(params, x_init [B, L], valid [B, L], key) -> tokens [B, L].

    Pad positions (valid False) are clamped to their initial value and hidden from
    attention.
    """

    @functools.partial(jax.jit)
    def sample(params, x_init, valid, key):
        def log_score_fn(x, sigma):
            return model.apply({"params": params}, x, sigma, valid)

        return pc_sample(
            log_score_fn,
            graph,
            noise,
            x_init,
            key,
            steps=sampling_config.steps,
            predictor=sampling_config.predictor,
            eps=sampling_config.eps,
            denoise_last=sampling_config.denoise,
            clamp=~valid,
        )

    return sample


def initial_tokens(lengths: np.ndarray, max_len: int, mask_id: int, pad_id: int):
    """All-mask rows of the given lengths, padded: (x_init [B, L] int32, valid [B, L] bool)."""
    valid = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
    return np.where(valid, mask_id, pad_id).astype(np.int32), valid


def generate(sampler, params, graph, tokenizer, *, num, max_len, length, length_dist, seed):
    """Sample `num` proteins; lengths fixed (`length` > 0) or drawn from `length_dist`."""
    rng = np.random.default_rng(seed)
    if length > 0:
        lengths = np.full(num, min(length, max_len), np.int32)
    else:
        lengths = np.maximum(sample_lengths(length_dist, num, rng), 1)
    x_init, valid = initial_tokens(lengths, max_len, graph.mask_id, tokenizer.pad_id)
    tokens = sampler(params, jnp.asarray(x_init), jnp.asarray(valid), jax.random.key(seed))
    return np.asarray(tokens), valid
