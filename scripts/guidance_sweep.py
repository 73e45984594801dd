"""Classifier-free guidance on a pair run: how protein-specific and how valid are the
ligands at each guidance weight w?

    python scripts/guidance_sweep.py --workdir=runs/joint --weights=0,1,2,4 \
        [--proteins=12 --per_protein=8 --steps=128 --out=guidance.json]

The run must have trained the unconditional ligand mode (task.ligand_only > 0). Proteins
are the first validation proteins of the run's data (`sedd_jax.sample --proteins`, one
subprocess per weight, same seed). Reported per w: validity (MOSES: valid / all), unique
fraction of valid, within-protein and between-protein mean Tanimoto of the sampled
ligands (Morgan r=2, 2048 bits; `metrics.pairs.ligand_specificity`) and their
difference: a model whose ligands ignore the protein has within ≈ between. Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

from sedd_jax.data.fasta import FastaRecord, write_fasta
from sedd_jax.metrics import ligand
from sedd_jax.metrics.pairs import ligand_specificity
from sedd_jax.runs import open_run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--weights", default="0,1,2,4")
    parser.add_argument("--proteins", type=int, default=12)
    parser.add_argument("--per_protein", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="guidance.json")
    args = parser.parse_args()

    run = open_run(args.workdir)
    config = run.config
    whole = dict.fromkeys(run.data().val_sequences)
    # the model's protein window (as training crops)
    sequences = [s[: config.data.max_protein_len] for s in whole][: args.proteins]
    tmp = tempfile.mkdtemp(prefix="guidance-")
    fasta = os.path.join(tmp, "proteins.fasta")
    write_fasta(fasta, [FastaRecord(f"P{i}", "", s) for i, s in enumerate(sequences)])
    rows = []
    for w in (float(x) for x in args.weights.split(",")):
        out = os.path.join(tmp, f"w{w:g}.csv")
        cmd = [
            sys.executable, "-m", "sedd_jax.sample", f"--workdir={args.workdir}",
            "--task=ligand_given_protein", f"--proteins={fasta}", f"--num={args.per_protein}",
            f"--steps={args.steps}", f"--guidance={w}", f"--seed={args.seed}", f"--out={out}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        with open(out, newline="") as f:
            sampled = list(csv.DictReader(f))
        smiles = [r["smiles"] for r in sampled]
        valid = [c for c in ligand.canonical(smiles) if c is not None]
        spec = ligand_specificity([r["input_id"] for r in sampled], smiles)
        within, between = spec["within_protein"], spec["between_proteins"]
        rows.append(
            {
                "guidance": w,
                "samples": len(smiles),
                "validity": ligand.validity(smiles),
                "unique_of_valid": len(set(valid)) / len(valid) if valid else None,
                "within_protein": within,
                "between_proteins": between,
                "within_minus_between": None if within is None else within - between,
            }
        )
    print(f"{'w':>4} {'valid':>6} {'unique':>7} {'within':>7} {'between':>8} {'gap':>7}")
    for r in rows:
        cells = [r["validity"], r["unique_of_valid"], r["within_protein"], r["between_proteins"]]
        text = " ".join("   n/a" if v is None else f"{v:6.3f}" for v in cells)
        gap = r["within_minus_between"]
        print(f"{r['guidance']:4g} {text} {'n/a' if gap is None else f'{gap:+.3f}':>7}")
    with open(args.out, "w") as f:
        json.dump({"workdir": args.workdir, "proteins": len(sequences), "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
