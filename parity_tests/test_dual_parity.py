"""Dual-track parity: the same weights give the same log-scores in every mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from twin_helpers import example_inputs, max_error, random_like, t

from sedd_jax import conversion
from sedd_jax.models.dual import DualTrackSEDD
from sedd_torch.models.dual import DualTrackSEDD as TorchDual

TOL = 1e-5
PROTEIN_V, LIGAND_V = 26, 40


def dual_pair(variant):
    kwargs = dict(
        protein_vocab=PROTEIN_V,
        ligand_vocab=LIGAND_V,
        hidden=64,
        n_blocks_protein=2,
        n_blocks_ligand=1,  # unequal depths: the protein's first block runs alone
        n_heads=4,
        cond_dim=32,
        dropout=0.0,
        variant=variant,
    )
    model = DualTrackSEDD(**kwargs)
    protein, ligand = jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), protein, ligand, jnp.ones((1,)), mode="joint")
    )["params"]
    params = random_like(shapes, seed=3)
    twin = TorchDual(**kwargs).eval()
    arrays = conversion.with_rotary_buffer(conversion.flax_to_torch(params, variant), 16)
    assert list(arrays) == list(twin.state_dict())  # names and registration order
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return model, params, twin


@pytest.mark.parametrize("variant", ["protlig", "sedd"])
def test_dual_track_log_scores_match_in_every_mode(variant, record):
    model, params, twin = dual_pair(variant)
    protein, sigma, protein_valid = example_inputs(length=13, seed=1)
    ligand = np.random.default_rng(2).integers(0, LIGAND_V, size=(3, 9)).astype(np.int32)
    ligand_valid = np.arange(9)[None] < np.array([9, 0, 5])[:, None]  # row 1: no ligand
    worst = 0.0
    for mode in ("joint", "ligand_given_protein", "protein_given_ligand", "protein_only"):
        expected = model.apply(
            {"params": params}, protein, ligand, sigma, protein_valid, ligand_valid, mode=mode
        )
        with torch.no_grad():
            got = twin(t(protein), t(ligand), t(sigma), t(protein_valid), t(ligand_valid), mode)
        for e, g in zip(expected, got, strict=True):
            assert (e is None) == (g is None)
            if e is not None:
                worst = max(worst, max_error(e, g.numpy()))
    record("log-scores max|d|/(1+max|s|), 4 modes", worst, TOL)
    assert worst <= TOL
