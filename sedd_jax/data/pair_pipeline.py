"""From `config.data` to protein–ligand pair arrays (numpy only).

Arrays: protein [N, Lp] int32, protein_valid [N, Lp] bool, ligand [N, Ll] int32,
ligand_valid [N, Ll] bool. The split is by protein (validation proteins are unseen in
training); pairs whose SMILES is longer than `max_ligand_len` tokens are dropped (a
truncated SMILES is no molecule), proteins are cropped; the SMILES vocabulary is built
from the training SMILES only, and saved with every checkpoint. Ligands are SMILES tokens
or SELFIES symbols by `data.ligand_representation` (lengths count those; ligands SELFIES
cannot encode are dropped and counted as `no_selfies`).

This in-memory path is what `sedd_jax.evaluate` rebuilds a run's reference set with;
training reads shards (`track_data.py`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from sedd_jax.data.batching import Batcher, encode_and_pad, length_distribution
from sedd_jax.data.pairs import (
    PairTable,
    deduplicate,
    load_demo_pairs,
    read_pair_table,
    split_pairs_by_protein,
)
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.smiles import SmilesTokenizer, canonicalize

log = logging.getLogger(__name__)


def _ligand_class(data_config) -> type[SmilesTokenizer]:
    representation = data_config.get("ligand_representation", "smiles")
    if representation == "smiles":
        return SmilesTokenizer
    from sedd_jax.data.selfies import ligand_tokenizer_class

    return ligand_tokenizer_class(representation)


def _demo(data_config) -> PairTable:
    del data_config
    return load_demo_pairs()


def _table(data_config) -> PairTable:
    return read_pair_table(
        data_config.path,
        sequence_column=data_config.sequence_column,
        smiles_column=data_config.smiles_column,
        on_error=data_config.on_error,
        validate_smiles=data_config.validate_smiles,
    )


PAIR_SOURCES = {"demo_pairs": _demo, "pair_table": _table}


@dataclasses.dataclass
class PairData:
    protein_tokenizer: ProteinTokenizer
    ligand_tokenizer: SmilesTokenizer
    train: dict
    val: dict
    protein_lengths: np.ndarray  # [Lp + 1] training length distributions
    ligand_lengths: np.ndarray  # [Ll + 1]
    val_sequences: list[str]  # validation proteins (strings), for conditional sampling
    val_smiles: list[str]


def load_pair_table(data_config) -> PairTable:
    if data_config.source not in PAIR_SOURCES:
        raise ValueError(
            f"data.source={data_config.source!r}; choose one of {sorted(PAIR_SOURCES)}"
        )
    table = PAIR_SOURCES[data_config.source](data_config)
    if data_config.canonicalize:
        pairs = []
        for seq, smi in table.pairs():
            canonical = canonicalize(smi)
            if canonical is not None:
                pairs.append((seq, canonical))
        table = deduplicate(pairs)
    split = _ligand_class(data_config).split
    lengths = []
    for smi in table.smiles:
        try:
            lengths.append(len(split(smi)))
        except ValueError:  # no SELFIES
            lengths.append(None)
    keep = [n is not None and n <= data_config.max_ligand_len for n in lengths]
    if not all(keep):
        dropped = sum(n is not None and not k for n, k in zip(lengths, keep, strict=True))
        no_selfies = lengths.count(None)
        log.info(
            "dropping %d pairs whose SMILES exceed data.max_ligand_len=%d tokens "
            "(a truncated SMILES is not a molecule)",
            dropped,
            data_config.max_ligand_len,
        )
        table = PairTable(
            [p for p, k in zip(table.sequences, keep, strict=True) if k],
            [s for s, k in zip(table.smiles, keep, strict=True) if k],
            dict(table.skipped, ligand_too_long=dropped, no_selfies=no_selfies),
        )
    if data_config.max_pairs:
        table = PairTable(
            table.sequences[: data_config.max_pairs], table.smiles[: data_config.max_pairs]
        )
    return table


def encode_pairs(table: PairTable, protein_tok, ligand_tok, data_config) -> dict:
    protein, protein_valid = encode_and_pad(
        table.sequences, protein_tok, data_config.max_protein_len, data_config.crop
    )
    ligand, ligand_valid = encode_and_pad(table.smiles, ligand_tok, data_config.max_ligand_len)
    return {
        "protein": protein,
        "protein_valid": protein_valid,
        "ligand": ligand,
        "ligand_valid": ligand_valid,
    }


def load_pair_data(data_config, seed: int) -> PairData:
    """Read, split by protein, build the SMILES vocabulary, encode and pad both tracks."""
    table = load_pair_table(data_config)
    train, val = split_pairs_by_protein(table, data_config.val_fraction, seed)
    if not len(train) or not len(val):
        raise ValueError(
            f"data: {len(train)} training and {len(val)} validation pairs; both must be "
            "non-empty (check data.val_fraction and data.max_pairs)"
        )
    protein_tok = ProteinTokenizer(data_config.vocab_size)
    ligand_tok = _ligand_class(data_config).build(
        train.smiles, min_count=data_config.ligand_min_count
    )
    train_arrays = encode_pairs(train, protein_tok, ligand_tok, data_config)
    val_arrays = encode_pairs(val, protein_tok, ligand_tok, data_config)
    return PairData(
        protein_tok,
        ligand_tok,
        train_arrays,
        val_arrays,
        length_distribution(train_arrays["protein_valid"]),
        length_distribution(train_arrays["ligand_valid"]),
        list(val.sequences),
        list(val.smiles),
    )


def make_pair_batcher(data: PairData, batch_size: int, seed: int, num_shards=1, shard_index=0):
    return Batcher(
        data.train, batch_size, seed=seed, num_shards=num_shards, shard_index=shard_index
    )
