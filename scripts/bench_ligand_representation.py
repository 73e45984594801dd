"""SMILES vs SELFIES ligands of trained pair runs: sample validity and bits per molecule.

For each run directory (`python -m sedd_jax.train --config=configs/joint.py` and
`configs/joint_selfies.py`): the ligand metrics (validity, uniqueness, novelty against the
training ligands; `metrics/headline.py`) of `samples_joint.csv` and
`samples_ligand_given_protein.csv`, and the ligand loss of the EMA weights on the whole
validation split with `--time_samples` fixed time draws per pair, in nats/token and in
bits per molecule (nats/token x ligand tokens per validation molecule / ln 2), so that
two tokenizations of the same molecules compare. Prints a table and writes JSON.

    python scripts/bench_ligand_representation.py runs/joint runs/joint_selfies --out=x.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os

import numpy as np

from sedd_jax.runs import open_run
from sedd_jax.training.ligand_samples import ligand_metrics
from sedd_jax.training.tasks import PairTrack

SAMPLE_FILES = {
    "joint": ("samples_joint.csv", "smiles"),
    "ligand_given_protein": ("samples_ligand_given_protein.csv", "sampled_smiles"),
}


def measure(workdir: str, time_samples: int) -> dict:
    run = open_run(workdir)
    params, step = run.params("ema"), run.step
    config = run.config.copy_and_resolve_references()
    config.eval.time_samples, config.eval.max_batches = time_samples, 0
    config.eval.sample_metrics_num = 0
    task = PairTrack(config)
    out = {
        "workdir": workdir,
        "step": step,
        "representation": task.data.ligand_tokenizer.representation,
        "randomize_smiles": bool(config.data.get("randomize_smiles", False)),
        "ligand_vocab": task.data.ligand_tokenizer.vocab_size,
    }
    tokens = task.data.val["ligand_valid"].sum(axis=1)
    out["val_molecules"] = int(len(tokens))
    out["tokens_per_molecule"] = float(tokens.mean())
    losses = task.evaluate(params)
    for name in ("joint", "ligand_given_protein"):
        nats = losses[f"{name}/loss_ligand"]
        out[f"{name}/nats_per_token"] = nats
        out[f"{name}/bits_per_molecule"] = nats * out["tokens_per_molecule"] / math.log(2)
        path = os.path.join(workdir, SAMPLE_FILES[name][0])
        with open(path) as f:
            smiles = [row[SAMPLE_FILES[name][1]] for row in csv.DictReader(f)]
        out[f"{name}/samples"] = len(smiles)
        for k, v in ligand_metrics(smiles, task._reference).items():
            out[f"{name}/{k}"] = v
        out[f"{name}/heavy_atoms"] = mean_heavy_atoms(smiles)
    out["val_heavy_atoms"] = mean_heavy_atoms(task.data.val_smiles)
    return out


def mean_heavy_atoms(smiles: list[str]) -> float:
    """Mean heavy-atom count of the valid molecules (SELFIES makes every string one, so
    size tells whether samples resemble the training ligands)."""
    from sedd_jax.metrics.ligand import to_mol

    mols = [m for m in map(to_mol, smiles) if m is not None]
    return float(np.mean([m.GetNumHeavyAtoms() for m in mols])) if mols else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--time_samples", type=int, default=8)
    parser.add_argument("--out", default="bench_ligand_representation.json")
    args = parser.parse_args()
    rows = [measure(w, args.time_samples) for w in args.workdirs]
    print(
        "| run | ligands | task | samples | validity | uniqueness | novelty | "
        "heavy atoms (val) | nats/token | tokens/molecule | bits/molecule |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rep = r["representation"] + (" + random SMILES" if r["randomize_smiles"] else "")
        for name in SAMPLE_FILES:
            print(
                f"| {os.path.basename(r['workdir'].rstrip('/'))} | {rep} | {name} | "
                f"{r[f'{name}/samples']} | {r[f'{name}/ligand_validity']:.3f} | "
                f"{r[f'{name}/ligand_uniqueness']:.3f} | {r[f'{name}/ligand_novelty']:.3f} | "
                f"{r[f'{name}/heavy_atoms']:.1f} ({r['val_heavy_atoms']:.1f}) | "
                f"{r[f'{name}/nats_per_token']:.3f} | {r['tokens_per_molecule']:.1f} | "
                f"{r[f'{name}/bits_per_molecule']:.1f} |"
            )
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1, default=np.asarray)


if __name__ == "__main__":
    main()
