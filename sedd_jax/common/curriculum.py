"""The curriculum's configuration: types, ramps, constants and validation.

The math (progress, ramps, the sigma multiplier, biased times) is written once per
backend: `sedd_jax.diffusion.curriculum` (jnp) and `sedd_torch.diffusion.curriculum`.
"""

from __future__ import annotations

import dataclasses

EXP_RATE = 3.0  # exponential ramp f = (1 - e^{-3p}) / (1 - e^{-3})
MIN_SIGMA_MULTIPLIER = 0.1  # sigma_scale: m = 0.1 + 0.9 f(p)
TYPES = ("none", "time_bias", "sigma_scale")
TIME_SAMPLINGS = ("uniform", "antithetic", "mask_count")  # training.time_sampling
RAMP_NAMES = ("linear", "exponential", "cosine")


@dataclasses.dataclass(frozen=True)
class Curriculum:
    type: str = "none"
    ramp: str = "linear"
    preschool_steps: int = 5000
    bias_strength: float = 2.0


NO_CURRICULUM = Curriculum()


def check_curriculum(cfg) -> Curriculum:
    """A validated `Curriculum` from a config block (None: no curriculum)."""
    if cfg is None:
        return NO_CURRICULUM
    c = Curriculum(cfg.type, cfg.ramp, int(cfg.preschool_steps), float(cfg.bias_strength))
    if c.type not in TYPES:
        raise ValueError(f"curriculum.type={c.type!r}; choose one of {list(TYPES)}")
    if c.ramp not in RAMP_NAMES:
        raise ValueError(f"curriculum.ramp={c.ramp!r}; choose one of {sorted(RAMP_NAMES)}")
    if c.preschool_steps < 0:
        raise ValueError(f"curriculum.preschool_steps={c.preschool_steps} must be >= 0")
    if c.bias_strength < 0:
        raise ValueError(f"curriculum.bias_strength={c.bias_strength} must be >= 0")
    return c


def check_time_sampling(time_sampling: str, curriculum: Curriculum) -> str:
    """`training.time_sampling`, validated: antithetic (stratified) times replace the drawn
    ones, so they do not combine with the time-biasing curriculum."""
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"training.time_sampling={time_sampling!r}: one of {TIME_SAMPLINGS}")
    if time_sampling == "antithetic" and curriculum.type == "time_bias":
        raise ValueError("training.time_sampling=antithetic does not combine with time_bias")
    if time_sampling == "mask_count" and curriculum.type != "none":
        raise ValueError("training.time_sampling=mask_count does not combine with a curriculum")
    return time_sampling
