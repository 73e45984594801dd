"""What `prepare` reads: named corpora and files, as streams of raw records.

A corpus has a kind, `protein` (FASTA), `smiles` (one SMILES per line, or a CSV column)
or `pairs` (a table with a sequence and a SMILES column), and a list of files. Its
records are `(file index, ref, payload)`: `ref` names the record in error messages (a
FASTA id or a line number), `payload` is the cleaned protein, the SMILES, or
`protein\\tsmiles`. Named corpora:

- `demo`: 2,100 bacterial proteins of the pyhmmer wheel;
- `mmseqs_examples`: 20,000 UniProtKB sequences (Debian `mmseqs2-examples`);
- `uniref50`: `uniref50.fasta.gz` in the directory given by `path`;
- `moses`: MOSES `train.csv.gz` (1,584,663 SMILES) of the molsets wheel, read by path;
- `demo_pairs`: ~10k protein–ligand pairs of the pydebiaseddta and pydta wheels, or
  with `binders="authors"` the ~1.5k of them at or above each table's binder threshold.

Any other source is a path: `.fasta/.fa/.faa` or a file starting with `>` (plain or gzip)
is protein FASTA; `.smi/.smiles` is SMILES; `.csv/.tsv/.tab(.gz)` or `.parquet` is a pair
table when it has the sequence column, else a SMILES table when it has the SMILES column.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import importlib.util
import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator

from sedd_jax.data import pair_tables, sources
from sedd_jax.data import pairs as pair_io
from sedd_jax.data.fasta import FastaReader, is_gzip
from sedd_jax.data.protein import clean_sequence
from sedd_jax.data.shards import DataError

log = logging.getLogger(__name__)
MOSES_INSTALL = "pip install --no-deps molsets==0.3.1"
MOSES_RELPATH = os.path.join("dataset", "data", "train.csv.gz")
UNIREF50_FILE = "uniref50.fasta.gz"
KINDS = ("protein", "smiles", "pairs")
_FASTA_EXT = (".fasta", ".fa", ".faa", ".fas")
_SMILES_EXT = (".smi", ".smiles")
_TABLE_EXT = (".csv", ".tsv", ".tab", ".parquet")
SMILES_COLUMNS = ("SMILES", "smiles")


def moses_path() -> str:
    """MOSES train.csv.gz inside the installed molsets wheel (found without importing it)."""
    spec = importlib.util.find_spec("moses")
    locations = spec.submodule_search_locations if spec is not None else None
    path = os.path.join(locations[0], MOSES_RELPATH) if locations else ""
    if not path or not os.path.isfile(path):
        raise sources.SourceNotFoundError(
            f"source 'moses' needs the molsets wheel: {MOSES_INSTALL}"
        )
    return path


def uniref50_path(path: str | None) -> str:
    candidate = os.path.join(path, UNIREF50_FILE) if path and os.path.isdir(path) else path
    if not candidate or not os.path.isfile(candidate):
        raise sources.SourceNotFoundError(
            f"source 'uniref50': no {UNIREF50_FILE} at {path!r}; download it first: "
            f"python -m sedd_jax.data.download uniref50 --out {path or 'data/uniref50'}"
        )
    return candidate


def demo_pair_files() -> list[str]:
    files = []
    for name, rel in (
        (
            "pydebiaseddta",
            [os.path.join(pair_io.PYDEBIASEDDTA_RELDIR, f"{s}.csv") for s in pair_io.DEMO_SPLITS],
        ),
        ("pydta", [pair_io.PYDTA_RELPATH]),
    ):
        base = pair_io._package_dir(name)
        if base is not None:
            files += [os.path.join(base, r) for r in rel]
    if not files:
        raise pair_io.PairSourceNotFoundError(
            f"the demo pairs need the pydebiaseddta and pydta wheels: {pair_io.DEMO_INSTALL}"
        )
    return files


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A source to prepare: its kind, its files, and how to read them."""

    name: str
    kind: str
    files: tuple[str, ...]
    sequence_column: str = "aa_sequence"
    smiles_column: str = "smiles"
    binders: str = "all"  # demo_pairs: all | authors (pair_io.BINDER_THRESHOLDS)

    def records(self, on_error: str, skipped: Counter) -> Iterator[tuple[int, str, str]]:
        """Yields `(file index, ref, payload)`; bad records raise or count in `skipped`."""
        if self.name == "demo_pairs":
            log_demo_counts(self.binders)
            table = pair_io.load_demo_pairs(self.binders)
            skipped.update(table.skipped)
            for i, (seq, smi) in enumerate(table.pairs()):
                yield 0, f"pair {i}", f"{seq}\t{smi}"
            return
        for index, path in enumerate(self.files):
            reader = {"protein": _fasta, "smiles": _smiles, "pairs": _pairs}[self.kind]
            for ref, payload in reader(self, path, on_error, skipped):
                yield index, ref, payload


def log_demo_counts(binders: str) -> dict[str, dict[str, int]]:
    """Logs (and returns) per demo table: rows, the pairs kept, their distinct proteins
    and ligands."""
    everything = pair_io.demo_tables("all")
    kept = pair_io.demo_tables(binders)
    counts = {}
    for name, table in kept.items():
        threshold = pair_io.BINDER_THRESHOLDS[name] if binders == "authors" else None
        counts[name] = {"rows": len(everything[name]), **pair_tables.table_counts(table)}
        log.info(
            "demo_pairs %s: %d rows, %d kept (%s), %d distinct proteins, %d distinct ligands",
            name,
            counts[name]["rows"],
            counts[name]["pairs"],
            "all" if threshold is None else f"affinity >= {threshold}",
            counts[name]["proteins"],
            counts[name]["ligands"],
        )
    return counts


def _fasta(corpus, path, on_error, skipped) -> Iterator[tuple[str, str]]:
    reader = FastaReader(path, on_error)
    for record in reader:
        seq = clean_sequence(record.sequence)
        if not seq:
            if on_error == "fail":
                raise DataError(f"{path}: record {record.id!r} has no residues")
            skipped["empty_record"] += 1
            continue
        yield record.id, seq
    if reader.num_skipped:
        skipped["empty_record"] += reader.num_skipped


def _guarded_lines(path: str) -> Iterator[tuple[int, str]]:
    opener = gzip.open if is_gzip(path) else open
    line_no = 0
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            for line_no, line in enumerate(f, start=1):
                yield line_no, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}:{line_no + 1}: corrupt or truncated gzip data ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{line_no + 1}: not UTF-8 text ({e.reason})") from e


def _smiles(corpus, path, on_error, skipped) -> Iterator[tuple[str, str]]:
    del on_error, skipped  # SMILES are validated by the workers (tokenizer, RDKit)
    stem = path[:-3] if path.endswith(".gz") else path
    if stem.lower().endswith(_TABLE_EXT):
        lines = _guarded_lines(path)
        rows = csv.reader((line for _, line in lines), delimiter=pair_tables.infer_sep(path))
        header = [h.strip() for h in next(rows, [])]
        column = next((c for c in (corpus.smiles_column, *SMILES_COLUMNS) if c in header), None)
        if column is None:
            raise DataError(f"{path}: no SMILES column; columns are {header}")
        i = header.index(column)
        for row in rows:
            if row:
                yield str(rows.line_num), row[i].strip() if i < len(row) else ""
        return
    for line_no, line in _guarded_lines(path):
        text = line.strip()
        if text and not text.startswith("#"):
            yield str(line_no), text.split()[0]


def _pairs(corpus, path, on_error, skipped) -> Iterator[tuple[str, str]]:
    del on_error, skipped  # validated by the workers
    columns = (corpus.sequence_column, corpus.smiles_column)
    if path.lower().endswith(".parquet"):
        records = pair_tables.parquet_records(path, columns)
    else:
        records = pair_tables.delimited_records(path, pair_tables.infer_sep(path), columns)
    try:
        for line, seq, smi in records:
            yield str(line), f"{seq if seq is not None else ''}\t{smi if smi is not None else ''}"
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e


def _table_kind(path: str, sequence_column: str, smiles_column: str) -> str:
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        names = list(pq.read_schema(path).names)
    else:
        first = next(_guarded_lines(path), (0, ""))[1]
        names = [
            h.strip() for h in next(csv.reader([first], delimiter=pair_tables.infer_sep(path)))
        ]
    if sequence_column in names and smiles_column in names:
        return "pairs"
    if any(c in names for c in (smiles_column, *SMILES_COLUMNS)):
        return "smiles"
    raise DataError(
        f"{path}: neither a pair table (columns {sequence_column!r}, {smiles_column!r}) nor a "
        f"SMILES table (column 'SMILES'); its columns are {names}"
    )


def infer_kind(path: str, sequence_column: str, smiles_column: str) -> str:
    stem = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(stem)[1].lower()
    if ext in _FASTA_EXT:
        return "protein"
    if ext in _SMILES_EXT:
        return "smiles"
    if ext in _TABLE_EXT:
        return _table_kind(path, sequence_column, smiles_column)
    first = next((line for _, line in _guarded_lines(path) if line.strip()), "")
    if first.startswith(">"):
        return "protein"
    raise DataError(
        f"{path}: cannot tell what this file holds (not FASTA: it does not start with '>'; "
        f"extension {ext or 'none'} is none of {_FASTA_EXT + _SMILES_EXT + _TABLE_EXT}); "
        "pass --kind=protein|smiles|pairs"
    )


NAMED = {
    "demo": ("protein", lambda path: [sources.demo_path()]),
    "mmseqs_examples": ("protein", lambda path: [sources.mmseqs_examples_path()]),
    "uniref50": ("protein", lambda path: [uniref50_path(path)]),
    "moses": ("smiles", lambda path: [moses_path()]),
    "demo_pairs": ("pairs", lambda path: demo_pair_files()),
}


def resolve(
    source: str,
    *,
    path: str | None = None,
    kind: str | None = None,
    sequence_column: str = "aa_sequence",
    smiles_column: str = "smiles",
    binders: str = "all",
) -> Corpus:
    """The corpus of a source name (see the module docstring) or of a file path."""
    if binders not in pair_io.BINDERS:
        raise DataError(f"binders must be one of {pair_io.BINDERS}, got {binders!r}")
    if binders != "all" and source != "demo_pairs":
        raise DataError(
            f"binders={binders!r} selects by the demo tables' own thresholds; source "
            f"{source!r} is no demo_pairs"
        )
    if source in NAMED:
        named_kind, locate = NAMED[source]
        files = locate(path)
        kind = kind or named_kind
    else:
        if not os.path.isfile(source):
            raise sources.SourceNotFoundError(
                f"source {source!r}: no such file, and not one of {sorted(NAMED)}"
            )
        files = [source]
        kind = kind or infer_kind(source, sequence_column, smiles_column)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return Corpus(
        source,
        kind,
        tuple(os.path.abspath(f) for f in files),
        sequence_column,
        smiles_column,
        binders,
    )
