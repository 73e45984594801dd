"""Faults: SIGTERM / SIGUSR1 save at a step boundary and exit 0; SIGKILL loses no step of the
log; a resumed run's metrics.jsonl holds one row per (step, kind of row)."""

import collections
import os
import signal
import subprocess
import time

import pytest

from sedd_jax.common.metrics_log import read_metrics, rewind_metrics
from sedd_jax.training.checkpoint import make_manager
from tests.helpers import SMALL_RUN, cli_overrides, run_cli, start_cli

TINY = cli_overrides(SMALL_RUN | {"training.eval_every": 100_000})


def train_args(workdir, *overrides):
    return ["--config=configs/demo.py", f"--workdir={workdir}", *TINY, *overrides]


def run_training(workdir, *overrides):
    """Subprocesses share the session's persistent XLA cache (`helpers.cli_env`): a rerun
    with the same shapes and config does not compile again."""
    return run_cli("sedd_jax.train", *train_args(workdir, *overrides), check=False)


def start_training(workdir, *overrides):
    return start_cli("sedd_jax.train", *train_args(workdir, *overrides))


def wait_for_train_step(workdir, at_least: int, proc, timeout: float = 240.0) -> int:
    """Poll metrics.jsonl until a train row of step >= at_least; return that step."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()[1][-3000:]}")
        if os.path.exists(path):
            steps = [r["step"] for r in _rows(path) if "train/loss" in r]
            if steps and steps[-1] >= at_least:
                return steps[-1]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("training did not reach the step in time")


def _rows(path):
    import json

    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
    return rows


def row_kinds(rows):
    """(step, metric name) for metric rows, (step, 'event:' + name) for event rows."""
    keys = []
    for row in rows:
        if "event" in row:
            keys.append((row["step"], f"event:{row['event']}"))
        else:
            keys.extend((row["step"], k) for k in row if k not in ("step", "time"))
    return keys


def assert_one_value_per_step(rows):
    counts = collections.Counter(row_kinds(rows))
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert not repeated, repeated
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == sorted(set(train_steps))


def checkpoint_steps(workdir):
    return make_manager(workdir, keep=100, async_save=False).all_steps()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_signal_saves_at_a_step_boundary_exits_0_and_the_rerun_continues(tmp_path, signum):
    workdir = str(tmp_path)
    proc = start_training(
        workdir, "--config.training.n_steps=100000", "--config.training.checkpoint_every=100000"
    )
    wait_for_train_step(workdir, 3, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    rows = read_metrics(workdir)
    preempted = [r for r in rows if r.get("event") == "preempted"]
    assert len(preempted) == 1 and preempted[0]["signal"] == signal.Signals(signum).name
    stopped = preempted[0]["step"]
    # the save is at the step boundary where the loop stopped, and it is the only one
    assert checkpoint_steps(workdir) == [stopped]
    assert max(r["step"] for r in rows) == stopped
    assert rows[-1]["event"] == "preempted"  # what a launcher reads to requeue
    print(f"{signal.Signals(signum).name}: saved and stopped at step {stopped}")

    # rerunning (same config: the compiled step comes from the cache) continues from there
    end = stopped + 3
    result = run_training(
        workdir,
        "--config.training.n_steps=100000",
        "--config.training.checkpoint_every=100000",
        "--config.training.stop_after_steps=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(workdir)
    resume = [r for r in rows if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["from_step"] == stopped
    assert resume[0]["rewound_rows"] == 0
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == list(range(1, end + 1))
    assert checkpoint_steps(workdir) == [stopped, end]
    assert_one_value_per_step(rows)


@pytest.mark.slow
def test_signal_after_the_last_checkpoint_skips_the_samples_and_exits_0(tmp_path):
    """SIGUSR1 during the final evaluation (the last step's checkpoint is on disk): the run
    finishes that evaluation, records `samples_skipped`, writes no samples and exits 0
    (before, the handler was gone by then and the signal killed the process)."""
    workdir = str(tmp_path)
    # a final evaluation of a few seconds: every validation batch at 64 times each
    proc = start_training(
        workdir, "--config.training.n_steps=3", "--config.eval.max_batches=0",
        "--config.eval.time_samples=64",
    )  # fmt: skip
    deadline = time.time() + 240
    while 3 not in checkpoint_steps(workdir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal could be sent"
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    rows = read_metrics(workdir)
    skipped = [r for r in rows if r.get("event") == "samples_skipped"]
    assert [(r["step"], r["signal"]) for r in skipped] == [(3, "SIGUSR1")]
    assert any(r["step"] == 3 and "val/loss_ema" in r for r in rows)  # the evaluation ran
    assert not os.path.exists(os.path.join(workdir, "samples.fasta"))
    assert checkpoint_steps(workdir) == [3]


@pytest.mark.slow
def test_signal_while_the_process_winds_down_still_exits_0(tmp_path):
    """SIGUSR1 once the run has printed `finished:` (everything saved; the runtime's
    teardown still takes a moment): the CLI records it and exits 0, not -10."""
    proc = start_cli(
        "sedd_jax.train",
        *train_args(str(tmp_path), "--config.training.n_steps=2"),
        env={"PYTHONUNBUFFERED": "1"},
        stderr=subprocess.DEVNULL,
    )
    for line in proc.stdout:
        if line.startswith("finished:"):
            proc.send_signal(signal.SIGUSR1)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 0


@pytest.mark.slow
def test_sigkill_after_logging_past_the_checkpoint_leaves_no_duplicate_step(tmp_path):
    workdir = str(tmp_path)
    every = 10
    proc = start_training(
        workdir,
        "--config.training.n_steps=100000",
        f"--config.training.checkpoint_every={every}",
        "--config.training.keep_checkpoints=100",
    )
    wait_for_train_step(workdir, every, proc)
    deadline = time.time() + 120
    while not os.path.isdir(os.path.join(workdir, "checkpoints", str(every))):  # finalised
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    wait_for_train_step(workdir, every + 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = max(checkpoint_steps(workdir))
    logged = max(r["step"] for r in _rows(os.path.join(workdir, "metrics.jsonl")))
    if logged % every == 0 and logged == saved:
        pytest.skip("the kill landed exactly on a checkpoint; nothing to rewind")
    assert logged > saved

    end = logged + 4
    result = run_training(
        workdir,
        "--config.training.n_steps=100000",
        f"--config.training.checkpoint_every={every}",
        "--config.training.keep_checkpoints=100",
        f"--config.training.stop_after_steps={end - saved}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(workdir)
    assert_one_value_per_step(rows)
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, end + 1))
    resume = [r for r in rows if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["from_step"] == saved
    assert resume[0]["last_logged_step"] == logged
    rewound = read_metrics(workdir, "metrics.rewound.jsonl")
    assert {r["step"] for r in rewound if "train/loss" in r} == set(range(saved + 1, logged + 1))
    assert all(r["rewound_at"] == saved for r in rewound)
    assert resume[0]["rewound_rows"] == len(rewound)
    print(f"SIGKILL: logged to {logged}, checkpoint {saved}: {len(rewound)} rows rewound")


def test_rewind_keeps_rows_through_the_step_and_moves_the_rest(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [f'{{"step": {s}, "train/loss": {10 - s}}}' for s in range(6)]
    path.write_text("\n".join(lines) + '\n{"step": 6, "train/lo')  # cut by a kill
    assert rewind_metrics(str(tmp_path), 3) == (3, 5)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1, 2, 3]
    rewound = read_metrics(str(tmp_path), "metrics.rewound.jsonl")
    assert [r.get("step") for r in rewound] == [4, 5, None]
    assert rewound[-1]["unparsable"] == '{"step": 6, "train/lo'
    # a restart before the first checkpoint logs step 0 again: nothing is kept
    assert rewind_metrics(str(tmp_path), 0) == (4, 3)
    assert read_metrics(str(tmp_path)) == []
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
