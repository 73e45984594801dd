"""The length head learns p(L_generated | context); the marginal p(L) cannot."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedd_jax.models.length import LengthHead, length_nll, sample_lengths

MAX_LEN = 24


def _two_contexts():
    """Two protein contexts (different tokens, one padded) bound to lengths 10 and 20."""
    tokens = jnp.array([[5, 6, 7, 8, 1, 1], [9, 10, 11, 12, 13, 14]], dtype=jnp.int32)
    valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=bool)
    return tokens, valid, jnp.array([10, 20], dtype=jnp.int32)


def _train_head(steps=300):
    tokens, valid, lengths = _two_contexts()
    head = LengthHead(vocab_size=25, max_len=MAX_LEN, hidden=32)
    params = head.init(jax.random.PRNGKey(0), tokens, valid)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(
            lambda p: length_nll(head.apply(p, tokens, valid), lengths).mean()
        )(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(steps):
        params, state, _ = step(params, state)
    return head.apply(params, tokens, valid), lengths


def test_length_head_puts_most_mass_on_each_contexts_length():
    logits, lengths = _train_head()
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    assert probs[0, 10] > 0.9 and probs[1, 20] > 0.9
    draws = sample_lengths(jax.random.PRNGKey(1), jnp.repeat(logits, 64, axis=0))
    assert np.mean(np.asarray(draws[:64]) == 10) > 0.8
    assert np.mean(np.asarray(draws[64:]) == 20) > 0.8


def test_marginal_length_cannot_tell_contexts_apart():
    """Without the head (the marginal p(L) over the table) each length gets only 0.5."""
    _, _, lengths = _two_contexts()
    marginal = np.bincount(np.asarray(lengths), minlength=MAX_LEN + 1) / len(lengths)
    assert marginal[10] == marginal[20] == 0.5


def test_length_nll_is_minus_log_softmax_at_the_length():
    logits = jnp.log(jnp.array([[0.25, 0.25, 0.5]]))
    np.testing.assert_allclose(length_nll(logits, jnp.array([2])), [np.log(2.0)], rtol=1e-6)


def test_sampled_lengths_respect_the_minimum():
    logits = jnp.array([[10.0, 0.0, 0.0, 0.0]])
    draws = sample_lengths(jax.random.PRNGKey(0), jnp.repeat(logits, 32, axis=0), min_len=1)
    assert int(draws.min()) >= 1
