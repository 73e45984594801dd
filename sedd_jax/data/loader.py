"""A grain loader over token shards whose batch of a step is a pure function of (seed, step).

The plan of every global batch, the crops, the augmentation and the padding are
`plan.py`'s (numpy); this module maps `plan.Rows` over grain: `batch(step)` reads
directly, `iterate(start)` runs the same grain `MapDataset` through `to_iter_dataset`
(threads, prefetch buffer) and `mp_prefetch` (worker processes). `plan.Batcher` gives the
same rows in-process, for the torch twin (grain imports jax).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Sequence

import grain
import numpy as np
from absl import flags

from sedd_jax.data.batching import StepBatches
from sedd_jax.data.plan import (  # noqa: F401  (the loader's names, as before plan.py)
    AUGMENT_STREAM,
    CROPS,
    Batch,
    BatchPlan,
    FieldSpec,
    Rows,
    augmented_ids,
    eligible_records,
    length_distribution,
    make_rows,
    pad_example,
    pad_fraction,
    split_arrays,
    window_start,
)
from sedd_jax.data.shards import ShardSource


class _Example(grain.transforms.Map):
    """Host-local element k = (step, row j) -> one padded example (a grain map transform)."""

    def __init__(self, rows: Rows):
        self.rows = rows

    def map(self, k: int) -> Batch:
        step, j = divmod(int(k), self.rows.local)
        return self.rows.example(step, j)


class ShardLoader(StepBatches):
    """This host's rows of every global training batch, read from shards with grain.

    Same contract as `plan.Batcher`: `batch(step)` and `iterate(start)` give arrays
    `[B / num_shards, ...]` plus `example_id`, pure in (seed, step). Bucketing
    (`bucket_window > 0`) applies to the first spec and needs a single field.
    """

    def __init__(
        self,
        source: ShardSource,
        specs: Sequence[FieldSpec],
        batch_size: int,
        *,
        num_workers: int = 0,
        num_threads: int = 1,
        prefetch: int = 4,
        **kw,
    ):
        """`kw`: the arguments of `make_rows` (seed, num_shards, shard_index,
        bucket_window, pad_multiple)."""
        rows = make_rows(source, specs, batch_size, **kw)
        self.specs, self.rows, self.plan = rows.specs, rows.rows, rows.plan
        self.batch_size = batch_size
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.num_examples = self.plan.n
        self.num_workers, self.num_threads, self.prefetch = num_workers, num_threads, prefetch
        self.dataset = (
            grain.MapDataset.range(0, sys.maxsize)
            .map(_Example(rows))
            .batch(rows.local, drop_remainder=True)
        )

    def _read(self, step: int) -> Batch:
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
