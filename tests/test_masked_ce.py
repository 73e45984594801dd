"""masked_ce (MDLM/MD4) and score entropy agree through RADD's relation; the bound is exact
for an oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.losses import masked_ce_loss, masked_ce_per_token, per_token_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.parametrisation import (
    log_score_to_mean_log_probs,
    mean_log_probs,
    mean_to_log_score,
)
from sedd_jax.training.tasks.objectives import check_loss_type

N, B, L = 6, 32, 12
NOISE = LogLinearNoise(1e-3)
GRAPH = Absorbing(N)
P = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])


def _logits(seed):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, L, N + 1)) * 2.0


def test_masked_ce_equals_score_entropy_of_radd_converted_outputs():
    logits = _logits(0)
    x0 = jax.random.randint(jax.random.PRNGKey(1), (B, L), 0, N)
    valid = jnp.ones((B, L), bool).at[:, -2:].set(False)
    t = jnp.linspace(0.05, 0.95, B)
    x_t = GRAPH.sample_transition(jax.random.PRNGKey(2), x0, NOISE(t)[0], valid)

    def mean_fn(x, sigma):
        return logits

    def score_fn(x, sigma):
        return mean_to_log_score(logits, sigma, x, GRAPH.mask_id)

    ce = masked_ce_per_token(mean_fn, GRAPH, NOISE, x0, valid, t, x_t=x_t)
    se = per_token_loss(score_fn, GRAPH, NOISE, x0, valid, t, x_t=x_t)
    assert float(jnp.abs(ce).sum()) > 1.0
    np.testing.assert_allclose(ce, se, rtol=1e-5, atol=1e-5)


def test_conversion_round_trips_at_masked_positions():
    logits = _logits(3)
    sigma = jnp.linspace(0.1, 5.0, B)
    x_t = jnp.full((B, L), GRAPH.mask_id)
    back = log_score_to_mean_log_probs(
        mean_to_log_score(logits, sigma, x_t, GRAPH.mask_id), sigma, GRAPH.mask_id
    )
    np.testing.assert_allclose(
        back[..., :N], mean_log_probs(logits, GRAPH.mask_id)[..., :N], rtol=1e-5, atol=1e-5
    )


def test_oracle_masked_ce_bound_is_the_entropy():
    """Unigram oracle p(x0|x_t) = P: E_t[masked_ce] per token = (1 - e^{-sigma(1)}) H."""
    x0 = jax.random.choice(jax.random.PRNGKey(4), N, (4096, L), p=jnp.asarray(P)).astype(jnp.int32)
    valid = jnp.ones(x0.shape, bool)
    oracle = jnp.concatenate([jnp.log(jnp.asarray(P, jnp.float32)), jnp.zeros(1)])

    def mean_fn(x, sigma):
        return jnp.broadcast_to(oracle, x.shape + (N + 1,))

    out = masked_ce_loss(mean_fn, GRAPH, NOISE, x0, valid, jax.random.PRNGKey(5))
    per_token = float(out.losses.sum() / valid.sum())
    empirical_nll = float(-jnp.log(jnp.asarray(P))[x0].mean())
    print("masked_ce bound", per_token, "exact -log p / token", empirical_nll)
    assert abs(per_token - empirical_nll) < 0.02 * empirical_nll


def test_uniform_graph_keeps_score_entropy():
    with pytest.raises(ValueError, match="uniform"):
        check_loss_type("masked_ce", Uniform(N))
    assert check_loss_type("masked_ce", GRAPH) == "masked_ce"


@pytest.mark.slow
@pytest.mark.parametrize("time_sampling", ["uniform", "antithetic", "mask_count"])
def test_masked_ce_training_lowers_the_validation_bound(tmp_path, time_sampling):
    """A tiny run with loss.type=masked_ce learns; its evaluation and sampling read the
    mean outputs as log-scores (parametrisation "mean")."""
    from sedd_jax.common.metrics_log import read_metrics
    from sedd_jax.defaults import base_config
    from sedd_jax.training.loop import train_and_evaluate

    c = base_config()
    c.loss.type = "masked_ce"
    c.training.time_sampling = time_sampling
    c.data.max_len = 32
    c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 32, 1, 2, 16
    c.model.dropout = 0.0
    c.training.batch_size, c.training.n_steps = 16, 60
    c.training.log_every, c.training.eval_every, c.training.checkpoint_every = 20, 60, 10_000
    c.optim.lr, c.optim.warmup = 2e-3, 10
    c.eval.max_batches, c.eval.time_samples = 2, 2
    c.sampling.steps, c.sampling.num_samples = 4, 2
    c.logging.progress_bar = False
    train_and_evaluate(c, str(tmp_path))
    rows = read_metrics(str(tmp_path))
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    evals = [v for r in rows for k, v in r.items() if k.startswith("val/") and "loss" in k]
    print("train/loss", losses, "val", evals)
    assert losses[-1] < losses[0]
    assert evals and all(np.isfinite(evals))
