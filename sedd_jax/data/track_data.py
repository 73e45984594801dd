"""From `config.data` to the data of a run (numpy only): `TrackData`, the shards that
`shard_cache.open_shards` names with their field specs, tokenizers, bounded validation
arrays, training length distributions and loaders, for one track or for pairs.

Ligands (SMILES data and the ligand track of pairs) are atom-level SMILES tokens or
SELFIES symbols, by `data.ligand_representation`; the manifest names which, and a
directory of the other one is refused. `data.randomize_smiles` writes every training
ligand anew per (seed, epoch, record) from the SMILES text stored in the shards
(`smiles.RandomizedSmiles`); its vocabulary then also counts
`shard_cache.VOCAB_RANDOM_FORMS` random forms per training molecule.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from sedd_jax.data.plan import Batcher, FieldSpec, length_distribution, split_arrays
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.shard_cache import agreeing_options, open_shards, pair_options, single_options
from sedd_jax.data.shards import DataError, ShardSet
from sedd_jax.data.smiles import RandomizedSmiles, SmilesTokenizer

VAL_STRINGS = 256  # validation pairs decoded to strings for conditional sampling
NOVELTY_REFERENCE = 1 << 18  # training SMILES at most in the novelty reference


@dataclasses.dataclass
class TrackData:
    """Shards plus everything the task adapters take from the data."""

    shards: ShardSet
    specs: tuple  # plan.FieldSpec per field, the first one bucketed
    tokenizers: dict  # field -> ProteinTokenizer | SmilesTokenizer
    val: dict  # bounded validation arrays [n, L]
    lengths: dict  # field -> training length distribution [max_len + 1]

    def _batching(self, data_config, seed, num_shards, shard_index) -> dict:
        return dict(
            seed=seed,
            num_shards=num_shards,
            shard_index=shard_index,
            bucket_window=data_config.get("bucket_window", 0),
            pad_multiple=data_config.get("pad_multiple", 64),
        )

    def loader(self, data_config, batch_size, seed, num_shards=1, shard_index=0):
        """The grain loader of the training split (worker processes; imports jax)."""
        from sedd_jax.data.loader import ShardLoader  # grain: imported only when training

        return ShardLoader(
            self.shards.source("train"),
            self.specs,
            batch_size,
            **self._batching(data_config, seed, num_shards, shard_index),
            num_workers=data_config.num_workers,
            prefetch=data_config.prefetch,
        )

    def batcher(self, data_config, batch_size, seed, num_shards=1, shard_index=0) -> Batcher:
        """The rows of `loader(...)`, batched in-process with numpy (the torch twin)."""
        return Batcher(
            self.shards.source("train"),
            self.specs,
            batch_size,
            **self._batching(data_config, seed, num_shards, shard_index),
        )

    def train_arrays(self, max_rows: int = 0) -> dict[str, np.ndarray]:
        """The first `max_rows` training records (all when 0) as padded arrays (windows
        start at 0): the reference set of sample reports."""
        return split_arrays(self.shards.source("train"), self.specs, max_rows)

    def unigram_counts(self, field: str, num_ids: int) -> np.ndarray:
        """Training id counts [num_ids] of `field` (from at most 2^24 stored tokens)."""
        return self.shards.source("train").token_counts(field, num_ids)

    # pairs: the names `PairTrack` reads
    @property
    def protein_tokenizer(self) -> ProteinTokenizer:
        return self.tokenizers["protein"]

    @property
    def ligand_tokenizer(self) -> SmilesTokenizer:
        return self.tokenizers["ligand"]

    @property
    def protein_lengths(self) -> np.ndarray:
        return self.lengths["protein"]

    @property
    def ligand_lengths(self) -> np.ndarray:
        return self.lengths["ligand"]

    def _smiles_of(self, record: dict, field: str) -> str:
        """The SMILES of a record: its stored text, else its decoded ids (older shards)."""
        text = self.shards.text_field
        if text is not None:
            return record[text].tobytes().decode("utf-8")
        return self.tokenizers[field].decode(record[field])

    @functools.cached_property
    def _val_pairs(self) -> tuple[list[str], list[str]]:
        source = self.shards.source("val")
        seqs, smiles = [], []
        for i in range(min(len(source), VAL_STRINGS)):
            record = source[i]
            if len(record["ligand"]) <= self.specs[1].max_len:
                seqs.append(self.protein_tokenizer.decode(record["protein"]))
                smiles.append(self._smiles_of(record, "ligand"))
        return seqs, smiles

    @functools.cached_property
    def train_smiles(self) -> list[str]:
        """Training SMILES (at most `NOVELTY_REFERENCE`, from the start of every shard):
        the reference of the novelty of sampled ligands."""
        source = self.shards.source("train")
        if self.shards.text_field is not None:
            return source.texts(self.shards.text_field, NOVELTY_REFERENCE)
        field = "ligand" if self.shards.kind == "pairs" else "tokens"
        n = min(len(source), NOVELTY_REFERENCE)
        return [self._smiles_of(source[i], field) for i in range(n)]

    @property
    def val_sequences(self) -> list[str]:
        """Whole validation proteins (the first ones), for conditional sampling."""
        return self._val_pairs[0]

    @property
    def val_smiles(self) -> list[str]:
        return self._val_pairs[1]


def _tokenizer(shards: ShardSet, field: str, vocab_size: int):
    if shards.tokenizer_spec(field)["name"] == "protein":
        return ProteinTokenizer(vocab_size)
    return shards.smiles_tokenizer(field)


def _augmented(shards: ShardSet, spec, tokenizer, data_config):
    """`spec` with randomised-SMILES augmentation when `data.randomize_smiles` is set."""
    if not data_config.get("randomize_smiles", False):
        return spec
    if shards.text_field is None:
        raise DataError(
            f"{shards.directory}: data.randomize_smiles needs shards that store the SMILES "
            "text (written by this version of `python -m sedd_jax.data.prepare`); prepare the "
            "data again"
        )
    return dataclasses.replace(
        spec, text_field=shards.text_field, augment=RandomizedSmiles(tokenizer)
    )


def _finish(shards, specs, vocab_size, max_val_rows, data_config) -> TrackData:
    tokenizers = {s.field: _tokenizer(shards, s.field, vocab_size) for s in specs}
    specs = [
        _augmented(shards, s, tokenizers[s.field], data_config)
        if isinstance(tokenizers[s.field], SmilesTokenizer)
        else s
        for s in specs
    ]
    train, val_source = shards.source("train"), shards.source("val")
    if len(train) == 0 or len(val_source) == 0:
        raise DataError(
            f"{shards.directory}: {len(train)} training and {len(val_source)} validation records; "
            "both must be non-empty (check data.val_fraction and the record limit)"
        )
    val = split_arrays(val_source, specs, max_val_rows)
    if not len(next(iter(val.values()))):
        raise DataError(f"{shards.directory}: no validation record fits the max length")
    return TrackData(
        shards,
        tuple(specs),
        tokenizers,
        val,
        {s.field: length_distribution(train, s) for s in specs},
    )


def load_single_track(data_config, max_val_rows: int = 0) -> TrackData:
    """Proteins or SMILES (`kind` from the manifest) for `SingleTrack`."""
    options = single_options(data_config)
    if data_config.source == "shards":
        options = agreeing_options(options)
    shards = open_shards(data_config, kind=("protein", "smiles"), options=options)
    if shards.kind == "protein":
        spec = FieldSpec(
            "tokens",
            "tokens",
            "valid",
            data_config.max_len,
            ProteinTokenizer.pad_id,
            data_config.crop,
        )
    else:  # a cut SMILES is no molecule: longer ones are not used
        spec = FieldSpec(
            "tokens", "tokens", "valid", data_config.max_len, SmilesTokenizer.pad_id, "drop"
        )
    return _finish(shards, [spec], data_config.vocab_size, max_val_rows, data_config)


def load_pair_track(data_config, max_val_rows: int = 0) -> TrackData:
    """Protein–ligand pairs for `PairTrack`: proteins cropped, over-long SMILES not used."""
    options = pair_options(data_config)
    if data_config.source == "shards":
        options = agreeing_options(options)
    shards = open_shards(data_config, kind="pairs", options=options)
    specs = [
        FieldSpec(
            "protein",
            "protein",
            "protein_valid",
            data_config.max_protein_len,
            ProteinTokenizer.pad_id,
            data_config.crop,
        ),
        FieldSpec(
            "ligand",
            "ligand",
            "ligand_valid",
            data_config.max_ligand_len,
            SmilesTokenizer.pad_id,
            "drop",
        ),
    ]
    return _finish(shards, specs, data_config.vocab_size, max_val_rows, data_config)


def max_val_rows(eval_config) -> int:
    """Validation rows to hold in memory: what the evaluation reads (0: the whole split)."""
    return eval_config.max_batches * eval_config.batch_size if eval_config.max_batches else 0


def run_data(config, max_val_rows: int = 0) -> TrackData:
    """The data of the run `config` describes, split as its trainer splits them: pairs for
    `model.kind = "dual"`, one track (proteins or SMILES) otherwise."""
    if config.model.get("kind", "single") == "dual":
        return load_pair_track(config.data, max_val_rows)
    return load_single_track(config.data, max_val_rows)
