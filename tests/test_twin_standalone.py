"""The torch twin stands on its own: with jax, flax, optax and orbax unimportable, it
imports, trains two steps (single track, demo data), samples, and its checkpoint then
samples and evaluates through sedd_jax as any run does."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.helpers import TWIN_RUN, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# TWIN_RUN with proteins of 32 and three samples of 4 steps (the script takes it as JSON:
# it cannot import tests.helpers, which imports jax)
CONFIG = TWIN_RUN | {
    "data.max_len": 32,
    "eval.batch_size": 16,
    "sampling.steps": 4,
    "sampling.num_samples": 3,
}
BLOCKED = ("jax", "jaxlib", "flax", "optax", "orbax")

SCRIPT = """
import importlib.abc, json, sys

BLOCKED = {blocked!r}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {{name}}")
        return None


sys.meta_path.insert(0, Blocker())
import torch

torch.set_num_threads(1)
import sedd_torch  # noqa: F401
from sedd_jax.defaults import base_config
from sedd_jax.common.metrics_log import read_metrics
from sedd_torch.training.loop import train_and_evaluate

c = base_config()
c.update_from_flattened_dict(json.loads(sys.argv[2]))
summary = train_and_evaluate(c, sys.argv[1])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
rows = [r for r in read_metrics(sys.argv[1]) if "train/loss" in r]
losses = [r["train/loss"] for r in rows]
print(json.dumps({{"summary": summary, "loaded": loaded, "losses": losses}}))
"""


def twin_run(workdir: str) -> dict:
    """Train two twin steps in a subprocess with the JAX stack blocked; its JSON report."""
    result = run_cli(
        "-c",
        SCRIPT.format(blocked=BLOCKED),
        workdir,
        json.dumps(CONFIG),
        env=ONE_THREAD,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_twin_trains_and_samples_without_jax_flax_optax_orbax(tmp_path):
    workdir = str(tmp_path / "twin")
    out = twin_run(workdir)
    assert out["loaded"] == []
    assert out["summary"]["step"] == 2
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))
    assert 1.0 < out["losses"][0] < 10.0  # score entropy of a fresh model on 25 tokens
    with open(out["summary"]["samples"]) as f:
        records = [line.strip() for line in f if not line.startswith(">")]
    assert len(records) == 3
    assert all(set(r) <= set("ACDEFGHIKLMNPQRSTVWYX") and r for r in records)
    assert os.path.isfile(os.path.join(workdir, "torch_checkpoints", "checkpoint_step_2.pt"))

    # a run like any other: sedd_jax reads the twin's .pt on the fly
    from sedd_jax.runs import open_run

    run = open_run(workdir)
    params, meta, step = run.params(), run.meta, run.step
    assert step == 2 and meta["config"]["backend"] == "torch"
    assert params["vocab_embed"].shape == (26, 32)
    assert not os.path.isdir(os.path.join(workdir, "checkpoints", "2"))  # nothing written


@pytest.mark.slow
def test_sedd_jax_sample_and_evaluate_run_on_a_twin_workdir(tmp_path):
    workdir = str(tmp_path / "twin")
    twin_run(workdir)
    for command in (
        ["sedd_jax.sample", "--num=2", "--steps=4", f"--out={tmp_path / 's.fasta'}"],
        ["sedd_jax.evaluate", "--time_samples=2", f"--out={tmp_path / 'e.json'}"],
    ):
        run = run_cli(
            command[0],
            f"--workdir={workdir}",
            *command[1:],
            env=ONE_THREAD,
            timeout=240,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "s.fasta") as f:
        assert sum(line.startswith(">") for line in f) == 2
    with open(tmp_path / "e.json") as f:
        report = json.load(f)
    assert report["step"] == 2 and report["weights"] == "ema"
    # two steps from initialisation: near the uniform guess log 25 = 3.22 nats/token
    assert 2.5 < report["nats_per_token"] < 4.5
