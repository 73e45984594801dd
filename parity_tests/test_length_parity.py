"""Length head: JAX and twin logits agree on identical weights; the twin head learns too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax import conversion
from sedd_jax.models.length import LengthHead
from sedd_torch.models.length import LengthHead as TorchLengthHead
from sedd_torch.models.length import length_nll as torch_length_nll


def _load_into_torch(params, head):
    p = params["params"]
    with torch.no_grad():
        head.embed.weight.copy_(torch.from_numpy(np.array(p["embed"]["embedding"])))
        for name in ("mlp_in", "mlp_out"):
            layer = getattr(head, name)
            layer.weight.copy_(torch.from_numpy(np.asarray(p[name]["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.array(p[name]["bias"])))


@pytest.mark.parametrize("positions", [0, 8])
def test_length_head_logits_match_twin(positions):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 25, size=(4, 12)).astype(np.int32)
    valid = np.arange(12)[None, :] < np.array([[12], [7], [1], [0]])
    head = LengthHead(vocab_size=25, max_len=30, hidden=16, positions=positions)
    params = head.init(jax.random.PRNGKey(3), jnp.asarray(tokens), jnp.asarray(valid))
    want = np.asarray(head.apply(params, jnp.asarray(tokens), jnp.asarray(valid)))
    twin = TorchLengthHead(vocab_size=25, max_len=30, hidden=16, positions=positions)
    _load_into_torch(params, twin)
    got = twin(torch.from_numpy(tokens).long(), torch.from_numpy(valid)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_twin_length_head_learns_each_contexts_length():
    torch.manual_seed(0)
    tokens = torch.tensor([[5, 6, 7, 8, 1, 1], [9, 10, 11, 12, 13, 14]])
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    lengths = torch.tensor([10, 20])
    head = TorchLengthHead(vocab_size=25, max_len=24, hidden=32)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch_length_nll(head(tokens, valid), lengths).mean().backward()
        opt.step()
    probs = torch.softmax(head(tokens, valid), -1).detach().numpy()
    assert probs[0, 10] > 0.9 and probs[1, 20] > 0.9


# ------------------------------------------- the heads inside the dual model: loss and draws

MAX_P, MAX_L = 13, 9  # the track lengths of `helpers.pair_parity_batch`
HEADS = dict(length_head=True, length_hidden=16, max_protein_len=MAX_P, max_ligand_len=MAX_L)


@pytest.mark.slow
def test_pair_loss_with_length_terms_and_head_gradients_match_twin(record):
    """Per-token losses + the conditional rows' -log p(L | context), summed per track as
    `PairLosses.sums`, and the heads' gradients: JAX and the twin on the same weights."""
    import functools

    from sedd_jax.diffusion import joint as jax_joint
    from sedd_jax.diffusion.noise import LogLinearNoise
    from sedd_jax.models.length import HEAD_NAMES
    from sedd_torch.diffusion import joint as torch_joint
    from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
    from tests.helpers import (
        dual_pair,
        max_error,
        pair_parity_batch,
        parity_pair_graphs,
        replay_pair_corruption,
        t,
    )

    model, params, twin = dual_pair("protlig", **HEADS)  # also: names and order with heads
    batch = pair_parity_batch()
    graphs_j, graphs_t = parity_pair_graphs()
    times = np.array([0.3, 0.4, 0.1], np.float32)
    names = ("ligand_given_protein", "protein_given_ligand", "joint")
    task_ids = np.array([jax_joint.TASKS.index(n) for n in names], np.int32)
    key = jax.random.key(4)

    @jax.jit
    def jax_sums(params):
        score_fn = functools.partial(model.apply, {"params": params})
        length_fn = functools.partial(model.apply, {"params": params}, method="length_logits")
        p, l, p_n, l_n = jax_joint.joint_per_token_loss(
            score_fn, graphs_j, LogLinearNoise(), batch, times, task_ids, key
        )
        lengths = jax_joint.conditional_length_nll(length_fn, batch, task_ids)
        out = jax_joint.PairLosses(p, l, p_n, l_n, times, task_ids, **{
            f"{k}_length": v for k, v in lengths.items()})  # fmt: skip
        sums = out.sums()
        return sums.total_sum, (sums, lengths)

    (_, (sums_j, lengths_j)), grads_j = jax.value_and_grad(jax_sums, has_aux=True)(params)

    rand = replay_pair_corruption(key, batch)
    batch_t = {k: t(v) for k, v in batch.items()}
    p, l, p_n, l_n = torch_joint.joint_per_token_loss(
        twin, graphs_t, TorchLogLinear(), batch_t, t(times), t(task_ids), rand
    )
    lengths_t = torch_joint.conditional_length_nll(twin.length_logits, batch_t, t(task_ids))
    out = torch_joint.PairLosses(p, l, p_n, l_n, t(times), t(task_ids), **{
        f"{k}_length": v for k, v in lengths_t.items()})  # fmt: skip
    sums_t = out.sums()
    sums_t.total_sum.backward()

    error = max(max_error(lengths_j[k], lengths_t[k].detach().numpy()) for k in lengths_j)
    record("length NLL max|d|/(1+max)", error, 1e-5)
    assert error <= 1e-5 and float(lengths_j["ligand"][0]) > 1.0
    assert float(lengths_j["protein"][0]) == 0.0 and float(lengths_j["ligand"][2]) == 0.0
    sum_error = max(
        max_error(getattr(sums_j, f), getattr(sums_t, f).detach().numpy())
        for f in ("protein_sum", "ligand_sum")
    )
    record("track sums with length term", sum_error, 1e-5)
    assert sum_error <= 1e-5
    torch_grads = {n: q.grad for n, q in twin.named_parameters()}
    worst = 0.0
    for head in HEAD_NAMES.values():
        flat = conversion.flax_to_torch({head: grads_j[head]}, "protlig")
        for name, g in flat.items():
            worst = max(worst, np.linalg.norm(torch_grads[name].numpy() - g) / np.linalg.norm(g))
    record("length-head gradient |dg|/|g|", worst, 1e-4)
    assert worst <= 1e-4


def test_length_draws_of_jax_and_twin_follow_the_same_head(record):
    """Same weights -> the same logits; each backend's sampler draw (`make_length_sampler`)
    matches p(L | context) restricted to L >= 1 (4000 draws per context)."""
    from sedd_jax.training.generation import make_length_sampler
    from sedd_torch.training.generation import make_length_sampler as torch_length_sampler
    from tests.helpers import dual_pair, max_error, pair_parity_batch, t

    model, params, twin = dual_pair("protlig", **HEADS)
    batch = pair_parity_batch()
    task = "ligand_given_protein"
    logits = model.apply({"params": params}, batch["protein"], batch["protein_valid"], task,
                         method="length_logits")  # fmt: skip
    with torch.no_grad():
        twin_logits = twin.length_logits(t(batch["protein"]), t(batch["protein_valid"]), task)
    error = max_error(logits, twin_logits.numpy())
    record("length logits max|d|/(1+max)", error, 1e-5)
    assert error <= 1e-5
    probs = np.asarray(jax.nn.softmax(jnp.where(jnp.arange(MAX_L + 1) >= 1, logits, -jnp.inf)))
    n = 4000
    rows = np.repeat(np.arange(3), n)
    context, valid = batch["protein"][rows], batch["protein_valid"][rows]
    draws_j = np.asarray(
        make_length_sampler(model, task)(params, context, valid, jax.random.key(0))
    )
    draws_t = torch_length_sampler(twin, task)(
        t(context), t(valid), torch.Generator().manual_seed(0)
    ).numpy()
    worst = 0.0
    for draws in (draws_j, draws_t):
        assert draws.min() >= 1 and draws.max() <= MAX_L
        for r in range(3):
            hist = np.bincount(draws[rows == r], minlength=MAX_L + 1) / n
            worst = max(worst, 0.5 * np.abs(hist - probs[r]).sum())
    record("length draws: total variation to p(L | context)", worst, 0.05)
    assert worst <= 0.05
