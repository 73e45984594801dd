"""Filters a UniRef50 FASTA into the project's prepared protein FASTA.

Get UniRef50 (over 10 GB gzipped) from the UniProt FTP site:

    wget https://ftp.uniprot.org/pub/databases/uniprot/uniref/uniref50/uniref50.fasta.gz

then, with the project installed (`pip install -e .`),

    python scripts/prepare_uniref50.py uniref50.fasta.gz data/uniref50_filtered.fasta.gz

keeps the sequences (upper-cased, whitespace and `*` removed) whose length is in
[--min-len, --max-len] and of which at least --min-standard of the residues are
one of the 20 standard amino acids. Bad FASTA records are skipped and counted.
The counts are printed and written as JSON next to the output. Train on it
with the `fasta` protein source (`sedd_jax.data.sources`) and its path.
"""

import argparse
import collections
import json
import os
import sys
from collections.abc import Iterator

from sedd_jax.data.fasta import FastaError, FastaReader, FastaRecord, write_fasta
from sedd_jax.data.protein import clean_sequence, standard_fraction


def filter_records(
    reader: FastaReader,
    min_len: int,
    max_len: int,
    min_standard: float,
    counts: collections.Counter,
) -> Iterator[FastaRecord]:
    """Yields the cleaned records that pass the filters, counting each outcome in `counts`."""
    for record in reader:
        counts["read"] += 1
        seq = clean_sequence(record.sequence)
        if len(seq) < min_len:
            counts["too_short"] += 1
        elif len(seq) > max_len:
            counts["too_long"] += 1
        elif standard_fraction(seq) < min_standard:
            counts["nonstandard"] += 1
        else:
            counts["kept"] += 1
            yield FastaRecord(record.id, record.description, seq)


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="uniref50.fasta.gz (or any FASTA, plain or gzip)")
    parser.add_argument("output", help="filtered FASTA to write (gzip if it ends in .gz)")
    parser.add_argument("--min-len", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--min-standard", type=float, default=0.95)
    args = parser.parse_args(argv)
    if not 1 <= args.min_len <= args.max_len:
        parser.error(f"need 1 <= --min-len <= --max-len, got {args.min_len}, {args.max_len}")
    if not os.path.isfile(args.input):
        parser.error(f"no such input file {args.input}")

    reader = FastaReader(args.input, on_error="skip")
    counts: collections.Counter = collections.Counter()
    records = filter_records(reader, args.min_len, args.max_len, args.min_standard, counts)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    partial = args.output + ".partial" + (".gz" if args.output.endswith(".gz") else "")
    try:
        write_fasta(partial, records)
    except FastaError as e:
        os.remove(partial)
        sys.exit(f"error: {e}")
    os.replace(partial, args.output)
    report = {
        name: counts[name] for name in ("read", "kept", "too_short", "too_long", "nonstandard")
    }
    report["bad_records_skipped"] = reader.num_skipped
    with open(args.output + ".report.json", "w") as f:
        json.dump({**report, **vars(args)}, f, indent=2)
    for name, value in report.items():
        print(f"{name:>20}: {value:,}")
    return report


if __name__ == "__main__":
    main()
