"""In-step accumulation: accum = 4 is the update of one 4x batch (token sums, not means of
micro-batch means), with micro-batches of very different token counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import base_config
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.sedd import SEDD
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.state import create_train_state
from sedd_jax.training.step import micro_batches, train_step
from sedd_jax.training.tasks import single_track_objective

ROWS, LENGTH = 16, 16


def setup():
    optim = base_config().optim
    optim.lr, optim.warmup = 1e-2, 1
    graph, noise = Absorbing(25), LogLinearNoise()
    model = SEDD(graph.dim, hidden=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0)
    tx = make_optimizer(optim, 10)
    objective, step_metrics = single_track_objective(model, graph, noise, 1e-3)
    step_fn = functools.partial(
        train_step,
        objective=objective,
        step_metrics=step_metrics,
        tx=tx,
        lr_schedule=learning_rate_schedule(optim, 10),
        ema=0.99,
        axis_name=None,
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 25, (ROWS, LENGTH)).astype(np.int32)
    # micro-batch a holds rows a, a + 4, ...: row r has 2 valid tokens when r % 4 == 0 and
    # all 16 otherwise, so micro-batch 0 holds 8 tokens and the others 64 each
    lengths = np.where(np.arange(ROWS) % 4 == 0, 2, LENGTH)
    valid = np.arange(LENGTH)[None] < lengths[:, None]
    batch = {"tokens": tokens, "valid": valid, "example_id": np.arange(ROWS, dtype=np.int32)}
    init = jax.jit(lambda k: model.init(k, tokens[:1], jnp.ones((1,)), valid[:1])["params"])
    state = create_train_state(init, tx, jax.random.key(0))
    return step_fn, state, batch, objective


@pytest.mark.slow  # two compiled train steps
def test_accumulating_four_micro_batches_equals_one_batch_of_four_times_the_rows():
    step_fn, state, batch, objective = setup()
    runs = {}
    for accum in (1, 4):
        run = jax.jit(lambda s, b, a=accum: step_fn(s, micro_batches(b, a)))
        s = state
        losses = []
        for _ in range(3):
            s, m = run(s, batch)
            losses.append(float(m["loss"]))
            assert float(m["tokens"]) == 4 * 2 + 12 * 16
        runs[accum] = (s, losses)
    (one, loss_one), (four, loss_four) = runs[1], runs[4]
    np.testing.assert_allclose(loss_four, loss_one, rtol=1e-6)
    moved = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(
            jax.tree_util.tree_leaves(one.params),
            jax.tree_util.tree_leaves(state.params),
            strict=True,
        )
    )
    assert moved > 1e-3
    for a, b in zip(
        jax.tree_util.tree_leaves(four.params), jax.tree_util.tree_leaves(one.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5 * (1 + moved))

    # the test has power: the mean of micro-batch means weighs micro-batch 0's 8 tokens
    # like the others' 64, and differs from the token mean by far more than the tolerance
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(batch["example_id"])
    parts = micro_batches(dict(batch, keys=keys), 4)
    sums, counts = [], []
    micro_objective = jax.jit(objective)  # one compilation: the micro-batches share a shape
    for a in range(4):
        micro = {k: v[a] for k, v in parts.items() if k != "keys"}
        total, count, _ = micro_objective(
            state.params, micro, parts["keys"][a], 0, jax.random.key(2)
        )
        sums.append(float(total))
        counts.append(float(count))
    token_mean = sum(sums) / sum(counts)
    mean_of_means = float(np.mean(np.array(sums) / np.array(counts)))
    assert counts == [8.0, 64.0, 64.0, 64.0]
    assert abs(mean_of_means - token_mean) > 1e-3 * token_mean
    assert token_mean == pytest.approx(sum(sums) / (4 * 2 + 12 * 16), rel=1e-6)
