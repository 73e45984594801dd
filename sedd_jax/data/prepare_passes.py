"""The three passes of `prepare` (see its docstring), each resumable: its outputs and a
per-bucket marker go to `DIR/.tmp/`, renamed into place when complete.

`read_pass` streams a corpus into hash buckets, `clean_bucket` validates, deduplicates and
splits one bucket and counts its ligand vocabulary, `encode_bucket` writes one bucket's
shards. The bucket functions run in worker processes, so they take only paths and the job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import numpy as np
from tqdm import tqdm

from sedd_jax.data import corpora, pair_tables
from sedd_jax.data.batching import is_validation
from sedd_jax.data.shards import (
    SPLITS,
    TEXT_FIELDS,
    DataError,
    atomic_write_json,
    encode_proteins,
    encode_smiles,
    encode_text,
    shard_name,
    write_shard,
)
from sedd_jax.data.smiles import SmilesTokenizer, canonicalize, randomize, tokenize

TMP = ".tmp"


def _bucket(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % (
        num_shards
    )


def tmp_path(out: str, name: str) -> str:
    return os.path.join(out, TMP, name)


def read_pass(out: str, corpus: corpora.Corpus, options: dict, progress: bool) -> dict:
    """Pass 1: stream records into hash buckets `.tmp/bucket-k.tsv`."""
    done = tmp_path(out, "read.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    n = options["num_shards"]
    buckets = [open(tmp_path(out, f"bucket-{k:05d}.tsv"), "w", encoding="utf-8") for k in range(n)]
    skipped: Counter = Counter()
    read = kept = 0
    try:
        records = corpus.records(options["on_error"], skipped)
        bar = tqdm(records, desc=f"read {corpus.name}", unit=" rec", disable=not progress)
        for file_index, ref, payload in bar:
            read += 1
            if corpus.kind == "protein" and len(payload) < options["min_len"]:
                skipped["too_short"] += 1
                continue
            if corpus.kind == "smiles" and options["canonicalize"]:
                # canonical here, so that duplicates that differ only in writing meet in a bucket
                payload = canonicalize(payload) or payload
            key = payload.split("\t", 1)[0].upper() if corpus.kind == "pairs" else payload
            buckets[_bucket(key, n)].write(f"{file_index}\t{ref}\t{payload}\n")
            kept += 1
            if kept == options["max_records"]:
                break
    finally:
        for f in buckets:
            f.close()
    stats = {"read": read, "kept": kept, "skipped": dict(skipped)}
    atomic_write_json(done, stats)
    return stats


def _ligand_class(options: dict) -> type[SmilesTokenizer]:
    if options["ligand_representation"] == "smiles":
        return SmilesTokenizer
    from sedd_jax.data.selfies import ligand_tokenizer_class  # needs the selfies package

    return ligand_tokenizer_class(options["ligand_representation"])


def _check_smiles(smiles: str, options: dict, rdkit_parses, tokenizer_class):
    """(SMILES to store (canonical if asked), its tokens) or (None, problem)."""
    if options["canonicalize"]:
        smiles = canonicalize(smiles)
        if smiles is None:
            return None, "invalid_smiles"
    try:
        tokens = tokenize(smiles)
    except ValueError:
        return None, "invalid_smiles"
    if rdkit_parses is not None and not options["canonicalize"] and not rdkit_parses(smiles):
        return None, "invalid_smiles"
    if tokenizer_class is not SmilesTokenizer:
        try:
            tokens = tokenizer_class.split(smiles)
        except ValueError:  # SelfiesEncodeError
            return None, "no_selfies"
    return smiles, tokens


def _random_form_tokens(smiles: str, forms: int, tokenizer_class) -> list[str]:
    """The tokens of `forms` random SMILES of `smiles` (drawn from its hash), for the
    vocabulary; forms that cannot be written are left out."""
    seed = int.from_bytes(hashlib.blake2b(smiles.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    tokens = []
    for _ in range(forms):
        try:
            tokens += tokenizer_class.split(randomize(smiles, rng))
        except ValueError:
            continue
    return tokens


def clean_bucket(out: str, job: dict, k: int) -> dict:
    """Pass 2 for bucket k: validate, deduplicate, split; writes `.tmp/clean-k.tsv`."""
    done = tmp_path(out, f"clean-{k:05d}.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    options, kind, files = job["options"], job["kind"], job["files"]
    rdkit_parses = pair_tables.rdkit_parser() if options["validate_smiles"] else None
    tokenizer_class = _ligand_class(options) if kind != "protein" else None
    seen: set[str] = set()
    skipped: Counter = Counter()
    vocab: Counter = Counter()
    duplicates = 0
    splits = Counter()
    target = tmp_path(out, f"clean-{k:05d}.tsv")
    with open(tmp_path(out, f"bucket-{k:05d}.tsv"), encoding="utf-8") as src:
        with open(target + ".tmp", "w", encoding="utf-8") as dst:
            for line in src:
                file_index, ref, payload = line.rstrip("\n").split("\t", 2)
                if kind != "protein":
                    protein, _, smiles = payload.rpartition("\t")
                    problem = None
                    if kind == "pairs":
                        problem = pair_tables.record_problem(protein or None, smiles, None)
                        protein = protein.upper()
                    checked, tokens = None, problem
                    if not problem:
                        checked, tokens = _check_smiles(
                            smiles, options, rdkit_parses, tokenizer_class
                        )
                    if checked is None:
                        problem = tokens
                        if options["on_error"] == "fail":
                            where = f"{files[int(file_index)]['path']}:{ref}"
                            raise DataError(
                                f"{where}: {problem.replace('_', ' ')}: {payload[:80]!r}"
                            )
                        skipped[problem] += 1
                        continue
                    payload = f"{protein}\t{checked}" if kind == "pairs" else checked
                if payload in seen:
                    duplicates += 1
                    continue
                seen.add(payload)
                key = payload.split("\t", 1)[0]
                split = (
                    "val"
                    if is_validation(key, options["val_fraction"], options["split_seed"])
                    else "train"
                )
                splits[split] += 1
                if kind != "protein" and split == "train":
                    vocab.update(tokens)
                    if options["vocab_random_forms"]:
                        vocab.update(
                            _random_form_tokens(
                                checked, options["vocab_random_forms"], tokenizer_class
                            )
                        )
                dst.write(f"{split}\t{payload}\n")
    os.replace(target + ".tmp", target)
    stats = {
        "duplicates": duplicates,
        "skipped": dict(skipped),
        "splits": dict(splits),
        "vocab": dict(vocab),
    }
    atomic_write_json(done, stats)
    return stats


def encode_bucket(out: str, job: dict, k: int, vocabulary: list[str] | None) -> dict:
    """Pass 3 for bucket k: writes shards `train-k` and `val-k`; returns their entries."""
    done = tmp_path(out, f"encode-{k:05d}.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    kind = job["kind"]
    tokenizer = _ligand_class(job["options"])(vocabulary) if vocabulary is not None else None
    rows: dict[str, list[str]] = {split: [] for split in SPLITS}
    with open(tmp_path(out, f"clean-{k:05d}.tsv"), encoding="utf-8") as f:
        for line in f:
            split, payload = line.rstrip("\n").split("\t", 1)
            rows[split].append(payload)
    entries = {}
    for split, payloads in rows.items():
        if kind == "protein":
            fields = {"tokens": encode_proteins(payloads)}
        elif kind == "smiles":
            fields = {"tokens": encode_smiles(payloads, tokenizer), "smiles": encode_text(payloads)}
        else:
            split_rows = [p.split("\t") for p in payloads]
            proteins = [row[0] for row in split_rows]
            ligands = [row[1] for row in split_rows]
            fields = {
                "protein": encode_proteins(proteins),
                "ligand": encode_smiles(ligands, tokenizer),
                TEXT_FIELDS["pairs"]: encode_text(ligands),
            }
        entries[split] = write_shard(out, shard_name(split, k), fields)
    atomic_write_json(done, entries)
    return entries
