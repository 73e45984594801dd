"""Errors both training loops raise."""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN/inf loss or gradient; the last good checkpoint is kept."""
