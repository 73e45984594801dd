"""Unconditional protein generation (twin of sedd_jax/training/generation.py)."""

from __future__ import annotations

import numpy as np
import torch

from sedd_jax.data.batching import sample_lengths
from sedd_jax.training.generation import initial_tokens
from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.sampling import pc_sample


def make_sampler(model, graph, noise, sampling_config):
    """fn(x_init [B, L], valid [B, L], rand) -> tokens [B, L].

    Pad positions (valid False) are clamped to their initial value and hidden from
    attention.
    """

    @torch.no_grad()
    def sample(x_init, valid, rand):
        model.eval()

        def log_score_fn(x, sigma):
            return model(x, sigma, valid)

        return pc_sample(
            log_score_fn,
            graph,
            noise,
            x_init,
            rand,
            steps=sampling_config.steps,
            predictor=sampling_config.predictor,
            eps=sampling_config.eps,
            denoise_last=sampling_config.denoise,
            clamp=~valid,
        )

    return sample


def generate(sampler, graph, tokenizer, *, num, max_len, length, length_dist, seed, device):
    """Sample `num` proteins; lengths fixed (`length` > 0) or drawn from `length_dist`."""
    rng = np.random.default_rng(seed)
    if length > 0:
        lengths = np.full(num, min(length, max_len), np.int32)
    else:
        lengths = np.maximum(sample_lengths(length_dist, num, rng), 1)
    x_init, valid = initial_tokens(lengths, max_len, graph.mask_id, tokenizer.pad_id)
    tokens = sampler(
        torch.as_tensor(x_init, dtype=torch.long, device=device),
        torch.as_tensor(valid, device=device),
        generator_rand(torch.Generator().manual_seed(seed), device),
    )
    return tokens.cpu().numpy().astype(np.int32), valid
