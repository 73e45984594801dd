"""training.time_sampling=antithetic: one time per 1/B bin of the global batch, the same
however the batch is split over devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.losses import antithetic_times
from sedd_jax.training.tasks.objectives import time_override

B, EPS = 64, 1e-3


def test_times_of_a_global_batch_fill_every_bin_once():
    t = np.asarray(antithetic_times(jax.random.key(0), jnp.arange(B), B, EPS))
    u = (t - EPS) / (1 - EPS)
    assert t.min() >= EPS and t.max() <= 1.0
    np.testing.assert_array_equal(np.sort(np.floor(u * B).astype(int)), np.arange(B))


def test_times_do_not_depend_on_how_rows_are_split_over_devices():
    key = jax.random.key(3)
    whole = np.asarray(antithetic_times(key, jnp.arange(B), B, EPS))
    shards = [antithetic_times(key, ids, B, EPS) for ids in jnp.arange(B).reshape(4, -1)]
    np.testing.assert_array_equal(np.concatenate(shards), whole)


def test_antithetic_refuses_time_bias_curriculum():
    from ml_collections import ConfigDict

    cfg = ConfigDict(dict(type="time_bias", ramp="linear", preschool_steps=10, bias_strength=2.0))
    with pytest.raises(ValueError, match="time_bias"):
        time_override("antithetic", B, EPS, cfg)


@pytest.mark.parametrize("time_sampling", ["antithetic", "mask_count"])
def test_twin_trainer_takes_antithetic_times_from_its_own_offset(tmp_path, time_sampling):
    """The twin's single-track run with time_sampling=antithetic: each step's mean t is
    that of the stratified times of its offset u0 (the step generator's first draw), with
    accumulation splitting the batch (example ids stay global positions). mask_count
    (loss.type=masked_ce) reports the stratified u themselves."""
    import torch

    from sedd_jax.common.metrics_log import read_metrics
    from sedd_torch.training.loop import train_and_evaluate
    from sedd_torch.training.step import step_generator
    from tests.helpers import tiny_config

    batch, steps = 8, 3
    config = tiny_config(
        "base",
        **{
            "backend": "torch",
            "data.max_len": 24,
            "training.time_sampling": time_sampling,
            "loss.type": "masked_ce" if time_sampling == "mask_count" else "score_entropy",
            "training.batch_size": batch,
            "training.accum": 2,
            "training.n_steps": steps,
            "training.log_every": 1,
            "training.eval_every": 1000,
            "training.checkpoint_every": 1000,
            "eval.max_batches": 1,
            "sampling.num_samples": 1,
        },
    )
    train_and_evaluate(config, str(tmp_path))
    logged = read_metrics(str(tmp_path))
    rows = {r["step"]: r["train/mean_t"] for r in logged if "train/mean_t" in r}
    assert sorted(rows) == list(range(1, steps + 1))
    eps = config.training.sampling_eps
    for done, mean_t in rows.items():
        u0 = torch.rand(1, generator=step_generator(config.seed, done - 1)).item()
        u = np.mod(np.float32(u0) + np.arange(batch, dtype=np.float32) / batch, 1.0)
        times = u if time_sampling == "mask_count" else eps + (1 - eps) * u
        assert mean_t == pytest.approx(float(np.mean(times)), rel=1e-5)
