"""The files a run's samples are written to: FASTA (proteins), .smi (ligands), CSV (pairs).

Plain text out of decoded strings; what is sampled and how it is decoded is the task's.
Shared by the task adapters of both backends (`sedd_jax/training/tasks/`,
`sedd_torch/training/tasks/`) and `sedd_jax.sample`, so numpy only.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from sedd_jax.data.fasta import FastaRecord, write_fasta

# pair samples: task -> (file name, CSV header, the sample fields of its columns); a
# SELFIES run appends the SELFIES column (`PAIR_SELFIES_COLUMN`)
PAIR_SAMPLE_FILES = {
    "joint": ("samples_joint.csv", ("sequence", "smiles"), ("sequence", "smiles")),
    "ligand_given_protein": (
        "samples_ligand_given_protein.csv",
        ("sequence", "reference_smiles", "sampled_smiles"),
        ("sequence", "reference_smiles", "smiles"),
    ),
}
PAIR_SELFIES_COLUMN = {"joint": "selfies", "ligand_given_protein": "sampled_selfies"}


def write_protein_samples(path: str, sequences: list[str], step: int) -> None:
    """A FASTA file: `>sample_i step=<step> len=<n>` and the sequence, per sample."""
    records = [
        FastaRecord(f"sample_{i}", f"step={step} len={len(s)}", s) for i, s in enumerate(sequences)
    ]
    write_fasta(path, records)


def write_smiles_samples(path: str, smiles: list[str], selfies: list[str] | None) -> None:
    """A .smi file of samples: `SMILES<TAB>sample_i[<TAB>SELFIES]` per line."""
    extra = selfies or [None] * len(smiles)
    with open(path, "w") as f:
        f.writelines(
            f"{s}\tsample_{i}" + (f"\t{e}" if e is not None else "") + "\n"
            for i, (s, e) in enumerate(zip(smiles, extra, strict=True))
        )


def write_pair_samples(workdir: str, task: str, samples: dict) -> str:
    """`PAIR_SAMPLE_FILES[task]` in `workdir` from a task's samples (columns of strings:
    `sequence`, `smiles`, `reference_smiles`, `selfies` or None); returns its path."""
    name, header, fields = PAIR_SAMPLE_FILES[task]
    columns = [samples[k] for k in fields]
    if samples["selfies"] is not None:
        header = (*header, PAIR_SELFIES_COLUMN[task])
        columns.append(samples["selfies"])
    path = os.path.join(workdir, name)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))
    return path


def decode_ligands(tokenizer, tokens, valid) -> list[str]:
    """The SMILES of sampled ligand rows tokens [B, L] (valid [B, L])."""
    tokens, valid = np.asarray(tokens), np.asarray(valid)
    return [tokenizer.decode(row[v]) for row, v in zip(tokens, valid, strict=True)]
