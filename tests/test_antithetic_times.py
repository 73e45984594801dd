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
