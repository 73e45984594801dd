"""Categorical sampling by the exponential race (twin of sedd_jax/diffusion/catsample.py).

`argmax_y p_y / E_y` with E_y ~ Exp(1) draws y with probability p_y / sum(p); given the
same uniforms as sedd_jax it makes the same draw.
"""

from __future__ import annotations

import torch

_TINY = 1e-10


def categorical_from_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exponential race with given uniforms. probs, u: [..., V] -> ids [...] long.

    E = 1e-10 - log(u + 1e-10), as the reference, so u = 0 is safe.
    """
    gumbel_exp = _TINY - torch.log(u + _TINY)
    return torch.argmax(probs / gumbel_exp, dim=-1)


def uniform(generator: torch.Generator, shape, device) -> torch.Tensor:
    """float32 U[0, 1) of `shape`, drawn on the generator's device and moved to `device`."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def sample_categorical(generator: torch.Generator, probs: torch.Tensor) -> torch.Tensor:
    """Draw one id per row of probs [..., V] (unnormalised) -> [...] long."""
    return categorical_from_uniform(probs, uniform(generator, probs.shape, probs.device))
