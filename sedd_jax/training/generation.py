"""Generation with trained networks: jitted samplers and their inputs.

Single track: `make_sampler` + `generate` (lengths fixed or drawn from the training
length distribution, optional prefix prompts). Pairs: `make_pair_sampler` for one task
(`joint`, `ligand_given_protein`, `protein_given_ligand`, `protein_only`, `ligand_only`);
a conditional task of a model with length heads draws the generated track's lengths with
`make_length_sampler` (p(L | context)), the others from the training distribution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.common.generation import (  # noqa: F401
    draw_lengths,
    initial_tokens,
    tokenizer_forbidden,
)
from sedd_jax.diffusion.guidance import guided_score_fn
from sedd_jax.diffusion.joint_sampling import one_generated_track, sample_pairs
from sedd_jax.diffusion.parametrisation import applied_log_score_fn, as_dual_log_score_fn
from sedd_jax.diffusion.remdm import RemdmSettings
from sedd_jax.diffusion.sampling import SAMPLERS, pc_sample
from sedd_jax.models.length import HEAD_NAMES, sample_lengths


def _controls(sampling_config) -> dict:
    """The sampling config's temperature and top_p, as both samplers apply them."""
    return {
        "temperature": sampling_config.get("temperature", 1.0),
        "top_p": sampling_config.get("top_p", 1.0),
    }


def check_pair_predictor(sampling_config, task: str) -> None:
    """Refuse what `joint_sampling.sample_pairs` would not apply: the one-track samplers (cached,
    first_hitting) on joint generation, and "remdm" at other than `RemdmSettings()` (it
    runs through `sampling.PREDICTORS` at its defaults; other settings would be silently
    ignored)."""
    if sampling_config.predictor in SAMPLERS:
        one_generated_track(task, sampling_config.predictor)
    if sampling_config.predictor != "remdm":
        return
    settings = RemdmSettings.from_config(sampling_config)
    if settings != RemdmSettings():
        raise ValueError(
            f"pair sampling takes predictor='remdm' only at its defaults {RemdmSettings()}, "
            f"not {settings}"
        )


def make_sampler(
    model, graph, noise, sampling_config, parametrisation: str = "score", return_calls=False
):
    """jit fn(params, x_init [B, L], valid [B, L], clamp [B, L], key, forbidden=None)
    -> tokens [B, L] (`return_calls`: (tokens, network calls)).

    Pads (valid False) and `clamp` positions keep their `x_init` value; pads are hidden
    from attention. `forbidden` [V] bool: ids never drawn (`tokenizer_forbidden`).
    """

    @jax.jit
    def sample(params, x_init, valid, clamp, key, forbidden=None):
        log_score_fn = applied_log_score_fn(model, params, valid, parametrisation, graph.mask_id)
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
            forbidden=forbidden,
            remdm=RemdmSettings.from_config(sampling_config),
            return_calls=return_calls,
            **_controls(sampling_config),
        )

    return sample


def make_pair_sampler(
    model,
    graphs,
    noise,
    sampling_config,
    task: str,
    guidance: float = 0.0,
    parametrisation: str = "score",
):
    """jit fn(params, protein, ligand, protein_valid, ligand_valid, key,
    forbidden=(None, None)) -> (protein, ligand).

    The context track of a conditional task is held as given; generated tracks start
    from the mask at their valid positions. The sampling config's temperature and top_p
    apply to every draw of both generated tracks, as in `make_sampler`; `forbidden` =
    (protein [Vp] bool | None, ligand [Vl] bool | None): ids never drawn. `guidance`
    w > 0: classifier-free guidance of the generated track (`diffusion/guidance.py`).
    Predictors as `check_pair_predictor` allows: cached and first_hitting for tasks that
    generate one track, remdm at its default settings. A mean-parametrised network
    (`parametrisation="mean"`, runs trained with masked_ce) is read as log-scores
    (`parametrisation.as_dual_log_score_fn`) before guidance combines them.
    """
    mask_ids = (graphs.protein.mask_id, graphs.ligand.mask_id)
    check_pair_predictor(sampling_config, task)

    @jax.jit
    def sample(params, protein, ligand, protein_valid, ligand_valid, key, forbidden=(None, None)):
        output_fn = functools.partial(model.apply, {"params": params})
        score_fn = guided_score_fn(
            as_dual_log_score_fn(output_fn, parametrisation, mask_ids), guidance
        )
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
            forbidden=tuple(forbidden),
            **_controls(sampling_config),
        )

    return sample


def has_length_head(model, task: str) -> bool:
    """Whether generation of `task` draws its lengths from the model's length head (a
    conditional task of a pair model built with `model.length_head`)."""
    return task in HEAD_NAMES and getattr(model, "length_head", False)


def make_length_sampler(model, task: str):
    """jit fn(params, context [B, Lc], context_valid [B, Lc], key) -> lengths [B] int32:
    L ~ p(L_generated | clean context) of the conditional `task`, restricted to
    1..max_len of the generated track (`models/length.sample_lengths`)."""

    @jax.jit
    def draw(params, context, context_valid, key):
        logits = model.apply(
            {"params": params}, context, context_valid, task, method="length_logits"
        )
        return sample_lengths(key, logits, min_len=1)

    return draw


def generate(
    sampler, params, graph, tokenizer, *, num, max_len, length, length_dist, seed, prefix=""
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
    forbidden = tokenizer_forbidden(graph, tokenizer)
    return generate_rows(sampler, params, x_init, valid, clamp, seed, forbidden), valid


def generate_rows(sampler, params, x_init, valid, clamp, seed: int, forbidden=None) -> np.ndarray:
    """Sample rows given as arrays [B, L]: `clamp` positions (and pads) keep `x_init`;
    `forbidden` [V] bool ids are never drawn."""
    tokens = sampler(
        params,
        jnp.asarray(x_init),
        jnp.asarray(valid),
        jnp.asarray(clamp),
        jax.random.key(seed),
        None if forbidden is None else jnp.asarray(forbidden),
    )
    return np.asarray(tokens)
