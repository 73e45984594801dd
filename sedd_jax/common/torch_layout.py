"""Where the torch twin keeps its checkpoints: `<workdir>/torch_checkpoints/checkpoint_step_<n>.pt`.

Shared by the twin (`sedd_torch.training.checkpoint` writes them) and sedd_jax
(`sedd_jax.runs.open_run` reads a twin run through the converter).
"""

from __future__ import annotations

import glob
import os
import re

DIRECTORY = "torch_checkpoints"
_NAME = re.compile(r"checkpoint_step_(\d+)\.pt$")


def checkpoint_path(workdir: str, step: int) -> str:
    return os.path.join(workdir, DIRECTORY, f"checkpoint_step_{step}.pt")


def all_steps(workdir: str) -> list[int]:
    paths = glob.glob(os.path.join(workdir, DIRECTORY, "checkpoint_step_*.pt"))
    return sorted(int(m.group(1)) for p in paths if (m := _NAME.search(p)))
