"""Forward parity: the same weights give the same log-scores in JAX and in the twin."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sedd_jax import conversion
from sedd_jax.models.sedd import SEDD
from sedd_torch.models.sedd import SEDD as TorchSEDD
from tests.helpers import example_inputs, max_error, t, tiny_kwargs, twin_pair

TOL = 1e-5


@pytest.mark.parametrize(
    "variant, overrides",
    [("protlig", {}), ("sedd", {}), ("protlig", {"time_conditioning": False})],
    ids=["protlig", "sedd", "sigma_free"],
)
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_jax_weights_in_twin_give_same_log_scores(variant, overrides, padded, record):
    model, params, twin, _ = twin_pair(variant, **overrides)
    x, sigma, valid = example_inputs()
    valid = valid if padded else None
    expected = np.asarray(model.apply({"params": params}, jnp.asarray(x), sigma, valid))
    with torch.no_grad():
        got = twin(t(x), t(sigma), None if valid is None else t(valid)).numpy()
    error = max_error(expected, got)
    record("log-scores max|d|/(1+max|s|)", error, TOL)
    assert np.abs(expected).max() > 1.0  # a non-trivial network
    assert error <= TOL


@pytest.mark.parametrize("variant", ["protlig", "sedd"])
def test_twin_weights_in_jax_give_same_log_scores(variant, record):
    kwargs = tiny_kwargs(variant, scale_by_sigma=False)
    torch.manual_seed(0)
    twin = TorchSEDD(**kwargs).eval()
    with torch.no_grad():
        for p in twin.parameters():  # adaLN and the sedd output layer start at zero
            p.add_(0.1 * torch.randn_like(p))
    config = conversion.config_from_dict(
        {
            "data": {"vocab_size": kwargs["vocab_size"] - 1},
            "model": {k: kwargs[k] for k in ("hidden", "n_blocks", "n_heads", "cond_dim")}
            | {"variant": variant, "scale_by_sigma": False, "dropout": 0.0},
        }
    )
    arrays = {k: v.numpy() for k, v in twin.state_dict().items()}
    params = conversion.torch_to_flax(
        arrays, conversion.abstract_params(config), variant, kwargs["hidden"] // kwargs["n_heads"]
    )
    x, sigma, valid = example_inputs(seed=1)
    with torch.no_grad():
        expected = twin(t(x), t(sigma), t(valid)).numpy()
    got = np.asarray(SEDD(**kwargs).apply({"params": params}, jnp.asarray(x), sigma, valid))
    error = max_error(expected, got)
    record("log-scores max|d|/(1+max|s|)", error, TOL)
    assert error <= TOL


@pytest.mark.parametrize("variant", ["protlig", "sedd"])
def test_twin_state_dict_order_is_conversion_order(variant):
    """`model.parameters()` order (what EMA shadow_params follow) is the order conversion
    writes, and parameter counts agree."""
    _, params, twin, kwargs = twin_pair(variant)
    names = list(conversion.flax_to_torch(params, variant))
    assert [n for n, _ in twin.named_parameters()] == names
    assert sum(p.numel() for p in twin.parameters()) == sum(
        np.size(v) for v in conversion.flax_to_torch(params, variant).values()
    )
