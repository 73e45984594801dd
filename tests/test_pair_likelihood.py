"""The pair likelihood per task on an exact oracle: joint, conditional and single-track
bounds sit at (and above) the exact entropies, and their difference is the mutual
information the protein carries about its ligand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.pair_likelihood import pair_dataset_likelihood, pair_sequence_elbo
from tests.helpers import JOINT, PAIR_GRAPHS, PAIR_NOISE, unconditional_aware_oracle

SIZE = 3000


def pairs():
    rng = np.random.default_rng(0)
    cells = rng.choice(JOINT.size, size=SIZE, p=JOINT.ravel())
    a, b = np.divmod(cells, JOINT.shape[1])
    ones = jnp.ones((SIZE, 1), bool)
    batch = {
        "protein": jnp.asarray(a[:, None], jnp.int32),
        "protein_valid": ones,
        "ligand": jnp.asarray(b[:, None], jnp.int32),
        "ligand_valid": ones,
    }
    return batch, a, b


def bound(batch, task):
    fn = jax.jit(
        lambda batch, key: pair_sequence_elbo(
            unconditional_aware_oracle,
            PAIR_GRAPHS,
            PAIR_NOISE,
            batch,
            key,
            task=task,
            time_samples=32,
        )
    )
    return {k: np.asarray(v) for k, v in fn(batch, jax.random.key(3)).items()}


def test_pair_bounds_match_the_exact_entropies_and_the_mutual_information():
    batch, a, b = pairs()
    p_a, p_b = JOINT.sum(1), JOINT.sum(0)
    exact = {
        "joint": -np.log(JOINT[a, b]),
        "ligand_given_protein": -np.log(JOINT[a, b] / p_a[a]),
        "ligand_only": -np.log(p_b[b]),
    }
    got = {}
    for task in exact:
        out = bound(batch, task)
        nll = out["ligand_nll"] + (out["protein_nll"] if task == "joint" else 0.0)
        assert out["protein_tokens"].sum() == (SIZE if task == "joint" else 0)
        gap = nll - exact[task]
        se = gap.std() / math.sqrt(SIZE)
        # a bound: never below the exact value beyond MC error; with the exact score the
        # only slack is the prior (e^-sigma(1) per token) and the [0, 1) eps of the schedule
        assert gap.mean() > -3 * se, (task, gap.mean(), se)
        assert gap.mean() < 0.02 * exact[task].mean() + 3 * se, (task, gap.mean())
        got[task] = nll.mean()
    information = got["ligand_only"] - got["ligand_given_protein"]
    mutual = float((JOINT * np.log(JOINT / np.outer(p_a, p_b))).sum())
    assert mutual > 0.3
    assert abs(information - mutual) < 0.1 * mutual


@pytest.mark.slow
def test_conditional_full_bound_adds_the_length_heads_term():
    """With length heads, `ligand_given_protein` reports the full bound: the diffusion
    bound (unchanged) plus -log p(L_ligand | protein) from the head, computed directly;
    the joint task gets no length term."""
    from sedd_jax.diffusion.graphs import Absorbing
    from sedd_jax.diffusion.joint import PairGraphs
    from sedd_jax.diffusion.noise import LogLinearNoise
    from sedd_jax.diffusion.pair_likelihood import make_pair_likelihood_fn, pair_dataset_likelihood
    from sedd_jax.models.dual import DualTrackSEDD, init_dual_params

    fields = dict(hidden=16, n_blocks_protein=1, n_blocks_ligand=1, n_heads=2, cond_dim=8)
    heads = dict(length_head=True, length_hidden=8, max_protein_len=12, max_ligand_len=10)
    model = DualTrackSEDD(26, 15, dropout=0.0, **fields, **heads)
    plain = DualTrackSEDD(26, 15, dropout=0.0, **fields)
    params = init_dual_params(model, jax.random.key(0))
    rng = np.random.default_rng(1)
    n = 7  # not a multiple of the batch: filler rows must not count
    p_len, l_len = rng.integers(1, 13, n), rng.integers(1, 11, n)
    arrays = {
        "protein": rng.integers(5, 25, (n, 12)).astype(np.int32),
        "protein_valid": np.arange(12)[None] < p_len[:, None],
        "ligand": rng.integers(1, 14, (n, 10)).astype(np.int32),
        "ligand_valid": np.arange(10)[None] < l_len[:, None],
    }
    graphs = PairGraphs(Absorbing(25), Absorbing(14))

    def result(net, task, p):
        fn = make_pair_likelihood_fn(net, graphs, LogLinearNoise(), task=task, time_samples=4)
        return pair_dataset_likelihood(fn, p, arrays, batch_size=4, seed=0)

    task = "ligand_given_protein"
    full = result(model, task, params)["ligand"]
    given_length = result(plain, task, {k: v for k, v in params.items() if "length" not in k})
    logits = model.apply({"params": params}, arrays["protein"], arrays["protein_valid"], task,
                         method="length_logits")  # fmt: skip
    direct = -np.asarray(jax.nn.log_softmax(logits, -1))[np.arange(n), l_len]
    assert full["nats_per_sequence"] == given_length["ligand"]["nats_per_sequence"]
    assert full["length_nats_per_sequence"] == pytest.approx(direct.mean(), rel=1e-6)
    assert full["with_length_nats_per_sequence"] == pytest.approx(
        full["nats_per_sequence"] + direct.mean(), rel=1e-6
    )
    assert full["with_length_nats_per_token"] == pytest.approx(
        (full["nats_per_sequence"] + direct.mean()) * n / l_len.sum(), rel=1e-6
    )
    assert direct.mean() > 1.0  # an untrained head: about log(11)
    assert "length_nats_per_sequence" not in result(model, "joint", params)["ligand"]


def test_pair_dataset_likelihood_reports_every_pair_once():
    seen = []

    def fake_fn(params, batch, key):
        rows = batch["protein_valid"].any(axis=1)
        return {
            "protein_nll": jnp.where(rows, 2.0, 0.0),
            "protein_tokens": batch["protein_valid"].sum(axis=1).astype(jnp.float32),
            "ligand_nll": jnp.zeros(rows.shape),
            "ligand_tokens": jnp.zeros(rows.shape),
        }

    arrays = {
        "protein": np.zeros((70, 4), np.int32),
        "protein_valid": np.ones((70, 4), bool),
        "ligand": np.zeros((70, 3), np.int32),
        "ligand_valid": np.ones((70, 3), bool),
    }
    result = pair_dataset_likelihood(
        fake_fn, None, arrays, batch_size=32, seed=0, on_batch=seen.append
    )
    assert seen == [32, 32, 6]
    assert result["protein"]["sequences"] == 70
    assert result["protein"]["nats_per_token"] == 0.5 and "ligand" not in result


def test_paired_difference_and_context_information_with_lengths():
    """The context's information is a paired difference over the same pairs (closed form
    here); with the length head's term the full version adds -log p_hat(L) (training
    marginal) to the unconditional bound and -log p(L | context) to the conditional one."""
    from sedd_jax.diffusion.likelihood import length_log_probs
    from sedd_jax.diffusion.likelihood_stats import paired_difference
    from sedd_jax.evaluate import context_information

    alone, given = np.array([3.0, 5, 4, 6]), np.array([1.0, 2, 2, 3])
    tokens = np.array([2.0, 3, 2, 3])
    d = paired_difference(alone, given, tokens)
    assert d["nats_per_sequence"] == 2.5 and d["sequences"] == 4
    assert d["nats_per_sequence_se"] == pytest.approx(math.sqrt(1 / 3) / 2, rel=1e-12)
    assert d["nats_per_token"] == 1.0 and d["nats_per_token_se"] == pytest.approx(0.0, abs=1e-12)

    head = np.log(np.array([0.9, 0.5, 0.9, 0.5]))  # log p(L | context) per pair
    meta = {"ligand_length_distribution": [0, 0, 1, 1]}  # lengths 2 and 3, equally likely
    info = context_information(
        {"nll": alone, "tokens": tokens},
        {"nll": given, "tokens": tokens, "length_log_prob": head},
        meta,
        "ligand",
        max_len=3,
    )
    assert info["given_length"] == d
    marginal = length_log_probs(meta["ligand_length_distribution"], 3)[tokens.astype(int)]
    assert marginal[0] == pytest.approx(math.log(0.5), abs=1e-3)  # the uniform floor is small
    expected = np.mean((alone - marginal) - (given - head))
    assert info["with_length"]["nats_per_sequence"] == pytest.approx(expected, rel=1e-12)
    assert info["with_length"]["nats_per_sequence"] > d["nats_per_sequence"]
