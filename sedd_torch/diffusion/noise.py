"""Noise schedules (twin of sedd_jax/diffusion/noise.py): `schedule(t) -> (sigma_bar, dsigma)`.

t is a float32 tensor; the model is conditioned on sigma_bar and the loss weighted by
dsigma. `absorbing_schedule_warning` is sedd_jax's (it only reads
`mask_probability_at_one`).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from sedd_jax.common.noise import absorbing_schedule_warning  # noqa: F401  (re-export)


@dataclasses.dataclass(frozen=True)
class LogLinearNoise:
    """sigma_bar(t) = -log(1 - (1 - eps) t); P(mask | t=1) = 1 - eps."""

    eps: float = 1e-3

    def total(self, t):
        return -torch.log1p(-(1.0 - self.eps) * t)

    def rate(self, t):
        # (1 - eps) / (1 - (1 - eps) t), written without the cancellation at t = 1
        return (1.0 - self.eps) / (self.eps + (1.0 - self.eps) * (1.0 - t))

    def __call__(self, t):
        return self.total(t), self.rate(t)

    def mask_probability_at_one(self) -> float:
        return 1.0 - self.eps


@dataclasses.dataclass(frozen=True)
class GeometricNoise:
    """sigma_bar(t) = sigma_min^(1-t) sigma_max^t."""

    sigma_min: float = 1e-3
    sigma_max: float = 20.0

    def total(self, t):
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def rate(self, t):
        return self.total(t) * math.log(self.sigma_max / self.sigma_min)

    def __call__(self, t):
        return self.total(t), self.rate(t)

    def mask_probability_at_one(self) -> float:
        return -math.expm1(-self.sigma_max)


@dataclasses.dataclass(frozen=True)
class CosineNoise:
    """The reference's cosine schedule (kept for reproduction; defect B2)."""

    sigma_min: float = 1e-4
    sigma_max: float = 0.5

    def total(self, t):
        return self.sigma_max + 0.5 * (self.sigma_min - self.sigma_max) * (
            1.0 + torch.cos(math.pi * t)
        )

    def rate(self, t):
        return 0.5 * math.pi * (self.sigma_max - self.sigma_min) * torch.sin(math.pi * t)

    def __call__(self, t):
        return self.total(t), self.rate(t)

    def mask_probability_at_one(self) -> float:
        return -math.expm1(-self.sigma_max)


NOISES = {"loglinear": LogLinearNoise, "geometric": GeometricNoise, "cosine": CosineNoise}


def get_noise(config):
    """Build a schedule from a `noise` ConfigDict: `type` plus that schedule's fields."""
    if config.type not in NOISES:
        raise ValueError(f"noise.type={config.type!r}; choose one of {sorted(NOISES)}")
    cls = NOISES[config.type]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.items() if k in fields})
