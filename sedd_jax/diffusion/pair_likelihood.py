"""The likelihood bound of protein–ligand pairs per task (the bound of `likelihood.py` on the
generated track(s) of each pair), with the model's length term for the conditional tasks,
and its loop over a data set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.data.batching import iter_eval_batches
from sedd_jax.diffusion.joint import (
    CONDITIONAL_TRACKS,
    TASKS,
    joint_per_token_loss,
    task_roles,
)
from sedd_jax.diffusion.likelihood import likelihood_times, prior_term, reconstruction_term
from sedd_jax.diffusion.likelihood_stats import summarize_sequences
from sedd_jax.diffusion.parametrisation import as_dual_log_score_fn
from sedd_jax.models.length import length_nll


def pair_sequence_elbo(
    score_fn,
    graphs,
    noise,
    batch: dict,
    key: jax.Array,
    *,
    task: str,
    time_samples: int,
    length_fn=None,
) -> dict:
    """The bound of each pair's generated track(s) under `task`, per track, in nats.

    `joint`: -log p(protein, ligand) <= the sum of both tracks' terms (one sigma for both,
    as trained); `ligand_given_protein`: -log p(ligand | protein) with the protein clean;
    `*_only`: the track alone. Stratified times, K per pair; each track adds its own
    prior and reconstruction terms. Returns {"protein_nll", "protein_tokens",
    "ligand_nll", "ligand_tokens"}, each [B] (0 for a track the task does not generate);
    with `length_fn` (`joint.LengthFn`) a conditional task adds
    "<generated track>_length_log_prob" [B] = log p(L | clean context).
    """
    size = batch["protein"].shape[0]
    task_ids = jnp.full((size,), TASKS.index(task), jnp.int32)
    roles = task_roles(task_ids)
    time_key, noise_key = jax.random.split(key)
    t = likelihood_times(time_key, time_samples, size, "stratified")

    def term(carry, inputs):
        t_k, k = inputs
        p_loss, l_loss, _, _ = joint_per_token_loss(
            score_fn, graphs, noise, batch, t_k, task_ids, jax.random.fold_in(noise_key, k), task
        )
        return carry, (p_loss.sum(axis=-1), l_loss.sum(axis=-1))

    _, (p_terms, l_terms) = jax.lax.scan(term, None, (t, jnp.arange(time_samples)))
    out = {}
    for track, terms, generated in (
        ("protein", p_terms, roles.protein_generated),
        ("ligand", l_terms, roles.ligand_generated),
    ):
        graph = getattr(graphs, track)
        scored = batch[f"{track}_valid"] & generated[:, None]
        extra = prior_term(graph, noise, scored) + reconstruction_term(graph, noise, scored)
        out[f"{track}_nll"] = terms.mean(axis=0) + extra
        out[f"{track}_tokens"] = scored.sum(axis=-1).astype(jnp.float32)
    if length_fn is not None and task in CONDITIONAL_TRACKS:
        context, generated = CONDITIONAL_TRACKS[task]
        logits = length_fn(batch[context], batch[f"{context}_valid"], task)
        lengths = batch[f"{generated}_valid"].sum(axis=-1)
        out[f"{generated}_length_log_prob"] = -length_nll(logits, lengths)
    return out


def make_pair_likelihood_fn(
    model, graphs, noise, *, task: str, time_samples: int, parametrisation: str = "score"
):
    """jit fn(params, batch, key) -> `pair_sequence_elbo` dict for one task (compiled once
    per task: `pair_dataset_likelihood` pads every batch to one shape); a model with length
    heads (`model.length_head`) gives the conditional tasks their length term. A
    mean-parametrised network (masked_ce runs) is scored through RADD's map to log-scores,
    the same bound (`parametrisation.as_dual_log_score_fn`)."""
    heads = getattr(model, "length_head", False)
    mask_ids = (graphs.protein.mask_id, graphs.ligand.mask_id)

    @jax.jit
    def likelihood(params, batch, key):
        def output_fn(p, l, sigma, p_valid, l_valid, mode):
            return model.apply({"params": params}, p, l, sigma, p_valid, l_valid, mode)

        score_fn = as_dual_log_score_fn(output_fn, parametrisation, mask_ids)

        def length_fn(context, context_valid, direction):
            return model.apply(
                {"params": params}, context, context_valid, direction, method="length_logits"
            )

        return pair_sequence_elbo(
            score_fn,
            graphs,
            noise,
            batch,
            key,
            task=task,
            time_samples=time_samples,
            length_fn=length_fn if heads else None,
        )

    return likelihood


def pair_dataset_likelihood(
    likelihood_fn,
    params,
    arrays: dict,
    *,
    batch_size: int,
    seed: int,
    on_batch=None,
    keep_rows: bool = False,
):
    """Per track: `summarize_sequences` over every pair of arrays (protein, protein_valid,
    ligand, ligand_valid [N, L]) with fixed keys (one per batch of `batch_size`: another
    batch size draws other times); tracks the task does not score are left out. Where the
    likelihood fn gives a track's length term (conditional tasks with length heads) the
    summary has the full bound (`with_length_*`, `length_*`). `on_batch(rows)`, when given,
    is called after each batch with its number of real pairs (a progress bar's `update`).
    `keep_rows` adds each track's per-pair arrays under "rows" (nll, tokens and, where
    given, length_log_prob) for paired differences (`paired_difference`). The keys depend
    on (seed, batch index) only, so two tasks scored on the same arrays share their draws."""
    base = jax.random.fold_in(jax.random.key(seed), 0x9A12)
    n = len(arrays["protein"])
    parts: dict[str, list] = {}
    for b, batch in enumerate(iter_eval_batches(arrays, batch_size)):
        out = likelihood_fn(params, batch, jax.random.fold_in(base, b))
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value))
        if on_batch is not None:
            on_batch(min(batch_size, n - b * batch_size))
    result = {}
    for track in ("protein", "ligand"):
        tokens = np.concatenate(parts[f"{track}_tokens"])[:n]
        if tokens.sum() > 0:
            nll = np.concatenate(parts[f"{track}_nll"])[:n]
            length = parts.get(f"{track}_length_log_prob")
            length = None if length is None else np.concatenate(length)[:n]
            result[track] = summarize_sequences(nll, tokens, length)
            if keep_rows:
                rows = {"nll": nll, "tokens": tokens}
                if length is not None:
                    rows["length_log_prob"] = length
                result[track]["rows"] = rows
    return result
