"""`train_and_evaluate(config, workdir)` on the torch twin (twin of sedd_jax/training/loop.py).

The same recipe and the same outputs as the JAX loop, on one torch device
(`config.device`: auto | cpu | cuda | mps), for single-track models and for protein–ligand
pairs (`model.kind = "dual"`, with the task mixture), through the task adapters of
`training/tasks/`:
1. read and split the data with the shared numpy pipelines; build graph(s), schedule,
   model, AdamW;
2. create the state, or resume it from the newest readable torch checkpoint;
3. run train steps; periodic hooks log (`train/loss`, ...), evaluate (`val/<metric>_params`,
   `val/<metric>_ema`) and checkpoint (`torch_checkpoints/checkpoint_step_<n>.pt`, which
   `sedd_jax.sample` / `sedd_jax.evaluate --workdir` read through the converter);
4. on the last step (or SIGTERM, or `stop_after_steps`) save; at the very end sample with
   the EMA weights (samples.fasta, or samples_joint.csv for pairs).

It imports neither jax, flax, optax nor orbax: what it shares with the JAX loop comes
from `sedd_jax.common` and the numpy data layer.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from tqdm import tqdm

from sedd_jax.common.errors import NonFiniteLossError
from sedd_jax.common.metrics_log import MetricsLogger
from sedd_jax.common.preemption import SignalFlag
from sedd_torch.device import resolve_device
from sedd_torch.models.sedd import count_parameters
from sedd_torch.training import checkpoint
from sedd_torch.training.optim import learning_rate_schedule, make_optimizer
from sedd_torch.training.state import create_train_state
from sedd_torch.training.step import train_step
from sedd_torch.training.tasks import build_task

log = logging.getLogger(__name__)


def to_device(batch: dict, accum: int, device) -> dict:
    """numpy [B, ...] -> tensors [accum, B / accum, ...] on `device`."""

    def reshape(a):
        b = a.shape[0]
        if b % accum:
            raise ValueError(f"training.batch_size={b} must be divisible by training.accum={accum}")
        tensor = torch.as_tensor(a.reshape(accum, b // accum, *a.shape[1:]), device=device)
        return tensor.long() if tensor.dtype == torch.int32 else tensor

    return {k: reshape(v) for k, v in batch.items()}


def train_and_evaluate(config, workdir: str) -> dict:
    """Train per `config` with the torch twin, writing checkpoints, metrics.jsonl and
    samples under `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    tc = config.training
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # initialisation and dropout
    task = build_task(config, device)
    for message in task.warnings:
        log.warning(message)
    model = task.model
    lr_schedule = learning_rate_schedule(config.optim, tc.n_steps)
    state = create_train_state(model, lambda params: make_optimizer(params, config.optim))
    if checkpoint.restore_latest(workdir, state) is not None:
        log.info("resumed from step %d", state.step)
    start = state.step
    config_dict, meta = config.to_dict(), task.meta()
    logger = MetricsLogger(workdir, config, start_step=start)

    def evaluate(step):
        metrics = {}
        for kind, module in (("params", state.model), ("ema", state.ema_model)):
            metrics.update({f"{k}_{kind}": v for k, v in task.evaluate(module).items()})
        logger.write(step, metrics, prefix="val/")
        return metrics

    def save():
        checkpoint.save(workdir, state, tc.ema, config_dict, meta, tc.keep_checkpoints)

    if start == 0:
        logger.write(0, {"parameters": count_parameters(model)})
        evaluate(0)
        logger.write(0, task.baselines(), prefix="val/")
    batcher = task.batcher(tc.batch_size)
    end = tc.n_steps if not tc.stop_after_steps else min(tc.n_steps, start + tc.stop_after_steps)
    preemption = SignalFlag().install()
    pending = []
    bar = tqdm(
        range(start, end), initial=start, total=tc.n_steps, disable=not config.logging.progress_bar
    )
    for step in bar:
        metrics = train_step(
            state,
            to_device(batcher.batch(step), tc.accum, device),
            objective=task.objective,
            step_metrics=task.step_metrics,
            lr_schedule=lr_schedule,
            ema=tc.ema,
            grad_clip=config.optim.grad_clip,
            seed=config.seed,
        )
        if not metrics.pop("finite"):
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {step + 1}; stopping. The last good "
                f"checkpoint is kept in {os.path.join(workdir, checkpoint.DIRECTORY)}"
            )
        pending.append(metrics)
        done = step + 1
        stop = preemption.should_stop(done)
        if done % tc.log_every == 0 or done == end or stop:
            mean = {k: float(np.mean([row[k] for row in pending])) for k in pending[0]}
            pending = []
            logger.write(done, mean, prefix="train/")
            bar.set_postfix(loss=f"{mean['loss']:.4f}")
        if done % tc.eval_every == 0 and done != end:
            evaluate(done)
        if done % tc.checkpoint_every == 0 or done == end or stop:
            save()
        if stop:
            logger.event(done, "preempted", signal=preemption.signal_name)
            log.warning("%s: saved step %d, exiting", preemption.signal_name, done)
            break
    summary = {"step": state.step}
    if state.step >= tc.n_steps and not preemption.stopping:
        # as sedd_jax: a signal after the last checkpoint skips the samples, exits 0
        summary.update(evaluate(state.step))
        if preemption.no_late_signal(logger, state.step):
            summary.update(task.write_samples(state.ema_model, workdir, state.step))
    logger.close()
    preemption.uninstall()
    return summary
