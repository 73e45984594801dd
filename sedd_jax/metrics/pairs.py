"""Metrics of protein–ligand pair samples: per track, plus whether ligands follow the protein.

For `ligand_given_protein` samples (rows: protein, reference ligand, sampled ligand) a
model that ignores its protein is visible in two ways (Morgan r=2, 2048-bit Tanimoto):

* `within_protein` vs `between_proteins`: mean Tanimoto between sampled ligands of the
  same protein vs of different proteins (needs proteins with ≥ 2 samples; None when
  every protein has one, as in `write_samples`' file).
* `matched` vs `mismatched`: mean Tanimoto of each sampled ligand to its own protein's
  reference ligand vs to the reference ligands of the other proteins. `specificity_gap`
  = matched − mismatched; ≈ 0 for a model that ignores the protein.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sedd_jax.metrics import ligand, protein, stats


def ligand_specificity(
    proteins: Sequence[str],
    sampled: Sequence[str],
    reference: Sequence[str] | None = None,
    max_rows: int = 5_000,
    seed: int = 0,
) -> dict:
    """Within- vs between-protein similarity of sampled ligands, and matched vs mismatched."""
    rows = [
        (p, ligand.to_mol(s), ligand.to_mol(r) if reference is not None else None)
        for p, s, r in zip(
            proteins, sampled, reference if reference is not None else sampled, strict=True
        )
    ]
    rows = stats.subsample([r for r in rows if r[1] is not None], max_rows, seed)
    out = {
        "rows": len(rows),
        "proteins": len({r[0] for r in rows}),
        "within_protein": None,
        "between_proteins": None,
        "matched": None,
        "mismatched": None,
        "specificity_gap": None,
    }
    if len(rows) < 2:
        return out
    fps = ligand.fingerprints([r[1] for r in rows])
    sim = ligand.tanimoto_matrix(fps, fps)
    _, group = np.unique([r[0] for r in rows], return_inverse=True)
    same = group[:, None] == group[None, :]
    off_diag = ~np.eye(len(rows), dtype=bool)
    if np.any(same & off_diag):
        out["within_protein"] = float(sim[same & off_diag].mean())
    if np.any(~same):
        out["between_proteins"] = float(sim[~same].mean())
    with_ref = [i for i, r in enumerate(rows) if r[2] is not None]
    if reference is not None and len(with_ref) >= 2:
        ref_fps = ligand.fingerprints([rows[i][2] for i in with_ref])
        cross = ligand.tanimoto_matrix(fps[with_ref], ref_fps)  # [sample i, reference j]
        g = group[with_ref]
        own = g[:, None] == g[None, :]
        out["matched"] = float(cross[own].mean())
        if np.any(~own):
            out["mismatched"] = float(cross[~own].mean())
            out["specificity_gap"] = out["matched"] - out["mismatched"]
    return out


def pair_metrics(
    kind: str,
    columns: dict[str, list[str]],
    reference_proteins: Sequence[str],
    reference_smiles: Sequence[str],
    protein_kwargs: dict | None = None,
    ligand_kwargs: dict | None = None,
) -> dict:
    """Per-track metrics of a pair sample file.

    `kind` "joint": columns sequence, smiles; both tracks scored. `kind`
    "ligand_given_protein": columns sequence, reference_smiles, sampled_smiles; the
    proteins are given (not scored), the sampled ligands are, plus `ligand_specificity`.
    """
    protein_kwargs, ligand_kwargs = protein_kwargs or {}, ligand_kwargs or {}
    if kind == "joint":
        return {
            "protein": protein.protein_metrics(
                columns["sequence"], reference_proteins, **protein_kwargs
            ),
            "ligand": ligand.ligand_metrics(columns["smiles"], reference_smiles, **ligand_kwargs),
        }
    if kind == "ligand_given_protein":
        return {
            "ligand": ligand.ligand_metrics(
                columns["sampled_smiles"], reference_smiles, **ligand_kwargs
            ),
            "specificity": ligand_specificity(
                columns["sequence"], columns["sampled_smiles"], columns["reference_smiles"]
            ),
        }
    raise ValueError(f"unknown pair sample kind {kind!r}")
