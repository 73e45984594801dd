"""Tests of the joint protein–ligand loss, task mixtures and sampler (`diffusion.joint`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedd_jax.defaults import base_config
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.curriculum import sample_curriculum_times, sigma_multiplier
from sedd_jax.diffusion.graphs import Absorbing, Uniform
from sedd_jax.diffusion.joint import (
    TASK_ROLES,
    TASKS,
    PairGraphs,
    TaskMixture,
    draw_tasks,
    joint_score_entropy_loss,
    task_roles,
)
from sedd_jax.diffusion.joint_sampling import sample_pairs
from sedd_jax.diffusion.losses import per_token_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.sampling import pc_sample
from tests.helpers import open_gate_params, tiny_dual

GRAPHS = PairGraphs(Absorbing(25), Absorbing(11))
VP, VL = GRAPHS.protein.dim, GRAPHS.ligand.dim
NOISE = LogLinearNoise()
MODEL = tiny_dual(VP, VL)
PROTEIN_PAD, LIGAND_PAD = 1, 0
MIXTURE = {"joint": 0.5, "ligand_given_protein": 0.25, "protein_given_ligand": 0.25}


@pytest.fixture(scope="module")
def score_fn():
    """The tiny network with random parameters and every adaLN gate open."""
    params = open_gate_params(MODEL, seed=0)
    return functools.partial(MODEL.apply, {"params": params})


def make_batch(size=8, seed=0):
    rng = np.random.default_rng(seed)
    p_len = rng.integers(1, 7, size)
    l_len = rng.integers(1, 6, size)
    p_valid = np.arange(6)[None] < p_len[:, None]
    l_valid = np.arange(5)[None] < l_len[:, None]
    protein = np.where(p_valid, rng.integers(5, 25, (size, 6)), PROTEIN_PAD)
    ligand = np.where(l_valid, rng.integers(2, 11, (size, 5)), LIGAND_PAD)
    arrays = dict(protein=protein, protein_valid=p_valid, ligand=ligand, ligand_valid=l_valid)
    return {k: jnp.asarray(v) for k, v in arrays.items()}


def track_by_track(score_fn, batch, t, task_ids, noise_key, sigma_scale=1.0):
    """The single-track loss (`losses.per_token_loss`) of each track, with the joint draws.

    Each track is scored with the other track held at what the network sees: its own
    corrupted draw if generated, clean if context, hidden if absent.
    """
    roles = task_roles(task_ids)
    protein_key, ligand_key = jax.random.split(noise_key)
    sigma = sigma_scale * NOISE(t)[0]
    p, l = batch["protein"], batch["ligand"]
    p_gen = batch["protein_valid"] & roles.protein_generated[:, None]
    l_gen = batch["ligand_valid"] & roles.ligand_generated[:, None]
    p_seen = batch["protein_valid"] & roles.protein_visible[:, None]
    l_seen = batch["ligand_valid"] & roles.ligand_visible[:, None]
    p_t = GRAPHS.protein.sample_transition(protein_key, p, sigma, p_gen)
    l_t = GRAPHS.ligand.sample_transition(ligand_key, l, sigma, l_gen)

    def protein_scores(x, s):
        return score_fn(x, l_t, s, p_seen, l_seen, "joint")[0]

    def ligand_scores(x, s):
        return score_fn(p_t, x, s, p_seen, l_seen, "joint")[1]

    scale = dict(sigma_scale=sigma_scale)
    p_loss = per_token_loss(
        protein_scores, GRAPHS.protein, NOISE, p, p_gen, t, protein_key, **scale
    )
    l_loss = per_token_loss(ligand_scores, GRAPHS.ligand, NOISE, l, l_gen, t, ligand_key, **scale)
    return p_loss.sum(), p_gen.sum(), l_loss.sum(), l_gen.sum()


REFERENCE = jax.jit(track_by_track, static_argnums=0)  # task ids traced: one compile


def sigma_scale_curriculum():
    """A linear `sigma_scale` curriculum whose multiplier at step 2 is 0.1 + 0.9 * 2/3."""
    c = base_config().curriculum
    c.type, c.ramp, c.preschool_steps = "sigma_scale", "linear", 3
    return c


def loss_and_reference(score_fn, batch, key, tasks, step=0, curriculum=None):
    """The pair loss training and evaluation call, and the track-by-track loss with the
    draws it documents: (with a mixture) task_key, key = split(key); time_key, noise_key =
    split(key)."""
    loss = jax.jit(
        lambda batch, key: joint_score_entropy_loss(
            score_fn, GRAPHS, NOISE, batch, key, tasks, step=step, curriculum=curriculum
        )
    )(batch, key)
    size = batch["protein"].shape[0]
    if isinstance(tasks, TaskMixture):
        task_key, key = keys.split(key)
        task_ids = draw_tasks(task_key, tasks, size)
    else:
        task_ids = jnp.asarray(tasks, jnp.int32)
    time_key, noise_key = keys.split(key)
    t = sample_curriculum_times(time_key, size, step, curriculum, 1e-3)
    scale = sigma_multiplier(step, curriculum)
    reference = REFERENCE(score_fn, batch, t, task_ids, noise_key, scale)
    np.testing.assert_allclose(loss.t, t, rtol=1e-6)  # jit may fuse eps + (1 - eps) u
    np.testing.assert_array_equal(loss.task_ids, task_ids)
    return loss.sums(), reference, task_ids


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_joint_loss_per_track_equals_single_track_loss_with_same_draws(score_fn, task):
    batch = make_batch()
    loss, (p_sum, p_count, l_sum, l_count), _ = loss_and_reference(
        score_fn, batch, jax.random.key(3), TaskMixture.parse(task)
    )
    p_gen, l_gen, _, _ = TASK_ROLES[task]
    assert float(loss.protein_count) == float(p_count) == p_gen * int(batch["protein_valid"].sum())
    assert float(loss.ligand_count) == float(l_count) == l_gen * int(batch["ligand_valid"].sum())
    np.testing.assert_allclose(loss.protein_sum, p_sum, rtol=1e-5)
    np.testing.assert_allclose(loss.ligand_sum, l_sum, rtol=1e-5)
    assert (float(loss.protein_sum) > 0) == p_gen and (float(loss.ligand_sum) > 0) == l_gen
    assert float(loss.total_sum) == pytest.approx(float(loss.protein_sum + loss.ligand_sum))


def test_mixture_loss_scores_each_pair_by_its_own_task(score_fn):
    batch = make_batch(seed=1)
    mixture = TaskMixture.parse(MIXTURE | {"protein_only": 0.1, "ligand_only": 0.1})
    loss, (p_sum, p_count, l_sum, l_count), task_ids = loss_and_reference(
        score_fn, batch, jax.random.key(6), mixture, step=2, curriculum=sigma_scale_curriculum()
    )
    assert set(np.asarray(task_ids).tolist()) == set(range(len(TASKS)))  # all five tasks
    roles = task_roles(task_ids)
    assert float(loss.protein_count) == float(p_count) > 0
    assert float(loss.ligand_count) == float(l_count) > 0
    expected = (batch["protein_valid"] & roles.protein_generated[:, None]).sum()
    assert float(loss.protein_count) == float(expected)
    np.testing.assert_allclose(loss.protein_sum, p_sum, rtol=1e-5)
    np.testing.assert_allclose(loss.ligand_sum, l_sum, rtol=1e-5)


def test_given_task_ids_score_each_pair_as_told_and_leave_the_key_to_time_and_noise(score_fn):
    """Evaluation poses every pair as one task: no task draw, the whole key for the
    times and the corruption (the reference above checks the draws)."""
    batch = make_batch(seed=5)
    task_ids = jnp.asarray([TASKS.index("ligand_given_protein")] * 4 + [0] * 4, jnp.int32)
    loss, (p_sum, p_count, l_sum, l_count), _ = loss_and_reference(
        score_fn, batch, jax.random.key(7), task_ids
    )
    assert float(loss.protein_count) == float(batch["protein_valid"][4:].sum()) == float(p_count)
    assert float(loss.ligand_count) == float(batch["ligand_valid"].sum()) == float(l_count)
    np.testing.assert_allclose(loss.protein_sum, p_sum, rtol=1e-5)
    np.testing.assert_allclose(loss.ligand_sum, l_sum, rtol=1e-5)


@pytest.mark.slow
def test_per_example_keys_give_each_pair_the_draws_of_its_own_key(score_fn):
    """Training passes one key per pair: a pair's task, time and loss are those it gets
    alone with its key."""
    batch = make_batch(seed=6, size=4)
    mixture = TaskMixture.parse(MIXTURE)
    row_keys = jax.random.split(jax.random.key(8), 4)
    loss = jax.jit(lambda b, k: joint_score_entropy_loss(score_fn, GRAPHS, NOISE, b, k, mixture))
    whole = loss(batch, row_keys)
    for i in range(4):
        alone = loss({k: v[i : i + 1] for k, v in batch.items()}, row_keys[i])
        assert int(alone.task_ids[0]) == int(whole.task_ids[i])
        assert float(alone.t[0]) == pytest.approx(float(whole.t[i]), rel=1e-6)
        np.testing.assert_allclose(alone.protein[0], whole.protein[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.ligand[0], whole.ligand[i], rtol=1e-5, atol=1e-6)


def test_mixture_draws_tasks_with_configured_frequencies():
    mixture = TaskMixture.parse(MIXTURE)
    task_ids = np.asarray(draw_tasks(jax.random.key(0), mixture, 40_000))
    freq = np.bincount(task_ids, minlength=len(TASKS)) / task_ids.size
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.25, 0.0, 0.0], atol=0.01)  # ~4 std
    assert freq[3] == freq[4] == 0.0
    roles = task_roles(jnp.asarray(task_ids))
    assert np.asarray(roles.protein_generated).mean() == pytest.approx(0.75, abs=0.01)
    assert np.asarray(roles.ligand_generated).mean() == pytest.approx(0.75, abs=0.01)
    assert np.asarray(roles.protein_visible).all() and np.asarray(roles.ligand_visible).all()


def test_task_mixture_parses_names_and_weights():
    assert TaskMixture.parse("ligand_given_protein").single == "ligand_given_protein"
    mixture = TaskMixture.parse({"joint": 2.0, "protein_only": 2.0})
    assert mixture.probs == (0.5, 0.0, 0.0, 0.5, 0.0)
    assert mixture.single is None and mixture.mode == "joint"
    assert TaskMixture.parse({"joint": 1.0, "ligand_only": 0.0}).mode == "joint"
    with pytest.raises(ValueError, match="unknown task"):
        TaskMixture.parse({"joint": 0.5, "protein_to_ligand": 0.5})
    with pytest.raises(ValueError, match=">= 0"):
        TaskMixture.parse({"joint": -1.0, "protein_only": 2.0})


@pytest.mark.parametrize("task", ["joint", "ligand_given_protein", "protein_given_ligand"])
def test_sampling_clamps_context_and_leaves_no_mask(score_fn, task):
    batch = make_batch(size=6, seed=2)
    p_valid, l_valid = batch["protein_valid"], batch["ligand_valid"]
    prompt = (jnp.arange(6)[None] < 2) & p_valid if task == "joint" else None
    sample = jax.jit(functools.partial(sample_pairs, score_fn, GRAPHS, NOISE, task=task, steps=4))
    protein, ligand = sample(
        batch["protein"],
        batch["ligand"],
        p_valid,
        l_valid,
        jax.random.key(1),
        protein_clamp=prompt,
    )
    protein, ligand = np.asarray(protein), np.asarray(ligand)
    for x, given, valid, graph, generated in (
        (protein, batch["protein"], p_valid, GRAPHS.protein, task != "ligand_given_protein"),
        (ligand, batch["ligand"], l_valid, GRAPHS.ligand, task != "protein_given_ligand"),
    ):
        assert (x != graph.mask_id).all()
        np.testing.assert_array_equal(x[~valid], np.asarray(given)[~valid])  # pads kept
        if generated:
            assert (x[valid] < graph.mask_id).all()
            assert (x[valid] != np.asarray(given)[valid]).any()  # really sampled
        else:
            np.testing.assert_array_equal(x, given)  # the context, exactly as given
    if prompt is not None:
        np.testing.assert_array_equal(protein[prompt], np.asarray(batch["protein"])[prompt])


def test_single_track_sampling_is_pc_sample_on_one_track(score_fn):
    batch = make_batch(size=3, seed=3)
    p_valid, steps = batch["protein_valid"], 5
    uniforms = jax.random.uniform(jax.random.key(9), (steps + 1,) + p_valid.shape + (VP,))

    @jax.jit
    def both(protein, valid, uniforms):
        joint, absent = sample_pairs(
            score_fn,
            GRAPHS,
            NOISE,
            protein,
            None,
            valid,
            None,
            task="protein_only",
            steps=steps,
            uniforms=(uniforms, None),
        )

        def log_score_fn(x, sigma):
            return score_fn(x, None, sigma, valid, None, "protein_only")[0]

        x_init = jnp.where(valid, GRAPHS.protein.mask_id, protein)
        single = pc_sample(
            log_score_fn,
            GRAPHS.protein,
            NOISE,
            x_init,
            steps=steps,
            clamp=~valid,
            uniforms=uniforms,
        )
        return joint, absent, single

    joint, absent, single = both(batch["protein"], p_valid, uniforms)
    assert absent is None
    np.testing.assert_array_equal(joint, single)
    assert (np.asarray(joint)[np.asarray(p_valid)] < GRAPHS.protein.mask_id).all()


def test_sampling_with_uniform_graphs_clamps_the_context(score_fn):
    graphs = PairGraphs(Uniform(VP), Uniform(VL))
    batch = make_batch(size=4, seed=4)
    sample = jax.jit(
        functools.partial(
            sample_pairs, score_fn, graphs, NOISE, task="ligand_given_protein", steps=3
        )
    )
    protein, ligand = sample(
        batch["protein"],
        batch["ligand"],
        batch["protein_valid"],
        batch["ligand_valid"],
        jax.random.key(2),
    )
    np.testing.assert_array_equal(protein, batch["protein"])
    valid = np.asarray(batch["ligand_valid"])
    np.testing.assert_array_equal(np.asarray(ligand)[~valid], np.asarray(batch["ligand"])[~valid])
    assert ((np.asarray(ligand) >= 0) & (np.asarray(ligand) < VL)).all()
    with pytest.raises(ValueError, match="pass a key"):
        sample_pairs(
            score_fn,
            graphs,
            NOISE,
            batch["protein"],
            batch["ligand"],
            batch["protein_valid"],
            batch["ligand_valid"],
            task="joint",
            steps=2,
            uniforms=(None, None),
        )
