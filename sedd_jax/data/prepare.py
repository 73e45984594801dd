"""Prepare a corpus into token shards: `python -m sedd_jax.data.prepare --source=... --out=DIR`.

Three passes, each resumable (their outputs are renamed into place when complete and
marked in `DIR/.tmp/`):

1. read (one process, streaming): records are cleaned and filtered, then routed to
   bucket k = hash(key) mod num_shards, the key being the protein (for pairs too), so
   exact duplicates and all pairs of one protein meet in the same bucket;
2. clean (worker processes, one bucket each): SMILES are tokenized and checked with
   RDKit, optionally canonicalised, and (`ligand_representation="selfies"`) written as
   SELFIES, those SELFIES cannot encode being counted as `no_selfies` and skipped or
   failing by `on_error`; exact duplicates are removed and counted; each record goes to
   `val` when `batching.is_validation(key, val_fraction, split_seed)`; the training
   SMILES tokens (or SELFIES symbols) are counted for the vocabulary, with those of
   `vocab_random_forms` random SMILES of each molecule (so that randomised-SMILES
   augmentation finds its tokens);
3. encode (worker processes): ids are written flat with int64 offsets (`shards.py`),
   and the SMILES text beside them.

`manifest.json` is written last and `.tmp/` removed. Rerunning the same command on an
interrupted directory resumes it; a different command on it is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm import tqdm

from sedd_jax.data import corpora, pair_tables
from sedd_jax.data import pairs as pair_io
from sedd_jax.data.fasta import FastaError
from sedd_jax.data.prepare_passes import clean_bucket, encode_bucket, read_pass, tmp_path
from sedd_jax.data.shards import (
    FORMAT,
    MANIFEST,
    SPLITS,
    VERSION,
    DataError,
    atomic_write_json,
    field_specs,
    file_sha256,
)
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.sources import SourceNotFoundError

log = logging.getLogger(__name__)
USER_ERRORS = (
    DataError,
    FastaError,
    pair_tables.PairTableError,
    SourceNotFoundError,
    pair_io.PairSourceNotFoundError,
)
SPLIT_RULE = "val iff blake2b(key, key=str(seed), 8 bytes) / 2^64 < val_fraction (is_validation)"
INLINE_BELOW = 100_000  # records: fewer run in this process (worker start-up costs more)


def default_options(**overrides) -> dict[str, Any]:
    """The preparation options (all of them go into the manifest and the resume check)."""
    options = {
        "kind": None,
        "min_len": 1,
        "max_records": 0,
        "on_error": "fail",
        "val_fraction": 0.01,
        "split_seed": 0,
        "num_shards": 16,
        "validate_smiles": True,
        "canonicalize": False,
        "ligand_min_count": 1,
        "ligand_representation": "smiles",
        "vocab_random_forms": 0,
        "sequence_column": "aa_sequence",
        "smiles_column": "smiles",
        "binders": "all",
    }
    unknown = set(overrides) - set(options)
    if unknown:
        raise DataError(f"unknown preparation options {sorted(unknown)}")
    options.update(overrides)
    if options["on_error"] not in ("fail", "skip"):
        raise DataError(f"on_error must be 'fail' or 'skip', got {options['on_error']!r}")
    if not 0.0 <= options["val_fraction"] < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {options['val_fraction']}")
    if options["ligand_representation"] not in ("smiles", "selfies"):
        raise DataError(
            f"ligand_representation must be 'smiles' or 'selfies', got "
            f"{options['ligand_representation']!r}"
        )
    if options["num_shards"] < 1 or options["min_len"] < 1 or options["vocab_random_forms"] < 0:
        raise DataError("num_shards and min_len must be >= 1")
    return options


def _job(corpus: corpora.Corpus, options: dict) -> dict[str, Any]:
    files = [
        {"path": p, "size": os.path.getsize(p), "mtime_ns": os.stat(p).st_mtime_ns}
        for p in corpus.files
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": corpus.name,
        "kind": corpus.kind,
        "files": files,
        "options": {**options, "kind": corpus.kind},
    }


def _start(out: str, job: dict, overwrite: bool) -> bool:
    """Sets up `out`; True when it already holds this finished job."""
    if os.path.isfile(os.path.join(out, MANIFEST)):
        with open(os.path.join(out, MANIFEST)) as f:
            if json.load(f).get("job") == job and not overwrite:
                return True
        if not overwrite:
            raise DataError(
                f"{out}: already holds prepared shards of another source or options; "
                "choose another --out or pass --overwrite"
            )
    job_path = tmp_path(out, "job.json")
    if os.path.isfile(job_path) and not overwrite:
        with open(job_path) as f:
            if json.load(f) != job:
                raise DataError(
                    f"{out}: holds an unfinished preparation of another source or options "
                    f"({job_path}); rerun that command to resume it, or pass --overwrite"
                )
        log.info("%s: resuming an interrupted preparation", out)
        return False
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise DataError(f"{out}: exists and is not a shard directory; choose an empty --out")
    if overwrite and os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(tmp_path(out, ""), exist_ok=True)
    atomic_write_json(job_path, job)
    return False


def _map(fn, items, workers: int, progress: bool, desc: str) -> list:
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(*args) for args in tqdm(items, desc=desc, disable=not progress)]
    context = multiprocessing.get_context("spawn")  # safe when the caller has threads (JAX)
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=context) as pool:
        futures = [pool.submit(fn, *args) for args in items]
        return [f.result() for f in tqdm(futures, desc=desc, disable=not progress)]


def prepare(
    source: str,
    out: str,
    *,
    path: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> dict[str, Any]:
    """Prepares `source` (a corpus name or a file) into shards in `out`; returns the manifest.

    `options` are those of `default_options`. `workers=None` uses every CPU (or this
    process alone for small corpora).
    """
    t0 = time.perf_counter()
    options = default_options(**options)
    corpus = corpora.resolve(
        source,
        path=path,
        kind=options["kind"],
        sequence_column=options["sequence_column"],
        smiles_column=options["smiles_column"],
        binders=options["binders"],
    )
    out = os.path.abspath(out)
    job = _job(corpus, options)
    if _start(out, job, overwrite):
        with open(os.path.join(out, MANIFEST)) as f:
            return json.load(f)
    read = read_pass(out, corpus, options, progress)
    if workers is None:
        workers = 1 if read["kept"] < INLINE_BELOW else (os.cpu_count() or 1)
    n = options["num_shards"]
    cleaned = _map(clean_bucket, [(out, job, k) for k in range(n)], workers, progress, "clean")
    vocab: Counter = Counter()
    for stats in cleaned:
        vocab.update(stats["vocab"])
    vocabulary = None
    if corpus.kind != "protein":
        kept = sorted(t for t, c in vocab.items() if c >= options["ligand_min_count"])
        vocabulary = list(SmilesTokenizer(("<pad>", "<unk>", *kept)).tokens)
    encoded = _map(
        encode_bucket, [(out, job, k, vocabulary) for k in range(n)], workers, progress, "encode"
    )
    skipped = Counter(read["skipped"])
    for stats in cleaned:
        skipped.update(stats["skipped"])
    shards = {split: [e[split] for e in encoded] for split in SPLITS}
    fields = field_specs(corpus.kind, vocabulary, options["ligand_representation"])
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "kind": corpus.kind,
        "source": corpus.name,
        "sources": [
            {"path": f["path"], "size": f["size"], "sha256": file_sha256(f["path"])}
            for f in job["files"]
        ],
        "fields": fields,
        "filters": {k: options[k] for k in ("min_len", "max_records", "on_error")}
        | {
            k: options[k]
            for k in (
                "validate_smiles",
                "canonicalize",
                "ligand_min_count",
                "ligand_representation",
                "vocab_random_forms",
                "binders",
            )
        },
        "split": {
            "rule": SPLIT_RULE,
            "key": "protein" if corpus.kind != "smiles" else "smiles",
            "val_fraction": options["val_fraction"],
            "seed": options["split_seed"],
        },
        "counts": {
            "read": read["read"],
            "kept_after_filters": read["kept"],
            "skipped": dict(skipped),
            "duplicates": sum(s["duplicates"] for s in cleaned),
            **{split: sum(s["count"] for s in shards[split]) for split in SPLITS},
            **{
                f"{split}_tokens": {f: sum(s["tokens"][f] for s in shards[split]) for f in fields}
                for split in SPLITS
            },
        },
        "shards": shards,
        "job": job,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(os.path.join(out, MANIFEST), manifest)
    shutil.rmtree(tmp_path(out, ""), ignore_errors=True)
    for name in os.listdir(out):  # leftovers of writes that a kill interrupted
        if name.endswith(".tmp"):
            os.remove(os.path.join(out, name))
    return manifest


def _summary(manifest: dict) -> str:
    c = manifest["counts"]
    return (
        f"prepared {manifest['source']} ({manifest['kind']}): read {c['read']:,}, "
        f"skipped {sum(c['skipped'].values()):,} {c['skipped'] or ''}, "
        f"duplicates {c['duplicates']:,}, train {c['train']:,}, val {c['val']:,} "
        f"in {manifest['seconds']} s"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m sedd_jax.data.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = default_options()
    parser.add_argument("--source", required=True, help=f"{sorted(corpora.NAMED)} or a file")
    parser.add_argument("--out", required=True, help="directory to write the shards to")
    parser.add_argument("--path", default=None, help="directory of a named source (uniref50)")
    parser.add_argument("--kind", choices=corpora.KINDS, default=None)
    parser.add_argument("--min_len", type=int, default=d["min_len"])
    parser.add_argument("--max_records", type=int, default=0, help="keep the first N (0: all)")
    parser.add_argument("--on_error", choices=("fail", "skip"), default=d["on_error"])
    parser.add_argument("--val_fraction", type=float, default=d["val_fraction"])
    parser.add_argument("--split_seed", type=int, default=d["split_seed"])
    parser.add_argument("--num_shards", type=int, default=d["num_shards"])
    parser.add_argument("--workers", type=int, default=None, help="default: all CPUs")
    parser.add_argument("--validate_smiles", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--canonicalize", action="store_true")
    parser.add_argument("--ligand_min_count", type=int, default=d["ligand_min_count"])
    parser.add_argument("--ligand_representation", choices=("smiles", "selfies"), default="smiles")
    parser.add_argument(
        "--vocab_random_forms",
        type=int,
        default=0,
        help="random SMILES per training molecule counted into the vocabulary "
        "(for data.randomize_smiles)",
    )
    parser.add_argument("--sequence_column", default=d["sequence_column"])
    parser.add_argument("--smiles_column", default=d["smiles_column"])
    parser.add_argument(
        "--binders",
        choices=pair_io.BINDERS,
        default=d["binders"],
        help="demo_pairs: all pairs, or those at or above each table's binder threshold",
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no_progress", action="store_true")
    args = vars(parser.parse_args(argv))
    source, out, path = args.pop("source"), args.pop("out"), args.pop("path")
    workers, overwrite = args.pop("workers"), args.pop("overwrite")
    progress = not args.pop("no_progress") and sys.stderr.isatty()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = prepare(
            source, out, path=path, workers=workers, overwrite=overwrite, progress=progress, **args
        )
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    print(_summary(manifest))
    return manifest


if __name__ == "__main__":
    main()
