"""Resuming across precisions: a float16 run resumed from a bfloat16/float32 checkpoint
starts its loss scale afresh, and the logged learning rate is the one optax applied, also
after float16 steps skipped for overflow."""

import numpy as np
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.defaults import base_config
from sedd_jax.training.loop import train_and_evaluate
from sedd_jax.training.optim import learning_rate_schedule


def tiny_config(**overrides):
    c = base_config()
    c.data.max_len = 16
    c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 32, 1, 2, 16
    # n_steps 20 in every run (they stop earlier): the float16 runs of both tests compile
    # the same step, so the second one finds it in the session's XLA cache
    c.training.batch_size, c.training.n_steps, c.training.log_every = 8, 20, 1
    c.training.eval_every = c.training.checkpoint_every = 10_000
    c.optim.warmup = 4  # the LR changes at every step
    c.eval.max_batches, c.eval.time_samples = 1, 1
    c.sampling.steps, c.sampling.num_samples = 2, 1
    c.logging.progress_bar = False
    for key, value in overrides.items():
        section, *rest = key.split(".")
        node = c[section]
        for name in rest[:-1]:
            node = node[name]
        node[rest[-1]] = value
    return c


def train_rows(workdir):
    return [r for r in read_metrics(workdir) if "train/loss" in r]


@pytest.mark.slow  # two training runs
def test_float16_resumed_from_a_float32_checkpoint_starts_at_the_initial_scale(tmp_path):
    workdir = str(tmp_path)
    train_and_evaluate(tiny_config(**{"training.stop_after_steps": 2}), workdir)
    config = tiny_config(**{"model.dtype": "float16", "training.stop_after_steps": 1})
    train_and_evaluate(config, workdir)
    (row,) = [r for r in train_rows(workdir) if r["step"] == 3]
    # one step from 2^15: kept, or halved once on an overflow; never the neutral 1
    assert row["train/loss_scale"] in (2.0**15, 2.0**14), row


@pytest.mark.slow  # a training run
def test_logged_learning_rate_is_the_applied_one_after_skipped_float16_steps(tmp_path):
    workdir = str(tmp_path)
    overflowing = 2.0**22  # the tiny model's float16 gradients overflow down to 2^17
    config = tiny_config(
        **{
            "model.dtype": "float16",
            "training.loss_scale.initial": overflowing,
            "training.stop_after_steps": 12,
        }
    )
    train_and_evaluate(config, workdir)
    rows = train_rows(workdir)
    assert [r["step"] for r in rows] == list(range(1, 13))
    skipped = [int(r["train/skipped_steps"]) for r in rows]
    assert 0 < skipped[-1] < 10  # some steps overflowed, later ones applied
    schedule = learning_rate_schedule(config.optim, config.training.n_steps)
    applied_before = [s - 1 - k for s, k in zip(range(1, 13), [0, *skipped[:-1]], strict=True)]
    expected = [float(schedule(n)) for n in applied_before]
    np.testing.assert_allclose([r["train/learning_rate"] for r in rows], expected, rtol=1e-6)
