"""masked_ce, the masked-count estimate and the mean -> score conversion: JAX and the twin
agree in float32."""

from __future__ import annotations

import jax
import numpy as np

from sedd_jax.diffusion import graphs as jax_graphs
from sedd_jax.diffusion import joint as jax_joint
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.catsample import uniform
from sedd_jax.diffusion.losses import loss_times, masked_ce_per_token
from sedd_jax.diffusion.mask_count import masked_ce_count_loss
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.parametrisation import mean_to_log_score
from sedd_torch.diffusion import graphs as torch_graphs
from sedd_torch.diffusion import joint as torch_joint
from sedd_torch.diffusion import losses as torch_losses
from sedd_torch.diffusion import mask_count as torch_count
from sedd_torch.diffusion import noise as torch_noise
from sedd_torch.diffusion import parametrisation as torch_param
from tests.helpers import ReplayRand, max_error, t

N, TOL = 7, 1e-5


def test_masked_ce_and_radd_conversion_match(record):
    rng = np.random.default_rng(0)
    graph_j, graph_t = jax_graphs.GRAPHS["absorb"](N), torch_graphs.GRAPHS["absorb"](N)
    noise_j, noise_t = LogLinearNoise(1e-3), torch_noise.LogLinearNoise(1e-3)
    logits = (3 * rng.standard_normal((4, 9, N + 1))).astype(np.float32)
    x0 = rng.integers(0, N, size=(4, 9)).astype(np.int32)
    x_t = np.where(rng.random((4, 9)) < 0.5, N, x0).astype(np.int32)
    valid = np.ones((4, 9), bool)
    valid[:, -2:] = False
    times = np.array([1e-3, 0.3, 0.7, 1.0], np.float32)

    expected = masked_ce_per_token(lambda x, s: logits, graph_j, noise_j, x0, valid, times, x_t=x_t)
    got = torch_losses.masked_ce_per_token(
        lambda x, s: t(logits), graph_t, noise_t, t(x0), t(valid), t(times), x_t=t(x_t)
    )
    loss_err = max_error(expected, got.numpy())
    sigma = np.array([1e-3, 0.3, 2.0, 7.0], np.float32)
    score_j = mean_to_log_score(logits, sigma, x_t, N)
    score_t = torch_param.mean_to_log_score(t(logits), t(sigma), t(x_t), N)
    score_err = max_error(score_j, score_t.numpy())
    record("masked_ce max|d|/(1+max)", loss_err, TOL)
    record("mean->score max|d|/(1+max)", score_err, TOL)
    assert loss_err <= TOL and score_err <= TOL


PAIR_DIMS = (6, 9, 5, 8, 7)  # protein ids, ligand ids, pairs, protein and ligand lengths


def _pair_case(rng):
    """(JAX graphs, twin graphs, mean logits of both tracks, batch) of 5 padded pairs."""
    vp, vl, b, lp, ll = PAIR_DIMS
    graphs_j = jax_joint.PairGraphs(jax_graphs.Absorbing(vp), jax_graphs.Absorbing(vl))
    graphs_t = torch_joint.PairGraphs(torch_graphs.Absorbing(vp), torch_graphs.Absorbing(vl))
    outs = [
        (3 * rng.standard_normal((b, n, v + 1))).astype(np.float32) for n, v in ((lp, vp), (ll, vl))
    ]
    batch = {
        "protein": rng.integers(0, vp, (b, lp)).astype(np.int32),
        "protein_valid": np.arange(lp)[None] < np.array([8, 5, 3, 8, 6])[:, None],
        "ligand": rng.integers(0, vl, (b, ll)).astype(np.int32),
        "ligand_valid": np.arange(ll)[None] < np.array([7, 2, 7, 4, 5])[:, None],
    }
    return graphs_j, graphs_t, outs, batch


def test_pair_masked_ce_and_dual_conversion_match(record):
    """The pair loss with loss.type=masked_ce (mixed tasks, the same corruption uniforms)
    and the pair network's mean -> score map agree between JAX and the twin."""
    from sedd_jax.diffusion.parametrisation import as_dual_log_score_fn
    from sedd_torch.diffusion.parametrisation import as_dual_log_score_fn as torch_dual

    rng = np.random.default_rng(1)
    graphs_j, graphs_t, outs, batch = _pair_case(rng)
    vp, vl, b, lp, ll = PAIR_DIMS
    times = np.array([1e-3, 0.2, 0.5, 0.8, 1.0], np.float32)
    task_ids = np.arange(b, dtype=np.int32) % len(jax_joint.TASKS)
    key = jax.random.key(7)
    p_j, l_j, _, _ = jax_joint.joint_per_token_loss(
        lambda *a: tuple(outs),
        graphs_j,
        noise_j := LogLinearNoise(1e-3),
        batch,
        times,
        task_ids,
        key,
        loss_type="masked_ce",
    )
    p_key, l_key = jax.random.split(key)
    rand = ReplayRand(uniform(p_key, (b, lp)), uniform(l_key, (b, ll)))
    p_t, l_t, _, _ = torch_joint.joint_per_token_loss(
        lambda *a: tuple(t(o) for o in outs),
        graphs_t,
        torch_noise.LogLinearNoise(1e-3),
        {k: t(v) for k, v in batch.items()},
        t(times),
        t(task_ids),
        rand,
        loss_type="masked_ce",
    )
    assert float(np.abs(np.asarray(l_j)).sum()) > 1.0 and float(np.abs(np.asarray(p_j)).sum()) > 1.0
    loss_err = max(max_error(p_j, p_t.numpy()), max_error(l_j, l_t.numpy()))

    x_t = [
        np.where(rng.random((b, n)) < 0.5, v, x).astype(np.int32)
        for n, v, x in ((lp, vp, batch["protein"]), (ll, vl, batch["ligand"]))
    ]
    sigma = np.array([1e-3, 0.3, 2.0, 7.0, 1.0], np.float32)
    args = (*x_t, sigma, batch["protein_valid"], batch["ligand_valid"], "joint")
    conv_j = as_dual_log_score_fn(lambda *a: tuple(outs), "mean", (vp, vl))(*args)
    conv_t = torch_dual(lambda *a: tuple(t(o) for o in outs), "mean", (vp, vl))(
        *(t(a) if isinstance(a, np.ndarray) else a for a in args)
    )
    score_err = max(max_error(a, c.numpy()) for a, c in zip(conv_j, conv_t, strict=True))
    record("pair masked_ce max|d|/(1+max)", loss_err, TOL)
    record("pair mean->score max|d|/(1+max)", score_err, TOL)
    assert loss_err <= TOL and score_err <= TOL


def test_antithetic_times_and_the_losses_at_given_times_match(record):
    """training.time_sampling=antithetic: the twin's stratified times from sedd_jax's
    offset u0 are sedd_jax's, and both single-track losses take given times alike (the
    drawn times are discarded, the corruption draw is the same)."""

    from sedd_jax.diffusion import losses as jax_losses

    key, loss_key = jax.random.split(jax.random.key(5))
    ids = np.arange(4, 8, dtype=np.int32)  # the second shard of a global batch of 8
    t_j = np.asarray(jax_losses.antithetic_times(key, ids, 8, 1e-3))
    u0 = np.asarray(jax.random.uniform(key, ()))
    t_t = torch_losses.antithetic_times(t(u0), t(ids), 8, 1e-3).numpy()
    times_err = max_error(t_j, t_t)
    # one time per 1/8 bin: the four rows of this shard fall in four different bins
    assert len({int(v * 8) for v in (t_j - 1e-3) / (1 - 1e-3)}) == 4

    rng = np.random.default_rng(2)
    graph_j, graph_t = jax_graphs.GRAPHS["absorb"](N), torch_graphs.GRAPHS["absorb"](N)
    noise_j, noise_t = LogLinearNoise(1e-3), torch_noise.LogLinearNoise(1e-3)
    out = (3 * rng.standard_normal((4, 9, N + 1))).astype(np.float32)
    x0 = rng.integers(0, N, size=(4, 9)).astype(np.int32)
    valid = np.arange(9)[None] < np.array([9, 7, 5, 9])[:, None]
    _, noise_key = jax_losses.loss_times(loss_key, 4, 1e-3)
    loss_err = 0.0
    for name in ("score_entropy", "masked_ce"):
        got_j = jax_losses.LOSSES[name](
            lambda x, s: out, graph_j, noise_j, x0, valid, loss_key, 1e-3, t=t_j
        )
        rand = ReplayRand(np.zeros(4, np.float32), uniform(noise_key, (4, 9)))
        got_t = torch_losses.LOSSES[name](
            lambda x, s: t(out), graph_t, noise_t, t(x0), t(valid), rand, 1e-3, t=t(t_t)
        )
        assert rand.exhausted()
        assert float(np.abs(np.asarray(got_j.losses)).sum()) > 1.0
        np.testing.assert_array_equal(np.asarray(got_j.t), t_j)
        loss_err = max(loss_err, max_error(got_j.losses, got_t.losses.numpy()))
    record("antithetic times max|d|/(1+max)", times_err, 1e-7)
    record("losses at given times max|d|/(1+max)", loss_err, TOL)
    assert times_err <= 1e-7 and loss_err <= TOL


def test_single_track_mask_count_loss_matches(record):
    """time_sampling=mask_count: the same masks and sigma from the same u and score
    uniforms, the same single-track loss."""
    rng = np.random.default_rng(0)
    b, length = 6, 11
    out = (3 * rng.standard_normal((b, length, N + 1))).astype(np.float32)
    x0 = rng.integers(0, N, size=(b, length)).astype(np.int32)
    valid = np.arange(length)[None] < np.array([11, 9, 4, 1, 11, 7])[:, None]
    key = jax.random.key(3)
    got_j = masked_ce_count_loss(
        lambda x, s: out, jax_graphs.Absorbing(N), LogLinearNoise(1e-3), x0, valid, key, 1e-3
    )
    count_key, score_key = keys.split(key)
    rand = ReplayRand(uniform(count_key, (b,)), uniform(score_key, (b, length)))
    seen = {}

    def torch_net(x, sigma):
        seen["x_t"], seen["sigma"] = x, sigma
        return t(out)

    got_t = torch_count.masked_ce_count_loss(
        torch_net,
        torch_graphs.Absorbing(N),
        torch_noise.LogLinearNoise(1e-3),
        t(x0),
        t(valid),
        rand,
        1e-3,
    )
    assert rand.exhausted()
    masked = seen["x_t"].numpy() == N
    k = np.asarray(torch_count.mask_counts(got_t.t, t(valid).sum(-1)))
    np.testing.assert_array_equal(masked.sum(1), k)
    assert float(np.abs(np.asarray(got_j.losses)).sum()) > 1.0
    np.testing.assert_allclose(np.asarray(got_j.t), got_t.t.numpy(), rtol=0, atol=0)
    err = max_error(got_j.losses, got_t.losses.numpy())
    record("mask_count loss max|d|/(1+max)", err, TOL)
    assert err <= TOL


def test_pair_mask_count_loss_matches(record):
    """The pair masked-count loss (k drawn over both tracks, mixed tasks) agrees."""
    graphs_j, graphs_t, outs, batch = _pair_case(np.random.default_rng(1))
    b, lp, ll = PAIR_DIMS[2:]
    task_ids = np.arange(b, dtype=np.int32) % len(jax_joint.TASKS)
    u = np.array([0.05, 0.3, 0.55, 0.8, 0.99], np.float32)
    key = jax.random.key(7)
    got_j = jax_joint.joint_score_entropy_loss(
        lambda *a: tuple(outs), graphs_j, LogLinearNoise(1e-3), batch, key, task_ids, 1e-3,
        loss_type="masked_ce", count_u=u,
    )  # fmt: skip
    _, noise_key = loss_times(key, b, 1e-3)
    rand = ReplayRand(np.zeros(b, np.float32), uniform(noise_key, (b, lp + ll)))
    got_t = torch_joint.joint_score_entropy_loss(
        lambda *a: tuple(t(o) for o in outs),
        graphs_t,
        torch_noise.LogLinearNoise(1e-3),
        {k: t(v) for k, v in batch.items()},
        rand,
        t(task_ids),
        1e-3,
        loss_type="masked_ce",
        count_u=t(u),
    )
    assert rand.exhausted()
    assert float(np.abs(np.asarray(got_j.protein)).sum()) > 1.0
    assert float(np.abs(np.asarray(got_j.ligand)).sum()) > 1.0
    err = max(
        max_error(got_j.protein, got_t.protein.numpy()),
        max_error(got_j.ligand, got_t.ligand.numpy()),
    )
    record("pair mask_count loss max|d|/(1+max)", err, TOL)
    assert err <= TOL
