"""`train_and_evaluate(config, workdir)`: the training recipe, top to bottom.

1. build the task adapter (data, graphs, schedule, model; `training/tasks/`) and the
   optimizer;
2. create the state, or resume it from the newest readable checkpoint;
3. run train steps through the `parallel.mode` wrapper (`training/parallel.py`);
   periodic hooks log, evaluate and checkpoint;
4. on the last step (or SIGTERM / SIGUSR1, `training/preemption.py`, or
   `stop_after_steps`) save; at the very end sample
   with the EMA weights (FASTA for proteins, CSV for pairs).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import jax
import numpy as np
from tqdm import tqdm

from sedd_jax.common.errors import NonFiniteLossError  # noqa: F401  (re-exported)
from sedd_jax.common.metrics_log import MetricsLogger
from sedd_jax.models.sedd import count_parameters
from sedd_jax.training import checkpoint
from sedd_jax.training.loss_scale import GAUGES, make_loss_scaler
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.parallel import global_batch_size, local_copy, make_parallel
from sedd_jax.training.preemption import Preemption
from sedd_jax.training.state import create_train_state
from sedd_jax.training.step import train_step
from sedd_jax.training.tasks import build_task
from sedd_jax.training.throughput import Throughput

log = logging.getLogger(__name__)


def _scale_note(row) -> str:
    if "loss_scale" not in row:
        return "bfloat16/float32 stop at the first one"
    return (
        f"float16: too many skipped steps in a row or the loss scale fell below "
        f"training.loss_scale.min_scale; scale {row['loss_scale']:g}, "
        f"{int(row['skipped_steps'])} steps skipped in all"
    )


def _finite_mean(values) -> float:
    """Mean over the finite values (float16 steps skipped for overflow report inf; they
    are counted by `skipped_steps`), inf when none is finite."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("inf")


def train_and_evaluate(config, workdir: str) -> dict:
    """Train per `config`, writing checkpoints, metrics.jsonl and samples under `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    tc = config.training
    task = build_task(config)
    for message in task.warnings:
        log.warning(message)
    tx = make_optimizer(config.optim, tc.n_steps)
    lr_schedule = learning_rate_schedule(config.optim, tc.n_steps)
    scaler = make_loss_scaler(config.model, tc.loss_scale)
    state = create_train_state(task.init_params, tx, jax.random.key(config.seed), scaler)
    step_fn = functools.partial(
        train_step,
        objective=task.objective,
        step_metrics=task.step_metrics,
        tx=tx,
        lr_schedule=lr_schedule,
        ema=tc.ema,
        scaler=scaler,
    )
    wrapper = make_parallel(config.parallel, step_fn, tc.accum, state)
    manager = checkpoint.make_manager(workdir, tc.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, state, wrapper.state_shardings)
    if restored is not None:
        state = restored[0].replace(loss_scale=scaler.resumed(restored[0].loss_scale, restored[1]))
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

    loader = task.train_loader(global_batch_size(config), jax.process_count(), jax.process_index())
    end = tc.n_steps if not tc.stop_after_steps else min(tc.n_steps, start + tc.stop_after_steps)
    preemption = Preemption(tc.preemption_check_every).install()
    dstate = wrapper.put_state(state)
    meter = Throughput.create(config, task.model)  # step time, tokens/s, MFU per log point
    pending = []
    bar = tqdm(
        range(start, end),
        initial=start,
        total=tc.n_steps,
        disable=not config.logging.progress_bar or jax.process_index() != 0,
    )
    # closing: the loader's worker processes end with the loop
    with contextlib.closing(loader.iterate(start)) as batches:
        for step, host_batch in zip(bar, meter.timed(batches), strict=False):
            dstate, metrics = wrapper.step(dstate, wrapper.shard_batch(host_batch))
            pending.append(metrics)
            meter.dispatched(host_batch, metrics)
            done = step + 1
            stop = preemption.should_stop(done)
            if done % tc.log_every == 0 or done == end or stop:
                rows = jax.device_get(pending)
                pending = []
                if any(row["stop"] for row in rows):
                    manager.wait_until_finished()  # the last good checkpoint lands on disk
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient before step {done} "
                        f"({_scale_note(rows[-1])}); stopping. The last good checkpoint is "
                        f"kept in {manager.directory}"
                    )
                mean = {k: _finite_mean([r[k] for r in rows]) for k in rows[0] if k != "stop"}
                mean.update({k: float(rows[-1][k]) for k in GAUGES if k in rows[-1]})
                mean.update(meter.report())
                logger.write(done, mean, prefix="train/")
                bar.set_postfix(
                    loss=f"{mean['loss']:.4f}", tokens_s=f"{mean.get('tokens_per_s', 0):.0f}"
                )
            if done % tc.eval_every == 0 and done != end:
                evaluate(done, local_copy(wrapper.host_state(dstate)))
            if done % tc.checkpoint_every == 0 or done == end or stop:
                checkpoint.save(manager, done, wrapper.host_state(dstate), meta)
            if stop:
                logger.event(done, "preempted", signal=preemption.signal_name)
                log.warning("%s: saved step %d, exiting", preemption.signal_name, done)
                break
    manager.wait_until_finished()
    meter.close()
    state = local_copy(wrapper.host_state(dstate))
    summary = {"step": int(state.step)}
    if int(state.step) >= tc.n_steps and not preemption.stopping:
        # the handler stays: a signal now (the last checkpoint is on disk) skips the
        # samples and still exits 0, instead of killing the run mid-evaluation
        summary.update(evaluate(int(state.step), state))
        if jax.process_index() == 0 and preemption.no_late_signal(logger, int(state.step)):
            summary.update(task.write_samples(state.ema_params, workdir, int(state.step)))
    logger.close()
    manager.close()
    preemption.uninstall()
    return summary
