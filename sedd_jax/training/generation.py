"""Generation with trained networks: jitted samplers and their inputs.

Single track: `make_sampler` + `generate` (lengths fixed or drawn from the training
length distribution, optional prefix prompts). Pairs: `make_pair_sampler` for one task
(`joint`, `ligand_given_protein`, `protein_given_ligand`, `protein_only`, `ligand_only`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.common.generation import draw_lengths, initial_tokens  # noqa: F401
from sedd_jax.diffusion.guidance import guided_score_fn
from sedd_jax.diffusion.joint import sample_pairs
from sedd_jax.diffusion.sampling import pc_sample


def make_sampler(model, graph, noise, sampling_config):
    """jit fn(params, x_init [B, L], valid [B, L], clamp [B, L], key) -> tokens [B, L].

    Pads (valid False) and `clamp` positions keep their `x_init` value; pads are hidden
    from attention.
    """

    @jax.jit
    def sample(params, x_init, valid, clamp, key):
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
            clamp=clamp | ~valid,
            temperature=sampling_config.get("temperature", 1.0),
            top_p=sampling_config.get("top_p", 1.0),
        )

    return sample


def make_pair_sampler(model, graphs, noise, sampling_config, task: str, guidance: float = 0.0):
    """jit fn(params, protein, ligand, protein_valid, ligand_valid, key) -> (protein, ligand).

    The context track of a conditional task is held as given; generated tracks start
    from the mask at their valid positions. `guidance` w > 0: classifier-free guidance
    of the generated track (`diffusion/guidance.py`).
    """

    @jax.jit
    def sample(params, protein, ligand, protein_valid, ligand_valid, key):
        score_fn = guided_score_fn(functools.partial(model.apply, {"params": params}), guidance)
        return sample_pairs(
            score_fn,
            graphs,
            noise,
            protein,
            ligand,
            protein_valid,
            ligand_valid,
            key,
            task=task,
            steps=sampling_config.steps,
            predictor=sampling_config.predictor,
            eps=sampling_config.eps,
            denoise_last=sampling_config.denoise,
        )

    return sample


def generate(
    sampler, params, graph, tokenizer, *, num, max_len, length, length_dist, seed, prefix=""
):
    """Sample `num` sequences; an optional `prefix` (residues) is held fixed at the start."""
    rng = np.random.default_rng(seed)
    prompt = tokenizer.encode(prefix) if prefix else np.zeros((0,), np.int32)
    if len(prompt) >= max_len:
        raise ValueError(f"prefix of {len(prompt)} residues leaves no room in max_len={max_len}")
    lengths = np.maximum(draw_lengths(num, length, max_len, length_dist, rng), len(prompt) + 1)
    x_init, valid = initial_tokens(lengths, max_len, graph.mask_id, tokenizer.pad_id)
    x_init[:, : len(prompt)] = prompt
    clamp = np.zeros_like(valid)
    clamp[:, : len(prompt)] = True
    return generate_rows(sampler, params, x_init, valid, clamp, seed), valid


def generate_rows(sampler, params, x_init, valid, clamp, seed: int) -> np.ndarray:
    """Sample rows given as arrays [B, L]: `clamp` positions (and pads) keep `x_init`."""
    tokens = sampler(
        params, jnp.asarray(x_init), jnp.asarray(valid), jnp.asarray(clamp), jax.random.key(seed)
    )
    return np.asarray(tokens)
