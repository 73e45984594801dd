"""Noise schedules: total noise sigma_bar(t) and its rate sigma(t) = d sigma_bar / dt.

Every schedule is a frozen dataclass whose `__call__(t)` returns `(sigma_bar, dsigma)`
with the shape of `t`. The model is conditioned on `sigma_bar` (upstream SEDD), and
the loss is weighted by `dsigma`.

For the absorbing graph a token is masked at time t with probability
`1 - exp(-sigma_bar(t))`; `mask_probability_at_one` reports that number at t = 1
because sampling always starts from the all-mask state.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from sedd_jax.common.noise import absorbing_schedule_warning  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class LogLinearNoise:
    """sigma_bar(t) = -log(1 - (1 - eps) t); P(mask | t=1) = 1 - eps."""

    eps: float = 1e-3

    def total(self, t):
        return -jnp.log1p(-(1.0 - self.eps) * t)

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
    """The reference's cosine schedule (kept for reproduction; defect B2).

    sigma_bar(t) = sigma_max + (sigma_min - sigma_max) (1 + cos(pi t)) / 2,
    so sigma_bar(1) = sigma_max and it never reaches full masking for small sigma_max.
    """

    sigma_min: float = 1e-4
    sigma_max: float = 0.5

    def total(self, t):
        return self.sigma_max + 0.5 * (self.sigma_min - self.sigma_max) * (
            1.0 + jnp.cos(jnp.pi * t)
        )

    def rate(self, t):
        return 0.5 * jnp.pi * (self.sigma_max - self.sigma_min) * jnp.sin(jnp.pi * t)

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
