"""Named protein sequence sources: a registry from config name to a FASTA file.

- `demo`: 2,100 real bacterial proteins shipped inside the pyhmmer wheel.
- `fasta`: a user FASTA file (plain or gzip), e.g. `uniref50.fasta.gz` as fetched by
  `python -m sedd_jax.data.download uniref50 --out DIR`.
- `mmseqs_examples`: the 20,000 UniProtKB sequences of Debian's `mmseqs2-examples`.
"""

import dataclasses
import importlib.util
import os
from collections.abc import Callable

from sedd_jax.data.fasta import FastaReader, OnError
from sedd_jax.data.protein import clean_sequence

PYHMMER_PIN = "pyhmmer==0.12.3"
DEMO_RELPATH = os.path.join("tests", "data", "seqs", "938293.PRJEB85.HG003687.faa")
MMSEQS_EXAMPLES_PATH = "/usr/share/doc/mmseqs2/example-data/DB.fasta.gz"


class SourceNotFoundError(FileNotFoundError):
    """The data of a named source is not on this machine; the message says how to get it."""


def demo_path(path: str | None = None) -> str:
    """Path of the pyhmmer test proteins (found without importing pyhmmer)."""
    del path
    spec = importlib.util.find_spec("pyhmmer")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise SourceNotFoundError(
            f"protein source 'demo' needs the pyhmmer wheel: pip install {PYHMMER_PIN}"
        )
    fasta = os.path.join(locations[0], DEMO_RELPATH)
    if not os.path.isfile(fasta):
        raise SourceNotFoundError(
            f"protein source 'demo': {fasta} is missing from the installed pyhmmer; "
            f"pip install --force-reinstall {PYHMMER_PIN}"
        )
    return fasta


def user_fasta_path(path: str | None) -> str:
    """The user's FASTA file, which must exist."""
    if not path:
        raise ValueError("protein source 'fasta' needs a path to a FASTA file (plain or .gz)")
    if not os.path.isfile(path):
        raise SourceNotFoundError(f"protein source 'fasta': no such file {path}")
    return path


def mmseqs_examples_path(path: str | None = None) -> str:
    """Path of Debian's mmseqs2-examples UniProtKB FASTA."""
    del path
    if not os.path.isfile(MMSEQS_EXAMPLES_PATH):
        raise SourceNotFoundError(
            f"protein source 'mmseqs_examples' needs {MMSEQS_EXAMPLES_PATH}: "
            "apt-get install --no-install-recommends mmseqs2-examples"
        )
    return MMSEQS_EXAMPLES_PATH


@dataclasses.dataclass(frozen=True)
class ProteinSource:
    """A named source: `locate(path)` returns the FASTA file to read."""

    locate: Callable[[str | None], str]
    takes_path: bool
    description: str


SOURCES: dict[str, ProteinSource] = {
    "demo": ProteinSource(demo_path, False, "2,100 bacterial proteins from the pyhmmer wheel"),
    "fasta": ProteinSource(user_fasta_path, True, "a FASTA file given by path (plain or gzip)"),
    "mmseqs_examples": ProteinSource(
        mmseqs_examples_path, False, "20,000 UniProtKB sequences (Debian mmseqs2-examples)"
    ),
}


def source_path(source: str, path: str | None = None) -> str:
    """Resolves a source name (and its path, for `fasta`) to the FASTA file it reads."""
    if source not in SOURCES:
        raise ValueError(f"unknown protein source {source!r}; choose one of {sorted(SOURCES)}")
    spec = SOURCES[source]
    if path and not spec.takes_path:
        raise ValueError(f"protein source {source!r} takes no path, got {path!r}")
    return spec.locate(path)


def load_sequences(
    source: str,
    path: str | None = None,
    *,
    min_len: int = 1,
    max_count: int | None = None,
    on_error: OnError = "fail",
) -> list[str]:
    """Loads cleaned sequences (`protein.clean_sequence`) of length >= `min_len`.

    Sequences are kept in file order; `max_count` keeps the first ones. Bad FASTA
    records raise or are skipped according to `on_error` (see `fasta.FastaReader`).
    """
    if min_len < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be >= 1 or None, got {max_count}")
    seqs: list[str] = []
    for record in FastaReader(source_path(source, path), on_error):
        seq = clean_sequence(record.sequence)
        if len(seq) >= min_len:
            seqs.append(seq)
            if len(seqs) == max_count:
                break
    return seqs
