"""Conditional generation for files of inputs: N ligands per protein of a FASTA, or N
proteins per ligand of a SMILES file / CSV, with outputs keyed to their inputs.

Rows are laid out input-major (input c, sample j) and cut into chunks of `batch` rows;
chunk k is sampled with `fold_in(key(seed), k)` on all local devices (the rows sharded
over a one-axis mesh, padded to a multiple of the device count). The random draws of a
row depend only on (seed, chunk, position in the chunk), so the output is the same on
any number of devices.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
from tqdm import tqdm

from sedd_jax.data.fasta import read_fasta
from sedd_jax.training.generation import draw_lengths, initial_tokens


class ConditionFileError(ValueError):
    """An input file that cannot be read; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Condition:
    id: str
    text: str


def read_proteins(path: str) -> list[Condition]:
    """The records of a FASTA file (plain or gzip) as (id, sequence)."""
    records = read_fasta(path)
    if not records:
        raise ConditionFileError(f"{path}: no FASTA records")
    return [Condition(r.id, r.sequence) for r in records]


def read_ligands(path: str) -> list[Condition]:
    """SMILES inputs: a CSV/TSV with a `smiles` column (and optional `id`), or a SMILES
    file with `SMILES [id]` per line (ids default to `ligand_<line>`)."""
    if not os.path.isfile(path):
        raise ConditionFileError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    with open(path, newline="", encoding="utf-8") as f:
        if ext in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="," if ext == ".csv" else "\t")
            if "smiles" not in (reader.fieldnames or []):
                raise ConditionFileError(
                    f"{path}: needs a 'smiles' column (has {reader.fieldnames})"
                )
            out = []
            for line, row in enumerate(reader, start=2):
                if not (row["smiles"] or "").strip():
                    raise ConditionFileError(f"{path}, line {line}: empty smiles")
                out.append(Condition(row.get("id") or f"ligand_{line}", row["smiles"].strip()))
        else:
            out = []
            for line, text in enumerate(f, start=1):
                fields = text.split()
                if fields:
                    out.append(
                        Condition(fields[1] if len(fields) > 1 else f"ligand_{line}", fields[0])
                    )
    if not out:
        raise ConditionFileError(f"{path}: no SMILES")
    return out


def context_rows(conditions, per_condition, encode, max_len, pad_id, name):
    """Context-track arrays (tokens, valid) [C * per_condition, max_len], input-major."""
    n = len(conditions) * per_condition
    tokens = np.full((n, max_len), pad_id, np.int32)
    valid = np.zeros((n, max_len), bool)
    for c, cond in enumerate(conditions):
        try:
            ids = encode(cond.text)
        except ValueError as e:
            raise ConditionFileError(f"{name} {cond.id!r}: {e}") from None
        if len(ids) > max_len:
            raise ConditionFileError(
                f"{name} {cond.id!r} has {len(ids)} tokens; the model takes at most {max_len}"
            )
        rows = slice(c * per_condition, (c + 1) * per_condition)
        tokens[rows, : len(ids)] = ids
        valid[rows, : len(ids)] = True
    return tokens, valid


def generated_rows(n, length, max_len, length_dist, mask_id, pad_id, seed, head_lengths=None):
    """Mask-filled rows to generate (tokens, valid). Lengths: `length` when > 0; else
    `head_lengths(key(seed))` -> [n] (the model's p(L | context) on each row's context,
    `generation.make_length_sampler`) where the run has a length head; else drawn from
    the training distribution `length_dist`."""
    if length <= 0 and head_lengths is not None:
        lengths = np.asarray(head_lengths(jax.random.key(seed)))
    else:
        lengths = draw_lengths(n, length, max_len, length_dist, np.random.default_rng(seed))
    return initial_tokens(lengths, max_len, mask_id, pad_id)


def sample_in_chunks(sampler, params, arrays, seed: int, batch: int, progress: bool = True):
    """sampler(params, *chunk arrays, key) -> tuple of [rows, L] arrays, over all rows.

    `arrays`: equal-length [N, ...] numpy arrays in the sampler's argument order.
    """
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    n = len(arrays[0])
    outputs = []
    for k, start in enumerate(tqdm(range(0, n, batch), disable=not progress, unit="chunk")):
        chunk = [a[start : start + batch] for a in arrays]
        rows = len(chunk[0])
        padded = -(-rows // len(devices)) * len(devices)
        chunk = [np.concatenate([a, np.repeat(a[:1], padded - rows, 0)]) for a in chunk]
        placed = [jax.device_put(a, sharding) for a in chunk]
        out = sampler(params, *placed, jax.random.fold_in(jax.random.key(seed), k))
        outputs.append([np.asarray(o)[:rows] for o in out])
    return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_outputs(path: str, header, rows, settings: dict) -> str:
    """The CSV, and its settings as `<path>.json` beside it."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    with open(path + ".json", "w") as f:
        json.dump(settings, f, indent=1, sort_keys=True)
        f.write("\n")
    return path
