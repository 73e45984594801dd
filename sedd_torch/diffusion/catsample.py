"""Categorical sampling by the exponential race (twin of sedd_jax/diffusion/catsample.py).

`argmax_y p_y / E_y` with E_y ~ Exp(1) draws y with probability p_y / sum(p); given the
same uniforms as sedd_jax it makes the same draw. The race's uniforms carry 47 random
bits (`uniform_from_parts`, as sedd_jax) so that rare events keep their probability.

Randomness. Where sedd_jax takes a PRNG key, the twin takes `rand`: a callable
`rand(shape) -> float32 U[0, 1) tensor` on a 2^-24 grid (torch.rand's). `generator_rand`
makes one from a torch.Generator; the parity tests pass one that replays sedd_jax's
draws in order, or pass the race's uniforms explicitly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

_ONE_BELOW = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # 1 - 2^-24

Rand = Callable[[tuple[int, ...]], torch.Tensor]


def generator_rand(generator: torch.Generator, device=None) -> Rand:
    """rand(shape): float32 U[0, 1) drawn on the generator's device, moved to `device`
    (a CPU generator serves CUDA and MPS models alike)."""

    def rand(shape):
        return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)

    return rand


def uniform_from_parts(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """float32 (high + (2 low + 1) 2^-24) 2^-24, at most 1 - 2^-24 (as sedd_jax).

    high: integers in [0, 2^24), low: integers in [0, 2^23), as integer or float tensors.
    """
    coarse = high.to(torch.float32)
    fine = (low.to(torch.int64) * 2 + 1).to(torch.float32) * (2.0**-24)
    return torch.clamp((coarse + fine) * (2.0**-24), max=_ONE_BELOW)


def race_uniform(rand: Rand, shape: tuple[int, ...]) -> torch.Tensor:
    """float32 uniforms in (0, 1) for `categorical_from_uniform`: 24 + 23 bits taken
    from two `rand` draws (torch.rand's float32 values are multiples of 2^-24)."""
    high = torch.floor(rand(shape) * 2.0**24).clamp(max=2.0**24 - 1)
    low = torch.floor(rand(shape) * 2.0**23).clamp(max=2.0**23 - 1)
    return uniform_from_parts(high, low)


def categorical_from_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exponential race with given uniforms. probs, u: [..., V] -> ids [...] long.

    E = -log1p(-u); the winner is argmax(log p - log E) over the entries with p > 0.
    """
    dtype = torch.promote_types(probs.dtype, u.dtype)
    probs, u = probs.to(dtype), u.to(dtype)
    log_exp = torch.log(-torch.log1p(-u))
    positive = probs > 0
    safe = torch.where(positive, probs, torch.ones_like(probs))
    keys = torch.where(positive, torch.log(safe) - log_exp, torch.full_like(probs, -torch.inf))
    return torch.argmax(keys, dim=-1)


def sample_categorical(rand: Rand, probs: torch.Tensor) -> torch.Tensor:
    """Draw one id per row of probs [..., V] (unnormalised) -> [...] long."""
    return categorical_from_uniform(probs, race_uniform(rand, tuple(probs.shape)))


def forbid(probs: torch.Tensor, forbidden: torch.Tensor | None) -> torch.Tensor:
    """probs [..., V'] with the ids where `forbidden` [V] (bool) is True set to 0
    (V' <= V: the absorbing denoiser drops the mask column). None: unchanged."""
    if forbidden is None:
        return probs
    mask = forbidden[: probs.shape[-1]].to(probs.device)
    return torch.where(mask, torch.zeros_like(probs), probs)
