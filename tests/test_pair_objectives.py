"""The pair objectives beside score entropy: masked_ce (MDLM/MD4) on both tracks is the
score entropy of RADD-converted outputs, given times replace the drawn ones without
changing the corruption, and antithetic times stratify the global batch of a pair run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.joint import (
    TASKS,
    PairGraphs,
    TaskMixture,
    joint_per_token_loss,
    joint_score_entropy_loss,
)
from sedd_jax.diffusion.losses import antithetic_times
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.parametrisation import as_dual_log_score_fn
from sedd_jax.models.dual import DualTrackSEDD, init_dual_params
from sedd_jax.training.tasks.objectives import pair_track_objective
from tests.helpers import TINY_PAIR_RUN, tiny_config, tiny_dual

VP, VL, B, LP, LL, EPS = 8, 11, 24, 9, 7, 1e-3
GRAPHS = PairGraphs(Absorbing(VP), Absorbing(VL))
NOISE = LogLinearNoise(EPS)
MIXTURE = TaskMixture.parse(dict.fromkeys(TASKS, 0.2))


def pair_batch(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "protein": jnp.asarray(rng.integers(0, VP, (B, LP)), jnp.int32),
        "protein_valid": jnp.asarray(np.arange(LP)[None] < rng.integers(1, LP + 1, (B, 1))),
        "ligand": jnp.asarray(rng.integers(0, VL, (B, LL)), jnp.int32),
        "ligand_valid": jnp.asarray(np.arange(LL)[None] < rng.integers(1, LL + 1, (B, 1))),
        "example_id": jnp.arange(B, dtype=jnp.int32),
    }


def fixed_outputs(seed=1):
    """A stand-in pair network: fixed random logits for both tracks, whatever the input."""
    keys = jax.random.split(jax.random.key(seed))
    outs = (
        3 * jax.random.normal(keys[0], (B, LP, VP + 1)),
        3 * jax.random.normal(keys[1], (B, LL, VL + 1)),
    )
    return lambda *args: outs


def test_pair_masked_ce_equals_score_entropy_of_radd_converted_outputs():
    batch, output_fn = pair_batch(), fixed_outputs()
    t = jnp.linspace(0.02, 0.98, B)
    task_ids = jnp.arange(B, dtype=jnp.int32) % len(TASKS)
    key = jax.random.key(3)
    ce = joint_per_token_loss(
        output_fn, GRAPHS, NOISE, batch, t, task_ids, key, loss_type="masked_ce"
    )
    converted = as_dual_log_score_fn(output_fn, "mean", (GRAPHS.protein.mask_id, VL))
    se = joint_per_token_loss(converted, GRAPHS, NOISE, batch, t, task_ids, key)
    for got, want in zip(ce[:2], se[:2], strict=True):
        assert float(jnp.abs(got).sum()) > 10.0
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    for got, want in zip(ce[2:], se[2:], strict=True):
        np.testing.assert_array_equal(got, want)
    # context tracks get nothing: ligand_given_protein rows score no protein token
    rows = np.asarray(task_ids) == TASKS.index("ligand_given_protein")
    assert np.all(np.asarray(ce[0])[rows] == 0) and np.asarray(ce[1])[rows].sum() > 0


def test_given_times_replace_the_drawn_ones_and_keep_the_corruption():
    batch, output_fn = pair_batch(2), fixed_outputs(4)
    key = jax.random.key(5)
    drawn = joint_score_entropy_loss(output_fn, GRAPHS, NOISE, batch, key, MIXTURE, EPS)
    same = joint_score_entropy_loss(output_fn, GRAPHS, NOISE, batch, key, MIXTURE, EPS, t=drawn.t)
    np.testing.assert_array_equal(same.ligand, drawn.ligand)
    np.testing.assert_array_equal(same.protein, drawn.protein)
    other_t = jnp.full((B,), 0.5)
    other = joint_score_entropy_loss(output_fn, GRAPHS, NOISE, batch, key, MIXTURE, EPS, t=other_t)
    np.testing.assert_array_equal(other.t, other_t)
    np.testing.assert_array_equal(other.task_ids, drawn.task_ids)


def test_masked_ce_refuses_a_uniform_pair_graph():
    model = DualTrackSEDD(protein_vocab=VP, ligand_vocab=VL, hidden=16, n_heads=2, cond_dim=8)
    with pytest.raises(ValueError, match="uniform"):
        pair_track_objective(
            model, PairGraphs(Uniform(VP), Uniform(VL)), NOISE, MIXTURE, EPS, None, "masked_ce"
        )


@pytest.mark.parametrize("loss_type", ["score_entropy", "masked_ce"])
def test_a_pair_objective_with_antithetic_times_fills_every_bin_once(loss_type):
    model = tiny_dual(VP + 1, VL + 1)
    params = init_dual_params(model, jax.random.key(0))
    objective, _ = pair_track_objective(
        model, GRAPHS, NOISE, MIXTURE, EPS, None, loss_type, "antithetic", B
    )
    batch = pair_batch(3)
    row_keys = jax.random.split(jax.random.key(1), B)
    dropout_key = jax.random.key(2)
    loss, count, aux = jax.jit(objective)(params, batch, row_keys, 0, dropout_key)
    want = antithetic_times(jax.random.fold_in(dropout_key, 1), batch["example_id"], B, EPS)
    np.testing.assert_allclose(float(aux["t_sum"]), float(want.sum()), rtol=1e-6)
    u = (np.asarray(want) - EPS) / (1 - EPS)
    np.testing.assert_array_equal(np.sort(np.floor(u * B).astype(int)), np.arange(B))
    assert np.isfinite(float(loss)) and float(loss) > 0 and float(count) > 0


@pytest.mark.slow
def test_a_masked_ce_pair_run_learns_and_is_scored_and_sampled_as_log_scores(tmp_path):
    """A tiny pair run with masked_ce and antithetic times: the loss falls, the pair
    likelihood (mean outputs read as log-scores) is finite and below the uniform bound,
    and the sample files are written."""
    from sedd_jax.common.metrics_log import read_metrics
    from sedd_jax.diffusion.pair_likelihood import make_pair_likelihood_fn
    from sedd_jax.runs import open_run
    from sedd_jax.training.loop import train_and_evaluate

    config = tiny_config(
        "dual",
        **TINY_PAIR_RUN
        | {
            "loss.type": "masked_ce",
            "training.time_sampling": "antithetic",
            "training.n_steps": 60,
            "training.batch_size": 16,
            "training.log_every": 20,
            "optim.lr": 2e-3,
            "optim.warmup": 10,
            "eval.sample_metrics_num": 0,  # ligand metrics: tiny_pair_run's tests cover them
        },
    )
    summary = train_and_evaluate(config, str(tmp_path))
    losses = [r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert losses[-1] < losses[0] - 0.3, losses
    assert any(k.startswith("samples_") for k in summary)

    run = open_run(str(tmp_path))
    val = {k: jnp.asarray(v[:8]) for k, v in run.data().val.items() if not k.startswith("ex")}
    fn = make_pair_likelihood_fn(
        run.components.model,
        run.components.graph,
        run.components.noise,
        task="ligand_given_protein",
        time_samples=4,
        parametrisation="mean",
    )
    out = fn(run.params(), val, jax.random.key(0))
    nll = np.asarray(out["ligand_nll"]) / np.asarray(out["ligand_tokens"])
    uniform_bound = np.log(run.components.graph.ligand.n)
    assert np.all(np.isfinite(nll)) and 0.0 < nll.mean() < uniform_bound, nll
