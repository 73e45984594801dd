"""Dual-track parity: the same weights give the same log-scores in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import LIGAND_V, dual_pair, example_inputs, max_error, t

TOL = 1e-5


# every mode once, each variant on two (a mode is a separate computation to compile)
# (and absolute positions with a sigma-free network once)
@pytest.mark.parametrize(
    ("variant", "modes", "overrides"),
    [
        ("protlig", ("joint", "ligand_given_protein"), {}),
        ("sedd", ("protein_given_ligand", "protein_only", "ligand_only"), {}),
        ("protlig", ("joint",), {"absolute_positions": True, "time_conditioning": False}),
    ],
)
@pytest.mark.slow
def test_dual_track_log_scores_match_in_every_mode(variant, modes, overrides, record):
    model, params, twin = dual_pair(variant, **overrides)
    protein, sigma, protein_valid = example_inputs(length=13, seed=1)
    ligand = np.random.default_rng(2).integers(0, LIGAND_V, size=(3, 9)).astype(np.int32)
    ligand_valid = np.arange(9)[None] < np.array([9, 0, 5])[:, None]  # row 1: no ligand
    worst = 0.0
    for mode in modes:
        expected = model.apply(
            {"params": params}, protein, ligand, sigma, protein_valid, ligand_valid, mode=mode
        )
        with torch.no_grad():
            got = twin(t(protein), t(ligand), t(sigma), t(protein_valid), t(ligand_valid), mode)
        for e, g in zip(expected, got, strict=True):
            assert (e is None) == (g is None)
            if e is not None:
                worst = max(worst, max_error(e, g.numpy()))
    record(f"log-scores max|d|/(1+max|s|), {len(modes)} modes", worst, TOL)
    assert worst <= TOL
