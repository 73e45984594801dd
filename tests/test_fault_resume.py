"""A run that is signalled (SIGUSR1 to its whole process group, grain workers included),
killed with SIGKILL at a random moment and left with a damaged newest checkpoint resumes
and ends bit-identical to an uninterrupted run, with one metrics row per step."""

import collections
import json
import os
import random
import signal
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.training.checkpoint import make_manager
from tests.helpers import SMALL_RUN, cli_overrides, start_cli

N_STEPS = 60  # the SIGKILL lands at least 30 steps (and the final sampling) before the end
EVERY = 10
FLAGS = [
    "--config=configs/demo.py",
    *cli_overrides(
        SMALL_RUN
        | {
            "data.num_workers": 2,
            "model.dropout": 0.1,
            "training.n_steps": N_STEPS,
            "training.checkpoint_every": EVERY,
            "training.keep_checkpoints": 100,
            "training.eval_every": 100_000,
        }
    ),
]


def start(workdir):
    """The training CLI in its own session: its process group is it and its grain workers.
    Its compilations go to the session's XLA cache (`helpers.cli_env`): reruns compile
    nothing."""
    return start_cli("sedd_jax.train", f"--workdir={workdir}", *FLAGS, start_new_session=True)


def finish(proc):
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "terminated unexpectedly" not in stderr


def logged_steps(workdir):
    steps = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line being written
                    continue
                if "train/loss" in row:
                    steps.append(row["step"])
    return steps


def wait_for_step(workdir, step, proc, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if (steps := logged_steps(workdir)) and steps[-1] >= step:
            return steps[-1]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def checkpoint_steps(workdir):
    return make_manager(workdir, keep=1000, async_save=False).all_steps()


def final_state(workdir):
    manager = make_manager(workdir, keep=1000, async_save=False)
    restored = manager.restore(N_STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return ocp.tree.to_flat_dict(restored.state)


def damage(workdir, step):
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "state")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")


@pytest.mark.slow
def test_signal_kill_and_damaged_checkpoint_resume_bit_identically(tmp_path):
    rng = random.Random(os.environ.get("SEDD_FAULT_SEED", time.time()))
    straight, faulty = str(tmp_path / "straight"), str(tmp_path / "faulty")
    finish(start(straight))

    # 1. SIGUSR1 to the process group (what SLURM's --signal=USR1 does): workers live on,
    #    the trainer saves at a step boundary and exits 0
    proc = start(faulty)
    wait_for_step(faulty, rng.randint(2, 20), proc)
    os.killpg(proc.pid, signal.SIGUSR1)
    finish(proc)
    preempted = [r for r in read_metrics(faulty) if r.get("event") == "preempted"]
    assert len(preempted) == 1 and preempted[0]["step"] in checkpoint_steps(faulty)

    # 2. SIGKILL to the group at a random moment once a later checkpoint is on disk
    proc = start(faulty)
    later = (preempted[0]["step"] // EVERY + 1) * EVERY
    wait_for_step(faulty, later, proc)
    deadline = time.time() + 120
    while not os.path.isdir(os.path.join(faulty, "checkpoints", str(later))):  # finalised
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)

    # 3. the newest checkpoint is damaged: the rerun falls back, moves it aside, finishes
    saved = checkpoint_steps(faulty)
    damage(faulty, saved[-1])
    finish(start(faulty))
    aside = os.listdir(os.path.join(faulty, "checkpoints.unreadable"))
    assert [name.split("-")[0] for name in aside] == [str(saved[-1])]
    assert saved[-1] in checkpoint_steps(faulty)  # written again by the resumed run

    a, b = final_state(straight), final_state(faulty)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
    rows = read_metrics(faulty)
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, N_STEPS + 1))
    kinds = collections.Counter(
        (r["step"], k) for r in rows if "event" not in r for k in r if k not in ("step", "time")
    )
    assert max(kinds.values()) == 1, [k for k, n in kinds.items() if n > 1]
