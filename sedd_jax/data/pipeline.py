"""From `config.data` to in-memory arrays (numpy only), for the torch twin and evaluation.

The JAX trainer reads prepared shards instead (`track_data.py`, `loader.py`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from sedd_jax.data.batching import (
    Batcher,
    encode_and_pad,
    length_distribution,
    split_train_val,
)
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.sources import SourceNotFoundError, load_sequences

UNIREF50_HINT = (
    "download it: python -m sedd_jax.data.download uniref50 --out data/uniref50, then set "
    "data.path=data/uniref50/uniref50.fasta.gz (the JAX trainer reads prepared shards "
    "instead: data.source=shards, see configs/stable.py)"
)


@dataclasses.dataclass
class ProteinData:
    tokenizer: ProteinTokenizer
    train: dict  # tokens, valid: [N_train, L]
    val: dict  # tokens, valid: [N_val, L]
    lengths: np.ndarray  # [L + 1] training length distribution


def _sequences(data_config) -> list[str]:
    source, path = data_config.source, data_config.path or None
    if source == "uniref50":
        if not path or not os.path.isfile(path):
            raise SourceNotFoundError(
                f"data.source='uniref50': no FASTA at data.path={path!r}; " + UNIREF50_HINT
            )
        source = "fasta"
    return load_sequences(
        source,
        path,
        min_len=data_config.min_len,
        max_count=data_config.max_sequences or None,
        on_error=data_config.on_error,
    )


def _from_shards(data_config) -> ProteinData:
    """Both splits of a prepared protein directory in memory (windows start at 0)."""
    from sedd_jax.data.loader import split_arrays  # grain, only for this source
    from sedd_jax.data.track_data import load_single_track

    data = load_single_track(data_config)
    if data.shards.kind != "protein":
        raise ValueError(f"{data_config.path}: holds {data.shards.kind} data, not proteins")
    train = split_arrays(data.shards.source("train"), data.specs)
    return ProteinData(data.tokenizers["tokens"], train, data.val, data.lengths["tokens"])


def load_protein_data(data_config, seed: int) -> ProteinData:
    """Read, split (by sequence hash), crop and pad the proteins named by `config.data`.

    `data.source="shards"` reads both splits of the prepared directory into memory (for
    the torch twin and `sedd_jax.evaluate`; the JAX trainer streams them instead).
    """
    if data_config.source == "shards":
        return _from_shards(data_config)
    tokenizer = ProteinTokenizer(data_config.vocab_size)
    train_seqs, val_seqs = split_train_val(_sequences(data_config), data_config.val_fraction, seed)
    if not train_seqs or not val_seqs:
        raise ValueError(
            f"data: {len(train_seqs)} training and {len(val_seqs)} validation sequences; "
            "both must be non-empty (check data.val_fraction and data.max_sequences)"
        )
    rng = np.random.default_rng(seed)
    arrays = []
    for seqs in (train_seqs, val_seqs):
        tokens, valid = encode_and_pad(seqs, tokenizer, data_config.max_len, data_config.crop, rng)
        arrays.append({"tokens": tokens, "valid": valid})
    train, val = arrays
    return ProteinData(tokenizer, train, val, length_distribution(train["valid"]))


def make_batcher(data: ProteinData, batch_size: int, seed: int, num_shards=1, shard_index=0):
    return Batcher(
        data.train, batch_size, seed=seed, num_shards=num_shards, shard_index=shard_index
    )
