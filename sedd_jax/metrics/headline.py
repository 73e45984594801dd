"""`headline_metrics`: a few cheap sample-quality numbers for a training loop's eval hook.

    ref = prepare_reference("ligand", train_smiles)      # once (canonicalises the set)
    headline_metrics("ligand", samples, ref)              # every eval: ~ms per sample

No alignment, fingerprints or FCD: proteins get the composition KL (KL(ref ‖ gen),
nats, pseudo-count 1), unique fraction, homopolymer rate, mean length and Rep-3;
ligands get MOSES validity, uniqueness (distinct / valid) and novelty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from sedd_jax.metrics import protein, stats


@dataclasses.dataclass(frozen=True)
class HeadlineReference:
    """What the headline metrics need of a reference set, computed once."""

    kind: str
    composition: np.ndarray | None = None  # [20] smoothed residue frequencies
    canonical: frozenset[str] | None = None  # canonical reference SMILES


def prepare_reference(kind: str, reference: Sequence[str]) -> HeadlineReference:
    """Precomputes the reference side for `headline_metrics` (`kind`: protein | ligand)."""
    if kind == "protein":
        return HeadlineReference(kind, composition=protein.composition(reference))
    if kind == "ligand":
        from sedd_jax.metrics import ligand

        canonical = frozenset(c for c in ligand.canonical(reference) if c is not None)
        return HeadlineReference(kind, canonical=canonical)
    raise ValueError(f"kind must be 'protein' or 'ligand', got {kind!r}")


def headline_metrics(
    kind: str, samples: Sequence[str], reference: Sequence[str] | HeadlineReference
) -> dict[str, float]:
    """Cheap metrics of `samples` (strings) against `reference` (strings or prepared)."""
    if not isinstance(reference, HeadlineReference):
        reference = prepare_reference(kind, reference)
    if reference.kind != kind:
        raise ValueError(f"reference was prepared for {reference.kind!r}, not {kind!r}")
    samples = list(samples)
    if not samples:
        raise ValueError("no samples")
    if kind == "protein":
        gen = stats.normalise_counts(protein.composition_counts(samples)[0])
        runs = [protein.run_lengths(s).max(initial=0) for s in samples]
        return {
            "composition_kl": stats.kl_divergence(reference.composition, gen),
            "unique_fraction": len(set(samples)) / len(samples),
            "homopolymer_rate": float(np.mean(np.array(runs) >= protein.HOMOPOLYMER_RUN)),
            "length_mean": float(np.mean([len(s) for s in samples])),
            "rep_3": float(np.mean([protein.rep_n(s, 3) for s in samples])),
        }
    from sedd_jax.metrics import ligand

    valid = [c for c in ligand.canonical(samples) if c is not None]
    return {
        "validity": len(valid) / len(samples),
        "uniqueness": len(set(valid)) / len(valid) if valid else 0.0,
        "novelty": ligand.novelty(valid, set(reference.canonical)),
    }
