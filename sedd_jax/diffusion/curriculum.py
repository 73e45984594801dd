"""Training curricula: start on low-noise examples, ramp to the plain loss by `preschool_steps`.

Config (`config.curriculum`): `type` none | time_bias | sigma_scale; `ramp` linear |
exponential | cosine; `preschool_steps`; `bias_strength` (time_bias only). Progress is
p = step / preschool_steps, and a ramp f rises from f(0) = 0 to f(p) = 1 for p >= 1:

    linear       f = p
    cosine       f = (1 - cos(pi p)) / 2
    exponential  f = (1 - e^{-3p}) / (1 - e^{-3})

The reference's exponential ramp is min(1, 1 - e^{-3p}): it reaches only 0.950 at p = 1
and then jumps to 1 (defect B4). It is normalised here, so every ramp is continuous.

The two mechanisms of the reference (§2.3), fixed:

* `sigma_scale`: the total noise becomes sigma_bar'(t) = m sigma_bar(t) with
  m = 0.1 + 0.9 f(p). That is a noise schedule in its own right, so its rate is
  dsigma'(t) = d sigma_bar'/dt = m dsigma(t), and sigma_bar' corrupts x0, conditions the
  network and sets the target ratio of the score entropy, while dsigma' weights it. The
  reference scaled only the corruption (defect B3).
* `time_bias`: t = eps + (1 - eps) U^(1 + b bias_strength), U ~ U[0, 1), biased towards
  low noise by b = 1 - f(p). For the linear and cosine ramps b is the reference's
  (1 - p, (1 + cos pi p) / 2); its exponential b = e^{-bias_strength p} stopped at
  e^{-2} = 0.135 at p = 1 and then dropped to 0, so the mean t jumped 0.44 -> 0.50 (B4);
  here b(1) = 0 for every ramp. The reference also drew t in [1e-3, 1 - 1e-3] while
  p < 1 and in [1e-3, 1] after; here the range is [eps, 1] throughout, so b = 0 is
  exactly the plain sampler `sample_times`.

Every function takes `step` as a (traced) integer and a config with those four
attributes (a ConfigDict or a `Curriculum`); `None` means no curriculum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sedd_jax.common.curriculum import (  # noqa: F401  (re-exported)
    EXP_RATE,
    MIN_SIGMA_MULTIPLIER,
    NO_CURRICULUM,
    RAMP_NAMES,
    TYPES,
    Curriculum,
    check_curriculum,
)


def _linear(p):
    return p


def _cosine(p):
    return 0.5 * (1.0 - jnp.cos(jnp.pi * p))


def _exponential(p):
    return -jnp.expm1(-EXP_RATE * p) / -math.expm1(-EXP_RATE)


RAMPS = {"linear": _linear, "exponential": _exponential, "cosine": _cosine}


def progress(step, cfg) -> jax.Array:
    """p = min(1, step / preschool_steps) []; 1 without a curriculum."""
    c = check_curriculum(cfg)
    if c.type == "none" or c.preschool_steps == 0:
        return jnp.ones((), jnp.float32)
    return jnp.minimum(jnp.asarray(step, jnp.float32) / c.preschool_steps, 1.0)


def ramp(step, cfg) -> jax.Array:
    """f(p) in [0, 1] []: 0 at step 0, 1 from step = preschool_steps on."""
    c = check_curriculum(cfg)
    return jnp.clip(RAMPS[c.ramp](progress(step, c)), 0.0, 1.0)


def sigma_multiplier(step, cfg) -> jax.Array:
    """m = 0.1 + 0.9 f(p) for `sigma_scale`, else 1 []."""
    c = check_curriculum(cfg)
    if c.type != "sigma_scale":
        return jnp.ones((), jnp.float32)
    return MIN_SIGMA_MULTIPLIER + (1.0 - MIN_SIGMA_MULTIPLIER) * ramp(step, c)


def time_bias(step, cfg) -> jax.Array:
    """b = 1 - f(p) for `time_bias`, else 0 []."""
    c = check_curriculum(cfg)
    if c.type != "time_bias":
        return jnp.zeros((), jnp.float32)
    return 1.0 - ramp(step, c)


def sample_times(key: jax.Array, batch: int, sampling_eps: float = 1e-3) -> jax.Array:
    """t ~ U[eps, 1] per sequence: [B] (the plain sampler)."""
    return (1.0 - sampling_eps) * jax.random.uniform(key, (batch,)) + sampling_eps


def sample_curriculum_times(
    key: jax.Array, batch: int, step, cfg, sampling_eps: float = 1e-3
) -> jax.Array:
    """t [B] in [eps, 1]: eps + (1 - eps) U^(1 + b bias_strength); `sample_times` when b = 0."""
    c = check_curriculum(cfg)
    if c.type != "time_bias":
        return sample_times(key, batch, sampling_eps)
    exponent = 1.0 + time_bias(step, c) * c.bias_strength
    u = jax.random.uniform(key, (batch,))
    biased = jnp.where(exponent == 1.0, u, u**exponent)
    return (1.0 - sampling_eps) * biased + sampling_eps
