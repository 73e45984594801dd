"""Time the sample-quality metrics: 1,000 proteins of length 256 and 1,000 SMILES.

    python scripts/bench_metrics.py [--proteins=1000] [--length=256] [--smiles=1000]
        [--out=bench_metrics.json]

Proteins: half are 256-residue crops of demo proteins with 20 % random substitutions,
half i.i.d. residues; the reference is the 2,100 demo proteins (pyhmmer's test
proteome). SMILES: a seeded sample of RDKit's bundled NCI set (`Data/NCI/first_5K.smi`);
the reference is the rest of it (the demo pairs hold only 900 distinct SMILES). Each
stage is timed on its own, then the whole report.
Prints a table and writes JSON; never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from rdkit.Chem import RDConfig

from sedd_jax.data.fasta import read_fasta
from sedd_jax.data.sources import demo_path
from sedd_jax.metrics import alignment, ligand, protein, stats
from sedd_jax.metrics.samples import read_smiles_file

AA = "ACDEFGHIKLMNPQRSTVWY"


def protein_samples(reference, n, length, rng):
    long = [s for s in reference if len(s) >= length]
    out = []
    for i in range(n):
        if i % 2:
            out.append("".join(rng.choice(list(AA), length)))
            continue
        src = long[rng.integers(len(long))]
        start = rng.integers(len(src) - length + 1)
        seq = np.array(list(src[start : start + length]))
        flip = rng.random(length) < 0.2
        seq[flip] = rng.choice(list(AA), flip.sum())
        out.append("".join(seq))
    return out


def timed(rows, stage, n, fn):
    start = time.perf_counter()
    result = fn()
    rows.append({"stage": stage, "n": n, "seconds": round(time.perf_counter() - start, 2)})
    print(f"{stage:<44} {n:>7} {rows[-1]['seconds']:>9.2f}", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proteins", type=int, default=1000)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--smiles", type=int, default=1000)
    parser.add_argument("--out", default="bench_metrics.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference = [r.sequence for r in read_fasta(demo_path())]
    samples = protein_samples(reference, args.proteins, args.length, rng)
    nci = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")
    distinct = list(dict.fromkeys(read_smiles_file(nci)))
    pick = set(rng.choice(len(distinct), args.smiles, replace=False).tolist())
    smiles = [s for i, s in enumerate(distinct) if i in pick]
    ref_smiles = [s for i, s in enumerate(distinct) if i not in pick]

    rows: list[dict] = []
    print(f"{'stage':<44} {'n':>7} {'seconds':>9}")
    timed(
        rows,
        "protein: sequence statistics (gen + ref)",
        len(samples),
        lambda: (protein.sequence_statistics(samples), protein.sequence_statistics(reference)),
    )
    best = timed(
        rows,
        f"protein: novelty vs {len(reference)} ref (k-mer + parasail)",
        len(samples),
        lambda: alignment.max_identity(samples, reference)[0],
    )
    div = stats.subsample(samples, 300)
    timed(
        rows,
        "protein: diversity, 300 -> 44,850 pairs",
        len(div),
        lambda: alignment.pairwise_identities(div),
    )
    fam_ref = stats.subsample(reference, 1000)
    hits = timed(
        rows,
        "protein: family hits, phmmer vs 1,000 ref",
        len(samples),
        lambda: protein.family_hits(samples, fam_ref),
    )
    total_p = timed(
        rows,
        "protein: protein_metrics (all of the above)",
        len(samples),
        lambda: protein.protein_metrics(samples, reference),
    )
    valid = timed(
        rows,
        "ligand: parse + canonicalise",
        len(smiles),
        lambda: [c for c in ligand.canonical(smiles) if c],
    )
    timed(
        rows,
        "ligand: properties (QED, SA, ...)",
        len(valid),
        lambda: ligand.property_table([ligand.to_mol(s) for s in valid]),
    )
    timed(
        rows,
        "ligand: internal diversity (2048-bit Morgan)",
        len(valid),
        lambda: ligand.internal_diversity(ligand.fingerprints([ligand.to_mol(s) for s in valid])),
    )
    ref_fcd = stats.subsample(ref_smiles, 10_000)
    fcd = timed(
        rows,
        f"ligand: FCD vs {len(ref_fcd)} reference",
        len(valid),
        lambda: ligand.fcd_distance(valid, ref_fcd),
    )
    total_l = timed(
        rows,
        f"ligand: ligand_metrics (ref {len(ref_smiles)}, FCD)",
        len(smiles),
        lambda: ligand.ligand_metrics(smiles, ref_smiles),
    )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "rows": rows,
        "values": {
            "protein_max_identity_mean": float(best.mean()),
            "protein_family_hit_rate": hits["hit_rate"],
            "protein_composition_kl": total_p["composition_kl"],
            "ligand_fcd": fcd,
            "ligand_validity": total_l["validity"],
            "ligand_novelty": total_l["novelty"],
        },
    }
    print(json.dumps(result["values"], indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
