"""Helpers the benchmark scripts share: the CPU's name, a CLI run with a wall-time cap, the
`--set KEY=VALUE` config overrides and the training step the step benchmarks time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def cpu_model() -> str:
    """`lscpu`'s model name ("unknown" where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else "unknown"


def python_module(module: str, args: list[str], env: dict, log: str, deadline_s: float = 0):
    """Runs `python -m module args` (output to `log`); SIGUSR1 at `deadline_s` (> 0): a
    training run checkpoints at its next step and exits 0. Returns the wall seconds."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=f, stderr=f, env=env)
        try:
            proc.wait(timeout=deadline_s or None)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)
            proc.wait()
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"python -m {module} failed ({proc.returncode}):\n{tail}")
    return time.perf_counter() - start


def add_set_flag(parser) -> None:
    """`--set KEY=VALUE` (repeatable): a training config override."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training config override (repeatable), e.g. --set optim.lr=3e-3",
    )


def parse_sets(items: list[str], script: str) -> dict[str, str]:
    """{key: value} of `--set` items; a malformed one exits with a one-line error."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{script}: --set {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def bench_train_step(objective, step_metrics, tx, optim_config, **kw):
    """`training.step.train_step` bound as the benchmarks run it: the config's learning-rate
    schedule over 1,000 steps and EMA 0.999 (`kw`: further arguments, e.g. axis_name)."""
    import functools

    from sedd_jax.training.optim import learning_rate_schedule
    from sedd_jax.training.step import train_step

    return functools.partial(
        train_step,
        objective=objective,
        step_metrics=step_metrics,
        tx=tx,
        lr_schedule=learning_rate_schedule(optim_config, 1000),
        ema=0.999,
        **kw,
    )
