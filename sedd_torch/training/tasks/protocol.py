"""The task protocol of the twin (twin of sedd_jax/training/tasks/protocol.py) and
`build_task(config, device)`.

The twin's loop (`training/loop.py`) uses these members of an adapter; parameters are
the adapter's torch module (`task.model`), batches come from `batcher(batch_size)`.
"""

from __future__ import annotations

from typing import Any, Protocol

from sedd_torch.training.tasks.pairs import PairTrack
from sedd_torch.training.tasks.single import SingleTrack


class Task(Protocol):
    """A model family as the twin's loop sees it: `objective(model, batch, rand, step) ->
    (loss_sum, count, aux)` and `step_metrics(aux, step)` (`objectives.py`), the model and
    the host-side methods below."""

    objective: Any
    step_metrics: Any
    model: Any  # the torch module that is trained
    warnings: list[str]

    def batcher(self, batch_size: int):
        """`.batch(step)`: numpy arrays of global batch `step`, pure in (seed, step)."""

    def evaluate(self, model) -> dict:
        """Validation metrics with fixed randomness."""

    def baselines(self) -> dict:
        """Validation metrics of the training unigram, logged once."""

    def meta(self) -> dict:
        """JSON saved with each checkpoint (the keys sedd_jax's adapters write)."""

    def write_samples(self, model, workdir: str, step: int) -> dict:
        """Samples written at the end of a run: {name: path}."""


TASK_KINDS: dict[str, type] = {"single": SingleTrack, "dual": PairTrack}


def build_task(config, device) -> Task:
    """The adapter of `config.model.kind` (single | dual) on `device`, its data loaded."""
    kind = config.model.kind
    if kind not in TASK_KINDS:
        raise ValueError(f"model.kind={kind!r}; choose one of {sorted(TASK_KINDS)}")
    return TASK_KINDS[kind](config, device)
