"""The pmapped train step on several (fake CPU) devices: replicas stay in lockstep."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from sedd_jax.defaults import base_config
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.sedd import SEDD
from sedd_jax.training.loop import split_for_devices
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.state import create_train_state
from sedd_jax.training.step import make_pmap_train_step, replicate
from sedd_jax.training.tasks import single_track_objective

devices = jax.local_device_count()
optim = base_config().optim
graph, noise = Absorbing(25), LogLinearNoise()
model = SEDD(graph.dim, hidden=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.1)
tx = make_optimizer(optim, 10)
rng = np.random.default_rng(0)
tokens = rng.integers(5, 25, (8, 16)).astype(np.int32)
valid = np.ones_like(tokens, bool)
valid[:, 12:] = False
state = create_train_state(
    lambda k: model.init(k, tokens[:1], jnp.ones((1,)), valid[:1])["params"], tx,
    jax.random.key(0),
)
objective, step_metrics = single_track_objective(model, graph, noise, 1e-3)
p_step = make_pmap_train_step(objective=objective, step_metrics=step_metrics, tx=tx,
                              lr_schedule=learning_rate_schedule(optim, 10), ema=0.99)
rstate = replicate(state, devices)
batch = split_for_devices({"tokens": tokens, "valid": valid}, devices, 2)
losses = []
for _ in range(3):
    rstate, metrics = p_step(rstate, batch)
    losses.append(np.asarray(metrics["loss"]).tolist())
leaves = jax.tree_util.tree_leaves((rstate.params, rstate.ema_params, rstate.opt_state))
spread = max(float(np.abs(np.asarray(x) - np.asarray(x)[:1]).max()) for x in leaves
             if np.asarray(x).ndim > 0)
moved = float(np.abs(np.asarray(rstate.params["vocab_embed"])[0]
                     - np.asarray(state.params["vocab_embed"])).max())
print(json.dumps({"devices": devices, "losses": losses, "spread": spread, "moved": moved,
                  "tokens": np.asarray(metrics["tokens"]).tolist(),
                  "step": np.asarray(rstate.step).tolist()}))
"""


@pytest.mark.slow
def test_two_fake_devices_keep_identical_replicas_and_count_the_global_batch():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2
    assert out["step"] == [3, 3]
    assert out["spread"] == 0.0  # pmean keeps every replica bit-identical
    assert out["moved"] > 0.0
    assert out["tokens"] == [96.0, 96.0]  # 8 sequences x 12 valid tokens, global
    for per_device in out["losses"]:
        assert per_device[0] == per_device[1]  # one global loss, seen by both devices
