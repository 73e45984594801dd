"""Model options both backends check alike when they build a network from `config.model`."""

from __future__ import annotations


def check_time_conditioning(time_conditioning: bool, absorb: bool) -> None:
    """A sigma-free network (`model.time_conditioning=False`) is the absorbing graph's
    (RADD: its score is a sigma-free conditional times a known factor of sigma)."""
    if not time_conditioning and not absorb:
        raise ValueError("model.time_conditioning=False needs graph.type=absorb (uniform: True)")
