"""`train_and_evaluate(config, workdir)`: the training recipe, top to bottom.

1. build the task adapter (data, graphs, schedule, model; `training/tasks.py`) and the
   optimizer;
2. create the state, or resume it from the newest readable checkpoint;
3. run pmapped train steps; periodic hooks log, evaluate and checkpoint;
4. on the last step (or SIGTERM / SIGUSR1, `training/preemption.py`, or
   `stop_after_steps`) save; at the very end sample
   with the EMA weights (FASTA for proteins, CSV for pairs).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from tqdm import tqdm

from sedd_jax.models.sedd import count_parameters
from sedd_jax.training import checkpoint
from sedd_jax.training.metrics_log import MetricsLogger
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.preemption import Preemption
from sedd_jax.training.state import create_train_state
from sedd_jax.training.step import make_pmap_train_step, replicate, unreplicate
from sedd_jax.training.tasks import build_task

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss; the last good checkpoint is kept on disk."""


def split_for_devices(batch: dict, num_devices: int, accum: int) -> dict:
    """[B, L] -> [devices, accum, B / (devices * accum), L]."""

    def reshape(a):
        b = a.shape[0]
        if b % (num_devices * accum):
            raise ValueError(
                f"training.batch_size={b} must be divisible by devices x training.accum = "
                f"{num_devices} x {accum}"
            )
        return a.reshape(num_devices, accum, b // (num_devices * accum), *a.shape[1:])

    return {k: reshape(v) for k, v in batch.items()}


def train_and_evaluate(config, workdir: str) -> dict:
    """Train per `config`, writing checkpoints, metrics.jsonl and samples under `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    tc = config.training
    task = build_task(config)
    for message in task.warnings:
        log.warning(message)
    tx = make_optimizer(config.optim, tc.n_steps)
    lr_schedule = learning_rate_schedule(config.optim, tc.n_steps)
    state = create_train_state(task.init_params, tx, jax.random.key(config.seed))
    manager = checkpoint.make_manager(workdir, tc.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        state = restored[0]
        log.info("resumed from step %d", int(state.step))
    start = int(state.step)
    meta = task.meta()
    logger = MetricsLogger(workdir, config, enabled=jax.process_index() == 0, start_step=start)

    def evaluate(step, params_state):
        metrics = {}
        for kind in ("params", "ema"):
            params = params_state.params if kind == "params" else params_state.ema_params
            metrics.update({f"{k}_{kind}": v for k, v in task.evaluate(params).items()})
        logger.write(step, metrics, prefix="val/")
        return metrics

    if start == 0:
        logger.write(0, {"parameters": count_parameters(state.params)})
        evaluate(0, state)
        logger.write(0, task.baselines(), prefix="val/")

    num_devices = jax.local_device_count()
    loader = task.train_loader(tc.batch_size, jax.process_count(), jax.process_index())
    p_step = make_pmap_train_step(
        objective=task.objective,
        step_metrics=task.step_metrics,
        tx=tx,
        lr_schedule=lr_schedule,
        ema=tc.ema,
    )
    end = tc.n_steps if not tc.stop_after_steps else min(tc.n_steps, start + tc.stop_after_steps)
    preemption = Preemption(tc.preemption_check_every).install()
    rstate = replicate(state, num_devices)
    pending = []
    bar = tqdm(
        range(start, end),
        initial=start,
        total=tc.n_steps,
        disable=not config.logging.progress_bar,
    )
    for step, host_batch in zip(bar, loader.iterate(start), strict=False):
        batch = split_for_devices(host_batch, num_devices, tc.accum)
        rstate, metrics = p_step(rstate, batch)
        pending.append(metrics)
        done = step + 1
        stop = preemption.should_stop(done)
        if done % tc.log_every == 0 or done == end or stop:
            rows = jax.device_get(pending)
            pending = []
            if not all(row["finite"][0] for row in rows):
                raise NonFiniteLossError(
                    f"non-finite loss or gradient before step {done}; stopping. The last "
                    f"good checkpoint is kept in {manager.directory}"
                )
            mean = {k: float(np.mean([r[k][0] for r in rows])) for k in rows[0] if k != "finite"}
            logger.write(done, mean, prefix="train/")
            bar.set_postfix(loss=f"{mean['loss']:.4f}")
        if done % tc.eval_every == 0 and done != end:
            evaluate(done, unreplicate(rstate))
        if done % tc.checkpoint_every == 0 or done == end or stop:
            checkpoint.save(manager, done, unreplicate(rstate), meta)
        if stop:
            logger.event(done, "preempted", signal=preemption.signal_name)
            log.warning("%s: saved step %d, exiting", preemption.signal_name, done)
            break
    manager.wait_until_finished()
    preemption.uninstall()
    state = unreplicate(rstate)
    summary = {"step": int(state.step)}
    if int(state.step) >= tc.n_steps and not preemption.stopping:
        summary.update(evaluate(int(state.step), state))
        summary.update(task.write_samples(state.ema_params, workdir, int(state.step)))
    logger.close()
    manager.close()
    return summary
