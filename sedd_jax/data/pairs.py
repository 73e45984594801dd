"""Protein–ligand pair tables: reading, the real demo pairs, and a split by protein.

A pair table is a CSV/TSV (optionally gzip) or Parquet file with one
(protein sequence, ligand SMILES) pair per row; the two column names are
configurable. Bad records are skipped with a count per reason, or raise
`PairTableError` naming the file and line, by `on_error`.

The demo source `load_demo_pairs` reads real pairs shipped inside two PyPI
wheels, installed with `--no-deps` and read by path (never imported):
pydebiaseddta's KIBA subset and pydta's Davis/BindingDB-style subset.
"""

import csv
import dataclasses
import gzip
import importlib.util
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Literal

from sedd_jax.data.batching import encode_and_pad
from sedd_jax.data.smiles import tokenize

OnError = Literal["fail", "skip"]

DEMO_INSTALL = "pip install --no-deps pydebiaseddta==0.1.0 pydta==0.0.3"
PYDEBIASEDDTA_RELDIR = os.path.join("data", "dta", "dta_sample_data")
PYDTA_RELPATH = os.path.join("data", "dta_sample_data", "dta_sample_data.json")
DEMO_SPLITS = ("train", "val", "test")

_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PROTEIN_RE = re.compile(r"[A-Za-z]+")

# Reasons a record is skipped (keys of `PairTable.skipped`).
MALFORMED_ROW = "malformed_row"
INVALID_SEQUENCE = "invalid_sequence"
INVALID_SMILES = "invalid_smiles"


class PairTableError(ValueError):
    """A pair table that cannot be read; the message names the file (and line)."""


class PairSourceNotFoundError(FileNotFoundError):
    """The demo pairs are not installed; the message gives the install command."""


@dataclasses.dataclass(frozen=True)
class PairTable:
    """Aligned protein sequences and ligand SMILES, one pair per index.

    `skipped` counts the records dropped while reading, per reason
    (`malformed_row`, `invalid_sequence`, `invalid_smiles`).
    """

    sequences: list[str]
    smiles: list[str]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.sequences) != len(self.smiles):
            raise ValueError(
                f"{len(self.sequences)} sequences but {len(self.smiles)} SMILES in a PairTable"
            )

    def __len__(self) -> int:
        return len(self.sequences)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """Iterates over `(sequence, smiles)`."""
        return zip(self.sequences, self.smiles, strict=True)


def rdkit_parser():
    """`smiles -> bool` with RDKit (logs silenced), or None when RDKit is absent."""
    try:
        from rdkit import Chem, rdBase
    except ImportError:
        return None

    def parses(smiles: str) -> bool:
        with rdBase.BlockLogs():
            return Chem.MolFromSmiles(smiles) is not None

    return parses


def record_problem(sequence: str | None, smiles: str | None, rdkit_parses) -> str | None:
    """The skip reason of one record, or None when it is good."""
    if sequence is None or smiles is None:
        return MALFORMED_ROW
    if not _PROTEIN_RE.fullmatch(sequence):
        return INVALID_SEQUENCE
    if not smiles:
        return INVALID_SMILES
    try:
        tokenize(smiles)
    except ValueError:
        return INVALID_SMILES
    if rdkit_parses is not None and not rdkit_parses(smiles):
        return INVALID_SMILES
    return None


def _open_text(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def infer_sep(path: str) -> str:
    stem = path[:-3] if path.endswith(".gz") else path
    sep = _SEPARATORS.get(os.path.splitext(stem)[1].lower())
    if sep is None:
        raise PairTableError(
            f"{path}: cannot infer the separator from the extension "
            f"(known: {sorted(_SEPARATORS)}, .parquet); pass sep="
        )
    return sep


def _missing_columns(path: str, available: list[str], wanted: tuple[str, str]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise PairTableError(f"{path}: no column(s) {missing}; available columns: {available}")


def delimited_records(
    path: str, sep: str, columns: tuple[str, str]
) -> Iterator[tuple[int, str | None, str | None]]:
    """Yields `(line, sequence, smiles)`; None marks a short or over-long row."""
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = next(reader)
        except StopIteration:
            raise PairTableError(f"{path}: empty file, no header row") from None
        except csv.Error as e:
            raise PairTableError(f"{path}:1: malformed header: {e}") from e
        header = [h.strip() for h in header]
        _missing_columns(path, header, columns)
        i_seq, i_smi = (header.index(c) for c in columns)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise PairTableError(f"{path}:{reader.line_num}: malformed CSV: {e}") from e
            if not row:
                continue
            if len(row) != len(header):
                yield reader.line_num, None, None
                continue
            yield reader.line_num, row[i_seq].strip(), row[i_smi].strip()


def parquet_records(
    path: str, columns: tuple[str, str]
) -> Iterator[tuple[int, str | None, str | None]]:
    """Yields `(row, sequence, smiles)` with 1-based data rows; nulls are None."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from e
    schema_names = list(pq.read_schema(path).names)
    _missing_columns(path, schema_names, columns)
    table = pq.read_table(path, columns=list(columns))
    seqs, smis = (table.column(c).to_pylist() for c in columns)
    for row, (seq, smi) in enumerate(zip(seqs, smis, strict=True), start=1):
        seq = seq.strip() if isinstance(seq, str) else None
        smi = smi.strip() if isinstance(smi, str) else None
        yield row, seq, smi


def read_pair_table(
    path: str | os.PathLike,
    sequence_column: str = "aa_sequence",
    smiles_column: str = "smiles",
    sep: str | None = None,
    on_error: OnError = "skip",
    validate_smiles: bool = True,
) -> PairTable:
    """Reads a pair table (`.csv`, `.tsv`, `.tab`, optionally `.gz`, or `.parquet`).

    A record is bad when its row has the wrong number of fields
    (`malformed_row`), its sequence is empty or has a non-letter character
    (`invalid_sequence`), or its SMILES is empty, cannot be tokenized or, when
    RDKit is installed and `validate_smiles`, does not parse (`invalid_smiles`).
    `on_error="skip"` drops and counts bad records; `"fail"` raises on the first.
    Values are stripped of surrounding whitespace; duplicates are kept.

    Raises:
      PairTableError: missing columns (naming the available ones), a malformed
        file, or, with `on_error="fail"`, a bad record (naming file and line;
        for Parquet, the 1-based data row).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pair table not found")
    columns = (sequence_column, smiles_column)
    if path.lower().endswith(".parquet"):
        records = parquet_records(path, columns)
        where = f"{path}: row "
    else:
        records = delimited_records(path, sep or infer_sep(path), columns)
        where = f"{path}:"
    rdkit_parses = rdkit_parser() if validate_smiles else None
    sequences, smiles, skipped = [], [], Counter()
    for line, seq, smi in records:
        reason = record_problem(seq, smi, rdkit_parses)
        if reason is None:
            sequences.append(seq)
            smiles.append(smi)
        elif on_error == "fail":
            raise PairTableError(
                f"{where}{line}: {reason.replace('_', ' ')}: "
                f"{sequence_column}={_short(seq)}, {smiles_column}={_short(smi)}"
            )
        else:
            skipped[reason] += 1
    return PairTable(sequences, smiles, dict(skipped))


def _short(value: str | None, limit: int = 40) -> str:
    if value is None:
        return "<missing>"
    return repr(value if len(value) <= limit else value[:limit] + "...")


def deduplicate(pairs: Iterable[tuple[str, str]]) -> PairTable:
    """Keeps the first occurrence of each exact `(sequence, smiles)` pair, in order."""
    unique = dict.fromkeys(pairs)
    return PairTable([p for p, _ in unique], [s for _, s in unique])


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    locations = spec.submodule_search_locations if spec is not None else None
    return locations[0] if locations else None


def _pydebiaseddta_pairs(package_dir: str) -> Iterator[tuple[str, str]]:
    """The KIBA subset: `{train,val,test}.csv` with `aa_sequence` and `smiles`."""
    for split in DEMO_SPLITS:
        path = os.path.join(package_dir, PYDEBIASEDDTA_RELDIR, f"{split}.csv")
        yield from read_pair_table(path, on_error="fail", validate_smiles=False).pairs()


def _pydta_pairs(package_dir: str) -> Iterator[tuple[str, str]]:
    """`{split: [smiles_list, protein_list, affinity_list]}` for train/val/test."""
    path = os.path.join(package_dir, PYDTA_RELPATH)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for split in DEMO_SPLITS:
        try:
            smiles, proteins, _ = data[split]
        except (KeyError, ValueError) as e:
            raise PairTableError(f"{path}: split {split!r} is not [smiles, proteins, y]") from e
        yield from zip(proteins, smiles, strict=True)


def load_demo_pairs() -> PairTable:
    """Real protein–ligand pairs from the pydebiaseddta and pydta wheels, deduplicated.

    9,998 unique exact pairs (5,000 + 5,000, two shared) over 438 distinct
    protein sequences and 900 distinct SMILES strings. Either package alone is
    used when the other is missing.

    Raises:
      PairSourceNotFoundError: neither package is installed (the message gives
        the `pip install --no-deps ...` command).
    """
    loaders = {"pydebiaseddta": _pydebiaseddta_pairs, "pydta": _pydta_pairs}
    found = {name: _package_dir(name) for name in loaders}
    if not any(found.values()):
        raise PairSourceNotFoundError(
            f"the demo pairs need the pydebiaseddta and pydta wheels: {DEMO_INSTALL}"
        )
    pairs: list[tuple[str, str]] = []
    for name, load in loaders.items():
        if found[name] is not None:
            pairs.extend(load(found[name]))
    return deduplicate(pairs)


def encode_pairs(table: PairTable, protein_tok, ligand_tok, data_config) -> dict:
    """Pairs as padded arrays: `protein` [N, max_protein_len] (cropped by `data.crop`),
    `ligand` [N, max_ligand_len] (over-long SMILES are cut: callers pass those that fit),
    each with its bool mask `*_valid`."""
    protein, protein_valid = encode_and_pad(
        table.sequences, protein_tok, data_config.max_protein_len, data_config.crop
    )
    ligand, ligand_valid = encode_and_pad(table.smiles, ligand_tok, data_config.max_ligand_len)
    return {
        "protein": protein,
        "protein_valid": protein_valid,
        "ligand": ligand,
        "ligand_valid": ligand_valid,
    }
