"""What is trained (twin of sedd_jax/training/tasks/): one adapter per model family.

    protocol.py    the `Task` protocol and `build_task(config, device)`
    objectives.py  `single_track_objective`, `pair_track_objective`
    single.py      `SingleTrack`;  pairs.py  `PairTrack`

The curriculum is applied as in sedd_jax: times biased, the scaled sigma corrupts,
conditions and weights, for one track and for pairs. Sample files are written by
`sedd_jax.common.sample_files`, as sedd_jax's adapters write them.
"""

from sedd_torch.training.tasks.objectives import pair_track_objective, single_track_objective
from sedd_torch.training.tasks.pairs import PairTrack
from sedd_torch.training.tasks.protocol import TASK_KINDS, Task, build_task
from sedd_torch.training.tasks.single import SingleTrack

__all__ = [
    "TASK_KINDS",
    "PairTrack",
    "SingleTrack",
    "Task",
    "build_task",
    "pair_track_objective",
    "single_track_objective",
]
