"""Signals that reach the whole process group (SLURM's --signal=USR1, preemption's SIGTERM,
Ctrl-C's SIGINT) leave grain's worker processes running: the training process alone
handles them."""

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from sedd_jax.data.loader import FieldSpec, ShardLoader
from sedd_jax.data.prepare import prepare
from sedd_jax.data.shards import ShardSet


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "shards"
    prepare("demo", str(out), val_fraction=0.05, num_shards=2, progress=False)
    return ShardSet(str(out))


@pytest.mark.slow
def test_grain_workers_ignore_usr1_term_and_int_and_keep_serving_batches(demo_shards):
    spec = FieldSpec("tokens", "tokens", "valid", 32, 1, "random")
    loader = ShardLoader(demo_shards.source("train"), [spec], 8, seed=1, num_workers=2)
    batches = loader.iterate(0)
    first = next(batches)
    workers = [p for p in multiprocessing.active_children() if p.name.startswith("grain")]
    assert len(workers) == 2
    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        for worker in workers:
            os.kill(worker.pid, signum)
    time.sleep(1.0)
    assert [w.exitcode for w in workers] == [None, None]
    served = [first] + [next(batches) for _ in range(20)]  # past the prefetched buffer
    for step, batch in enumerate(served):
        assert np.array_equal(batch["tokens"], loader.batch(step)["tokens"]), step
    batches.close()
