"""Protein–ligand pair tables: the `PairTable`, reading a table file, record checks,
deduplication and padded arrays.

A pair table is a CSV/TSV (optionally gzip) or Parquet file with one
(protein sequence, ligand SMILES) pair per row; the two column names are
configurable. Bad records are skipped with a count per reason, or raise
`PairTableError` naming the file and line, by `on_error`.
"""

import csv
import dataclasses
import gzip
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Literal

from sedd_jax.data.batching import encode_and_pad
from sedd_jax.data.smiles import tokenize

OnError = Literal["fail", "skip"]

_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PROTEIN_RE = re.compile(r"[A-Za-z]+")

# Reasons a record is skipped (keys of `PairTable.skipped`).
MALFORMED_ROW = "malformed_row"
INVALID_SEQUENCE = "invalid_sequence"
INVALID_SMILES = "invalid_smiles"
INVALID_AFFINITY = "invalid_affinity"
NOT_BINDER = "not_binder"  # below the binder threshold (`binders="authors"`)


class PairTableError(ValueError):
    """A pair table that cannot be read; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class PairTable:
    """Aligned protein sequences and ligand SMILES, one pair per index, and their
    affinities when the table has them (None otherwise).

    `skipped` counts the records dropped while reading, per reason
    (`malformed_row`, `invalid_sequence`, `invalid_smiles`, `invalid_affinity`,
    `not_binder`).
    """

    sequences: list[str]
    smiles: list[str]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    affinities: list[float] | None = None

    def __post_init__(self):
        if len(self.sequences) != len(self.smiles):
            raise ValueError(
                f"{len(self.sequences)} sequences but {len(self.smiles)} SMILES in a PairTable"
            )
        if self.affinities is not None and len(self.affinities) != len(self.sequences):
            raise ValueError(
                f"{len(self.sequences)} pairs but {len(self.affinities)} affinities in a PairTable"
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


def _missing_columns(path: str, available: list[str], wanted: tuple[str, ...]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise PairTableError(f"{path}: no column(s) {missing}; available columns: {available}")


def delimited_records(
    path: str, sep: str, columns: tuple[str, ...]
) -> Iterator[tuple[int | str | None, ...]]:
    """Yields `(line, value of each column...)`, e.g. `(line, sequence, smiles)`; None
    values mark a short or over-long row."""
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
        indices = [header.index(c) for c in columns]
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
                yield reader.line_num, *(None for _ in columns)
                continue
            yield reader.line_num, *(row[i].strip() for i in indices)


def parquet_records(path: str, columns: tuple[str, ...]) -> Iterator[tuple[int | str | None, ...]]:
    """Yields `(row, value of each column...)` with 1-based data rows; nulls are None,
    numbers are returned as text."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from e
    schema_names = list(pq.read_schema(path).names)
    _missing_columns(path, schema_names, columns)
    table = pq.read_table(path, columns=list(columns))
    values = [table.column(c).to_pylist() for c in columns]
    for row, record in enumerate(zip(*values, strict=True), start=1):
        yield row, *(_text(v) for v in record)


def _text(value) -> str | None:
    if isinstance(value, str):
        return value.strip()
    return None if value is None else str(value)


def read_pair_table(
    path: str | os.PathLike,
    sequence_column: str = "aa_sequence",
    smiles_column: str = "smiles",
    sep: str | None = None,
    on_error: OnError = "skip",
    validate_smiles: bool = True,
    affinity_column: str | None = None,
) -> PairTable:
    """Reads a pair table (`.csv`, `.tsv`, `.tab`, optionally `.gz`, or `.parquet`).

    A record is bad when its row has the wrong number of fields
    (`malformed_row`), its sequence is empty or has a non-letter character
    (`invalid_sequence`), its SMILES is empty, cannot be tokenized or, when
    RDKit is installed and `validate_smiles`, does not parse (`invalid_smiles`),
    or, with `affinity_column`, its affinity is no finite number (`invalid_affinity`).
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
    columns = (sequence_column, smiles_column) + ((affinity_column,) if affinity_column else ())
    if path.lower().endswith(".parquet"):
        records = parquet_records(path, columns)
        where = f"{path}: row "
    else:
        records = delimited_records(path, sep or infer_sep(path), columns)
        where = f"{path}:"
    rdkit_parses = rdkit_parser() if validate_smiles else None
    sequences, smiles, affinities, skipped = [], [], [], Counter()
    for line, seq, smi, *affinity in records:
        reason = record_problem(seq, smi, rdkit_parses)
        value = parse_affinity(affinity[0]) if affinity else None
        if reason is None and affinity and value is None:
            reason = INVALID_AFFINITY
        if reason is None:
            sequences.append(seq)
            smiles.append(smi)
            affinities.append(value)
        elif on_error == "fail":
            raise PairTableError(
                f"{where}{line}: {reason.replace('_', ' ')}: "
                f"{sequence_column}={_short(seq)}, {smiles_column}={_short(smi)}"
                + (f", {affinity_column}={_short(affinity[0])}" if affinity else "")
            )
        else:
            skipped[reason] += 1
    return PairTable(sequences, smiles, dict(skipped), affinities if affinity_column else None)


def parse_affinity(text: str | None) -> float | None:
    """The finite float of `text`, or None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _short(value: str | None, limit: int = 40) -> str:
    if value is None:
        return "<missing>"
    return repr(value if len(value) <= limit else value[:limit] + "...")


def deduplicate(pairs: Iterable[tuple]) -> PairTable:
    """Keeps the first occurrence of each exact `(sequence, smiles)` pair, in order;
    with `(sequence, smiles, affinity)` triples, the first one's affinity."""
    unique: dict[tuple[str, str], float | None] = {}
    with_affinity = False
    for sequence, smiles, *affinity in pairs:
        with_affinity = with_affinity or bool(affinity)
        unique.setdefault((sequence, smiles), affinity[0] if affinity else None)
    return PairTable(
        [p for p, _ in unique],
        [s for _, s in unique],
        affinities=list(unique.values()) if with_affinity else None,
    )


def table_counts(table: PairTable) -> dict[str, int]:
    """Pairs, distinct protein sequences (upper-cased) and distinct SMILES strings."""
    return {
        "pairs": len(table),
        "proteins": len({s.upper() for s in table.sequences}),
        "ligands": len(set(table.smiles)),
    }


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
