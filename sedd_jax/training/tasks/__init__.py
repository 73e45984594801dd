"""What is trained: one adapter per model family (the `Task` protocol), so one loop and
one step serve both.

    protocol.py      the `Task` protocol and `build_task(config)`
    objectives.py    the training objectives (`single_track_objective`,
                     `pair_track_objective`) over the one loss of each family
    single.py        `SingleTrack`: proteins or SMILES with `SEDD`
    pairs.py         `PairTrack`: protein–ligand pairs with `DualTrackSEDD` and a task mixture

The FASTA / .smi / CSV sample writers are in `sedd_jax/common/sample_files.py`: the torch
twin's tasks write the same files and must not import JAX.
"""

from sedd_jax.training.tasks.objectives import pair_track_objective, single_track_objective
from sedd_jax.training.tasks.pairs import PairTrack
from sedd_jax.training.tasks.protocol import TASK_KINDS, Task, build_task
from sedd_jax.training.tasks.single import SingleTrack

__all__ = [
    "TASK_KINDS",
    "PairTrack",
    "SingleTrack",
    "Task",
    "build_task",
    "pair_track_objective",
    "single_track_objective",
]
