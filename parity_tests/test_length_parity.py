"""Length head: JAX and twin logits agree on identical weights; the twin head learns too."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

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


def test_length_head_logits_match_twin():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 25, size=(4, 12)).astype(np.int32)
    valid = np.arange(12)[None, :] < np.array([[12], [7], [1], [0]])
    head = LengthHead(vocab_size=25, max_len=30, hidden=16)
    params = head.init(jax.random.PRNGKey(3), jnp.asarray(tokens), jnp.asarray(valid))
    want = np.asarray(head.apply(params, jnp.asarray(tokens), jnp.asarray(valid)))
    twin = TorchLengthHead(vocab_size=25, max_len=30, hidden=16)
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
