"""Dynamic loss scaling for float16 compute (params stay float32).

float16 gradients underflow below 6e-8 and overflow above 65504. The step
differentiates `scale` x (each micro-batch's token-mean loss) and multiplies the
gradients back by (tokens / scale) before summing the micro-batches, so the update is
that of the unscaled loss.
When the unscaled gradients are not finite the update is skipped (params, EMA and
optimizer state kept), the scale is halved and `skipped` counts the step; after
`growth_interval` finite steps in a row the scale doubles. A run whose steps stay
non-finite (`max_consecutive_skips` in a row, or a scale below `min_scale`) must stop:
the step reports `stop = 1` and the loop raises with the last good checkpoint kept.

bfloat16 and float32 keep scale 1 and stop at the first non-finite step.

Config: `training.loss_scale.{initial, growth_interval, min_scale, max_consecutive_skips}`
(used when `model.dtype = "float16"`).
"""

from __future__ import annotations

import dataclasses
import logging

import flax.struct
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

GROWTH_FACTOR = 2.0
# logged as the value at the log point, not the mean over the logged steps
GAUGES = ("loss_scale", "skipped_steps")


@flax.struct.dataclass
class LossScaleState:
    scale: jnp.ndarray  # [] float32
    good_steps: jnp.ndarray  # [] int32, finite steps since the scale last changed
    consecutive_skips: jnp.ndarray  # [] int32
    skipped: jnp.ndarray  # [] int32, skipped steps in the whole run


@dataclasses.dataclass(frozen=True)
class LossScaler:
    """The policy (static); `dynamic=False` is the fixed scale 1 of bfloat16/float32."""

    dynamic: bool = False
    initial: float = 2.0**15
    growth_interval: int = 2000
    min_scale: float = 1.0
    max_consecutive_skips: int = 20

    def init(self) -> LossScaleState:
        return LossScaleState(
            scale=jnp.float32(self.initial if self.dynamic else 1.0),
            good_steps=jnp.int32(0),
            consecutive_skips=jnp.int32(0),
            skipped=jnp.int32(0),
        )

    def update(self, ls: LossScaleState, finite: jnp.ndarray) -> LossScaleState:
        """Halve on a non-finite step, double after `growth_interval` finite ones."""
        if not self.dynamic:
            return ls
        grow = finite & (ls.good_steps + 1 >= self.growth_interval)
        scale = jnp.where(finite, jnp.where(grow, ls.scale * GROWTH_FACTOR, ls.scale), ls.scale / 2)
        return LossScaleState(
            scale=scale.astype(jnp.float32),
            good_steps=jnp.where(finite & ~grow, ls.good_steps + 1, 0).astype(jnp.int32),
            consecutive_skips=jnp.where(finite, 0, ls.consecutive_skips + 1).astype(jnp.int32),
            skipped=(ls.skipped + (~finite).astype(jnp.int32)).astype(jnp.int32),
        )

    def stop(self, ls: LossScaleState, finite: jnp.ndarray) -> jnp.ndarray:
        """True when the run must stop (after `update`): any non-finite step without
        dynamic scaling; with it, too many skips in a row or a scale below the floor."""
        if not self.dynamic:
            return ~finite
        return (ls.consecutive_skips >= self.max_consecutive_skips) | (ls.scale < self.min_scale)

    def resumed(self, ls: LossScaleState, meta: dict) -> LossScaleState:
        """The state to go on with after restoring `ls` from a checkpoint with `meta`.

        A float16 run resumed from a bfloat16/float32 checkpoint (its config says so, or,
        without one, the state is the neutral scale 1 that no dynamic run reaches before
        it stops) starts afresh at `initial`, with a warning; scale 1 would mean no loss
        scaling at all. A non-float16 run keeps the neutral state.
        """
        if not self.dynamic:
            return self.init()
        saved_dtype = meta.get("config", {}).get("model", {}).get("dtype")
        neutral = float(np.asarray(ls.scale)) == 1.0 and int(np.asarray(ls.good_steps)) == 0
        if saved_dtype == "float16" or (saved_dtype is None and not neutral):
            return ls
        log.warning(
            "resuming a %s run with model.dtype=float16: the loss scale starts afresh at %g",
            saved_dtype or "non-float16",
            self.initial,
        )
        return self.init()

    def metrics(self, ls: LossScaleState) -> dict:
        if not self.dynamic:
            return {}
        return {"loss_scale": ls.scale, "skipped_steps": ls.skipped.astype(jnp.float32)}


def make_loss_scaler(model_config, loss_scale_config) -> LossScaler:
    """Dynamic scaling for float16 compute, the fixed scale 1 otherwise."""
    c = loss_scale_config
    scaler = LossScaler(
        dynamic=model_config.dtype == "float16",
        initial=float(c.initial),
        growth_interval=int(c.growth_interval),
        min_scale=float(c.min_scale),
        max_consecutive_skips=int(c.max_consecutive_skips),
    )
    if scaler.initial <= 0 or scaler.growth_interval < 1 or scaler.max_consecutive_skips < 1:
        raise ValueError(
            f"training.loss_scale needs initial > 0, growth_interval >= 1 and "
            f"max_consecutive_skips >= 1; got {c}"
        )
    return scaler
