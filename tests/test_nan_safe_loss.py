"""The score-entropy loss has finite gradients wherever its value is finite.

A `where` after an exponential keeps the forward value but turns 0 * inf into NaN in the
backward pass; every position that is not scored (unmasked, pad, context track) must be
selected away *before* the exponential.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import base_config
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.joint import TASKS, PairGraphs, joint_per_token_loss
from sedd_jax.diffusion.losses import per_token_loss
from sedd_jax.diffusion.noise import get_noise


def issue_case():
    """The reproduction of the scale-out issue: Absorbing(4), x_t = [[4, 1]], x0 = [[2, 1]],
    log-score 100 at the unmasked position 1, token 0, sigma = 0.5."""
    graph = Absorbing(4)
    x_t, x0 = jnp.array([[4, 1]]), jnp.array([[2, 1]])
    log_score = jnp.zeros((1, 2, 5)).at[0, 1, 0].set(100.0)
    return graph, x_t, x0, log_score, jnp.array([0.5])


def test_absorbing_score_entropy_gradient_is_finite_at_huge_unmasked_log_scores():
    graph, x_t, x0, log_score, sigma = issue_case()

    def loss(s):
        return graph.score_entropy(s, sigma, x_t, x0).sum()

    value, grad = jax.value_and_grad(loss)(log_score)
    # only position 0 (masked) counts: 4 * e^0 - r * 0 + r (log r - 1), r = 1 / (e^0.5 - 1)
    r = 1.0 / np.expm1(0.5)
    np.testing.assert_allclose(value, 4.0 + r * (np.log(r) - 1.0), rtol=1e-6)
    np.testing.assert_allclose(value, 3.1256, atol=1e-4)
    assert np.isfinite(np.asarray(grad)).all()
    # the unmasked position gets no gradient; the masked one gets exp(s_y) - r 1[y = x0]
    np.testing.assert_array_equal(grad[0, 1], 0.0)
    np.testing.assert_allclose(grad[0, 0, :4], [1.0, 1.0, 1.0 - r, 1.0], rtol=1e-6)


@pytest.mark.parametrize("extreme", [-100.0, 100.0])
@pytest.mark.parametrize("sigma", [1e-4, 0.5, 8.0])
def test_absorbing_gradient_matches_finite_differences_at_extreme_unmasked_scores(extreme, sigma):
    graph = Absorbing(4)
    key = jax.random.key(0)
    x0 = jax.random.randint(key, (2, 6), 0, 4)
    x_t = x0.at[:, ::2].set(4)  # even positions masked
    base = 0.3 * jax.random.normal(jax.random.fold_in(key, 1), (2, 6, 5))
    log_score = base.at[:, 1::2, :].set(extreme)  # unmasked positions at +-100
    sig = jnp.full((2,), sigma)

    def loss(s):
        return graph.score_entropy(s, sig, x_t, x0).sum()

    grad = np.asarray(jax.grad(loss)(log_score))
    assert np.isfinite(grad).all()
    rng = np.random.default_rng(0)
    for _ in range(6):
        b, pos, v = rng.integers(2), 2 * rng.integers(3), rng.integers(4)
        h = 1e-2
        bump = jnp.zeros_like(log_score).at[b, pos, v].set(h)
        numeric = (loss(log_score + bump) - loss(log_score - bump)) / (2 * h)
        np.testing.assert_allclose(grad[b, pos, v], numeric, rtol=2e-2, atol=2e-3 * (1 + 1 / sigma))


@pytest.mark.parametrize("graph", [Absorbing(4), Uniform(5)], ids=["absorb", "uniform"])
def test_per_token_loss_gradient_is_finite_when_pads_have_huge_log_scores(graph):
    noise = get_noise(base_config().noise)
    x0 = jnp.array([[1, 2, 3, 0], [2, 2, 1, 1]])
    valid = jnp.array([[True, True, False, False], [True, True, True, False]])
    pad_score = jnp.where(valid[..., None], 0.0, 200.0)

    def loss(scale):
        fn = lambda x, s: scale * jnp.ones((2, 4, graph.dim)) + pad_score  # noqa: E731
        out = per_token_loss(fn, graph, noise, x0, valid, jnp.array([0.9, 0.9]), jax.random.key(3))
        return out.sum()

    value, grad = jax.value_and_grad(loss)(0.1)
    assert np.isfinite(value) and np.isfinite(grad)


@pytest.mark.slow
def test_joint_loss_gradient_is_finite_with_huge_context_track_scores():
    """ligand_given_protein: the protein track is context (unscored); its log-scores may be
    anything the network emits without poisoning the gradient (both graphs)."""
    noise = get_noise(base_config().noise)
    for graph in (Absorbing(6), Uniform(6)):
        graphs = PairGraphs(graph, graph)
        batch = {
            "protein": jnp.array([[1, 2, 3, 4]]),
            "protein_valid": jnp.ones((1, 4), bool),
            "ligand": jnp.array([[0, 5, 1]]),
            "ligand_valid": jnp.ones((1, 3), bool),
        }
        task_ids = jnp.array([TASKS.index("ligand_given_protein")])

        def loss(scale, graph=graph, graphs=graphs, batch=batch, task_ids=task_ids):
            def score_fn(p_t, l_t, sigma, p_seen, l_seen, mode):
                p = 300.0 + scale * jnp.ones((*p_t.shape, graph.dim))
                return p, scale * jnp.ones((*l_t.shape, graph.dim))

            out = joint_per_token_loss(
                score_fn, graphs, noise, batch, jnp.array([0.95]), task_ids, jax.random.key(1)
            )
            p_loss, l_loss = out[0], out[1]
            np.testing.assert_array_equal(np.asarray(out[2]), False)  # protein unscored
            return p_loss.sum() + l_loss.sum()

        value, grad = jax.value_and_grad(loss)(0.2)
        assert np.isfinite(value) and value > 0
        assert np.isfinite(grad)


def test_twin_absorbing_gradient_is_finite_and_equal_to_jax():
    torch = pytest.importorskip("torch")
    from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing

    graph, x_t, x0, log_score, sigma = issue_case()
    jax_grad = jax.grad(lambda s: graph.score_entropy(s, sigma, x_t, x0).sum())(log_score)
    s = torch.tensor(np.asarray(log_score), requires_grad=True)
    value = (
        TorchAbsorbing(4)
        .score_entropy(
            s, torch.tensor([0.5]), torch.tensor(np.asarray(x_t)), torch.tensor(np.asarray(x0))
        )
        .sum()
    )
    value.backward()
    assert torch.isfinite(s.grad).all()
    np.testing.assert_allclose(s.grad.numpy(), np.asarray(jax_grad), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(value.item(), 3.1256, atol=1e-4)
