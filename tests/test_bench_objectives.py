"""scripts/bench_objectives.py's source of known entropy: the sampled chain has the law the
benchmark scores against."""

import numpy as np

from tests.helpers import load_script

bench = load_script("bench_objectives")


def test_chain_samples_have_the_entropy_the_benchmark_scores_against():
    stat, trans, rate = bench.markov_chain(0)
    np.testing.assert_allclose(stat @ trans, stat, atol=1e-12)  # stationary
    np.testing.assert_allclose(trans.sum(axis=1), 1.0, atol=1e-12)
    length, n = 64, 20_000
    x = bench.sample_chain(n, length, stat, trans, np.random.default_rng(5))
    # the first symbol follows the stationary law, each next one its row of the matrix
    first = np.bincount(x[:, 0], minlength=20) / n
    assert np.abs(first - stat).max() < 4 * np.sqrt(stat.max() / n)
    pairs = np.zeros((20, 20))
    np.add.at(pairs, (x[:, :-1].ravel(), x[:, 1:].ravel()), 1)
    rows = pairs.sum(axis=1, keepdims=True)
    assert np.abs(pairs / rows - trans).max() < 4 * np.sqrt(0.25 / rows.min())
    # -log p per sequence: H(stationary) + (L - 1) * entropy rate on average
    nll = bench.chain_nll(x, stat, trans)
    expected = -(stat * np.log(stat)).sum() + (length - 1) * rate
    assert abs(nll.mean() - expected) < 4 * nll.std() / np.sqrt(n)
    assert 2.0 < rate < np.log(20)


def test_chain_conditionals_equal_brute_force_marginals_of_the_joint():
    """Every masking pattern of length-4 sequences: the nearest-visible formula gives the
    conditional of each position that summing the chain's joint law over the other masked
    positions gives."""
    stat, trans, _ = bench.markov_chain(0)
    length = 4
    joint = np.einsum("a,ab,bc,cd->abcd", stat, trans, trans, trans)  # p(x_1..x_4)
    rng = np.random.default_rng(3)
    x = bench.sample_chain(6, length, stat, trans, rng)
    patterns = np.array([[(p >> i) & 1 for i in range(length)] for p in range(16)], bool)
    xs = np.repeat(x, len(patterns), axis=0)
    masked = np.tile(patterns, (len(x), 1))
    got = np.exp(bench.chain_conditionals(xs, masked, stat, trans))
    for n in range(len(xs)):
        for i in range(length):
            # condition on the other visible symbols, sum out the other masked ones
            index = tuple(
                slice(None) if (j == i or masked[n, j]) else xs[n, j] for j in range(length)
            )
            law = joint[index]
            kept = [j for j in range(length) if j == i or masked[n, j]]
            law = law.sum(axis=tuple(a for a, j in enumerate(kept) if j != i))
            np.testing.assert_allclose(got[n, i], law / law.sum(), rtol=1e-9, atol=1e-15)
    # nothing visible: every position follows the stationary law
    np.testing.assert_allclose(got[masked.all(axis=1)][0], np.tile(stat, (length, 1)), rtol=1e-9)


def test_the_gap_of_a_context_free_model_is_its_known_excess_and_lies_where_it_should():
    """A model that predicts the stationary law at every masked position, whatever it sees,
    has the bound sum_i -log pi(x_i) in every masking order, so its excess over the truth
    is known exactly; the time bins of `excess_by_time` must add up to it. Its excess per
    masked letter must fall towards t = 1, where the exact conditionals tend to pi."""
    import jax.numpy as jnp

    from sedd_jax.diffusion.graphs import Absorbing
    from sedd_jax.diffusion.noise import LogLinearNoise
    from sedd_jax.diffusion.parametrisation import mean_to_log_score

    stat, trans, _ = bench.markov_chain(0)
    x = bench.sample_chain(256, 64, stat, trans, np.random.default_rng(4))
    ids = np.arange(5, 25)  # the letters' token ids; 25 is the mask
    graph = Absorbing(25)
    assert (graph.dim, graph.mask_id) == (26, 25)

    def context_free(x_t, sigma):
        logits = jnp.full((*x_t.shape, graph.dim), -1e4).at[..., ids].set(jnp.log(stat))
        return mean_to_log_score(logits, sigma, x_t, graph.mask_id)

    rows = bench.excess_by_time(context_free, graph, LogLinearNoise(), ids, x, stat, trans, 8, 4)
    total = sum(r["excess_nats_per_sequence"] for r in rows)
    known = (-np.log(stat[x]).sum(axis=1) - bench.chain_nll(x, stat, trans)).mean()
    print(f"binned {total:.3f} against known {known:.3f} nats per sequence")
    assert abs(total - known) < 0.01 * known
    kl = [r["kl_per_masked"] for r in rows]
    assert kl[0] > 2 * kl[-1] > 0
