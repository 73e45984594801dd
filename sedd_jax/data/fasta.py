"""FASTA reading and writing, plain or gzip (detected by magic bytes, not by name).

A record is a `>` header line, whose first word is the id and the rest the
description, followed by any number of sequence lines. Blank lines are ignored.
Bad input raises `FastaError` naming the file and the line.
"""

import dataclasses
import gzip
import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Literal

_GZIP_MAGIC = b"\x1f\x8b"
LINE_WIDTH = 60

OnError = Literal["fail", "skip"]


class FastaError(ValueError):
    """A malformed FASTA file; the message names the file and the line."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str):
        super().__init__(f"{os.fspath(path)}:{line}: {problem}")
        self.path = os.fspath(path)
        self.line = line


@dataclasses.dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: `>id description` then the sequence (lines joined, as written)."""

    id: str
    description: str
    sequence: str


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open_binary(path: str | os.PathLike) -> IO[bytes]:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


class FastaReader:
    """Iterates over the records of a FASTA file, streaming (suits UniRef50-sized files).

    Records whose header has no id or that have no sequence are bad records:
    `on_error="fail"` raises `FastaError`, `on_error="skip"` drops them and counts
    them in `num_skipped` (final once iteration has finished). Sequence data
    before the first header, undecodable bytes and truncated gzip always raise.
    """

    def __init__(self, path: str | os.PathLike, on_error: OnError = "fail"):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.path = os.fspath(path)
        self.on_error = on_error
        self.num_skipped = 0

    def __iter__(self) -> Iterator[FastaRecord]:
        self.num_skipped = 0
        header: str | None = None
        header_line = 0
        chunks: list[str] = []
        line_no = 0
        with _open_binary(self.path) as f:
            try:
                for line_no, raw in enumerate(f, start=1):
                    line = self._decode(raw, line_no).strip()
                    if not line:
                        continue
                    if line.startswith(">"):
                        if header is not None:
                            yield from self._finish(header, header_line, chunks)
                        header, header_line, chunks = line[1:].strip(), line_no, []
                    elif header is None:
                        raise FastaError(
                            self.path, line_no, "sequence data before the first '>' header"
                        )
                    else:
                        chunks.append(line)
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise FastaError(
                    self.path, line_no + 1, f"corrupt or truncated gzip data ({e})"
                ) from e
        if header is not None:
            yield from self._finish(header, header_line, chunks)

    def _decode(self, raw: bytes, line_no: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FastaError(self.path, line_no, f"not UTF-8 text ({e.reason})") from e

    def _finish(self, header: str, line_no: int, chunks: list[str]) -> Iterator[FastaRecord]:
        id_, description = (header.split(maxsplit=1) + ["", ""])[:2]
        sequence = "".join(chunks)
        problem = None
        if not id_:
            problem = "header has no id"
        elif not sequence:
            problem = f"record {id_!r} has no sequence"
        if problem is None:
            yield FastaRecord(id_, description, sequence)
        elif self.on_error == "skip":
            self.num_skipped += 1
        else:
            raise FastaError(self.path, line_no, problem)


def read_fasta(path: str | os.PathLike, on_error: OnError = "fail") -> list[FastaRecord]:
    """Reads all records of a FASTA file (plain or gzip); see `FastaReader` for `on_error`.

    Skipped records are logged with their count; use `FastaReader` to get the count.
    """
    reader = FastaReader(path, on_error)
    records = list(reader)
    if reader.num_skipped:
        logging.warning("%s: skipped %d bad FASTA records", reader.path, reader.num_skipped)
    return records


def write_fasta(
    path: str | os.PathLike,
    records: Iterable[FastaRecord],
    line_width: int = LINE_WIDTH,
) -> int:
    """Writes records with `line_width`-residue lines, gzip-compressed when `path` ends in .gz.

    Returns the number of records written. Ids must be non-empty and free of
    whitespace, sequences non-empty, so that `read_fasta` gives the records back.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    count = 0
    with opener(path, "wt", encoding="utf-8") as f:
        for count, record in enumerate(records, start=1):
            if not record.id or record.id.split() != [record.id]:
                raise ValueError(f"record {count}: id {record.id!r} is empty or has whitespace")
            if not record.sequence:
                raise ValueError(f"record {count} ({record.id}): empty sequence")
            header = f"{record.id} {record.description}" if record.description else record.id
            f.write(f">{header}\n")
            seq = record.sequence
            for start in range(0, len(seq), line_width):
                f.write(seq[start : start + line_width] + "\n")
    return count
