"""The single-track SEDD network: size, output conventions, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.models.sedd import SEDD, count_parameters, expected_parameter_count

# (d, blocks, heads, cond, V, params) from the reference's configs (reference §1.1.6)
REFERENCE_SIZES = [
    (768, 8, 12, 256, 37, 66_724_096),
    (1024, 20, 16, 512, 37, 316_360_704),
    (128, 4, 4, 512, 37, 2_901_120),
    (1024, 16, 16, 256, 37, 227_440_128),
    (512, 6, 8, 128, 37, 21_493_504),
]


def _param_count(model: SEDD) -> int:
    x = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.ones((1,))))
    return count_parameters(shapes["params"])


def test_stable_config_has_exactly_66_724_096_parameters():
    model = SEDD(vocab_size=37, hidden=768, n_blocks=8, n_heads=12, cond_dim=256)
    assert _param_count(model) == 66_724_096


@pytest.mark.parametrize("d,blocks,heads,cond,vocab,expected", REFERENCE_SIZES)
def test_closed_form_parameter_count_matches_reference_table(
    d, blocks, heads, cond, vocab, expected
):
    assert expected_parameter_count(vocab, d, blocks, cond) == expected


@pytest.mark.parametrize("variant", ["protlig", "sedd"])
@pytest.mark.parametrize("d,blocks,heads,cond,vocab", [(64, 2, 4, 32, 26), (96, 3, 6, 48, 37)])
def test_closed_form_parameter_count_matches_module(variant, d, blocks, heads, cond, vocab):
    model = SEDD(vocab, d, blocks, heads, cond, variant=variant)
    assert _param_count(model) == expected_parameter_count(vocab, d, blocks, cond, variant=variant)


@pytest.fixture(scope="module")
def tiny():
    model = SEDD(vocab_size=26, hidden=32, n_blocks=2, n_heads=4, cond_dim=16, dropout=0.0)
    x = jax.random.randint(jax.random.key(1), (3, 10), 0, 26)
    params = model.init(jax.random.key(0), x, jnp.ones((3,)))
    # give the zero-initialised adaLN layers values so every path matters
    params = jax.tree_util.tree_map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params
    )
    return model, params, x


def test_log_score_at_current_token_is_zero(tiny):
    model, params, x = tiny
    out = model.apply(params, x, jnp.array([0.1, 1.0, 5.0]))
    at_x = np.take_along_axis(np.asarray(out), np.asarray(x)[..., None], -1)
    assert np.all(at_x == 0.0)
    assert np.abs(np.asarray(out)).max() > 0.1


def test_scale_by_sigma_shifts_log_scores_by_log_expm1_sigma_and_log_vocab(tiny):
    model, params, x = tiny
    sigma = jnp.array([0.1, 1.0, 5.0])
    scaled = model.apply(params, x, sigma)
    raw = model.clone(scale_by_sigma=False).apply(params, x, sigma)
    shift = np.log(np.expm1(np.asarray(sigma))) + np.log(25.0)
    off_token = ~np.asarray(jax.nn.one_hot(x, 26, dtype=bool))
    diff = np.asarray(raw - scaled)
    np.testing.assert_allclose(
        diff[off_token].reshape(3, -1), np.broadcast_to(shift[:, None], (3, 10 * 25)), rtol=1e-5
    )


def test_all_true_validity_mask_equals_unmasked_forward(tiny):
    model, params, x = tiny
    sigma = jnp.array([0.3, 0.7, 2.0])
    unmasked = model.apply(params, x, sigma)
    masked = model.apply(params, x, sigma, jnp.ones(x.shape, bool))
    assert np.array_equal(np.asarray(unmasked), np.asarray(masked))


def test_padding_does_not_change_valid_positions(tiny):
    model, params, x = tiny
    sigma = jnp.array([0.3, 0.7, 2.0])
    short = model.apply(params, x[:, :6], sigma)
    padded_x = x.at[:, 6:].set(1)
    valid = jnp.arange(10)[None, :] < 6
    padded = model.apply(params, padded_x, sigma, jnp.broadcast_to(valid, x.shape))
    np.testing.assert_allclose(np.asarray(padded[:, :6]), np.asarray(short), atol=1e-5)


def test_each_sequence_attends_only_to_itself(tiny):
    model, params, x = tiny
    sigma = jnp.array([0.5, 0.5, 0.5])
    base = np.asarray(model.apply(params, x, sigma))
    changed = np.asarray(model.apply(params, x.at[0, 3].set((x[0, 3] + 1) % 25), sigma))
    delta = np.abs(changed - base).max(axis=-1)
    assert delta[0, [0, 1, 2, 4, 5]].min() > 1e-6  # other positions of sequence 0 react
    assert delta[1:].max() == 0.0  # other sequences do not
