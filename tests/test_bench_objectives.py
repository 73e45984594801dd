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
