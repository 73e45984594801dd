"""Samplers against exact transition probabilities, with no denoise step to hide errors.

Single-track: one predictor step from a fixed state, on the exact score of i.i.d. tokens,
has a closed-form next-state distribution per position; 32k positions are tested against
it with a chi-square test (df = categories - 1, limit at P = 1e-4). Pairs: an oracle
joint score of one-token tracks with a correlated joint p(a, b); whole reverse runs must
sample p(a, b) jointly and p(b | a) given the protein.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.joint_sampling import sample_pairs
from sedd_jax.diffusion.noise import GeometricNoise, LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.sampling import analytic_predictor, euler_predictor
from tests.helpers import (
    JOINT,
    PAIR_GRAPHS,
    PAIR_NOISE,
    K,
    chi_square_p_value,
    oracle_pair_score,
    unconditional_aware_oracle,
)

P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
N = len(P)
SHAPE = (8, 4096)
NOISES = {"loglinear": LogLinearNoise(1e-3), "geometric": GeometricNoise(1e-3, 20.0)}
PREDICTORS = {"euler": euler_predictor, "analytic": analytic_predictor}
STEPS = {"loglinear": (0.6, 0.15), "geometric": (0.6, 0.03)}  # (t, dt): Euler stays a law


@functools.partial(jax.jit, static_argnames=("graph", "noise", "predictor", "t", "dt"))
def one_step(graph, noise, predictor, x, t, dt, key):
    fn = unigram_log_score_fn(jnp.log(P), graph)
    u = uniform(key, x.shape + (graph.dim,))
    return PREDICTORS[predictor](fn, graph, noise, x, t, dt, u)


def totals(noise, t, dt):
    sigma = float(noise.total(jnp.float32(t)))
    next_sigma = float(noise.total(jnp.float32(t - dt)))
    dsigma = float(noise(jnp.full((1,), t, jnp.float32))[1][0])
    return sigma, next_sigma, dsigma


def absorbing_expected(predictor, noise, t, dt):
    """Next-state distribution [N + 1] (real tokens, then the mask) of a masked position.

    euler (tau-leaping): P(y) = dt dsigma(t) s_y with s_y = p(y) / (e^sigma - 1);
    analytic: the true reverse posterior p(y) (e^-sigma' - e^-sigma) / (1 - e^-sigma),
    staying masked with (1 - e^-sigma') / (1 - e^-sigma), sigma' = sigma_bar(t - dt).
    """
    sigma, next_sigma, dsigma = totals(noise, t, dt)
    if predictor == "euler":
        move = dt * dsigma * P / np.expm1(sigma)
    else:
        move = P * (np.exp(-next_sigma) - np.exp(-sigma)) / -np.expm1(-sigma)
    return np.append(move, 1.0 - move.sum())


def uniform_expected(predictor, noise, t, dt, x):
    """Next-state distribution [N] of a position holding token x (uniform graph).

    With p_t = e^-sigma p + (1 - e^-sigma) / n: euler jumps to y != x with probability
    dt dsigma (1/n) p_t(y) / p_t(x); analytic is the true posterior
    p_{t-dt}(y) T(x | y) / p_t(x), T = exp((sigma - sigma') Q).
    """
    sigma, next_sigma, dsigma = totals(noise, t, dt)

    def marginal(s):
        return np.exp(-s) * P + -np.expm1(-s) / N

    p_t = marginal(sigma)
    if predictor == "euler":
        out = dt * dsigma / N * p_t / p_t[x]
        out[x] = 0.0
        out[x] = 1.0 - out.sum()
        return out
    step = sigma - next_sigma
    transition = np.exp(-step) * (np.arange(N) == x) + -np.expm1(-step) / N
    return marginal(next_sigma) * transition / p_t[x]


@pytest.mark.parametrize("noise_name", sorted(NOISES))
@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
def test_absorbing_step_follows_its_closed_form_transition(predictor, noise_name):
    graph, noise = Absorbing(N), NOISES[noise_name]
    t, dt = STEPS[noise_name]
    x = jnp.full(SHAPE, graph.mask_id, jnp.int32)
    out = np.asarray(one_step(graph, noise, predictor, x, t, dt, jax.random.key(11)))
    expected = absorbing_expected(predictor, noise, t, dt)
    assert 0.05 < 1.0 - expected[-1] < 0.95  # the step moves a real fraction of positions
    counts = np.bincount(out.ravel(), minlength=N + 1)
    assert chi_square_p_value(counts, expected) > 1e-4, (counts / counts.sum(), expected)
    # a step with half the rate is rejected by the same test (the test has power)
    half = expected.copy()
    half[:-1] /= 2
    half[-1] = 1 - half[:-1].sum()
    assert chi_square_p_value(counts, half) < 1e-12


@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
def test_uniform_step_follows_its_closed_form_transition(predictor):
    graph, noise = Uniform(N), NOISES["geometric"]
    t, dt = 0.7, 0.05
    x0 = 1
    x = jnp.full(SHAPE, x0, jnp.int32)
    out = np.asarray(one_step(graph, noise, predictor, x, t, dt, jax.random.key(12)))
    expected = uniform_expected(predictor, noise, t, dt, x0)
    assert 0.05 < 1.0 - expected[x0] < 0.95
    counts = np.bincount(out.ravel(), minlength=N)
    assert chi_square_p_value(counts, expected) > 1e-4, (counts / counts.sum(), expected)


# --- pairs ---------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("task", "predictor"))
def run_pairs(protein, ligand, key, task, predictor):
    ones = jnp.ones(protein.shape, bool)
    return sample_pairs(
        oracle_pair_score,
        PAIR_GRAPHS,
        PAIR_NOISE,
        protein,
        ligand,
        ones,
        ones,
        key,
        task=task,
        steps=256,
        predictor=predictor,
    )


@pytest.mark.slow
@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
def test_joint_pair_sampler_draws_the_oracle_joint(predictor):
    size = 20_000
    start = jnp.zeros((size, 1), jnp.int32)
    p, l = run_pairs(start, start, jax.random.key(5), "joint", predictor)
    p, l = np.asarray(p)[:, 0], np.asarray(l)[:, 0]
    assert p.max() < K and l.max() < K  # no mask left
    counts = np.bincount(p * K + l, minlength=K * K)
    assert chi_square_p_value(counts, JOINT.ravel()) > 1e-4, counts.reshape(K, K) / size
    # independent tracks (each from its marginal) would be rejected by the same test
    independent = np.outer(JOINT.sum(1), JOINT.sum(0)).ravel()
    assert chi_square_p_value(counts, independent) < 1e-12


@pytest.mark.parametrize("predictor", ["euler", "cached", "first_hitting"])
@pytest.mark.parametrize(
    "task, context_track", [("ligand_given_protein", 0), ("protein_given_ligand", 1)]
)
@pytest.mark.slow
def test_conditional_pair_sampler_draws_the_oracle_conditional(task, context_track, predictor):
    """cached and first_hitting run the single-track sampler on the generated track."""
    size = 12_000
    context = np.repeat(np.arange(K), size // K)[:, None].astype(np.int32)
    blank = np.zeros_like(context)
    protein, ligand = (context, blank) if context_track == 0 else (blank, context)
    p, l = run_pairs(jnp.asarray(protein), jnp.asarray(ligand), jax.random.key(6), task, predictor)
    p, l = np.asarray(p)[:, 0], np.asarray(l)[:, 0]
    kept, drawn = (p, l) if context_track == 0 else (l, p)
    np.testing.assert_array_equal(kept, context[:, 0])  # the context is clamped
    table = JOINT if context_track == 0 else JOINT.T  # table[context, drawn] ∝ p
    for c in range(K):
        cond = table[c] / table[c].sum()
        counts = np.bincount(drawn[context[:, 0] == c], minlength=K)
        assert chi_square_p_value(counts, cond) > 1e-4, (c, counts, cond)
        # the marginal (a sampler that ignores the context) is rejected
        marginal = table.sum(0) / table.sum()
        assert chi_square_p_value(counts, marginal) < 1e-6


@pytest.mark.parametrize("predictor", ["cached", "first_hitting"])
def test_one_track_samplers_refuse_joint_generation(predictor):
    start = jnp.zeros((2, 1), jnp.int32)
    with pytest.raises(ValueError, match="generates both"):
        run_pairs(start, start, jax.random.key(5), "joint", predictor)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_guided_ligands_follow_the_tilted_conditional(weight):
    """Guidance w draws b given a with probability ∝ p(b | a)^(1 + w) / p(b)^w."""
    from sedd_jax.diffusion.guidance import guided_score_fn

    size = 12_000
    protein = jnp.asarray(np.repeat(np.arange(K), size // K)[:, None].astype(np.int32))
    ligand = jnp.zeros_like(protein)
    ones = jnp.ones(protein.shape, bool)
    score_fn = guided_score_fn(unconditional_aware_oracle, weight)
    if weight == 0:
        assert score_fn is unconditional_aware_oracle  # unguided sampling, draw for draw
    run = jax.jit(
        lambda p, l, key: sample_pairs(
            score_fn,
            PAIR_GRAPHS,
            PAIR_NOISE,
            p,
            l,
            ones,
            ones,
            key,
            task="ligand_given_protein",
            steps=64,
            predictor="euler",
        )
    )
    _, l = run(protein, ligand, jax.random.key(9))
    drawn, context = np.asarray(l)[:, 0], np.asarray(protein)[:, 0]
    marginal = JOINT.sum(0)
    for a in range(K):
        cond = JOINT[a] / JOINT[a].sum()
        tilted = cond ** (1 + weight) / marginal**weight
        tilted /= tilted.sum()
        counts = np.bincount(drawn[context == a], minlength=K)
        assert chi_square_p_value(counts, tilted) > 1e-4, (a, counts, tilted)
        if weight:
            assert chi_square_p_value(counts, cond) < 1e-6  # guidance changed the law
