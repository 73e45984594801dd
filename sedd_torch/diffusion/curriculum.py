"""Training curricula (twin of sedd_jax/diffusion/curriculum.py).

The config handling (`Curriculum`, `check_curriculum`, the types) is sedd_jax's; this
file translates the float32 math: p = min(1, step / preschool_steps), a ramp f(p), the
sigma multiplier m = 0.1 + 0.9 f(p) (`sigma_scale`) and the time bias b = 1 - f(p)
(`time_bias`: t = eps + (1 - eps) U^(1 + b bias_strength)).
"""

from __future__ import annotations

import math

import torch

from sedd_jax.common.curriculum import (  # noqa: F401  (re-exported)
    EXP_RATE,
    MIN_SIGMA_MULTIPLIER,
    NO_CURRICULUM,
    TYPES,
    Curriculum,
    check_curriculum,
)


def _f32(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32)


def _linear(p):
    return p


def _cosine(p):
    return 0.5 * (1.0 - torch.cos(math.pi * p))


def _exponential(p):
    return -torch.expm1(-EXP_RATE * p) / -math.expm1(-EXP_RATE)


RAMPS = {"linear": _linear, "exponential": _exponential, "cosine": _cosine}


def progress(step, cfg) -> torch.Tensor:
    """p = min(1, step / preschool_steps) []; 1 without a curriculum."""
    c = check_curriculum(cfg)
    if c.type == "none" or c.preschool_steps == 0:
        return _f32(1.0)
    return torch.clamp_max(_f32(step) / c.preschool_steps, 1.0)


def ramp(step, cfg) -> torch.Tensor:
    """f(p) in [0, 1] []: 0 at step 0, 1 from step = preschool_steps on."""
    c = check_curriculum(cfg)
    return torch.clamp(RAMPS[c.ramp](progress(step, c)), 0.0, 1.0)


def sigma_multiplier(step, cfg) -> torch.Tensor:
    """m = 0.1 + 0.9 f(p) for `sigma_scale`, else 1 []."""
    c = check_curriculum(cfg)
    if c.type != "sigma_scale":
        return _f32(1.0)
    return MIN_SIGMA_MULTIPLIER + (1.0 - MIN_SIGMA_MULTIPLIER) * ramp(step, c)


def time_bias(step, cfg) -> torch.Tensor:
    """b = 1 - f(p) for `time_bias`, else 0 []."""
    c = check_curriculum(cfg)
    if c.type != "time_bias":
        return _f32(0.0)
    return 1.0 - ramp(step, c)


def sample_times(rand, batch: int, sampling_eps: float = 1e-3) -> torch.Tensor:
    """t ~ U[eps, 1] per sequence: [B] (the plain sampler)."""
    return (1.0 - sampling_eps) * rand((batch,)) + sampling_eps


def sample_curriculum_times(rand, batch: int, step, cfg, sampling_eps=1e-3) -> torch.Tensor:
    """t [B] in [eps, 1]: eps + (1 - eps) U^(1 + b bias_strength); `sample_times` when b = 0."""
    c = check_curriculum(cfg)
    if c.type != "time_bias":
        return sample_times(rand, batch, sampling_eps)
    exponent = 1.0 + time_bias(step, c) * c.bias_strength
    u = rand((batch,))
    biased = u if bool(exponent == 1.0) else u ** exponent.to(u.device)
    return (1.0 - sampling_eps) * biased + sampling_eps
