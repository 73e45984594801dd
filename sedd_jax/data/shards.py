"""Token shards on disk: the format, the manifest, and a random-access reader.

A prepared directory holds, per split (`train`, `val`) and shard k, for each field
(`tokens` for single-track data; `protein` and `ligand` for pairs):

    {split}-{k:05d}.{field}.npy           flat token ids [T] (uint8 / uint16 / uint32)
    {split}-{k:05d}.{field}.offsets.npy   int64 [n + 1]; record i is tokens[off[i]:off[i+1]]

SMILES data also store each record's SMILES as UTF-8 bytes (field `smiles` beside
`tokens`, `ligand_smiles` beside `ligand`), what randomised-SMILES augmentation writes
anew at load. The ligand ids are atom-level SMILES tokens or SELFIES symbols
(`data.ligand_representation`), named by the field's tokenizer.

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
SELFIES_TOKENIZER = "selfies"
TEXT_TOKENIZER = "utf8"
SINGLE_FIELDS = ("tokens",)
PAIR_FIELDS = ("protein", "ligand")
# the field holding the SMILES text of the records, per kind of data
TEXT_FIELDS = {"smiles": "smiles", "pairs": "ligand_smiles"}


class DataError(ValueError):
    """Bad data or a bad prepared directory; the message names the file (and record)."""


class UnfinishedPreparationError(DataError):
    """A directory whose preparation has not finished (no manifest.json)."""


def protein_tokenizer_spec() -> dict[str, Any]:
    """The protein tokenizer as stored in a manifest: its id -> token table."""
    return {"name": PROTEIN_TOKENIZER, "tokens": list(SPECIAL_TOKENS) + list(STANDARD_RESIDUES)}


def smiles_tokenizer_spec(tokenizer: SmilesTokenizer) -> dict[str, Any]:
    """The ligand tokenizer as stored in a manifest: vocabulary, and the splitting regex
    (SMILES) or the selfies version (SELFIES)."""
    if tokenizer.representation == SELFIES_TOKENIZER:
        import selfies

        return {"name": SELFIES_TOKENIZER, "selfies": selfies.__version__, **tokenizer.to_dict()}
    return {"name": SMILES_TOKENIZER, "regex": SMILES_REGEX.pattern, **tokenizer.to_dict()}


def ligand_tokenizer(spec: Mapping[str, Any], source: str = "<manifest>") -> SmilesTokenizer:
    """The SMILES or SELFIES tokenizer of a manifest field's tokenizer spec."""
    from sedd_jax.data.selfies import ligand_tokenizer_from_dict

    data = {k: v for k, v in spec.items() if k not in ("name", "regex", "selfies")}
    return ligand_tokenizer_from_dict(data, source)


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


def encode_text(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of `strings` as (flat uint8 [T], lengths [n])."""
    data = [s.encode("utf-8") for s in strings]
    flat = np.frombuffer(b"".join(data), dtype=np.uint8)
    return flat, np.fromiter(map(len, data), dtype=np.int64, count=len(data))


def field_specs(
    kind: str, vocabulary: list[str] | None, representation: str = SMILES_TOKENIZER
) -> dict[str, dict]:
    """The manifest's `fields` entry: tokenizer and dtype of each stored field."""
    protein = {"tokenizer": protein_tokenizer_spec(), "dtype": "uint8"}
    if kind == "protein":
        return {"tokens": protein}
    from sedd_jax.data.selfies import ligand_tokenizer_class

    ligand_tok = ligand_tokenizer_class(representation)(vocabulary)
    ligand = {
        "tokenizer": smiles_tokenizer_spec(ligand_tok),
        "dtype": smallest_uint(ligand_tok.vocab_size).name,
    }
    text = {TEXT_FIELDS[kind]: {"tokenizer": {"name": TEXT_TOKENIZER}, "dtype": "uint8"}}
    if kind == "smiles":
        return {"tokens": ligand, **text}
    return {"protein": protein, "ligand": ligand, **text}


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
    elif name == SELFIES_TOKENIZER:
        try:
            ligand_tokenizer(spec, path)
        except ValueError as e:
            raise DataError(f"{path}: field {field!r}: {e}") from e
    elif name != TEXT_TOKENIZER:
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

    def texts(self, field: str, max_records: int = 0) -> list[str]:
        """The UTF-8 strings of a text field (`smiles`, `ligand_smiles`): all records, or
        at most `max_records` taken proportionally from the start of every shard."""
        maps = self._open()
        fraction = min(1.0, max_records / max(len(self), 1)) if max_records else 1.0
        out = []
        for name in self.shards:
            flat, offsets = maps[name, field]
            take = int(np.ceil((len(offsets) - 1) * fraction))
            data = bytes(flat[: offsets[take]])
            bounds = offsets[: take + 1].tolist()
            out += [data[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return out

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
        """The ligand tokenizer of `field` (SMILES tokens or SELFIES symbols)."""
        return ligand_tokenizer(self.tokenizer_spec(field), os.path.join(self.directory, MANIFEST))

    @property
    def ligand_representation(self) -> str | None:
        """`smiles` or `selfies` for SMILES data and pairs; None for proteins."""
        field = {"smiles": "tokens", "pairs": "ligand"}.get(self.kind)
        return self.tokenizer_spec(field)["name"] if field else None

    @property
    def text_field(self) -> str | None:
        """The field with the records' SMILES text, or None (proteins; older shards)."""
        field = TEXT_FIELDS.get(self.kind)
        return field if field in self.manifest["fields"] else None
