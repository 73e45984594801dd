"""training.time_sampling=mask_count: the masked-CE bound estimated over the number of
masked tokens is the same bound as the time form (exact enumeration), with less variance."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.losses import masked_ce_loss
from sedd_jax.diffusion.mask_count import counted_masks, mask_counts, masked_ce_count_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.parametrisation import mean_log_probs
from sedd_jax.training.tasks.objectives import single_track_objective

V, L = 3, 6
GRAPH = Absorbing(V)
NOISE = LogLinearNoise(1e-4)
X0 = np.array([0, 2, 1, 1, 0, 0])
VALID = np.array([True, True, True, True, True, False])  # n = 5, one pad
W_LEFT = jax.random.normal(jax.random.key(0), (V + 1, V + 1))
W_RIGHT = jax.random.normal(jax.random.key(1), (V + 1, V + 1))


def sigma_free_net(x, sigma):
    """Mean logits [B, L, V+1] from each position's two neighbours (sigma unused)."""
    left = jnp.pad(x, ((0, 0), (1, 0)), constant_values=V)[:, :-1]
    right = jnp.pad(x, ((0, 0), (0, 1)), constant_values=V)[:, 1:]
    return W_LEFT[left] + W_RIGHT[right]


def exact_bound() -> float:
    """sum_{k=1}^{n} (1 / k) E_{|S| = k}[sum_{i in S} -log p(x0_i | x0 with S masked)], by
    listing every subset S of the valid positions: the eps -> 0 bound of a sigma-free
    network (the time form's integral split by the masked count)."""
    positions = np.flatnonzero(VALID)
    n = len(positions)
    total = 0.0
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(positions, k))
        x = np.tile(X0, (len(subsets), 1))
        for row, s in enumerate(subsets):
            x[row, list(s)] = GRAPH.mask_id
        log_p = np.asarray(mean_log_probs(sigma_free_net(jnp.asarray(x), None), GRAPH.mask_id))
        ce = [-sum(log_p[r, i, X0[i]] for i in s) for r, s in enumerate(subsets)]
        total += float(np.mean(ce)) / k
    return total


def _draws(loss_fn, seeds, rows=4096):
    x0 = jnp.tile(jnp.asarray(X0), (rows, 1))
    valid = jnp.tile(jnp.asarray(VALID), (rows, 1))
    out = [loss_fn(sigma_free_net, GRAPH, NOISE, x0, valid, jax.random.key(s), 1e-4) for s in seeds]
    return np.array([float(o.losses.sum()) / rows for o in out])


def test_count_form_and_time_form_estimate_the_exact_bound():
    exact = exact_bound()
    count = _draws(masked_ce_count_loss, range(16))
    time = _draws(masked_ce_loss, range(100, 108))
    se_count = count.std(ddof=1) / np.sqrt(len(count))
    se_time = time.std(ddof=1) / np.sqrt(len(time))
    print(f"exact {exact:.4f}; count {count.mean():.4f} ± {se_count:.4f}; "
          f"time {time.mean():.4f} ± {se_time:.4f}")  # fmt: skip
    assert exact > 3.0
    assert abs(count.mean() - exact) < 4 * se_count + 1e-3
    assert abs(time.mean() - exact) < 4 * se_time + 1e-3 * exact
    # the point of the count form: the same bound with a smaller spread per draw
    assert count.std(ddof=1) < 0.6 * time.std(ddof=1)


def test_each_row_masks_exactly_k_of_its_valid_tokens():
    n = jnp.array([5, 5, 3, 1])
    valid = jnp.arange(L)[None, :] < n[:, None]
    k = mask_counts(jnp.array([0.0, 0.999, 0.5, 0.7]), n)
    np.testing.assert_array_equal(k, [1, 5, 2, 1])
    masked, _ = counted_masks(jax.random.uniform(jax.random.key(2), (4, L)), valid, k)
    masked = np.asarray(masked)
    np.testing.assert_array_equal(masked.sum(axis=1), k)
    assert not (masked & ~np.asarray(valid)).any()


def test_masked_sets_are_uniform_and_m_is_beta_independent_of_them():
    """k = 2 of 4 positions over 6,000 rows: each of the 6 subsets on about 1/6 of them,
    m ~ Beta(2, 3) (mean 0.4, variance 0.04), the same mean on every subset."""
    rows = 6000
    scores = jax.random.uniform(jax.random.key(3), (rows, 4))
    masked, m = counted_masks(scores, jnp.ones((rows, 4), bool), jnp.full((rows,), 2))
    codes = (np.asarray(masked) * np.array([1, 2, 4, 8])).sum(axis=1)
    counts = np.bincount(codes, minlength=16)[[3, 5, 6, 9, 10, 12]]
    assert counts.sum() == rows
    assert np.all(np.abs(counts - rows / 6) < 4 * np.sqrt(rows / 6))
    m = np.asarray(m)
    assert abs(m.mean() - 0.4) < 4 * 0.2 / np.sqrt(rows)
    assert abs(m.var() - 0.04) < 0.004
    for code in (3, 5, 6, 9, 10, 12):
        assert abs(m[codes == code].mean() - 0.4) < 4 * 0.2 / np.sqrt(rows / 6)


def test_stratified_counts_cover_every_k_evenly():
    """The training override: u stratified over a global batch of 4 n rows puts every k in
    1..n on exactly 4 rows, whatever u0."""
    n, batch = 16, 64
    for seed in range(3):
        u0 = jax.random.uniform(jax.random.key(seed), ())
        u = jnp.mod(u0 + jnp.arange(batch) / batch, 1.0)
        k = np.asarray(mask_counts(u, jnp.full((batch,), n)))
        np.testing.assert_array_equal(np.bincount(k, minlength=n + 1)[1:], np.full(n, 4))


@pytest.mark.parametrize(
    "loss_type, graph, curriculum, match",
    [
        ("score_entropy", GRAPH, "none", "masked_ce"),
        ("masked_ce", Uniform(V), "none", "absorbing"),
        ("masked_ce", GRAPH, "sigma_scale", "curriculum"),
    ],
)
def test_mask_count_refuses_what_it_cannot_estimate(loss_type, graph, curriculum, match):
    cfg = ConfigDict(dict(type=curriculum, ramp="linear", preschool_steps=10, bias_strength=2.0))
    with pytest.raises(ValueError, match=match):
        single_track_objective(None, graph, NOISE, 1e-3, cfg, loss_type, "mask_count", 8)


def test_pair_count_form_masks_k_of_the_scored_tokens_of_both_tracks():
    """joint_score_entropy_loss with count_u: on joint pairs k of the pair's scored tokens
    (both tracks together) become each track's own mask id; on ligand_given_protein pairs
    the protein stays clean and the k come from the ligand alone; every row's weights sum
    to n over its masked tokens' cross-entropies (checked with a uniform network)."""
    from sedd_jax.diffusion.joint import TASKS, PairGraphs, joint_score_entropy_loss

    graphs = PairGraphs(Absorbing(7), Absorbing(4))
    rows, lp, ll = 64, 6, 5
    rng = np.random.default_rng(0)
    p_valid = np.arange(lp)[None] < rng.integers(1, lp + 1, rows)[:, None]
    l_valid = np.arange(ll)[None] < rng.integers(1, ll + 1, rows)[:, None]
    batch = {
        "protein": jnp.asarray(np.where(p_valid, rng.integers(0, 7, (rows, lp)), 0)),
        "protein_valid": jnp.asarray(p_valid),
        "ligand": jnp.asarray(np.where(l_valid, rng.integers(0, 4, (rows, ll)), 0)),
        "ligand_valid": jnp.asarray(l_valid),
    }
    seen = {}

    def uniform_net(p_t, l_t, sigma, p_seen, l_seen, mode):
        seen["p_t"], seen["l_t"] = p_t, l_t
        return jnp.zeros(p_t.shape + (8,)), jnp.zeros(l_t.shape + (5,))

    tasks = jnp.where(jnp.arange(rows) % 2 == 0, TASKS.index("joint"), 1)
    assert TASKS[1] == "ligand_given_protein"
    u = jnp.mod(0.37 + jnp.arange(rows) / rows, 1.0)
    out = joint_score_entropy_loss(
        uniform_net, graphs, NOISE, batch, jax.random.key(4), tasks, 1e-3,
        loss_type="masked_ce", count_u=u,
    )  # fmt: skip
    p_mask = np.asarray(seen["p_t"] == graphs.protein.mask_id)
    l_mask = np.asarray(seen["l_t"] == graphs.ligand.mask_id)
    joint = np.asarray(tasks) == TASKS.index("joint")
    n = np.where(joint, p_valid.sum(1) + l_valid.sum(1), l_valid.sum(1))
    k = np.asarray(mask_counts(u, jnp.asarray(n)))
    np.testing.assert_array_equal(p_mask.sum(1) + l_mask.sum(1), k)
    assert not p_mask[~joint].any()
    assert not (p_mask & ~p_valid).any() and not (l_mask & ~l_valid).any()
    # a uniform network pays log V per masked token: n/k * (k_p log 7 + k_l log 4) per row
    per_row = np.asarray(out.protein.sum(1) + out.ligand.sum(1))
    expect = n / k * (p_mask.sum(1) * np.log(7) + l_mask.sum(1) * np.log(4))
    np.testing.assert_allclose(per_row, expect, rtol=1e-5)
    np.testing.assert_array_equal(out.t, u)
