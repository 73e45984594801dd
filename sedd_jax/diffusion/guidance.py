"""Classifier-free guidance for the conditional tasks of one jointly trained network.

A model trained on a task mixture with `ligand_only` (or `protein_only`) > 0 gives both
the conditional score of a track and its unconditional one. Guided log-scores of the
generated track are

    log s_w = (1 + w) log s(x | context) - w log s(x)            (w = 0: the model)

which, on a position whose other tokens are fixed, samples ∝ p(y | c)^(1 + w) / p(y)^w:
targets the context makes likelier than the marginal are favoured. A heuristic beyond
the model's distribution; the likelihood bound does not describe guided samples.
"""

from __future__ import annotations

import jax.numpy as jnp

UNCONDITIONAL = {"ligand_given_protein": "ligand_only", "protein_given_ligand": "protein_only"}


def guided_score_fn(score_fn, weight: float):
    """A DualScoreFn (`diffusion.joint`) with guidance `weight` on conditional tasks.

    `weight` is a Python float: at 0 (or for tasks without a context) `score_fn` itself
    is returned, so unguided sampling is unchanged draw for draw.
    """
    if weight == 0:
        return score_fn

    def guided(protein, ligand, sigma, protein_valid, ligand_valid, mode):
        conditional = score_fn(protein, ligand, sigma, protein_valid, ligand_valid, mode)
        if mode not in UNCONDITIONAL:
            return conditional
        alone = score_fn(protein, ligand, sigma, protein_valid, ligand_valid, UNCONDITIONAL[mode])
        return tuple(
            c if c is None or u is None else _combine(c, u, weight)
            for c, u in zip(conditional, alone, strict=True)
        )

    return guided


def _combine(conditional, alone, weight):
    """(1 + w) c - w u, keeping c = -inf (an impossible move stays impossible, where the
    plain formula would give -inf + inf = NaN)."""
    guided = (1.0 + weight) * conditional - weight * alone
    return jnp.where(conditional == -jnp.inf, conditional, guided)
