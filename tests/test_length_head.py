"""The length head learns p(L_generated | context); the marginal p(L) cannot."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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


# ------------------------------------------ the heads inside DualTrackSEDD and the pair loss

PV, LV, MAX_P, MAX_L = 26, 20, 10, 16  # vocabularies (absorbing id included), max lengths
TINY_DUAL = dict(hidden=16, n_blocks_protein=1, n_blocks_ligand=1, n_heads=2, cond_dim=8)
TINY_DUAL |= dict(dropout=0.0)
LENGTH_FIELDS = dict(length_head=True, length_hidden=16, max_protein_len=MAX_P)
LENGTH_FIELDS |= dict(max_ligand_len=MAX_L)


def _dual(length_head=True, **more):
    from sedd_jax.models.dual import DualTrackSEDD

    fields = LENGTH_FIELDS if length_head else {}
    return DualTrackSEDD(PV, LV, **TINY_DUAL, **fields, **more)


@functools.cache
def _params(length_head=True):
    """`_dual(length_head)`'s parameters from key 0, initialised once for the module."""
    from sedd_jax.models.dual import init_dual_params

    return init_dual_params(_dual(length_head), jax.random.key(0))


def _pair_graphs():
    from sedd_jax.diffusion.graphs import Absorbing
    from sedd_jax.diffusion.joint import PairGraphs

    return PairGraphs(Absorbing(PV - 1), Absorbing(LV - 1))


def _mixed_batch():
    """Five pairs, one per task (in TASKS order), varied lengths."""
    rng = np.random.default_rng(0)
    p_len, l_len = np.array([10, 7, 3, 9, 5]), np.array([4, 16, 9, 1, 12])
    return {
        "protein": jnp.asarray(rng.integers(5, PV - 1, (5, MAX_P)), jnp.int32),
        "protein_valid": jnp.arange(MAX_P)[None] < jnp.asarray(p_len)[:, None],
        "ligand": jnp.asarray(rng.integers(1, LV - 1, (5, MAX_L)), jnp.int32),
        "ligand_valid": jnp.arange(MAX_L)[None] < jnp.asarray(l_len)[:, None],
        "example_id": jnp.arange(5, dtype=jnp.int32),
    }


@pytest.mark.slow
def test_heads_are_submodules_counted_by_the_closed_form_and_leave_the_rest_unchanged():
    from sedd_jax.models.dual import expected_dual_parameter_count

    with_heads, without = _params(), _params(length_head=False)
    assert set(with_heads) - set(without) == {"length_ligand", "length_protein"}
    assert with_heads["length_ligand"]["embed"]["embedding"].shape == (PV, 16)
    assert with_heads["length_ligand"]["mlp_out"]["kernel"].shape == (16, MAX_L + 1)
    assert with_heads["length_protein"]["embed"]["embedding"].shape == (LV, 16)
    assert with_heads["length_protein"]["mlp_out"]["kernel"].shape == (16, MAX_P + 1)
    count = sum(x.size for x in jax.tree_util.tree_leaves(with_heads))
    assert count == expected_dual_parameter_count(
        PV, LV, 16, 1, 1, 8, length_head=(16, MAX_P, MAX_L)
    )
    positional = jax.eval_shape(
        lambda: _dual(length_positions=8).init(
            jax.random.key(0), *[jnp.zeros((1, 4), jnp.int32)] * 2, jnp.ones(1), mode="joint"
        )
    )["params"]
    assert positional["length_ligand"]["mlp_in"]["kernel"].shape == (16 * 9, 16)
    assert sum(x.size for x in jax.tree_util.tree_leaves(positional)) == (
        expected_dual_parameter_count(PV, LV, 16, 1, 1, 8, length_head=(16, MAX_P, MAX_L, 8))
    )
    assert sum(x.size for x in jax.tree_util.tree_leaves(without)) == (
        expected_dual_parameter_count(PV, LV, 16, 1, 1, 8)
    )
    for name, tree in without.items():  # same init key -> the same score network
        same = jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), tree, with_heads[name])
        assert all(jax.tree_util.tree_leaves(same)), name


def test_build_dual_model_reads_the_length_keys_and_old_configs_have_no_heads():
    from sedd_jax.defaults import dual_base_config
    from sedd_jax.models.dual import build_dual_model

    config = dual_base_config()
    assert config.model.length_head is True and config.model.length_hidden == 64
    max_lens = (config.data.max_protein_len, config.data.max_ligand_len)
    model = build_dual_model(config.model, PV, LV, True, max_lens)
    assert (model.length_head, model.length_hidden, model.length_positions) == (True, 64, 8)
    assert (model.max_protein_len, model.max_ligand_len) == max_lens
    old = config.model.to_dict()
    del old["length_positions"]  # saved before position-aware heads: composition heads
    import ml_collections

    assert build_dual_model(ml_collections.ConfigDict(old), PV, LV, True).length_positions == 0
    del old["length_head"], old["length_hidden"]  # a checkpoint saved before the heads
    assert not build_dual_model(ml_collections.ConfigDict(old), PV, LV, True).length_head


@functools.partial(jax.jit, static_argnums=(0, 4))
def _losses(model, params, batch, task_ids, with_length):
    """The pair loss (jitted: op by op, the dual model compiles every op): its per-row
    terms, `sums()` and `length_sums()`."""
    from sedd_jax.diffusion.joint import joint_score_entropy_loss
    from sedd_jax.diffusion.noise import LogLinearNoise
    from sedd_jax.training.tasks.objectives import length_fn_of

    score_fn = functools.partial(model.apply, {"params": params})
    out = joint_score_entropy_loss(
        score_fn,
        _pair_graphs(),
        LogLinearNoise(),
        batch,
        jax.random.key(3),
        task_ids,
        length_fn=length_fn_of(model, params) if with_length else None,
    )
    return out, out.sums(), out.length_sums()


@functools.partial(jax.jit, static_argnums=0)
def _length_log_probs(model, params, batch):
    """log p(L_ligand | protein) and log p(L_protein | ligand) of every row."""
    logp = {}
    for task, context in (("ligand_given_protein", "protein"), ("protein_given_ligand", "ligand")):
        logits = model.apply(
            {"params": params},
            batch[context],
            batch[f"{context}_valid"],
            task,
            method="length_logits",
        )
        logp[task] = jax.nn.log_softmax(logits, -1)
    return logp


@pytest.mark.slow
def test_loss_with_heads_is_loss_without_plus_the_conditional_length_nll():
    from sedd_jax.diffusion.joint import TASKS

    model, params = _dual(), _params()
    batch, task_ids = _mixed_batch(), jnp.arange(len(TASKS), dtype=jnp.int32)
    plain, a, _ = _losses(model, params, batch, task_ids, False)
    full, b, sums = _losses(model, params, batch, task_ids, True)
    for x, y in ((plain.protein, full.protein), (plain.ligand, full.ligand)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # token terms unchanged
    # direct: -log softmax(head(context))[L] on the one row of each conditional task
    lgp, pgl = TASKS.index("ligand_given_protein"), TASKS.index("protein_given_ligand")
    logp = _length_log_probs(model, params, batch)
    want_l = -float(logp["ligand_given_protein"][lgp, 16])  # that row's ligand has 16 tokens
    want_p = -float(logp["protein_given_ligand"][pgl, 3])  # that row's protein has 3
    want = np.zeros(5)
    want[lgp] = want_l
    np.testing.assert_allclose(np.asarray(full.ligand_length), want, rtol=1e-6)
    want = np.zeros(5)
    want[pgl] = want_p
    np.testing.assert_allclose(np.asarray(full.protein_length), want, rtol=1e-6)
    assert float(b.ligand_sum) == pytest.approx(float(a.ligand_sum) + want_l, rel=1e-6)
    assert float(b.protein_sum) == pytest.approx(float(a.protein_sum) + want_p, rel=1e-6)
    assert (b.protein_count, b.ligand_count) == (a.protein_count, a.ligand_count)
    assert sums["length_ligand_rows"] == 1 and sums["length_protein_rows"] == 1
    assert float(sums["length_ligand_sum"]) == pytest.approx(want_l, rel=1e-6)
    assert want_l > 1.0 and want_p > 1.0  # an untrained head: about log(17), log(11)


@pytest.mark.slow
def test_length_head_off_leaves_the_objective_bit_identical():
    from sedd_jax.diffusion import keys
    from sedd_jax.diffusion.joint import TaskMixture
    from sedd_jax.diffusion.noise import LogLinearNoise
    from sedd_jax.training.tasks.objectives import pair_track_objective

    model, params = _dual(length_head=False), _params(length_head=False)
    batch = _mixed_batch()
    mixture = TaskMixture.parse({"joint": 0.4, "ligand_given_protein": 0.3,
                                 "protein_given_ligand": 0.3})  # fmt: skip
    objective, step_metrics = pair_track_objective(
        model, _pair_graphs(), LogLinearNoise(), mixture, 1e-3
    )
    row_keys = keys.example_keys(jax.random.key(5), batch["example_id"])
    loss, count, aux = jax.jit(objective)(params, batch, row_keys, 0, jax.random.key(1))
    assert set(aux) == {"protein_sum", "protein_count", "ligand_sum", "ligand_count",
                        "t_sum", "sequences"}  # fmt: skip
    assert not any(k.startswith("length") for k in step_metrics(aux, 0))
    # the score network's loss of the model with heads, without its length fn: the same
    heads, heads_params = _dual(), _params()
    objective_h, metrics_h = pair_track_objective(
        heads, _pair_graphs(), LogLinearNoise(), mixture, 1e-3
    )
    loss_h, count_h, aux_h = jax.jit(objective_h)(
        heads_params, batch, row_keys, 0, jax.random.key(1)
    )
    length_total = float(aux_h["length_protein_sum"] + aux_h["length_ligand_sum"])
    assert float(count_h) == float(count)
    assert float(loss_h) == pytest.approx(float(loss) + length_total, rel=1e-6)
    assert float(loss_h) > float(loss)
    metrics = metrics_h(aux_h, 0)
    rows = {track: float(aux_h[f"length_{track}_rows"]) for track in ("protein", "ligand")}
    assert 0 < sum(rows.values()) <= 5  # each conditional row once, the joint ones not
    for track, n in rows.items():
        assert float(metrics[f"length_nll_{track}"]) == pytest.approx(
            float(aux_h[f"length_{track}_sum"]) / max(n, 1.0), rel=1e-6
        )


# --------------------------------------- the generated length follows the context (JAX, twin)

SHORT, LONG = 5, 12  # the ligand lengths of context A and context B


def _two_context_pairs(rows_each=8):
    """Context A (protein of 6 residues) always binds a 5-token ligand, context B (other
    residues, 9 long) a 12-token one."""
    a = np.array([5, 6, 7, 8, 9, 10, 0, 0, 0, 0]), 6
    b = np.array([15, 16, 17, 18, 19, 20, 21, 22, 23, 0]), 9
    rows = [a] * rows_each + [b] * rows_each
    rng = np.random.default_rng(0)
    protein = np.stack([r[0] for r in rows]).astype(np.int32)
    protein_valid = np.arange(MAX_P)[None] < np.array([r[1] for r in rows])[:, None]
    l_len = np.array([SHORT] * rows_each + [LONG] * rows_each)
    ligand = rng.integers(1, LV - 1, (len(rows), MAX_L)).astype(np.int32)
    ligand_valid = np.arange(MAX_L)[None] < l_len[:, None]
    return {
        "protein": protein,
        "protein_valid": protein_valid,
        "ligand": ligand,
        "ligand_valid": ligand_valid,
        "example_id": np.arange(len(rows), dtype=np.int32),
    }


def _draw_rows(draw, batch, per_context=64):
    """Lengths drawn for `per_context` rows of each context through `generated_rows`."""
    from sedd_jax.conditioning import generated_rows

    pick = np.r_[np.zeros(per_context, int), np.full(per_context, len(batch["protein"]) - 1)]
    context = batch["protein"][pick], batch["protein_valid"][pick]
    _, valid = generated_rows(
        len(pick), 0, MAX_L, None, LV - 1, 0, seed=7, head_lengths=lambda key: draw(*context, key)
    )
    lengths = valid.sum(axis=1)
    return lengths[:per_context], lengths[per_context:]


@pytest.mark.slow
def test_generated_ligand_length_follows_the_protein_after_training_the_pair_objective():
    """The real objective (pair loss with the length term) for 150 Adam steps, then the
    sampler's length draw (`make_length_sampler` through `generated_rows`)."""
    from sedd_jax.diffusion import keys
    from sedd_jax.diffusion.joint import TaskMixture
    from sedd_jax.diffusion.noise import LogLinearNoise
    from sedd_jax.training.generation import make_length_sampler
    from sedd_jax.training.tasks.objectives import pair_track_objective

    model, params = _dual(), _params()
    batch = {k: jnp.asarray(v) for k, v in _two_context_pairs().items()}
    mixture = TaskMixture.parse("ligand_given_protein")
    objective, _ = pair_track_objective(model, _pair_graphs(), LogLinearNoise(), mixture, 1e-3)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state, i):
        row_keys = keys.example_keys(jax.random.fold_in(jax.random.key(0), i), batch["example_id"])

        def loss(p):
            total, count, aux = objective(p, batch, row_keys, i, jax.random.key(1))
            return total / count, aux

        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, state = opt.update(grads, state, params)
        nll = aux["length_ligand_sum"] / aux["length_ligand_rows"]
        return optax.apply_updates(params, updates), state, nll

    first = None
    for i in range(150):
        params, state, nll = step(params, state, i)
        first = float(nll) if first is None else first
    assert first > 2.0 and float(nll) < 0.1  # log(16) -> ~0

    draw = make_length_sampler(model, "ligand_given_protein")
    short, long = _draw_rows(lambda c, v, k: draw(params, c, v, k), _two_context_pairs())
    assert np.mean(short == SHORT) > 0.9 and np.mean(long == LONG) > 0.9
    assert np.all((short >= 1) & (long <= MAX_L))


def test_twin_generated_ligand_length_follows_the_protein_after_training_the_pair_objective():
    import torch

    from sedd_jax.common.tasks import TaskMixture
    from sedd_torch.diffusion.graphs import Absorbing
    from sedd_torch.diffusion.joint import PairGraphs
    from sedd_torch.diffusion.noise import LogLinearNoise
    from sedd_torch.models.dual import DualTrackSEDD
    from sedd_torch.training.generation import make_length_sampler
    from sedd_torch.training.tasks.objectives import pair_track_objective

    torch.set_num_threads(1)  # a tiny model: threads only contend on a busy 2-core machine
    torch.manual_seed(0)
    model = DualTrackSEDD(PV, LV, **TINY_DUAL, **LENGTH_FIELDS)
    batch = {
        k: torch.as_tensor(v).long() if v.dtype == np.int32 else torch.as_tensor(v)
        for k, v in _two_context_pairs().items()
    }
    graphs = PairGraphs(Absorbing(PV - 1), Absorbing(LV - 1))
    mixture = TaskMixture.parse("ligand_given_protein")
    objective, metrics = pair_track_objective(
        graphs, LogLinearNoise(), mixture, 1e-3, length_head=True
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)

    def rand(shape):
        return torch.rand(shape, generator=generator)

    history = []
    for i in range(60):  # converged by step 40 (< 0.01, torch seeds 0, 1, 2)
        opt.zero_grad()
        total, count, aux = objective(model, batch, rand, i)
        (total / count).backward()
        opt.step()
        history.append(metrics(aux, i)["length_nll_ligand"])
    assert history[0] > 2.0 and history[-1] < 0.1

    draw = make_length_sampler(model, "ligand_given_protein")
    torch_gen = torch.Generator().manual_seed(7)

    def twin_draw(context, valid, key):
        del key  # the twin draws from its generator
        return draw(torch.as_tensor(context).long(), torch.as_tensor(valid), torch_gen).numpy()

    short, long = _draw_rows(twin_draw, _two_context_pairs())
    assert np.mean(short == SHORT) > 0.9 and np.mean(long == LONG) > 0.9
