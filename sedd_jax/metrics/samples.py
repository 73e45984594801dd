"""Reading sample and reference files for the report (numpy only, no jax).

Sample files (what `write_samples` writes, or the user's):
  * FASTA (`>` first) -> kind "protein"
  * CSV with columns sequence,smiles -> "joint"
  * CSV with columns sequence,reference_smiles,sampled_smiles -> "ligand_given_protein"
  * `.smi` / `.txt`: one SMILES per line (first whitespace-separated field) -> "ligand"

Reference files: FASTA (proteins), `.smi` (ligands), or a CSV/TSV pair table whose
protein column is one of `PROTEIN_COLUMNS` and ligand column one of `SMILES_COLUMNS`.
"""

from __future__ import annotations

import csv
import gzip
import os

from sedd_jax.data.fasta import is_gzip, read_fasta
from sedd_jax.data.protein import clean_sequence

PAIR_KINDS = {
    ("sequence", "smiles"): "joint",
    ("sequence", "reference_smiles", "sampled_smiles"): "ligand_given_protein",
}
PROTEIN_COLUMNS = ("sequence", "aa_sequence", "protein", "target_sequence")
SMILES_COLUMNS = ("smiles", "ligand", "canonical_smiles", "compound_iso_smiles")
SMILES_SUFFIXES = (".smi", ".smiles", ".txt")


def _open_text(path: str):
    return (
        gzip.open(path, "rt", encoding="utf-8") if is_gzip(path) else open(path, encoding="utf-8")
    )


def _first_char(path: str) -> str:
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                return line.lstrip()[0]
    raise ValueError(f"{path}: empty file")


def _bare(path: str) -> str:
    name = path.lower()
    return name[:-3] if name.endswith(".gz") else name


def read_smiles_file(path: str) -> list[str]:
    """First field of every non-blank line (a header line `smiles` is skipped)."""
    with _open_text(path) as f:
        out = [line.split()[0] for line in f if line.strip()]
    return out[1:] if out and out[0].lower() == "smiles" else out


def _read_csv(path: str) -> tuple[list[str], list[dict]]:
    sep = "\t" if _bare(path).endswith((".tsv", ".tab")) else ","
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=sep)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_samples(path: str) -> tuple[str, dict[str, list[str]]]:
    """(kind, columns) of a sample file; columns map a column name to its values."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: sample file not found")
    if _first_char(path) == ">":
        return "protein", {"sequence": [clean_sequence(r.sequence) for r in read_fasta(path)]}
    if _bare(path).endswith(SMILES_SUFFIXES):
        return "ligand", {"smiles": read_smiles_file(path)}
    header, rows = _read_csv(path)
    for columns, kind in PAIR_KINDS.items():
        if tuple(header) == columns:
            data = {c: [(row[c] or "").strip() for row in rows] for c in columns}
            data["sequence"] = [clean_sequence(s) for s in data["sequence"]]
            return kind, data
    raise ValueError(
        f"{path}: not a FASTA, .smi or sample CSV; CSV header {header} is none of "
        f"{[list(c) for c in PAIR_KINDS]}"
    )


def _pick(header: list[str], names: tuple[str, ...]) -> str | None:
    lower = {h.lower(): h for h in header}
    return next((lower[n] for n in names if n in lower), None)


def read_reference(path: str) -> dict[str, list[str]]:
    """{"proteins": [...], "smiles": [...]} of a reference file (either may be empty)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: reference file not found")
    if _first_char(path) == ">":
        return {"proteins": [clean_sequence(r.sequence) for r in read_fasta(path)], "smiles": []}
    if _bare(path).endswith(SMILES_SUFFIXES):
        return {"proteins": [], "smiles": read_smiles_file(path)}
    header, rows = _read_csv(path)
    p_col, s_col = _pick(header, PROTEIN_COLUMNS), _pick(header, SMILES_COLUMNS)
    if p_col is None and s_col is None:
        raise ValueError(
            f"{path}: reference CSV needs a protein column ({', '.join(PROTEIN_COLUMNS)}) "
            f"or a SMILES column ({', '.join(SMILES_COLUMNS)}); it has {header}"
        )
    proteins = [clean_sequence(r[p_col]) for r in rows if r[p_col]] if p_col else []
    smiles = [r[s_col].strip() for r in rows if r[s_col]] if s_col else []
    return {"proteins": list(dict.fromkeys(proteins)), "smiles": smiles}
