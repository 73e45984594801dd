"""Building identical JAX and torch models for the parity tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch

from sedd_jax import conversion
from sedd_jax.models.dual import DualTrackSEDD
from sedd_jax.models.sedd import SEDD
from sedd_torch.models.dual import DualTrackSEDD as TorchDual
from sedd_torch.models.sedd import SEDD as TorchSEDD

VOCAB = 26  # 25 protein ids + the absorbing state
PROTEIN_V, LIGAND_V = 26, 40  # the dual-track model's vocabularies


def tiny_kwargs(variant: str, **overrides) -> dict:
    kwargs = dict(
        vocab_size=VOCAB,
        hidden=64,
        n_blocks=2,
        n_heads=4,
        cond_dim=32,
        mlp_ratio=4,
        dropout=0.0,
        variant=variant,
        scale_by_sigma=True,
    )
    return kwargs | overrides


def example_inputs(batch=3, length=17, seed=0):
    """x [B, L] int32 (some masks), sigma [B], valid [B, L] with padded rows."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, size=(batch, length)).astype(np.int32)
    sigma = np.array([0.05, 0.7, 3.0, 0.3, 1.5, 6.0][:batch], np.float32)
    lengths = np.array([length, length * 2 // 3, 4, length, 6, 9][:batch])
    valid = np.arange(length)[None] < lengths[:, None]
    return x, sigma, valid


@functools.lru_cache
def _random_params(model, seed: int):
    x, sigma, valid = example_inputs()
    return random_params(model, x, sigma, valid, seed)


def random_params(model, x, sigma, valid, seed=0):
    """Random parameters for `model` (see `random_like`)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.asarray(x), jnp.asarray(sigma), valid)
    )["params"]
    return random_like(shapes, seed)


def random_like(shapes, seed=0):
    """Random float32 parameters of these shapes, every layer non-trivial (adaLN and the
    `sedd` output layer are zero at init): kernels N(0, 1/fan_in), tables N(0, 1), norm
    weights 1 + N(0, 0.01), biases N(0, 0.01). numpy draws, so nothing is compiled."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if name == "kernel":
            return jnp.asarray(noise / np.sqrt(leaf.shape[0]))
        if name == "weight":
            return jnp.asarray(1.0 + 0.1 * noise)
        return jnp.asarray(noise if len(path) == 1 else 0.1 * noise)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def torch_state_dict(params, kwargs) -> dict:
    arrays = conversion.flax_to_torch(params, kwargs["variant"])
    arrays = conversion.with_rotary_buffer(arrays, kwargs["hidden"] // kwargs["n_heads"])
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def twin_pair(variant: str, seed=0, **overrides):
    """(flax model, params, torch twin holding the same weights, kwargs)."""
    kwargs = tiny_kwargs(variant, **overrides)
    model = SEDD(**kwargs)
    params = _random_params(model, seed)  # flax modules hash by their fields
    twin = TorchSEDD(**kwargs)
    twin.load_state_dict(torch_state_dict(params, kwargs))
    return model, params, twin.eval(), kwargs


def t(array, dtype=None):
    """numpy/JAX array -> torch tensor (int32 -> long)."""
    tensor = torch.as_tensor(np.asarray(array))
    if tensor.dtype == torch.int32:
        tensor = tensor.long()
    return tensor if dtype is None else tensor.to(dtype)


def max_error(a, b) -> float:
    """max |a - b| / (1 + max |a|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (1.0 + np.abs(a).max()))


class ReplayRand:
    """A `rand(shape)` that hands out pre-drawn arrays (sedd_jax's draws) in order."""

    def __init__(self, *draws):
        self.draws = [np.asarray(d) for d in draws]

    def __call__(self, shape):
        draw = self.draws.pop(0)
        assert draw.shape == tuple(shape), (draw.shape, tuple(shape))
        return torch.from_numpy(draw.copy())

    def exhausted(self) -> bool:
        return not self.draws


def dual_pair(variant):
    """(flax DualTrackSEDD, random params, the twin holding them); asserts that the twin's
    state_dict names and order are the conversion's."""
    kwargs = dict(
        protein_vocab=PROTEIN_V,
        ligand_vocab=LIGAND_V,
        hidden=64,
        n_blocks_protein=2,
        n_blocks_ligand=1,  # unequal depths: the protein's first block runs alone
        n_heads=4,
        cond_dim=32,
        dropout=0.0,
        variant=variant,
    )
    model = DualTrackSEDD(**kwargs)
    protein, ligand = jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), protein, ligand, jnp.ones((1,)), mode="joint")
    )["params"]
    params = random_like(shapes, seed=3)
    twin = TorchDual(**kwargs).eval()
    arrays = conversion.with_rotary_buffer(conversion.flax_to_torch(params, variant), 16)
    assert list(arrays) == list(twin.state_dict())  # names and registration order
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return model, params, twin
