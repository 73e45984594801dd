"""Sample-quality metrics of generated SMILES (RDKit, plus `fcd` for the Fréchet ChemNet distance).

MOSES definitions (Polykovskiy et al., 2020; `moses/metrics/metrics.py`), so numbers
compare with published tables:

* validity = RDKit-parsable (and sanitisable) samples / *all* samples; an empty string
  is invalid.
* unique@k = distinct canonical SMILES among the first k *valid* samples / k (reported
  with the k actually available when fewer than k are valid).
* novelty = valid distinct canonical SMILES not in the reference's canonical set /
  valid distinct canonical SMILES.
* IntDiv1 (MOSES) = 1 − mean Tanimoto over *all* ordered pairs of valid samples, self
  pairs included, Morgan radius 2, 1024 bits. Also reported: `internal_diversity` =
  1 − mean over distinct pairs i ≠ j, Morgan radius 2, 2048 bits.
* QED (`rdkit.Chem.QED.qed`), SA score (Ertl & Schuffenhauer, RDKit Contrib `sascorer`),
  Lipinski violations (MW > 500, Crippen logP > 5, HBD > 5, HBA > 10), property
  distributions (MW, logP, TPSA, rings, QED, SA) generated vs reference: KS and W1.
* FCD (`fcd` 1.2.2, ChemNet activations of the valid canonical samples vs the
  reference, both capped at `fcd_size`, default 10,000; FCD falls with sample size,
  so the sizes are reported and must match to compare numbers).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, Lipinski, RDConfig, rdFingerprintGenerator
from rdkit.Chem import rdMolDescriptors as rdmd

from sedd_jax.metrics import stats

FCD_MAX_CHARS = 349  # ChemNet pads to 350 tokens (with the end token); longer ones are dropped
PROPERTIES = ("mw", "logp", "tpsa", "rings", "qed", "sa")
UNIQUE_AT = (1_000, 10_000)


def to_mol(smiles: str):
    """RDKit molecule, or None when `smiles` is empty or does not parse and sanitise."""
    if not smiles:
        return None
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(smiles)


def canonical(smiles: Sequence[str]) -> list[str | None]:
    """Canonical SMILES of each input, None for invalid ones."""
    out = []
    for s in smiles:
        mol = to_mol(s)
        out.append(None if mol is None else Chem.MolToSmiles(mol))
    return out


def validity(smiles: Sequence[str]) -> float:
    """MOSES validity: valid samples / all samples."""
    if not smiles:
        raise ValueError("no SMILES")
    return sum(to_mol(s) is not None for s in smiles) / len(smiles)


def unique_at(valid_canonical: Sequence[str], k: int) -> tuple[float, int]:
    """MOSES unique@k over the first k valid canonical SMILES; returns (value, k used)."""
    head = list(valid_canonical[:k])
    if not head:
        return 0.0, 0
    return len(set(head)) / len(head), len(head)


def novelty(valid_canonical: Sequence[str], reference_canonical: set[str]) -> float:
    """MOSES novelty: distinct valid samples absent from the reference / distinct valid samples."""
    distinct = set(valid_canonical)
    if not distinct:
        return 0.0
    return len(distinct - reference_canonical) / len(distinct)


@functools.lru_cache(maxsize=4)
def _morgan(radius: int, bits: int):
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)


def fingerprints(mols: Sequence, radius: int = 2, bits: int = 2048) -> np.ndarray:
    """Morgan bit vectors `[N, bits]` uint8."""
    gen = _morgan(radius, bits)
    if not len(mols):
        return np.zeros((0, bits), dtype=np.uint8)
    return np.stack([gen.GetFingerprintAsNumPy(m).astype(np.uint8) for m in mols])


def tanimoto_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto |a ∧ b| / |a ∨ b| of bit vectors `[N, D]` × `[M, D]` -> `[N, M]` (0/0 = 0)."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inter = a32 @ b32.T
    union = a32.sum(1)[:, None] + b32.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def mean_tanimoto(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Mean Tanimoto over all pairs of rows of `a` and `b`, in blocks (memory O(chunk · M))."""
    total = 0.0
    for start in range(0, len(a), chunk):
        total += float(tanimoto_matrix(a[start : start + chunk], b).sum())
    return total / (len(a) * len(b))


def internal_diversity(fps: np.ndarray, include_self: bool = False) -> float | None:
    """1 − mean pairwise Tanimoto; `include_self=True` is MOSES IntDiv1 (diagonal kept)."""
    n = len(fps)
    if n < 2:
        return None
    mean_all = mean_tanimoto(fps, fps)
    if include_self:
        return 1.0 - mean_all
    diag = np.where(fps.sum(1) > 0, 1.0, 0.0).sum()
    return 1.0 - (mean_all * n * n - diag) / (n * (n - 1))


@functools.lru_cache(maxsize=1)
def _sascorer():
    path = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module("sascorer")


def properties(mol) -> dict:
    """MW, Crippen logP, TPSA, ring count, QED, SA score, H-bond donors/acceptors."""
    return {
        "mw": Descriptors.MolWt(mol),
        "logp": Crippen.MolLogP(mol),
        "tpsa": rdmd.CalcTPSA(mol),
        "rings": rdmd.CalcNumRings(mol),
        "qed": QED.qed(mol),
        "sa": _sascorer().calculateScore(mol),
        "hbd": Lipinski.NumHDonors(mol),
        "hba": Lipinski.NumHAcceptors(mol),
    }


def lipinski_violations(p: dict) -> int:
    """Number of Lipinski rule-of-five violations of a `properties` dict."""
    return int(p["mw"] > 500) + int(p["logp"] > 5) + int(p["hbd"] > 5) + int(p["hba"] > 10)


def property_table(mols: Sequence, progress: bool = False, desc: str = "properties") -> dict:
    """Columns of `properties` plus `lipinski_violations`, as numpy arrays `[N]`."""
    rows = mols
    if progress:
        from tqdm import tqdm

        rows = tqdm(mols, desc=desc, unit="mol")
    table = [properties(m) for m in rows]
    keys = list(table[0]) if table else [*PROPERTIES, "hbd", "hba"]
    out = {k: np.array([r[k] for r in table], dtype=np.float64) for k in keys}
    out["lipinski_violations"] = np.array([lipinski_violations(r) for r in table], np.float64)
    return out


@functools.lru_cache(maxsize=1)
def _chemnet():
    import fcd

    return fcd.load_ref_model()


def chemnet_activations(smiles: Sequence[str], torch_threads: int | None = 1) -> np.ndarray:
    """ChemNet penultimate activations `[N, 512]` (CPU, in-process).

    `torch_threads` (default 1; None keeps torch's setting): on the shared 2-core
    development machine under load, 1 thread took 4 s per 1,000 SMILES and 2 threads 38 s.
    """
    import fcd
    import torch

    previous = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fcd 1.2.2 uses np.row_stack
            return fcd.get_predictions(_chemnet(), list(smiles), n_jobs=0, device="cpu")
    finally:
        torch.set_num_threads(previous)


def fcd_distance(smiles_a: Sequence[str], smiles_b: Sequence[str]) -> float:
    """Fréchet ChemNet distance ‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) (fcd 1.2.2).

    SMILES longer than `FCD_MAX_CHARS` are left out, so every input is padded to
    ChemNet's 350 positions (a longer pad changes the activations of all molecules).
    """
    import fcd

    smiles_a = [s for s in smiles_a if len(s) <= FCD_MAX_CHARS]
    smiles_b = [s for s in smiles_b if len(s) <= FCD_MAX_CHARS]
    if len(smiles_a) < 2 or len(smiles_b) < 2:
        raise ValueError(f"FCD needs at least 2 molecules of <= {FCD_MAX_CHARS} characters a side")
    act_a, act_b = chemnet_activations(smiles_a), chemnet_activations(smiles_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqrtm(disp=False) in fcd 1.2.2
        return float(
            fcd.calculate_frechet_distance(
                act_a.mean(0), np.cov(act_a.T), act_b.mean(0), np.cov(act_b.T)
            )
        )


def ligand_metrics(
    samples: Sequence[str],
    reference: Sequence[str],
    *,
    max_reference: int = 5_000,
    fcd_size: int | None = 10_000,
    diversity_size: int = 10_000,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """All ligand metrics of `samples` against `reference` SMILES (see the module docstring).

    Novelty uses the whole reference; properties and FCD use a seeded subset of at most
    `max_reference` (and `fcd_size`) reference molecules; `fcd_size=None` skips FCD.
    """
    samples = list(samples)
    mols = [to_mol(s) for s in samples]
    valid = [m for m in mols if m is not None]
    valid_can = [Chem.MolToSmiles(m) for m in valid]
    ref_can_all = [c for c in canonical(reference) if c is not None]
    ref_set = set(ref_can_all)
    ref_sub = stats.subsample(ref_can_all, max_reference, seed)
    ref_mols = [to_mol(s) for s in ref_sub]
    out = {
        "count": len(samples),
        "valid_count": len(valid),
        "validity": len(valid) / len(samples) if samples else 0.0,
        "novelty": novelty(valid_can, ref_set),
        "unique_fraction": len(set(valid_can)) / len(valid_can) if valid_can else 0.0,
        "reference_size": len(ref_set),
        "reference_property_size": len(ref_sub),
    }
    for k in UNIQUE_AT:
        out[f"unique@{k}"], out[f"unique@{k}_n"] = unique_at(valid_can, k)
    div_mols = stats.subsample(valid, diversity_size, seed)
    out["internal_diversity"] = internal_diversity(fingerprints(div_mols, 2, 2048))
    out["intdiv1_moses"] = internal_diversity(fingerprints(div_mols, 2, 1024), include_self=True)
    out["diversity_size"] = len(div_mols)
    gen_props = property_table(valid, progress, "ligand properties (samples)")
    ref_props = property_table(ref_mols, progress, "ligand properties (reference)")
    out["properties"] = {
        k: stats.compare_samples(gen_props[k], ref_props[k])
        for k in (*PROPERTIES, "lipinski_violations")
    }
    out["qed_mean"] = out["properties"]["qed"]["generated_mean"]
    out["sa_mean"] = out["properties"]["sa"]["generated_mean"]
    viol = gen_props["lipinski_violations"]
    out["lipinski_violations_mean"] = float(viol.mean()) if len(viol) else None
    out["lipinski_pass_fraction"] = float(np.mean(viol <= 1)) if len(viol) else None
    out["fcd"] = None
    if fcd_size and len(valid_can) >= 2 and len(ref_can_all) >= 2:
        gen_f = stats.subsample(valid_can, fcd_size, seed)
        ref_f = stats.subsample(ref_can_all, fcd_size, seed)
        out["fcd"] = fcd_distance(gen_f, ref_f)
        out["fcd_sizes"] = [len(gen_f), len(ref_f)]
    out["_property_values"] = {
        "generated": {k: gen_props[k].tolist() for k in PROPERTIES},
        "reference": {k: ref_props[k].tolist() for k in PROPERTIES},
    }
    return out
