"""Task and mode tables of the protein–ligand model (see `sedd_jax.diffusion.joint`).

A task says, per pair, which tracks are generated (corrupted, scored, sampled) and
which are visible to the network; a network mode says which heads run and whether the
tracks see each other (`sedd_jax.models.dual`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

# task -> (protein generated, ligand generated, protein visible, ligand visible)
TASK_ROLES = {
    "joint": (True, True, True, True),
    "ligand_given_protein": (False, True, True, True),
    "protein_given_ligand": (True, False, True, True),
    "protein_only": (True, False, True, False),
    "ligand_only": (False, True, False, True),
}
TASKS = tuple(TASK_ROLES)
# conditional task -> (context track, generated track): the directions of the length heads
CONDITIONAL_TRACKS = {
    "ligand_given_protein": ("protein", "ligand"),
    "protein_given_ligand": ("ligand", "protein"),
}

# mode -> (protein head, ligand head, both tracks see each other)
MODES = {
    "joint": (True, True, True),
    "ligand_given_protein": (False, True, True),
    "protein_given_ligand": (True, False, True),
    "protein_only": (True, False, False),
    "ligand_only": (False, True, False),
}


class PairGraphs(NamedTuple):
    protein: object
    ligand: object


class Roles(NamedTuple):
    """Per-pair booleans [B]: which track is generated and which is visible."""

    protein_generated: Any
    ligand_generated: Any
    protein_visible: Any
    ligand_visible: Any


class JointLoss(NamedTuple):
    """Per-track sums of dsigma-weighted score entropy and their valid-token counts.

    A pytree: average over devices or micro-batches with the sums, then divide.
    """

    protein_sum: Any
    protein_count: Any
    ligand_sum: Any
    ligand_count: Any

    @property
    def total_sum(self):
        return self.protein_sum + self.ligand_sum

    @property
    def total_count(self):
        return self.protein_count + self.ligand_count


@dataclasses.dataclass(frozen=True)
class TaskMixture:
    """Probabilities over `TASKS` (in that order); hashable, so usable as a static arg."""

    probs: tuple[float, ...]

    def __post_init__(self):
        if len(self.probs) != len(TASKS) or min(self.probs) < 0 or sum(self.probs) <= 0:
            raise ValueError(f"task probabilities {self.probs} must be >= 0 over {TASKS}")

    @classmethod
    def parse(cls, spec) -> TaskMixture:
        """A task name, or a mapping task -> weight (normalised; unknown names rejected)."""
        weights = {spec: 1.0} if isinstance(spec, str) else dict(spec.items())
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
        total = float(sum(weights.values()))
        if total <= 0 or min(weights.values()) < 0:
            raise ValueError(f"task weights {weights} must be >= 0 with a positive sum")
        return cls(tuple(float(weights.get(t, 0.0)) / total for t in TASKS))

    @property
    def single(self) -> str | None:
        """The only task with non-zero probability, or None for a real mixture."""
        used = [t for t, p in zip(TASKS, self.probs, strict=True) if p > 0]
        return used[0] if len(used) == 1 else None

    @property
    def mode(self) -> str:
        """The network mode that serves every task of the mixture."""
        return self.single or "joint"
