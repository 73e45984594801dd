"""A grain loader over token shards whose batch of a step is a pure function of (seed, step).

Global batch `step` (B rows): `epoch, s = divmod(step, S)` with `S = N // B` steps per
epoch (the incomplete last batch is dropped); its rows are the records at positions
`epoch * N + s * B + r` of grain's per-epoch index shuffle (`index_shuffle`, seeded with
`seed + epoch`, as `grain.MapDataset.shuffle`), r = 0..B-1. With `bucket_window = K > 0`
the K*B records of each window of K batches are sorted by length, cut into K batches,
and these batches are put in an order drawn from (seed, epoch, window); each batch is
padded to the smallest multiple of `pad_multiple` that holds its longest row, so short
records do not carry `max_len` of padding (a few distinct shapes, each compiled once).

Per example: with `FieldSpec.augment` (randomised SMILES), the ids are those of a new
writing of the record's stored text, drawn from `default_rng([seed, epoch, record, 1])`;
a record longer than `max_len` is cropped to a window that starts at 0
(`crop="start"`) or at an offset drawn from `np.random.default_rng([seed, epoch, record])`
(`crop="random"`), or it is never used (`crop="drop"`: a cut SMILES is no molecule);
ids become int32, padded with the field's pad id, with a bool validity mask.

Host sharding: host h of P reads rows [h*B/P, (h+1)*B/P) of every global batch, and
`example_id` [B/P] int32 is each row's position in the global batch. The records, crops
and ids depend only on (seed, step, row), never on P. `batch(step)` reads directly;
`iterate(start)` runs the same grain `MapDataset` through `to_iter_dataset` (threads,
prefetch buffer) and `mp_prefetch` (worker processes).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags
from grain.experimental import index_shuffle

from sedd_jax.data.batching import EXAMPLE_ID, _shard_slice
from sedd_jax.data.shards import DataError, ShardSource

Batch = dict[str, np.ndarray]
CROPS = ("start", "random", "drop")
AUGMENT_STREAM = 1  # rng [seed, epoch, record, 1]: independent of the crop's [seed, epoch, record]


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
    if length <= spec.max_len or spec.crop != "random":
        return 0
    rng = np.random.default_rng([seed, epoch, record])
    return int(rng.integers(0, length - spec.max_len + 1))


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


class _Example(grain.transforms.Map):
    """Host-local element k = (step, row j) -> one padded example (a grain map transform)."""

    def __init__(self, plan, source, specs, seed, rows: slice):
        self.plan, self.source, self.specs, self.seed, self.rows = plan, source, specs, seed, rows
        self._step_cache: tuple | None = None

    def map(self, k: int) -> Batch:
        local = self.rows.stop - self.rows.start
        step, j = divmod(int(k), local)
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


class ShardLoader:
    """This host's rows of every global training batch, read from shards with grain.

    Same contract as `batching.Batcher`: `batch(step)` and `iterate(start)` give arrays
    `[B / num_shards, ...]` plus `example_id`, pure in (seed, step). Bucketing
    (`bucket_window > 0`) applies to the first spec and needs a single field.
    """

    def __init__(
        self,
        source: ShardSource,
        specs: Sequence[FieldSpec],
        batch_size: int,
        *,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        bucket_window: int = 0,
        pad_multiple: int = 64,
        num_workers: int = 0,
        num_threads: int = 1,
        prefetch: int = 4,
    ):
        self.specs = tuple(specs)
        if bucket_window and len(self.specs) != 1:
            raise ValueError("bucket_window > 0 supports single-field data only")
        self.rows = _shard_slice(batch_size, num_shards, shard_index)
        eligible = eligible_records(source, self.specs)
        lengths = source.lengths(self.specs[0].field) if bucket_window else None
        self.plan = BatchPlan(
            len(source),
            batch_size,
            seed=seed,
            eligible=eligible,
            lengths=lengths,
            bucket_window=bucket_window,
            pad_multiple=pad_multiple,
            max_len=self.specs[0].max_len,
        )
        self.batch_size = batch_size
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.num_examples = self.plan.n
        self.num_workers, self.num_threads, self.prefetch = num_workers, num_threads, prefetch
        local = self.rows.stop - self.rows.start
        self.dataset = (
            grain.MapDataset.range(0, sys.maxsize)
            .map(_Example(self.plan, source, self.specs, seed, self.rows))
            .batch(local, drop_remainder=True)
        )

    def batch(self, step: int) -> Batch:
        """This host's part of global batch `step`: each array `[B / num_shards, ...]`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.dataset[step]

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Batches `start_step`, `start_step + 1`, ... from worker processes, prefetched."""
        ds = self.dataset[start_step:].to_iter_dataset(
            grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch)
        )
        if self.num_workers > 0:
            if not flags.FLAGS.is_parsed():  # grain reads absl flags; scripts may not parse
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self.num_workers, per_worker_buffer_size=self.prefetch
                ),
                worker_init_fn=_worker_ignores_signals,
            )
        with _signals_held():  # grain starts its threads and workers for the first batch
            it = iter(ds)
            batch = next(it, None)
        try:
            while batch is not None:  # copied out of grain's shared memory, then released
                yield {name: np.array(a) for name, a in batch.items()}
                batch = next(it, None)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()


# SLURM's --signal=USR1, preemption's SIGTERM and a terminal's SIGINT reach the whole
# process group; the training process handles them (training/preemption.py), and a grain
# worker, whose default action would be to die, ignores them.
WORKER_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def _worker_ignores_signals(worker_index: int, worker_count: int):
    """grain `worker_init_fn`: ignore `WORKER_SIGNALS` (pending ones are discarded)."""
    del worker_index, worker_count
    for signum in WORKER_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)


class _signals_held:
    """Block `WORKER_SIGNALS` in this thread while grain starts its threads and worker
    processes: they inherit the block, so a signal sent before a worker reaches
    `_worker_ignores_signals` cannot kill it; this process receives it on exit."""

    def __enter__(self):
        self.previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.previous)


def split_arrays(
    source: ShardSource, specs: Sequence[FieldSpec], max_rows: int = 0
) -> dict[str, np.ndarray]:
    """The first `max_rows` usable records of a split (all when 0), in order, as padded
    arrays `[n, max_len]` (windows start at 0): bounded-memory validation data."""
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
            tokens, valid = pad_example(stored[spec.field], spec, 0, spec.max_len)
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
