"""The batch of a step as a pure function of (seed, step), in numpy (no jax, no grain).

Global batch `step` (B rows): `epoch, s = divmod(step, S)` with `S = N // B` steps per
epoch (the incomplete last batch is dropped); its rows are the records at positions
`epoch * N + s * B + r` of grain's per-epoch index shuffle (`index_shuffle`, seeded with
`seed + epoch`, as `grain.MapDataset.shuffle`), r = 0..B-1. With `bucket_window = K > 0`
the K*B records of each window of K batches are sorted by length, cut into K batches,
and these batches are put in an order drawn from (seed, epoch, window); each batch is
padded to the smallest multiple of `pad_multiple` that holds its longest row.

Per example: with `FieldSpec.augment` (randomised SMILES), the ids are those of a new
writing of the record's stored text, drawn from `default_rng([seed, epoch, record, 1])`;
a record longer than `max_len` is cropped to a window that starts at 0
(`crop="start"`), in its middle (`crop="center"`, offset (length - max_len) // 2) or at an
offset drawn from `np.random.default_rng([seed, epoch, record])` (`crop="random"`), or it
is never used (`crop="drop"`: a cut SMILES is no molecule);
ids become int32, padded with the field's pad id, with a bool validity mask.

Host sharding: host h of P reads rows [h*B/P, (h+1)*B/P) of every global batch, and
`example_id` [B/P] int32 is each row's position in the global batch. `Rows` builds one
row; the grain `loader.ShardLoader` maps it over worker processes, `Batcher` (the torch
twin) stacks it in-process: both give the same arrays.

The permutation is grain's own `index_shuffle` (a C++ extension), loaded from its file
so that importing it does not import grain's package (which imports jax).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from sedd_jax.data.batching import EXAMPLE_ID, StepBatches, _shard_slice
from sedd_jax.data.shards import DataError, ShardSource

Batch = dict[str, np.ndarray]
CROPS = ("start", "center", "random", "drop")
AUGMENT_STREAM = 1  # rng [seed, epoch, record, 1]: independent of the crop's [seed, epoch, record]
_SHUFFLE_MODULE = "grain._src.python.experimental.index_shuffle.python.index_shuffle_module"


@functools.cache
def _index_shuffle_module():
    """grain's `index_shuffle` extension module, without importing the grain package (the
    module is registered under its own name, so a later `import grain` reuses it)."""
    if _SHUFFLE_MODULE in sys.modules:
        return sys.modules[_SHUFFLE_MODULE]
    spec = importlib.util.find_spec("grain")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the batch plan needs grain (pip install grain): its index_shuffle")
    stem = os.path.join(spec.submodule_search_locations[0], *_SHUFFLE_MODULE.split(".")[1:])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.isfile(stem + suffix):
            loader = importlib.machinery.ExtensionFileLoader(_SHUFFLE_MODULE, stem + suffix)
            module = importlib.util.module_from_spec(
                importlib.util.spec_from_file_location(
                    _SHUFFLE_MODULE, stem + suffix, loader=loader
                )
            )
            loader.exec_module(module)
            sys.modules[_SHUFFLE_MODULE] = module
            return module
    raise ImportError(f"grain has no index_shuffle extension at {stem}.*")


def index_shuffle(index: int, *, max_index: int, seed: int, rounds: int) -> int:
    """Position `index` of grain's pseudo-random permutation of [0, max_index]."""
    return _index_shuffle_module().index_shuffle(
        index, max_index=max_index, seed=seed, rounds=rounds
    )


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """How one stored field becomes a padded array and its mask in the batch."""

    field: str  # in the shards: tokens | protein | ligand
    out: str  # batch key of the ids, e.g. "tokens"
    valid: str  # batch key of the mask, e.g. "valid"
    max_len: int
    pad_id: int
    crop: str = "start"
    # augmentation: augment(text of `text_field`, rng, max length) -> ids, or None to keep
    # the stored ids (`smiles.RandomizedSmiles`); rng from (seed, epoch, record)
    text_field: str = ""
    augment: Any = None

    def __post_init__(self):
        if self.crop not in CROPS:
            raise DataError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        if self.augment is not None and not self.text_field:
            raise ValueError(f"field {self.field!r}: augment needs text_field")


def eligible_records(source: ShardSource, specs: Sequence[FieldSpec]) -> np.ndarray | None:
    """Record ids usable with `specs` (those within max_len of every `drop` field), or None
    when every record is."""
    keep = None
    for spec in specs:
        if spec.crop == "drop":
            ok = source.lengths(spec.field) <= spec.max_len
            keep = ok if keep is None else keep & ok
    return None if keep is None else np.flatnonzero(keep)


def window_start(length: int, spec: FieldSpec, seed: int, epoch: int, record: int) -> int:
    """Where the `max_len` window of a record of `length` ids starts."""
    if spec.crop != "random":
        return fixed_window_start(length, spec)
    if length <= spec.max_len:
        return 0
    rng = np.random.default_rng([seed, epoch, record])
    return int(rng.integers(0, length - spec.max_len + 1))


def fixed_window_start(length: int, spec: FieldSpec) -> int:
    """The window start of the deterministic crops: `center` (length - max_len) // 2, else 0;
    the windows of validation rows (`random` crops validate on the first window)."""
    if spec.crop == "center" and length > spec.max_len:
        return (length - spec.max_len) // 2
    return 0


def augmented_ids(stored: dict, spec: FieldSpec, seed: int, epoch: int, record: int, length: int):
    """The ids of `spec.field` for this (seed, epoch, record): an augmented form of the
    record when `spec.augment` gives one within `length`, else the stored ids."""
    ids = stored[spec.field]
    if spec.augment is None:
        return ids
    text = stored[spec.text_field].tobytes().decode("utf-8")
    rng = np.random.default_rng([seed, epoch, record, AUGMENT_STREAM])
    new = spec.augment(text, rng, min(length, spec.max_len))
    return ids if new is None else new


def pad_example(ids: np.ndarray, spec: FieldSpec, start: int, length: int):
    """ids [n] -> (int32 [length] padded with pad_id, bool [length] mask)."""
    window = ids[start : start + min(spec.max_len, length)]
    tokens = np.full(length, spec.pad_id, np.int32)
    tokens[: len(window)] = window
    valid = np.zeros(length, bool)
    valid[: len(window)] = True
    return tokens, valid


class BatchPlan:
    """Which records form global batch `step`, and its padded length; pure in (seed, step)."""

    def __init__(
        self,
        num_records: int,
        batch_size: int,
        *,
        seed: int,
        eligible: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
        bucket_window: int = 0,
        pad_multiple: int = 64,
        max_len: int = 0,
    ):
        self.eligible = eligible
        self.n = len(eligible) if eligible is not None else num_records
        self.batch_size = batch_size
        self.seed = seed % 2**32
        self.steps_per_epoch = self.n // batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"batch_size {batch_size} exceeds the {self.n} training examples")
        if bucket_window and lengths is None:
            raise ValueError("bucket_window > 0 needs the record lengths")
        self.bucket_window = bucket_window
        self.pad_multiple = pad_multiple
        self.max_len = max_len
        self.lengths = None
        if bucket_window:
            clipped = np.minimum(lengths, max_len).astype(np.int32)
            self.lengths = clipped if eligible is None else clipped[eligible]
        self._cache: tuple | None = None

    def _positions(self, epoch: int, start: int, stop: int) -> np.ndarray:
        seed = (self.seed + epoch) % 2**32
        return np.array(
            [
                index_shuffle(p, max_index=self.n - 1, seed=seed, rounds=4)
                for p in range(start, stop)
            ],
            dtype=np.int64,
        )

    def _bucketed(self, epoch: int, s: int) -> np.ndarray:
        window, q = divmod(s, self.bucket_window)
        if self._cache is None or self._cache[0] != (epoch, window):
            b, k = self.batch_size, self.bucket_window
            stop = min((window + 1) * k * b, self.steps_per_epoch * b)
            ids = self._positions(epoch, window * k * b, stop)
            ids = ids[np.argsort(self.lengths[ids], kind="stable")]
            order = np.random.default_rng([self.seed, epoch, window]).permutation(len(ids) // b)
            self._cache = ((epoch, window), ids.reshape(-1, b)[order])
        return self._cache[1][q]

    def records(self, step: int) -> tuple[int, np.ndarray]:
        """(epoch, record ids [B]) of global batch `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, s = divmod(step, self.steps_per_epoch)
        if self.bucket_window:
            ids = self._bucketed(epoch, s)
        else:
            b = self.batch_size
            ids = self._positions(epoch, s * b, (s + 1) * b)
        return epoch, (ids if self.eligible is None else self.eligible[ids])

    def padded_length(self, step: int) -> int:
        """The length every row of global batch `step` is padded to."""
        if not self.bucket_window:
            return self.max_len
        epoch, s = divmod(step, self.steps_per_epoch)
        ids = self._bucketed(epoch, s)
        longest = int(self.lengths[ids].max())
        return min(self.max_len, -(-longest // self.pad_multiple) * self.pad_multiple)


class Rows:
    """Row j of this host's part of global batch `step` -> one padded example."""

    def __init__(self, plan: BatchPlan, source: ShardSource, specs, seed: int, rows: slice):
        self.plan, self.source, self.specs, self.seed, self.rows = plan, source, specs, seed, rows
        self._step_cache: tuple | None = None

    @property
    def local(self) -> int:
        return self.rows.stop - self.rows.start

    def example(self, step: int, j: int) -> Batch:
        if self._step_cache is None or self._step_cache[0] != step:
            epoch, ids = self.plan.records(step)
            self._step_cache = (step, epoch, ids, self.plan.padded_length(step))
        _, epoch, ids, bucket_len = self._step_cache
        row = self.rows.start + j
        record = int(ids[row])
        stored = self.source[record]
        out = {}
        for i, spec in enumerate(self.specs):
            length = bucket_len if i == 0 else spec.max_len
            ids_i = augmented_ids(stored, spec, self.seed, epoch, record, length)
            start = window_start(len(ids_i), spec, self.seed, epoch, record)
            out[spec.out], out[spec.valid] = pad_example(ids_i, spec, start, length)
        out[EXAMPLE_ID] = np.int32(row)
        return out


def make_rows(
    source: ShardSource,
    specs: Sequence[FieldSpec],
    batch_size: int,
    *,
    seed: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    bucket_window: int = 0,
    pad_multiple: int = 64,
) -> Rows:
    """The `Rows` of this host over `source`: the plan of every global batch and the slice
    of it this host reads. Bucketing applies to the first spec and needs a single field."""
    specs = tuple(specs)
    if bucket_window and len(specs) != 1:
        raise ValueError("bucket_window > 0 supports single-field data only")
    plan = BatchPlan(
        len(source),
        batch_size,
        seed=seed,
        eligible=eligible_records(source, specs),
        lengths=source.lengths(specs[0].field) if bucket_window else None,
        bucket_window=bucket_window,
        pad_multiple=pad_multiple,
        max_len=specs[0].max_len,
    )
    return Rows(plan, source, specs, seed, _shard_slice(batch_size, num_shards, shard_index))


class Batcher(StepBatches):
    """This host's rows of every global training batch, read from shards in-process.

    The rows of `loader.ShardLoader` (same plan, same crops, same `example_id`), without
    grain's workers: `batch(step)` and `iterate(start)` give arrays `[B / num_shards, ...]`
    pure in (seed, step). Takes the arguments of `make_rows`.
    """

    def __init__(self, source: ShardSource, specs: Sequence[FieldSpec], batch_size: int, **kw):
        self.rows = make_rows(source, specs, batch_size, **kw)
        self.specs, self.batch_size = self.rows.specs, batch_size
        self.steps_per_epoch = self.rows.plan.steps_per_epoch
        self.num_examples = self.rows.plan.n

    def _read(self, step: int) -> Batch:
        examples = [self.rows.example(step, j) for j in range(self.rows.local)]
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def split_arrays(
    source: ShardSource, specs: Sequence[FieldSpec], max_rows: int = 0
) -> dict[str, np.ndarray]:
    """The first `max_rows` usable records of a split (all when 0), in order, as padded
    arrays `[n, max_len]` (windows by `fixed_window_start`): bounded-memory validation
    data."""
    eligible = eligible_records(source, specs)
    ids = np.arange(len(source)) if eligible is None else eligible
    if max_rows:
        ids = ids[:max_rows]
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        out[spec.out] = np.full((len(ids), spec.max_len), spec.pad_id, np.int32)
        out[spec.valid] = np.zeros((len(ids), spec.max_len), bool)
    for row, record in enumerate(ids.tolist()):
        stored = source[record]
        for spec in specs:
            ids = stored[spec.field]
            start = fixed_window_start(len(ids), spec)
            tokens, valid = pad_example(ids, spec, start, spec.max_len)
            out[spec.out][row], out[spec.valid][row] = tokens, valid
    return out


def length_distribution(source: ShardSource, spec: FieldSpec) -> np.ndarray:
    """p[l], l = 0..max_len: the distribution of the lengths of the records' windows."""
    lengths = source.lengths(spec.field)
    if spec.crop == "drop":
        lengths = lengths[lengths <= spec.max_len]
    counts = np.bincount(np.minimum(lengths, spec.max_len), minlength=spec.max_len + 1)
    if counts.sum() == 0:
        raise ValueError(f"split {source.split} has no records usable with max_len={spec.max_len}")
    return counts / counts.sum()


def pad_fraction(batches: Sequence[Batch], valid_key: str = "valid") -> float:
    """Fraction of the positions of `batches` that are padding."""
    total = sum(b[valid_key].size for b in batches)
    return 1.0 - sum(int(b[valid_key].sum()) for b in batches) / max(total, 1)
