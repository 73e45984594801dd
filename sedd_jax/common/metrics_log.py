"""Where metrics go: a JSONL file in the workdir, optionally wandb (disabled/offline/online).

Only the main process (jax.process_index() == 0) writes; other processes get a logger
whose methods do nothing, so callers never branch on rank.

Resuming never leaves two values for one step. A run resumed from the checkpoint of step
S may already have logged rows past S (it logged step 650, was killed, and its newest
checkpoint is 600): those rows describe a trajectory that is about to be recomputed. With
`start_step=S` the logger rewinds before it writes anything:
  * metrics.jsonl is rewritten atomically (temporary file, fsync, rename) with the rows of
    step <= S (none when S = 0: a fresh start logs step 0 again); the dropped rows are
    appended to `metrics.rewound.jsonl`, each with `"rewound_at": S`;
  * an event row `{"step": S, "event": "resume", "from_step": S, "rewound_rows": n,
    "last_logged_step": m}` records the resume;
  * wandb continues the run whose id is stored in `<workdir>/wandb_run_id`. When it holds
    steps past S, the run is rewound with `wandb.init(resume_from="<id>?_step=S")`
    (online: the server truncates the history after S; offline: the run record carries
    the branch point, applied by `wandb sync`). If the server refuses the rewind (the
    feature is not enabled for every account), the logger starts a new run
    `<id>-from<S>` in group `<id>`, stores that id for later resumes, and says so.
Rows are typed by what they hold: metrics (`train/...`, `val/...`) or an event (`event`).
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

log = logging.getLogger(__name__)

WANDB_MODES = ("disabled", "offline", "online")
REWOUND = "metrics.rewound.jsonl"


def _scalar(value):
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


class MetricsLogger:
    """JSONL (+ wandb) logger; `start_step` (the resumed step, 0 for a fresh run) rewinds
    the log first. `start_step=None` appends without rewinding."""

    def __init__(self, workdir: str, config, enabled: bool = True, start_step: int | None = None):
        self.enabled = enabled
        self.workdir = workdir
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.wandb_run = None
        mode = config.logging.wandb
        if mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb={mode!r}; choose one of {WANDB_MODES}")
        if not enabled:
            return
        rewound, last_logged = 0, None
        if start_step is not None:
            rewound, last_logged = rewind_metrics(workdir, start_step)
        if mode != "disabled":
            self.wandb_run = _init_wandb(workdir, config, mode, start_step, last_logged)
        if start_step is not None and (start_step > 0 or rewound):
            self.event(
                start_step,
                "resume",
                from_step=start_step,
                rewound_rows=rewound,
                last_logged_step=last_logged,
            )

    def write(self, step: int, metrics: dict, prefix: str = ""):
        if not self.enabled:
            return
        row = {f"{prefix}{k}": _scalar(v) for k, v in metrics.items()}
        self._append({"step": int(step), "time": time.time(), **row})
        if self.wandb_run is not None:
            self.wandb_run.log(row, step=int(step))

    def event(self, step: int, name: str, **fields):
        """A row that records something that happened (resume, preempted) at `step`."""
        if self.enabled:
            self._append({"step": int(step), "time": time.time(), "event": name, **fields})

    def _append(self, row: dict):
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self):
        if self.wandb_run is not None:
            self.wandb_run.finish()


def rewind_metrics(workdir: str, step: int) -> tuple[int, int | None]:
    """Keep the rows of metrics.jsonl with step <= `step` (none when step is 0).

    The others (and any line a kill cut short) move to metrics.rewound.jsonl. Returns
    (number of rows moved, largest step the file held or None).
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0, None
    keep_through = step if step > 0 else -1
    kept, dropped, last = [], [], None
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped.append({"unparsable": line.rstrip("\n")})
                continue
            last = row["step"] if last is None else max(last, row["step"])
            (kept if row["step"] <= keep_through else dropped).append(row)
    if dropped:
        with open(os.path.join(workdir, REWOUND), "a") as f:
            for row in dropped:
                f.write(json.dumps({"rewound_at": step, **row}) + "\n")
            f.flush()
            os.fsync(f.fileno())
    _atomic_write(path, [json.dumps(row) + "\n" for row in kept])
    return len(dropped), last


def _atomic_write(path: str, lines: list[str]):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _init_wandb(workdir: str, config, mode: str, start_step: int | None, last_logged):
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            "logging.wandb is set but wandb is not installed: pip install 'sedd[wandb]'"
        ) from error
    common = dict(project=config.logging.project, dir=workdir, mode=mode)
    fresh = start_step == 0 and last_logged is not None  # restarted before any checkpoint
    run_id = _run_id(workdir, new=fresh)
    if start_step and last_logged is not None and last_logged > start_step:
        try:
            return wandb.init(
                **common, config=config.to_dict(), resume_from=f"{run_id}?_step={start_step}"
            )
        except Exception as error:  # the server may not offer run rewind
            forked = f"{run_id}-from{start_step}"
            log.warning(
                "wandb refused to rewind run %s to step %d (%s); logging to a new run %s "
                "in group %s instead",
                run_id,
                start_step,
                error,
                forked,
                run_id,
            )
            _store_run_id(workdir, forked)
            return wandb.init(
                **common, id=forked, group=run_id, config=config.to_dict(), resume="allow"
            )
    return wandb.init(**common, id=run_id, config=config.to_dict(), resume="allow")


def _run_id(workdir: str, new: bool = False) -> str:
    """A stable wandb run id per workdir, so a resumed run continues the same wandb run."""
    path = os.path.join(workdir, "wandb_run_id")
    if new or not os.path.exists(path):
        _store_run_id(workdir, f"sedd-{int(time.time())}-{os.getpid()}")
    with open(path) as f:
        return f.read().strip()


def _store_run_id(workdir: str, run_id: str):
    with open(os.path.join(workdir, "wandb_run_id"), "w") as f:
        f.write(run_id)


def read_metrics(workdir: str, name: str = "metrics.jsonl") -> list[dict]:
    """All rows of a run's metrics.jsonl (or of `name`, e.g. metrics.rewound.jsonl)."""
    with open(os.path.join(workdir, name)) as f:
        return [json.loads(line) for line in f if line.strip()]
