"""The shards `config.data` names, and the preparation options it implies (numpy only).

`data.source = "shards"` reads the directory `data.path` written by
`python -m sedd_jax.data.prepare`; its manifest must agree with the config (split
fraction, filters, vocabulary options), else the run stops before training. Every other
source (`demo`, `fasta`, `mmseqs_examples`, `uniref50`, `moses`, `smiles`, `demo_pairs`,
`pair_table`) is prepared on the fly into a cache (`$SEDD_DATA_CACHE`, default
`~/.cache/sedd/shards`), keyed by the source files (path, size, mtime) and the options,
so both paths train from the same shards and loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from sedd_jax.data import corpora, prepare
from sedd_jax.data.prepare_passes import TMP
from sedd_jax.data.shards import MANIFEST, VERSION, DataError, ShardSet

CACHE_ENV = "SEDD_DATA_CACHE"
ON_THE_FLY_SHARDS = 4
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
            if path and os.path.isdir(os.path.join(path, TMP)):
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


def agreeing_options(options: dict) -> dict:
    """The options a `shards` directory's manifest must match (the others only shape it)."""
    drop = {"num_shards", "on_error", "sequence_column", "smiles_column", "vocab_random_forms"}
    return {k: v for k, v in options.items() if k not in drop}
