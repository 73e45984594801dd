"""Token shards on disk: the format, the manifest, and a random-access reader.

A prepared directory holds, per split (`train`, `val`) and shard k, for each field
(`tokens` for single-track data; `protein` and `ligand` for pairs):

    {split}-{k:05d}.{field}.npy           flat token ids [T] (uint8 / uint16 / uint32)
    {split}-{k:05d}.{field}.offsets.npy   int64 [n + 1]; record i is tokens[off[i]:off[i+1]]

and `manifest.json`, written last: the source files and their sha256, the counts
(read, skipped, duplicates, train, val), the tokenizer and vocabulary of each field, the
filters, the split rule and the sha256 of every shard file. Every file is written under a
temporary name and renamed into place, so a directory without `manifest.json` is an
unfinished preparation and never loads. `.npy` files are opened with `mmap_mode="r"`:
nothing is read until a record is.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from sedd_jax.data.protein import SPECIAL_TOKENS, STANDARD_RESIDUES, ProteinTokenizer
from sedd_jax.data.smiles import SMILES_REGEX, SmilesTokenizer

FORMAT = "sedd-token-shards"
VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
PROTEIN_TOKENIZER = "protein"
SMILES_TOKENIZER = "smiles"
SINGLE_FIELDS = ("tokens",)
PAIR_FIELDS = ("protein", "ligand")


class DataError(ValueError):
    """Bad data or a bad prepared directory; the message names the file (and record)."""


class UnfinishedPreparationError(DataError):
    """A directory whose preparation has not finished (no manifest.json)."""


def protein_tokenizer_spec() -> dict[str, Any]:
    """The protein tokenizer as stored in a manifest: its id -> token table."""
    return {"name": PROTEIN_TOKENIZER, "tokens": list(SPECIAL_TOKENS) + list(STANDARD_RESIDUES)}


def smiles_tokenizer_spec(tokenizer: SmilesTokenizer) -> dict[str, Any]:
    """The SMILES tokenizer as stored in a manifest: vocabulary and the splitting regex."""
    return {"name": SMILES_TOKENIZER, "regex": SMILES_REGEX.pattern, **tokenizer.to_dict()}


def smallest_uint(num_ids: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids 0..num_ids-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_ids <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"{num_ids} ids do not fit uint32")


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write_bytes(path: str, write) -> None:
    """Calls `write(f)` on `path + '.tmp'`, fsyncs and renames it to `path`."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=1) + "\n").encode()))


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def write_shard(
    directory: str, name: str, fields: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Writes one shard atomically; `fields` maps a field to (flat ids [T], lengths [n]).

    Returns the shard's manifest entry: name, record count, tokens per field, file hashes.
    """
    counts = {len(lengths) for _, lengths in fields.values()}
    if len(counts) != 1:
        raise ValueError(f"shard {name}: fields have different record counts {counts}")
    files = {}
    tokens_total = {}
    for field, (flat, lengths) in fields.items():
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] != len(flat):
            raise ValueError(f"shard {name}.{field}: lengths sum to {offsets[-1]} != {len(flat)}")
        for suffix, array in ((f"{field}.npy", flat), (f"{field}.offsets.npy", offsets)):
            fname = f"{name}.{suffix}"
            atomic_write_bytes(os.path.join(directory, fname), lambda f, a=array: np.save(f, a))
            files[fname] = file_sha256(os.path.join(directory, fname))
        tokens_total[field] = int(offsets[-1])
    return {"name": name, "count": counts.pop(), "tokens": tokens_total, "files": files}


def encode_proteins(seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Protein ids of `seqs` as (flat uint8 ids [T], lengths [n])."""
    table = ProteinTokenizer()._encode_table.astype(np.uint8)
    flat = table[np.frombuffer("".join(seqs).encode("ascii"), dtype=np.uint8)]
    return flat, np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))


def encode_smiles(smiles: list[str], tokenizer: SmilesTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """SMILES ids as (flat ids [T] in the smallest type, lengths [n])."""
    ids = [tokenizer.encode(s) for s in smiles]
    dtype = smallest_uint(tokenizer.vocab_size)
    flat = np.concatenate(ids).astype(dtype) if ids else np.zeros(0, dtype)
    return flat, np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))


def field_specs(kind: str, vocabulary: list[str] | None) -> dict[str, dict]:
    """The manifest's `fields` entry: tokenizer and dtype of each stored field."""
    protein = {"tokenizer": protein_tokenizer_spec(), "dtype": "uint8"}
    if kind == "protein":
        return {"tokens": protein}
    smiles_tok = SmilesTokenizer(vocabulary)
    smiles = {
        "tokenizer": smiles_tokenizer_spec(smiles_tok),
        "dtype": smallest_uint(smiles_tok.vocab_size).name,
    }
    return {"tokens": smiles} if kind == "smiles" else {"protein": protein, "ligand": smiles}


def read_manifest(directory: str) -> dict[str, Any]:
    """The manifest of a prepared directory, checked for format and version."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        if os.path.isdir(os.path.join(directory, ".tmp")):
            raise UnfinishedPreparationError(
                f"{directory}: preparation did not finish (no {MANIFEST}); rerun the same "
                "`python -m sedd_jax.data.prepare` command to resume it"
            )
        raise DataError(
            f"{directory}: no {MANIFEST}; not a prepared shard directory "
            "(make one with `python -m sedd_jax.data.prepare --source=... --out=DIR`)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise DataError(
            f"{path}: shard format version {manifest.get('version')!r}, this code reads {VERSION}"
        )
    return manifest


def check_tokenizer(manifest: Mapping, field: str, path: str) -> None:
    """Raises DataError unless `field`'s tokenizer is one this code writes identically."""
    spec = manifest["fields"][field]["tokenizer"]
    name = spec.get("name")
    if name == PROTEIN_TOKENIZER:
        ours = protein_tokenizer_spec()
        if spec.get("tokens") != ours["tokens"]:
            raise DataError(
                f"{path}: field {field!r} was written by another protein vocabulary "
                f"{spec.get('tokens')} (this code: {ours['tokens']}); prepare the data again"
            )
    elif name == SMILES_TOKENIZER:
        if spec.get("regex") != SMILES_REGEX.pattern:
            raise DataError(
                f"{path}: field {field!r} was tokenized with another SMILES regex "
                f"{spec.get('regex')!r}; prepare the data again"
            )
        SmilesTokenizer.from_dict({k: v for k, v in spec.items() if k not in ("name", "regex")})
    else:
        raise DataError(f"{path}: field {field!r} has unknown tokenizer {name!r}")


def verify_files(directory: str, manifest: Mapping) -> None:
    """Raises DataError naming the first shard file that is missing or whose sha256 differs."""
    for split in SPLITS:
        for shard in manifest["shards"][split]:
            for fname, digest in shard["files"].items():
                path = os.path.join(directory, fname)
                if not os.path.isfile(path):
                    raise DataError(f"{path}: shard file listed in {MANIFEST} is missing")
                if file_sha256(path) != digest:
                    raise DataError(
                        f"{path}: sha256 does not match {MANIFEST} (the shard changed after "
                        "preparation); prepare the data again"
                    )


class ShardSource:
    """Random access to the records of one split, across all its shards.

    Implements grain's `RandomAccessDataSource` protocol (`__len__`, `__getitem__`):
    `source[i]` is `{field: ids [len_i]}` (the stored dtype). Memory maps are opened
    lazily in each process, so the source pickles cheaply into grain worker processes.
    """

    def __init__(self, directory: str, manifest: Mapping, split: str):
        self.directory = directory
        self.split = split
        self.fields = tuple(manifest["fields"])
        self.shards = [s["name"] for s in manifest["shards"][split]]
        counts = [s["count"] for s in manifest["shards"][split]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
        self._maps: dict | None = None

    def __getstate__(self):
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return self._starts[-1]

    def _open(self) -> dict:
        if self._maps is None:
            self._maps = {}
            for name in self.shards:
                for field in self.fields:
                    base = os.path.join(self.directory, f"{name}.{field}")
                    self._maps[name, field] = (
                        np.load(base + ".npy", mmap_mode="r"),
                        np.load(base + ".offsets.npy", mmap_mode="r"),
                    )
        return self._maps

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, index within the shard) of record `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} outside [0, {len(self)}) of split {self.split}")
        shard = bisect.bisect_right(self._starts, index) - 1
        return shard, index - self._starts[shard]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        shard, local = self.locate(int(index))
        maps = self._open()
        out = {}
        for field in self.fields:
            tokens, offsets = maps[self.shards[shard], field]
            out[field] = np.array(tokens[offsets[local] : offsets[local + 1]])
        return out

    def lengths(self, field: str) -> np.ndarray:
        """Record lengths `[N]` int64 of `field` (reads only the offsets)."""
        maps = self._open()
        parts = [np.diff(maps[name, field][1]) for name in self.shards]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def token_counts(self, field: str, num_ids: int, max_tokens: int = 1 << 24) -> np.ndarray:
        """Counts `[num_ids]` of the ids of `field`, over at most `max_tokens` tokens taken
        proportionally from the start of every shard (bounded time and memory)."""
        maps = self._open()
        total = sum(int(maps[name, field][1][-1]) for name in self.shards)
        fraction = min(1.0, max_tokens / max(total, 1))
        counts = np.zeros(num_ids, np.int64)
        for name in self.shards:
            tokens = maps[name, field][0]
            take = int(np.ceil(len(tokens) * fraction))
            counts += np.bincount(np.asarray(tokens[:take]), minlength=num_ids)[:num_ids]
        return counts


class ShardSet:
    """A prepared directory: manifest checked, shard files verified, splits as sources."""

    def __init__(self, directory: str, *, verify: bool = True):
        self.directory = os.fspath(directory)
        self.manifest = read_manifest(self.directory)
        path = os.path.join(self.directory, MANIFEST)
        for field in self.manifest["fields"]:
            check_tokenizer(self.manifest, field, path)
        if verify:
            verify_files(self.directory, self.manifest)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def source(self, split: str) -> ShardSource:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return ShardSource(self.directory, self.manifest, split)

    def tokenizer_spec(self, field: str) -> dict[str, Any]:
        return self.manifest["fields"][field]["tokenizer"]

    def smiles_tokenizer(self, field: str) -> SmilesTokenizer:
        spec = self.tokenizer_spec(field)
        return SmilesTokenizer.from_dict(
            {k: v for k, v in spec.items() if k not in ("name", "regex")}
        )
