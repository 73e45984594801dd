"""Generation with a trained single-track twin (twin of sedd_jax/training/generation.py).

`initial_tokens` and `draw_lengths` are shared with sedd_jax (`sedd_jax.common`); pairs
are sampled with `diffusion/joint_sampling.sample_pairs` (`training/tasks.PairTrack`), the
generated track of a conditional task with lengths from `make_length_sampler` where the
model has length heads.
"""

from __future__ import annotations

import numpy as np
import torch

from sedd_jax.common.generation import draw_lengths, initial_tokens, tokenizer_forbidden
from sedd_jax.common.remdm import RemdmSettings
from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.sampling import pc_sample
from sedd_torch.models.length import sample_lengths


def make_sampler(model, graph, noise, sampling_config):
    """fn(x_init [B, L], valid [B, L], clamp [B, L], rand, forbidden=None) -> tokens [B, L].

    Pads (valid False) and `clamp` positions keep their `x_init` value; pads are hidden
    from attention. The sampling config's temperature and top_p apply to every draw;
    `forbidden` [V] bool: ids never drawn (`tokenizer_forbidden`).
    """

    @torch.no_grad()
    def sample(x_init, valid, clamp, rand, forbidden=None):
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
            clamp=clamp | ~valid,
            temperature=sampling_config.get("temperature", 1.0),
            top_p=sampling_config.get("top_p", 1.0),
            forbidden=forbidden,
            remdm=RemdmSettings.from_config(sampling_config),
        )

    return sample


def make_length_sampler(model, task: str):
    """fn(context [B, Lc], context_valid [B, Lc], generator) -> lengths [B] long:
    L ~ p(L_generated | clean context) of the conditional `task`, L in 1..max_len."""

    @torch.no_grad()
    def draw(context, context_valid, generator=None):
        model.eval()
        logits = model.length_logits(context, context_valid, task)
        return sample_lengths(generator, logits, min_len=1)

    return draw


def generate(
    sampler, graph, tokenizer, *, num, max_len, length, length_dist, seed, device, prefix=""
):
    """Sample `num` sequences; an optional `prefix` (residues) is held fixed at the start.
    The tokenizer's special ids are never drawn."""
    rng = np.random.default_rng(seed)
    prompt = tokenizer.encode(prefix) if prefix else np.zeros((0,), np.int32)
    if len(prompt) >= max_len:
        raise ValueError(f"prefix of {len(prompt)} residues leaves no room in max_len={max_len}")
    lengths = np.maximum(draw_lengths(num, length, max_len, length_dist, rng), len(prompt) + 1)
    x_init, valid = initial_tokens(lengths, max_len, graph.mask_id, tokenizer.pad_id)
    x_init[:, : len(prompt)] = prompt
    clamp = np.zeros_like(valid)
    clamp[:, : len(prompt)] = True

    def tensor(a):
        return torch.as_tensor(a, device=device)

    tokens = sampler(
        tensor(x_init).long(),
        tensor(valid),
        tensor(clamp),
        generator_rand(torch.Generator().manual_seed(seed), device),
        tensor(tokenizer_forbidden(graph, tokenizer)),
    )
    return tokens.cpu().numpy().astype(np.int32), valid
