"""ReMDM sampler settings, shared by sedd_jax and the twin (no JAX): the schedule of the
re-masking probability sigma_t, its eta and the switch time t_on (diffusion/remdm.py)."""

from __future__ import annotations

import dataclasses

SCHEDULES = ("cap", "rescale", "conf")


@dataclasses.dataclass(frozen=True)
class RemdmSettings:
    """sampling.remdm_schedule / remdm_eta / remdm_t_on (hashable: a static jit argument)."""

    schedule: str = "cap"
    eta: float = 0.008
    t_on: float = 1.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"sampling.remdm_schedule={self.schedule!r}; choose one of {list(SCHEDULES)}"
            )
        top = 1.0 if self.schedule == "rescale" else float("inf")
        if not 0.0 <= self.eta <= top:
            raise ValueError(f"sampling.remdm_eta={self.eta} must be in [0, {top}]")
        if not 0.0 <= self.t_on <= 1.0:
            raise ValueError(f"sampling.remdm_t_on={self.t_on} must be in [0, 1]")

    @classmethod
    def from_config(cls, sampling_config) -> RemdmSettings:
        """From a sampling config; runs written before ReMDM lack the keys (defaults)."""
        default = cls()
        return cls(
            schedule=sampling_config.get("remdm_schedule", default.schedule),
            eta=float(sampling_config.get("remdm_eta", default.eta)),
            t_on=float(sampling_config.get("remdm_t_on", default.t_on)),
        )
