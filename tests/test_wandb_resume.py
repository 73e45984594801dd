"""A real offline wandb run across a resume: the same run id, rewound to the checkpoint step
(`resume_from="<id>?_step=S"`), so wandb holds one value per step as metrics.jsonl does."""

import glob
import os
import shutil
import struct

import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.training.loop import train_and_evaluate

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

from sedd_jax.defaults import base_config  # noqa: E402
from tests.helpers import SMALL_RUN, apply_overrides  # noqa: E402

TINY = SMALL_RUN | {
    "training.n_steps": 8,
    "training.checkpoint_every": 4,
    "training.keep_checkpoints": 10,
    "logging.wandb": "offline",
}


def tiny_config(**overrides):
    return apply_overrides(base_config(), overrides)


def wandb_records(path):
    """Records of a .wandb file (LevelDB-style log: 32 KiB blocks, 7-byte chunk headers)."""
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_runs(workdir):
    """[(run id, branch point step or None, logged history steps)] in creation order."""
    runs = []
    for run_dir in sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))):
        run_id, branch, steps = None, None, []
        for record in wandb_records(glob.glob(os.path.join(run_dir, "*.wandb"))[0]):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
                if record.run.branch_point.run:
                    branch = (record.run.branch_point.run, record.run.branch_point.value)
            elif kind == "history":
                steps.append(record.history.step.num)
        runs.append((run_id, branch, sorted(set(steps))))
    return runs


@pytest.mark.slow
def test_offline_wandb_run_is_rewound_to_the_checkpoint_on_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = str(tmp_path)
    first = train_and_evaluate(tiny_config(**TINY, **{"training.stop_after_steps": 6}), workdir)
    assert first["step"] == 6
    # as if killed after logging step 6 but before its checkpoint was written
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
    run_id = open(os.path.join(workdir, "wandb_run_id")).read()

    second = train_and_evaluate(tiny_config(**TINY), workdir)
    assert second["step"] == 8
    runs = offline_runs(workdir)
    assert [r[0] for r in runs] == [run_id, run_id]
    assert runs[0][1] is None and 6 in runs[0][2]
    assert runs[1][1] == (run_id, 4)  # rewound to the checkpoint: wandb drops steps 5, 6
    assert min(runs[1][2]) == 5 and max(runs[1][2]) == 8
    train_steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
    assert train_steps == list(range(1, 9))
