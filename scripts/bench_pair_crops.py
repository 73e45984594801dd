"""How many demo pairs each binder filter keeps, and how many distinct proteins stay
distinguishable after a crop to `max_len` residues, per crop mode.

    python scripts/bench_pair_crops.py [--max_len=64] [--out=pair_crops.json]

Per demo table and filter (`data.binders`): rows, pairs kept, distinct proteins and
ligands. Per crop (`start`, `center`): distinct cropped sequences among the distinct
proteins of the binders, and how many cropped proteins have a near twin (another crop at
>= 90 % position-wise identity over `max_len`), i.e. are barely told apart.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sedd_jax.data import pair_tables, pairs
from sedd_jax.data.batching import _CROP_OFFSET

CROPS = ("start", "center")
NEAR_TWIN = 0.9


def crop(sequence: str, mode: str, max_len: int) -> str:
    if len(sequence) <= max_len:
        return sequence
    start = _CROP_OFFSET[mode](len(sequence), max_len, None)
    return sequence[start : start + max_len]


def near_twins(crops: list[str], max_len: int) -> int:
    """Crops with another crop at >= NEAR_TWIN position-wise identity (pads count as
    mismatches)."""
    codes = np.array([[ord(c) for c in s.ljust(max_len, "\0")] for s in crops])
    identity = np.zeros((len(crops), len(crops)))
    for i in range(len(crops)):
        identity[i] = ((codes == codes[i]) & (codes[i] != 0)).mean(axis=1)
    np.fill_diagonal(identity, 0.0)
    return int((identity.max(axis=1) >= NEAR_TWIN).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_len", type=int, default=64)
    parser.add_argument("--out", default="pair_crops.json")
    args = parser.parse_args()
    everything = pairs.demo_tables("all")
    result = {"max_len": args.max_len, "tables": {}, "crops": {}}
    header = ("table", "binders", "rows", "pairs", "proteins", "ligands")
    print("{:14s} {:8s} {:>6s} {:>6s} {:>9s} {:>8s}".format(*header))
    for binders in pairs.BINDERS:
        for name, table in pairs.demo_tables(binders).items():
            row = {"rows": len(everything[name]), **pair_tables.table_counts(table)}
            result["tables"][f"{name}/{binders}"] = row
            print(
                f"{name:14s} {binders:8s} {row['rows']:6d} {row['pairs']:6d} "
                f"{row['proteins']:9d} {row['ligands']:8d}"
            )
        both = pairs.load_demo_pairs(binders)
        row = pair_tables.table_counts(both)
        result["tables"][f"both/{binders}"] = row
        print(
            f"{'both (dedup.)':14s} {binders:8s} {'':6s} {row['pairs']:6d} "
            f"{row['proteins']:9d} {row['ligands']:8d}"
        )
    proteins = sorted({s.upper() for s in pairs.load_demo_pairs("authors").sequences})
    print(f"\nbinder proteins cropped to {args.max_len} ({len(proteins)} distinct proteins)")
    print(f"{'crop':8s} {'distinct crops':>15s} {'near twins':>11s}")
    for mode in CROPS:
        crops = [crop(p, mode, args.max_len) for p in proteins]
        row = {
            "proteins": len(proteins),
            "distinct_crops": len(set(crops)),
            "near_twins": near_twins(crops, args.max_len),
        }
        result["crops"][mode] = row
        print(f"{mode:8s} {row['distinct_crops']:15d} {row['near_twins']:11d}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
