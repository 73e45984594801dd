"""Tests of the dual-track protein–ligand score network (`sedd_jax.models.dual`)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sedd_jax.models.dual import (
    MODES,
    build_dual_model,
    expected_dual_parameter_count,
    init_dual_params,
)
from sedd_jax.models.sedd import count_parameters, expected_parameter_count
from tests.helpers import dual_param_shapes, open_gate_params, tiny_dual

VP, VL = 26, 12  # protein / ligand vocabularies, absorbing id included
B, LP, LL = 3, 7, 5


def tiny_model(n_p=1, n_l=2, **kwargs):
    """Unequal depths by default: protein block 0 pairs with ligand block 1."""
    return tiny_dual(VP, VL, n_blocks_protein=n_p, n_blocks_ligand=n_l, **kwargs)


@functools.cache
def apply_fn(model):
    """jit(model.apply) with params as an argument, so new values do not recompile."""
    return jax.jit(model.apply, static_argnums=6)


def score_fn(model, params):
    apply = apply_fn(model)
    return lambda *args: apply({"params": params}, *args)


MODEL = tiny_model()


@pytest.fixture(scope="module")
def new_params():
    return init_dual_params(MODEL, jax.random.key(0))


@pytest.fixture(scope="module")
def params():
    return open_gate_params(MODEL)


def inputs(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    protein = jax.random.randint(k1, (B, LP), 0, VP - 1)
    ligand = jax.random.randint(k2, (B, LL), 0, VL - 1)
    sigma = jnp.array([0.3, 1.0, 2.5])
    return protein, ligand, sigma


def changed_rows(a, b):
    """Rows of the batch (axis 0) where a and b differ anywhere."""
    return np.flatnonzero(np.abs(np.asarray(a) - np.asarray(b)).max(axis=(1, 2)) > 0).tolist()


def test_self_attention_mixes_positions_of_one_sequence_not_the_batch(params):
    fn = score_fn(MODEL, params)
    protein, ligand, sigma = inputs()
    moved = protein.at[0, 2].set((protein[0, 2] + 1) % (VP - 1))
    for mode in ("protein_only", "joint"):
        before, _ = fn(protein, ligand, sigma, None, None, mode)
        after, _ = fn(moved, ligand, sigma, None, None, mode)
        # The reference's batch-axis attention (D1) changed position 2 of every row instead.
        assert changed_rows(before, after) == [0]
        others = np.delete(np.asarray(after - before)[0], 2, axis=0)
        assert np.abs(others).max(axis=-1).min() > 1e-3, mode  # every other position moved


def test_cross_attention_reads_the_other_track_once_gates_are_open(params):
    fn = score_fn(MODEL, params)
    protein, ligand, sigma = inputs()
    other_ligand = ligand.at[0].set((ligand[0] + 3) % (VL - 1))
    other_protein = protein.at[1].set((protein[1] + 3) % (VP - 1))
    p0, l0 = fn(protein, ligand, sigma, None, None, "joint")
    p1, _ = fn(protein, other_ligand, sigma, None, None, "joint")
    _, l1 = fn(other_protein, ligand, sigma, None, None, "joint")
    assert changed_rows(p0, p1) == [0] and np.abs(p1 - p0)[0].max() > 1e-3
    assert changed_rows(l0, l1) == [1] and np.abs(l1 - l0)[1].max() > 1e-3
    _, g0 = fn(protein, ligand, sigma, None, None, "ligand_given_protein")
    _, g1 = fn(other_protein, ligand, sigma, None, None, "ligand_given_protein")
    assert changed_rows(g0, g1) == [1]


def test_single_track_modes_and_disabled_cross_attention_ignore_the_other_track(params):
    protein, ligand, sigma = inputs()
    other_ligand = (ligand + 3) % (VL - 1)
    fn = score_fn(MODEL, params)
    alone, absent = fn(protein, ligand, sigma, None, None, "protein_only")
    assert absent is None
    with_other, _ = fn(protein, other_ligand, sigma, None, None, "protein_only")
    np.testing.assert_array_equal(alone, with_other)

    uncoupled = tiny_model(cross_attention=False)
    uncoupled_params = open_gate_params(uncoupled)
    assert not any(name.startswith("cross_") for name in uncoupled_params)
    fn = score_fn(uncoupled, uncoupled_params)
    p0, _ = fn(protein, ligand, sigma, None, None, "joint")
    p1, _ = fn(protein, other_ligand, sigma, None, None, "joint")
    np.testing.assert_array_equal(p0, p1)


def test_new_model_is_two_independent_single_track_models(new_params):
    for name in ("cross_protein_0", "cross_ligand_0"):
        assert not new_params[name]["adaLN_modulation"]["kernel"].any()
        assert not new_params[name]["adaLN_modulation"]["bias"].any()
    fn = score_fn(MODEL, new_params)
    protein, ligand, sigma = inputs()
    joint_p, joint_l = fn(protein, ligand, sigma, None, None, "joint")
    only_p, _ = fn(protein, ligand, sigma, None, None, "protein_only")
    _, only_l = fn(protein, ligand, sigma, None, None, "ligand_only")
    np.testing.assert_allclose(joint_p, only_p, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(joint_l, only_l, rtol=1e-6, atol=1e-6)


def test_empty_context_row_runs_as_a_single_track(params):
    """An all-pad ligand row makes cross-attention exactly zero (task mixtures use this)."""
    fn = score_fn(MODEL, params)
    protein, ligand, sigma = inputs()
    hidden = jnp.zeros((B, LL), bool)
    joint_p, _ = fn(protein, ligand, sigma, None, hidden, "joint")
    only_p, _ = fn(protein, ligand, sigma, None, None, "protein_only")
    np.testing.assert_allclose(joint_p, only_p, rtol=1e-6, atol=1e-6)


def test_conditional_modes_are_the_joint_network(params):
    fn = score_fn(MODEL, params)
    protein, ligand, sigma = inputs()
    joint_p, joint_l = fn(protein, ligand, sigma, None, None, "joint")
    absent_p, given_p = fn(protein, ligand, sigma, None, None, "ligand_given_protein")
    given_l, absent_l = fn(protein, ligand, sigma, None, None, "protein_given_ligand")
    assert absent_p is None and absent_l is None
    np.testing.assert_allclose(given_p, joint_l, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(given_l, joint_p, rtol=1e-5, atol=1e-5)


def test_synchronous_update_reads_the_other_track_from_the_previous_layer(params):
    """1 protein block pairs with ligand block 1: each reads the other's input state.

    The ligand sees the protein embedding but not the output of protein block 0; the
    protein sees the ligand embedding and ligand block 0 but not ligand block 1.
    """
    protein, ligand, sigma = inputs()
    p_ref, l_ref = score_fn(MODEL, params)(protein, ligand, sigma, None, None, "joint")
    seen = {
        "protein_embed": True,
        "blocks_protein_0": False,
        "ligand_embed": True,
        "blocks_ligand_0": True,
        "blocks_ligand_1": False,
    }
    rng = np.random.default_rng(7)
    for name, visible in seen.items():
        moved = dict(params)
        moved[name] = jax.tree_util.tree_map(
            lambda x: x + 0.5 * rng.standard_normal(x.shape).astype(np.float32), params[name]
        )
        p_out, l_out = score_fn(MODEL, moved)(protein, ligand, sigma, None, None, "joint")
        reader_delta = np.abs(l_out - l_ref if "protein" in name else p_out - p_ref).max()
        assert (reader_delta > 1e-3) if visible else (reader_delta == 0.0), name


@pytest.mark.slow
def test_appending_pads_changes_no_valid_output_of_either_track(params):
    fn = score_fn(MODEL, params)
    protein, ligand, sigma = inputs()
    p_valid = jnp.arange(LP)[None] < jnp.array([7, 4, 2])[:, None]
    l_valid = jnp.arange(LL)[None] < jnp.array([3, 5, 1])[:, None]
    p_ref, l_ref = fn(protein, ligand, sigma, p_valid, l_valid, "joint")

    def same(out, ref, valid):
        length = ref.shape[1]
        np.testing.assert_allclose(
            np.where(valid[..., None], out[:, :length], 0),
            np.where(valid[..., None], ref, 0),
            rtol=1e-5,
            atol=1e-5,
        )

    pad = jnp.zeros((B, 4), bool)
    longer_p = jnp.concatenate([protein, jnp.full((B, 4), 1)], axis=1)
    p_out, l_out = fn(longer_p, ligand, sigma, jnp.concatenate([p_valid, pad], 1), l_valid, "joint")
    same(p_out, p_ref, p_valid)
    same(l_out, l_ref, l_valid)

    longer_l = jnp.concatenate([ligand, jnp.full((B, 4), 0)], axis=1)
    p_out, l_out = fn(
        protein, longer_l, sigma, p_valid, jnp.concatenate([l_valid, pad], 1), "joint"
    )
    same(p_out, p_ref, p_valid)
    same(l_out, l_ref, l_valid)


@pytest.mark.parametrize(
    "n_p, n_l, variant, cross",
    [(2, 2, "protlig", True), (3, 1, "sedd", True), (1, 2, "protlig", False)],
)
def test_parameter_count_matches_closed_form(n_p, n_l, variant, cross):
    model = tiny_model(n_p=n_p, n_l=n_l, variant=variant, cross_attention=cross)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(dual_param_shapes(model)))
    expected = expected_dual_parameter_count(
        VP, VL, 16, n_p, n_l, 8, variant=variant, cross_attention=cross
    )
    assert count == expected


def test_uncoupled_count_is_two_single_track_models_sharing_sigma_map():
    """At the reference size (d=768, c=256, 8 blocks, V 37 / 2365), 184,139,776 coupled."""
    d, c, sigma_map = 768, 256, 256 * 256 + 256 * 256 + 2 * 256
    for variant in ("protlig", "sedd"):
        single = expected_parameter_count(37, d, 8, c, variant=variant) + expected_parameter_count(
            2365, d, 6, c, variant=variant
        )
        dual = expected_dual_parameter_count(
            37, 2365, d, 8, 6, c, variant=variant, cross_attention=False
        )
        assert dual == single - sigma_map
    cross = 2 * 8 * (4 * d * d + 3 * c * d + 5 * d)
    coupled = expected_dual_parameter_count(37, 2365, d, 8, 8, c)
    assert (
        coupled - expected_dual_parameter_count(37, 2365, d, 8, 8, c, cross_attention=False)
        == cross
    )
    assert coupled == 184_139_776


def test_parameter_names_follow_the_torch_layout(new_params):
    assert count_parameters(new_params) == expected_dual_parameter_count(VP, VL, 16, 1, 2, 8)
    assert set(new_params) == {
        "protein_embed",
        "ligand_embed",
        "sigma_map",
        "blocks_protein_0",
        "blocks_ligand_0",
        "blocks_ligand_1",
        "cross_protein_0",
        "cross_ligand_0",
        "protein_output",
        "ligand_output",
    }
    assert new_params["protein_embed"].shape == (VP, 16)
    assert new_params["ligand_embed"].shape == (VL, 16)
    cross = new_params["cross_protein_0"]
    assert {k: v["kernel"].shape for k, v in cross.items() if "kernel" in v} == {
        "adaLN_modulation": (8, 48),
        "attn_q": (16, 16),
        "attn_kv": (16, 32),
        "attn_out": (16, 16),
    }
    assert cross["norm_q"]["weight"].shape == cross["norm_kv"]["weight"].shape == (16,)


def test_build_dual_model_reads_every_model_field():
    config = ml_collections.ConfigDict(
        dict(
            hidden=32,
            n_blocks_protein=3,
            n_blocks_ligand=2,
            n_heads=4,
            cond_dim=16,
            mlp_ratio=2,
            dropout=0.05,
            variant="sedd",
            scale_by_sigma=False,
            dtype="bfloat16",
            cross_attention=False,
            absolute_positions=True,
            time_conditioning=False,
        )
    )
    model = build_dual_model(config, VP, VL, absorb=True)
    for key, value in config.items():
        assert getattr(model, key) == value, key
    assert (model.protein_vocab, model.ligand_vocab, model.absorb) == (VP, VL, True)


def test_log_score_is_zero_at_the_current_token_and_unknown_mode_fails(params):
    protein, ligand, sigma = inputs()
    p, l = score_fn(MODEL, params)(protein, ligand, sigma, None, None, "joint")
    assert not np.take_along_axis(np.asarray(p), np.asarray(protein)[..., None], -1).any()
    assert not np.take_along_axis(np.asarray(l), np.asarray(ligand)[..., None], -1).any()
    assert np.isfinite(p).all() and np.isfinite(l).all()
    assert set(MODES) == {
        "joint",
        "ligand_given_protein",
        "protein_given_ligand",
        "protein_only",
        "ligand_only",
    }
    with pytest.raises(ValueError, match="mode='both'"):
        MODEL.apply({"params": params}, protein, ligand, sigma, mode="both")


@pytest.mark.parametrize("absolute", [False, True])
def test_an_all_mask_track_knows_its_positions_only_with_absolute_positions(absolute):
    """Rotary attention sees relative offsets only: with every token the mask, the values
    are equal, so every position's output is the same (a sampler's first reveals then
    draw from the token composition, whatever the position). Absolute positions (no
    parameters: the same weights) tell the positions apart."""
    model = tiny_model(absolute_positions=absolute)
    params = open_gate_params(tiny_model())
    protein, _, sigma = inputs()
    masked = jnp.full((B, LL), VL - 1, jnp.int32)
    _, ligand = score_fn(model, params)(protein, masked, sigma, None, None, "ligand_given_protein")
    spread = np.abs(np.asarray(ligand) - np.asarray(ligand)[:, :1]).max()
    if absolute:
        assert spread > 1e-2, spread
    else:
        assert spread < 1e-5, spread


def test_a_sigma_free_network_needs_the_absorbing_graph():
    from sedd_jax.defaults import base_config, dual_base_config
    from sedd_jax.models.sedd import build_model

    single, dual = base_config().model, dual_base_config().model
    single.time_conditioning = dual.time_conditioning = False
    assert build_model(single, VP, absorb=True).time_conditioning is False
    with pytest.raises(ValueError, match="time_conditioning=False needs graph.type=absorb"):
        build_model(single, VP, absorb=False)
    with pytest.raises(ValueError, match="time_conditioning=False needs graph.type=absorb"):
        build_dual_model(dual, VP, VL, absorb=False, max_lens=(8, 8))
    # the twin's builders refuse it alike (one check, sedd_jax/common/model_options.py)
    pytest.importorskip("torch")
    from sedd_torch.models.dual import build_dual_model as torch_dual
    from sedd_torch.models.sedd import build_model as torch_single

    assert torch_single(single, VP, absorb=True).time_conditioning is False
    with pytest.raises(ValueError, match="time_conditioning=False needs graph.type=absorb"):
        torch_single(single, VP, absorb=False)
    with pytest.raises(ValueError, match="time_conditioning=False needs graph.type=absorb"):
        torch_dual(dual, VP, VL, absorb=False, max_lens=(8, 8))
