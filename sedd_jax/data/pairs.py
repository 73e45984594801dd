"""The real protein–ligand demo pairs, and their binder filter.

The demo source `load_demo_pairs` reads real pairs shipped inside two PyPI
wheels, installed with `--no-deps` and read by path (never imported):
pydebiaseddta's KIBA subset and pydta's BindingDB-style pKd subset, each with its
affinity. `binders="authors"` keeps the pairs at or above each table's binder
threshold (`BINDER_THRESHOLDS`, in the table's own unit, higher = stronger).
"""

import dataclasses
import importlib.util
import json
import os
from collections import Counter

from sedd_jax.data.pair_tables import (
    NOT_BINDER,
    PairTable,
    PairTableError,
    deduplicate,
    parse_affinity,
    read_pair_table,
)

DEMO_INSTALL = "pip install --no-deps pydebiaseddta==0.1.0 pydta==0.0.3"
PYDEBIASEDDTA_RELDIR = os.path.join("data", "dta", "dta_sample_data")
PYDTA_RELPATH = os.path.join("data", "dta_sample_data", "dta_sample_data.json")
DEMO_SPLITS = ("train", "val", "test")
PYDEBIASEDDTA_AFFINITY = "affinity_score"
# Binder thresholds of the demo tables, in each table's unit (higher = stronger binding):
# pydebiaseddta holds KIBA scores as transformed by He et al. 2017 (SimBoost, negated and
# shifted), where Tang et al.'s binder threshold KIBA <= 3.0 becomes >= 12.1; pydta holds
# pKd (BindingDB-style, weak binders censored at Kd >= 10 uM, pKd = 5), and >= 7 is
# Kd <= 100 nM, the binder threshold commonly used for Davis.
BINDER_THRESHOLDS = {"pydebiaseddta": 12.1, "pydta": 7.0}
BINDERS = ("all", "authors")


class PairSourceNotFoundError(FileNotFoundError):
    """The demo pairs are not installed; the message gives the install command."""


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    locations = spec.submodule_search_locations if spec is not None else None
    return locations[0] if locations else None


def _pydebiaseddta_table(package_dir: str) -> PairTable:
    """The KIBA subset: `{train,val,test}.csv` with `aa_sequence`, `smiles` and the
    (transformed) KIBA score `affinity_score`."""
    parts = [
        read_pair_table(
            os.path.join(package_dir, PYDEBIASEDDTA_RELDIR, f"{split}.csv"),
            on_error="fail",
            validate_smiles=False,
            affinity_column=PYDEBIASEDDTA_AFFINITY,
        )
        for split in DEMO_SPLITS
    ]
    return PairTable(
        [s for t in parts for s in t.sequences],
        [s for t in parts for s in t.smiles],
        affinities=[a for t in parts for a in t.affinities],
    )


def _pydta_table(package_dir: str) -> PairTable:
    """`{split: [smiles_list, protein_list, pKd_list]}` for train/val/test."""
    path = os.path.join(package_dir, PYDTA_RELPATH)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    sequences, smiles, affinities = [], [], []
    for split in DEMO_SPLITS:
        try:
            split_smiles, proteins, values = data[split]
        except (KeyError, ValueError) as e:
            raise PairTableError(f"{path}: split {split!r} is not [smiles, proteins, y]") from e
        for protein, smi, value in zip(proteins, split_smiles, values, strict=True):
            affinity = parse_affinity(value)
            if affinity is None:
                raise PairTableError(f"{path}: split {split!r}: affinity {value!r} is no number")
            sequences.append(protein)
            smiles.append(smi)
            affinities.append(affinity)
    return PairTable(sequences, smiles, affinities=affinities)


def keep_binders(table: PairTable, min_affinity: float) -> PairTable:
    """The pairs of `table` whose affinity is at least `min_affinity`; the others are
    counted as `not_binder` in `skipped`."""
    if table.affinities is None:
        raise ValueError("keep_binders needs a table with affinities")
    keep = [i for i, a in enumerate(table.affinities) if a >= min_affinity]
    skipped = Counter(table.skipped)
    skipped[NOT_BINDER] += len(table) - len(keep)
    return PairTable(
        [table.sequences[i] for i in keep],
        [table.smiles[i] for i in keep],
        {k: v for k, v in skipped.items() if v},
        [table.affinities[i] for i in keep],
    )


def demo_tables(binders: str = "all") -> dict[str, PairTable]:
    """The installed demo tables by package name, each with its affinities; with
    `binders="authors"` only the pairs at or above `BINDER_THRESHOLDS[name]`.

    Raises:
      PairSourceNotFoundError: neither package is installed (the message gives
        the `pip install --no-deps ...` command).
    """
    if binders not in BINDERS:
        raise ValueError(f"binders must be one of {BINDERS}, got {binders!r}")
    loaders = {"pydebiaseddta": _pydebiaseddta_table, "pydta": _pydta_table}
    found = {name: _package_dir(name) for name in loaders}
    if not any(found.values()):
        raise PairSourceNotFoundError(
            f"the demo pairs need the pydebiaseddta and pydta wheels: {DEMO_INSTALL}"
        )
    tables = {name: load(found[name]) for name, load in loaders.items() if found[name]}
    if binders == "authors":
        tables = {name: keep_binders(t, BINDER_THRESHOLDS[name]) for name, t in tables.items()}
    return tables


def load_demo_pairs(binders: str = "all") -> PairTable:
    """Real protein–ligand pairs from the pydebiaseddta and pydta wheels, deduplicated,
    with their affinities (KIBA scores and pKd: see `BINDER_THRESHOLDS`).

    `binders="all"`: 9,998 unique exact pairs (5,000 + 5,000, two shared) over 438
    distinct protein sequences and 900 distinct SMILES strings. `"authors"`: the 841 +
    618 binders, 1,457 unique pairs (counts per table in docs/data.md). Either package
    alone is used when the other is missing.

    Raises:
      PairSourceNotFoundError: neither package is installed (the message gives
        the `pip install --no-deps ...` command).
    """
    tables = demo_tables(binders)
    table = deduplicate(
        triple
        for t in tables.values()
        for triple in zip(t.sequences, t.smiles, t.affinities, strict=True)
    )
    skipped = Counter()
    for t in tables.values():
        skipped.update(t.skipped)
    return dataclasses.replace(table, skipped=dict(skipped))
