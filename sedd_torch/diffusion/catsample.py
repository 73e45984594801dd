"""Categorical sampling by the exponential race (twin of sedd_jax/diffusion/catsample.py).

`argmax_y p_y / E_y` with E_y ~ Exp(1) draws y with probability p_y / sum(p); given the
same uniforms as sedd_jax it makes the same draw.

Randomness. Where sedd_jax takes a PRNG key, the twin takes `rand`: a callable
`rand(shape) -> float32 U[0, 1) tensor`. `generator_rand` makes one from a
torch.Generator; the parity tests pass one that replays sedd_jax's draws in order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_TINY = 1e-10

Rand = Callable[[tuple[int, ...]], torch.Tensor]


def generator_rand(generator: torch.Generator, device=None) -> Rand:
    """rand(shape): float32 U[0, 1) drawn on the generator's device, moved to `device`
    (a CPU generator serves CUDA and MPS models alike)."""

    def rand(shape):
        return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)

    return rand


def categorical_from_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exponential race with given uniforms. probs, u: [..., V] -> ids [...] long.

    E = 1e-10 - log(u + 1e-10), as the reference, so u = 0 is safe.
    """
    gumbel_exp = _TINY - torch.log(u + _TINY)
    return torch.argmax(probs / gumbel_exp, dim=-1)


def sample_categorical(rand: Rand, probs: torch.Tensor) -> torch.Tensor:
    """Draw one id per row of probs [..., V] (unnormalised) -> [...] long."""
    return categorical_from_uniform(probs, rand(probs.shape))
