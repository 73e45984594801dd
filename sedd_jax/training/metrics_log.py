"""Where metrics go: a JSONL file in the workdir, optionally wandb (disabled/offline/online).

Only the main process (jax.process_index() == 0) writes; other processes get a logger
whose methods do nothing, so callers never branch on rank.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

WANDB_MODES = ("disabled", "offline", "online")


def _scalar(value):
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


class MetricsLogger:
    def __init__(self, workdir: str, config, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.wandb_run = None
        mode = config.logging.wandb
        if mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb={mode!r}; choose one of {WANDB_MODES}")
        if enabled and mode != "disabled":
            try:
                import wandb
            except ImportError as error:
                raise ImportError(
                    "logging.wandb is set but wandb is not installed: pip install 'sedd[wandb]'"
                ) from error
            self.wandb_run = wandb.init(
                project=config.logging.project,
                dir=workdir,
                mode=mode,
                config=config.to_dict(),
                resume="allow",
                id=_run_id(workdir),
            )

    def write(self, step: int, metrics: dict, prefix: str = ""):
        if not self.enabled:
            return
        row = {f"{prefix}{k}": _scalar(v) for k, v in metrics.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "time": time.time(), **row}) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(row, step=int(step))

    def close(self):
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _run_id(workdir: str) -> str:
    """A stable wandb run id per workdir, so a resumed run continues the same wandb run."""
    path = os.path.join(workdir, "wandb_run_id")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(f"sedd-{int(time.time())}-{os.getpid()}")
    with open(path) as f:
        return f.read().strip()


def read_metrics(workdir: str) -> list[dict]:
    """All rows of a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
