"""From `config.data` to prepared shards, loaders and bounded validation arrays (numpy only).

`data.source = "shards"` reads the directory `data.path` written by
`python -m sedd_jax.data.prepare`; its manifest must agree with the config (split
fraction, filters, vocabulary options), else the run stops before training. Every other
source (`demo`, `fasta`, `mmseqs_examples`, `uniref50`, `moses`, `smiles`, `demo_pairs`,
`pair_table`) is prepared on the fly into a cache (`$SEDD_DATA_CACHE`, default
`~/.cache/sedd/shards`), keyed by the source files (path, size, mtime) and the options,
so both paths train from the same shards and loader.

Ligands (SMILES data and the ligand track of pairs) are atom-level SMILES tokens or
SELFIES symbols, by `data.ligand_representation`; the manifest names which, and a
directory of the other one is refused. `data.randomize_smiles` writes every training
ligand anew per (seed, epoch, record) from the SMILES text stored in the shards
(`smiles.RandomizedSmiles`); its vocabulary then also counts `VOCAB_RANDOM_FORMS` random
forms per training molecule.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from sedd_jax.data import corpora, prepare
from sedd_jax.data.plan import Batcher, FieldSpec, length_distribution, split_arrays
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.shards import MANIFEST, VERSION, DataError, ShardSet
from sedd_jax.data.smiles import RandomizedSmiles, SmilesTokenizer

CACHE_ENV = "SEDD_DATA_CACHE"
ON_THE_FLY_SHARDS = 4
VAL_STRINGS = 256  # validation pairs decoded to strings for conditional sampling
STABLE_DIR = "data/uniref50/shards"
PREPARE_HINT = (
    "python -m sedd_jax.data.download uniref50 --out data/uniref50 && "
    "python -m sedd_jax.data.prepare --source=data/uniref50/uniref50.fasta.gz "
    "--out={path} --val_fraction={val_fraction} --min_len={min_len}"
)
# config.data.source -> (named corpus for `prepare`, whether data.path is the file)
SINGLE_SOURCES = {
    "demo": ("demo", False),
    "mmseqs_examples": ("mmseqs_examples", False),
    "moses": ("moses", False),
    "uniref50": ("uniref50", True),
    "fasta": (None, True),
    "smiles": (None, True),
}
PAIR_SOURCES = {"demo_pairs": ("demo_pairs", False), "pair_table": (None, True)}
VOCAB_RANDOM_FORMS = 2  # random SMILES per training molecule in the vocabulary (augmentation)
NOVELTY_REFERENCE = 1 << 18  # training SMILES at most in the novelty reference


def cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "sedd", "shards"
    )


def cache_name(source: str, files: list[str], options: dict) -> str:
    """The cache directory name of (source, its files' path, size and mtime, every
    preparation option): a changed file or option (a binder filter too) names another."""
    stats = [(f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
    key = json.dumps([VERSION, source, stats, options], sort_keys=True, default=str)
    return f"{os.path.basename(source)}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _cached(source: str, path: str | None, kind: str, options: dict) -> str:
    """The shard directory of (source, options), prepared now unless already cached."""
    corpus = corpora.resolve(source, path=path, kind=kind)
    name = cache_name(source, list(corpus.files), options)
    final = os.path.join(cache_root(), name)
    if os.path.isfile(os.path.join(final, MANIFEST)):
        return final
    os.makedirs(cache_root(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=cache_root())
    try:
        prepare.prepare(source, tmp, path=path, progress=False, overwrite=True, **options)
        try:
            os.rename(tmp, final)
        except OSError:  # another process cached it first
            if not os.path.isfile(os.path.join(final, MANIFEST)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_agrees(shards: ShardSet, expected: dict, hint: str) -> None:
    m = shards.manifest
    found = {**m["filters"], "val_fraction": m["split"]["val_fraction"], "kind": m["kind"]}
    if shards.ligand_representation is not None:  # older manifests hold SMILES tokens
        found["ligand_representation"] = shards.ligand_representation
    for key, value in expected.items():
        if key in found and found[key] != value:
            raise DataError(
                f"{shards.directory}/{MANIFEST}: prepared with {key}={found[key]!r}, but the "
                f"config asks for {value!r}; {hint}"
            )


def open_shards(data_config, *, kind: str | tuple[str, ...], options: dict) -> ShardSet:
    """The ShardSet `config.data` names (prepared on the fly for non-`shards` sources)."""
    kinds = (kind,) if isinstance(kind, str) else kind
    verify = data_config.verify_shards
    if data_config.source == "shards":
        path = data_config.path
        hint = "prepare again with matching options, or change the config"
        if not path or not os.path.isfile(os.path.join(path, MANIFEST)):
            if path and os.path.isdir(os.path.join(path, prepare.TMP)):
                ShardSet(path)  # raises UnfinishedPreparationError with the resume advice
            raise DataError(
                f"data.source='shards': no prepared shards at data.path={path!r}; prepare them: "
                + PREPARE_HINT.format(
                    path=path or STABLE_DIR,
                    val_fraction=options.get("val_fraction", 0.01),
                    min_len=options.get("min_len", 1),
                )
            )
        shards = ShardSet(path, verify=verify)
        _check_agrees(
            shards, {"kind": kinds[0] if len(kinds) == 1 else shards.kind, **options}, hint
        )
        if shards.kind not in kinds:
            raise DataError(f"{path}: holds {shards.kind} data, this model needs {kinds}")
        return shards
    table = PAIR_SOURCES if "pairs" in kinds else SINGLE_SOURCES
    if data_config.source not in table:
        raise DataError(
            f"data.source={data_config.source!r}; choose one of {sorted(table) + ['shards']}"
        )
    named, takes_path = table[data_config.source]
    path = data_config.path or None
    if takes_path and not path:
        raise DataError(f"data.source={data_config.source!r} needs data.path")
    source = named or path
    force_kind = {"fasta": "protein", "smiles": "smiles", "pair_table": "pairs"}.get(
        data_config.source
    )
    directory = _cached(source, path if named else None, force_kind, options)
    shards = ShardSet(directory, verify=verify)
    if shards.kind not in kinds:
        raise DataError(f"{source}: holds {shards.kind} data, this model needs {kinds}")
    return shards


def ligand_options(data_config) -> dict:
    """The preparation options of the ligand representation (SMILES data and pairs)."""
    randomize = data_config.get("randomize_smiles", False)
    return {
        "ligand_representation": data_config.get("ligand_representation", "smiles"),
        "vocab_random_forms": VOCAB_RANDOM_FORMS if randomize else 0,
    }


def single_options(data_config) -> dict:
    return {
        "min_len": data_config.min_len,
        "max_records": data_config.max_sequences,
        "on_error": data_config.on_error,
        "val_fraction": data_config.val_fraction,
        "num_shards": ON_THE_FLY_SHARDS,
        **ligand_options(data_config),
    }


def pair_options(data_config) -> dict:
    return {
        "max_records": data_config.max_pairs,
        "on_error": data_config.on_error,
        "val_fraction": data_config.val_fraction,
        "validate_smiles": data_config.validate_smiles,
        "canonicalize": data_config.canonicalize,
        "ligand_min_count": data_config.ligand_min_count,
        "sequence_column": data_config.sequence_column,
        "smiles_column": data_config.smiles_column,
        "num_shards": ON_THE_FLY_SHARDS,
        **ligand_options(data_config),
        **binder_options(data_config),
    }


def binder_options(data_config) -> dict:
    """`binders` when it filters: options without it name the same cache directory (and
    the same shards) as before the filter existed."""
    binders = data_config.get("binders", "all")
    return {} if binders == "all" else {"binders": binders}


def _agreeing(options: dict) -> dict:
    """The options a `shards` directory's manifest must match (the others only shape it)."""
    drop = {"num_shards", "on_error", "sequence_column", "smiles_column", "vocab_random_forms"}
    return {k: v for k, v in options.items() if k not in drop}


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
        options = _agreeing(options)
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
        options = _agreeing(options)
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
