"""The pair likelihood per task on an exact oracle: joint, conditional and single-track
bounds sit at (and above) the exact entropies, and their difference is the mutual
information the protein carries about its ligand."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.joint import TASKS, PairGraphs, joint_per_token_loss, task_roles
from sedd_jax.diffusion.likelihood import (
    likelihood_times,
    pair_dataset_likelihood,
    pair_sequence_elbo,
    prior_term,
    reconstruction_term,
    time_map,
)
from tests.helpers import (
    JOINT,
    LIGAND_V,
    PAIR_GRAPHS,
    PAIR_NOISE,
    PROTEIN_V,
    random_like,
    unconditional_aware_oracle,
)

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


def _tiny_dual():
    from sedd_jax.models.dual import DualTrackSEDD

    model = DualTrackSEDD(
        protein_vocab=PROTEIN_V,
        ligand_vocab=LIGAND_V,
        hidden=32,
        n_blocks_protein=1,
        n_blocks_ligand=1,
        n_heads=2,
        cond_dim=16,
        dropout=0.0,
    )
    protein, ligand = jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), protein, ligand, jnp.ones((1,)), mode="joint")
    )["params"]
    return model, random_like(shapes, seed=1)


def _score_fn(model, params):
    def score_fn(p, l, sigma, p_valid, l_valid, mode):
        return model.apply({"params": params}, p, l, sigma, p_valid, l_valid, mode)

    return score_fn


def _one_time_per_call(score_fn, graphs, noise, batch, key, *, task, time_samples):
    """The pair bound as it was computed before `time_map`: a scan of one model call per
    time sample (the reference of the chunked one)."""
    size = batch["protein"].shape[0]
    task_ids = jnp.full((size,), TASKS.index(task), jnp.int32)
    roles = task_roles(task_ids)
    time_key, noise_key = jax.random.split(key)
    t = likelihood_times(time_key, time_samples, size, "stratified")

    def term(carry, inputs):
        t_k, k = inputs
        p_loss, l_loss, _, _ = joint_per_token_loss(
            score_fn, graphs, noise, batch, t_k, task_ids, jax.random.fold_in(noise_key, k), task
        )
        return carry, (p_loss.sum(axis=-1), l_loss.sum(axis=-1))

    _, (p_terms, l_terms) = jax.lax.scan(term, None, (t, jnp.arange(time_samples)))
    out = {}
    for track, terms, generated in (
        ("protein", p_terms, roles.protein_generated),
        ("ligand", l_terms, roles.ligand_generated),
    ):
        graph = getattr(graphs, track)
        scored = batch[f"{track}_valid"] & generated[:, None]
        extra = prior_term(graph, noise, scored) + reconstruction_term(graph, noise, scored)
        out[f"{track}_nll"] = terms.mean(axis=0) + extra
    return out


def test_time_chunks_give_the_bound_of_one_time_per_call():
    model, params = _tiny_dual()
    score_fn = _score_fn(model, params)
    graphs = PairGraphs(Absorbing(PROTEIN_V - 1), Absorbing(LIGAND_V - 1))
    rng = np.random.default_rng(0)
    lengths_p, lengths_l = np.array([8, 5, 3]), np.array([6, 8, 2])
    batch = {
        "protein": jnp.asarray(rng.integers(0, PROTEIN_V - 1, (3, 8)), jnp.int32),
        "protein_valid": jnp.asarray(np.arange(8) < lengths_p[:, None]),
        "ligand": jnp.asarray(rng.integers(0, LIGAND_V - 1, (3, 8)), jnp.int32),
        "ligand_valid": jnp.asarray(np.arange(8) < lengths_l[:, None]),
    }
    key = jax.random.key(7)
    for task in ("joint", "protein_given_ligand"):
        kwargs = dict(task=task, time_samples=12)
        reference = jax.jit(
            lambda b, k, kw=kwargs: _one_time_per_call(score_fn, graphs, PAIR_NOISE, b, k, **kw)
        )(batch, key)
        for chunk in (5, 12):  # 5 -> 4, the largest divisor of 12 up to 5
            out = jax.jit(
                lambda b, k, c=chunk, kw=kwargs: pair_sequence_elbo(
                    score_fn, graphs, PAIR_NOISE, b, k, time_chunk=c, **kw
                )
            )(batch, key)
            for track in ("protein", "ligand"):
                got, want = np.asarray(out[f"{track}_nll"]), np.asarray(reference[f"{track}_nll"])
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        total = sum(float(np.asarray(v).sum()) for v in reference.values())
        assert total > 1.0  # a real, non-zero bound


def test_time_map_stacks_every_time_in_order():
    t = jnp.arange(12.0)[:, None] * jnp.ones((1, 2))
    for chunk in (1, 3, 5, 12, 50):
        out = time_map(lambda t_k, k: (t_k * 10 + k, k), t, chunk)
        np.testing.assert_array_equal(out[0][:, 0], np.arange(12) * 11)
        np.testing.assert_array_equal(out[1], np.arange(12))


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
