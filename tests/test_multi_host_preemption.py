"""SIGUSR1 (to one process only) and SIGTERM (to every process, as SLURM sends it) stop a
running 2-process jax.distributed training at one agreed step boundary: both processes
save and exit 0, the rerun continues from that step, and metrics.jsonl holds one row per
(step, metric) and per (step, event) across the restarts."""

import os
import signal
import time

import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.training.checkpoint import make_manager
from tests.helpers import MULTI_HOST, cli_overrides, free_port, start_cli

RUN = [
    *(o for o in cli_overrides(MULTI_HOST) if "n_steps" not in o and "checkpoint_every" not in o),
    "--config.training.n_steps=100000",  # runs until signalled
    "--config.training.checkpoint_every=100000",  # the only checkpoint is the preemption's
    "--config.training.preemption_check_every=1",
]


def _start(workdir, *extra):
    port = free_port()
    procs = []
    for rank in range(2):
        args = ["--config=configs/demo.py", f"--workdir={workdir}", *RUN, *extra]
        args += [
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={rank}",
        ]
        procs.append(
            start_cli("sedd_jax.train", *args, env={"JAX_PLATFORMS": "cpu"}, devices=2, text=False)
        )
    return procs


def _wait_for_step(workdir, step, procs, timeout=300):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a process ended before the signal"
        if os.path.exists(path):
            with open(path) as f:
                if any('"train/loss"' in line and f'"step": {step}' in line for line in f):
                    return
        time.sleep(0.2)
    raise AssertionError(f"no train row for step {step} within {timeout} s")


def _finish(procs):
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]


def _unique_keys(rows):
    keys = []
    for row in rows:
        if "event" in row:
            keys.append((row["step"], "event:" + row["event"]))
        else:
            keys += [(row["step"], k) for k in row if k not in ("step", "time")]
    return keys


@pytest.mark.slow
def test_signals_stop_both_processes_at_one_step_and_reruns_continue(tmp_path):
    workdir = str(tmp_path / "run")
    stops = []
    # run 1: SIGUSR1 to process 1 only (process 0 learns of it through the agreement);
    # run 2, the rerun: SIGTERM to both, as SLURM sends it
    for name, ranks, other in [("SIGUSR1", (1,), True), ("SIGTERM", (0, 1), False)]:
        procs = _start(workdir)
        _wait_for_step(workdir, (stops[-1] if stops else 0) + 3, procs)
        for rank in ranks:
            procs[rank].send_signal(getattr(signal, name))
        _finish(procs)
        rows = read_metrics(workdir)
        preempted = [r for r in rows if r.get("event") == "preempted"]
        assert len(preempted) == len(stops) + 1  # process 0 alone logs
        assert preempted[-1]["signal"] == ("another process's signal" if other else name)
        stops.append(preempted[-1]["step"])
        manager = make_manager(workdir, keep=10, async_save=False)
        assert list(manager.all_steps())[-1] == stops[-1]  # the one agreed checkpoint
        manager.close()

    rows = read_metrics(workdir)
    keys = _unique_keys(rows)
    assert len(keys) == len(set(keys)), "a (step, metric) or (step, event) appears twice"
    resume = [r for r in rows if r.get("event") == "resume"]
    assert [r["from_step"] for r in resume] == [stops[0]]
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == list(range(1, stops[1] + 1))  # every step once, across the restart
