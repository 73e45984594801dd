"""Errors both training loops raise."""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


class CheckpointMismatchError(RuntimeError):
    """Checkpoints exist but none matches the state the config builds."""


def checkpoint_mismatch(directory, newest_error: str) -> CheckpointMismatchError:
    """The error of a run directory whose checkpoints all fail to load (both backends)."""
    return CheckpointMismatchError(
        f"{directory} holds checkpoints, but none matches this config's train state (did "
        f"the model or optimizer config change? use a new --workdir). Newest error: "
        f"{newest_error[:500]}"
    )
