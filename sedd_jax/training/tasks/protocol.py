"""The `Task` protocol: what the loop asks of a model family, and `build_task(config)`.

One loop and one step serve every model family through a task adapter that owns the
data, the graph(s), the network and everything that depends on their shapes. The loop
(`training/loop.py`) uses exactly these members; `SingleTrack` (`single.py`) and
`PairTrack` (`pairs.py`) implement them.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from sedd_jax.training.tasks.pairs import PairTrack
from sedd_jax.training.tasks.single import SingleTrack


class Task(Protocol):
    """A model family as the loop sees it.

    `objective(params, batch, keys [b], step, dropout_key) -> (loss_sum, count, aux)` and
    `step_metrics(aux, step) -> metrics` are pure functions for the jitted train step
    (`objectives.py`); the rest runs on the host.
    """

    objective: Any
    step_metrics: Any
    warnings: list[str]  # configuration warnings, logged once at the start of a run

    def train_loader(self, batch_size: int, num_shards: int = 1, shard_index: int = 0):
        """This host's rows of every global batch: `.batch(step)`, `.iterate(start)`, each a
        dict of numpy arrays with `example_id`, pure in (seed, step)."""

    def init_params(self, key: jax.Array):
        """Freshly initialised float32 parameters."""

    def evaluate(self, params) -> dict:
        """Validation metrics with fixed randomness (a function of the parameters only)."""

    def baselines(self) -> dict:
        """Validation metrics of analytic predictors (the training unigram), logged once."""

    def meta(self) -> dict:
        """JSON saved with each checkpoint: config, vocabularies, length distributions."""

    def write_samples(self, params, workdir: str, step: int) -> dict:
        """Samples written at the end of a run: {name: path or metric}."""


TASK_KINDS: dict[str, type] = {"single": SingleTrack, "dual": PairTrack}


def build_task(config) -> Task:
    """The adapter of `config.model.kind` (single | dual), with its data loaded."""
    kind = config.model.kind
    if kind not in TASK_KINDS:
        raise ValueError(f"model.kind={kind!r}; choose one of {sorted(TASK_KINDS)}")
    return TASK_KINDS[kind](config)
