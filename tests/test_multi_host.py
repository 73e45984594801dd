"""Two processes on 127.0.0.1 (2 fake CPU devices each, jax.distributed, gloo collectives)
train like one process with 4 devices, only process 0 logs, and checkpoints resume across
topologies (2 processes -> 1 process with 1 device, and back)."""

import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.training.checkpoint import restore_raw_state
from tests.helpers import MULTI_HOST, cli_overrides, free_port, start_cli

# max |a - b| / (1 + max |b|) over params, EMA and optimizer state: float32 summation
# order (gloo vs in-process reductions, 4 vs 1 device) is the only difference
TOL = 1e-5


def _train(workdir, processes: int, devices: int, *extra):
    """Run `python -m sedd_jax.train` as `processes` processes with `devices` each."""
    args = ["--config=configs/demo.py", f"--workdir={workdir}", *cli_overrides(MULTI_HOST)]
    args += extra
    port = free_port()
    procs = []
    for rank in range(processes):
        dist = []
        if processes > 1:
            dist = [
                f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                f"--config.distributed.num_processes={processes}",
                f"--config.distributed.process_id={rank}",
            ]
        procs.append(
            start_cli(
                "sedd_jax.train",
                *args,
                *dist,
                env={"JAX_PLATFORMS": "cpu"},
                devices=devices,
                text=False,
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]


def _state(workdir, step):
    return {
        k: np.asarray(v) for k, v in ocp.tree.to_flat_dict(restore_raw_state(workdir, step)).items()
    }


def _error(a, b) -> float:
    """max |a - b| / (1 + max |b|) over the float leaves; integer leaves (step, key data,
    counters) must be equal."""
    assert a.keys() == b.keys()
    floats = [k for k in b if np.issubdtype(b[k].dtype, np.floating)]
    for k in set(b) - set(floats):
        assert np.array_equal(a[k], b[k]), k
    scale = 1.0 + max(np.abs(b[k].astype(np.float64)).max() for k in floats)
    worst = max(np.abs(a[k].astype(np.float64) - b[k]).max() for k in floats)
    return float(worst) / scale


def _resume_copy(src, dst, step):
    """A workdir holding only checkpoint `step` of `src` (as if the run stopped there)."""
    os.makedirs(os.path.join(dst, "checkpoints"))
    shutil.copytree(
        os.path.join(src, "checkpoints", str(step)), os.path.join(dst, "checkpoints", str(step))
    )


@pytest.mark.slow
def test_two_processes_train_like_one_and_checkpoints_cross_topologies(tmp_path):
    two, one = str(tmp_path / "two_hosts"), str(tmp_path / "one_host")
    _train(two, 2, 2, "--config.training.stop_after_steps=4")
    _train(one, 1, 4, "--config.training.stop_after_steps=4")

    final_two, final_one = _state(two, 4), _state(one, 4)
    error = _error(final_two, final_one)
    print(f"2 processes x 2 devices vs 1 x 4: max|d|/(1+max) = {error:.3e}")
    assert error <= TOL
    assert int(final_two[("step",)]) == 4
    moved = np.abs(_state(one, 2)[("params", "vocab_embed")] - final_one[("params", "vocab_embed")])
    assert moved.max() > 1e-4

    # process 0 alone writes metrics: one row per logged step, not one per process
    rows = read_metrics(two)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
    assert len([r for r in rows if "parameters" in r]) == 1
    losses_two = [r["train/loss"] for r in rows if "train/loss" in r]
    losses_one = [r["train/loss"] for r in read_metrics(one) if "train/loss" in r]
    assert losses_two == pytest.approx(losses_one, rel=1e-5)

    # 2 processes -> 1 process with 1 device, and 1 process (4 devices) -> 2 processes
    to_one, to_two = str(tmp_path / "to_one"), str(tmp_path / "to_two")
    _resume_copy(two, to_one, 2)
    _train(to_one, 1, 1, "--config.training.stop_after_steps=2")
    _resume_copy(one, to_two, 2)
    _train(to_two, 2, 2, "--config.training.stop_after_steps=2")
    for name, workdir in (("2 proc -> 1 device", to_one), ("1 proc -> 2 proc", to_two)):
        resumed_error = _error(_state(workdir, 4), final_one)
        print(f"resumed {name}: max|d|/(1+max) vs straight run = {resumed_error:.3e}")
        assert resumed_error <= TOL
        resumed_rows = read_metrics(workdir)
        assert [r["step"] for r in resumed_rows if "train/loss" in r] == [3, 4]
