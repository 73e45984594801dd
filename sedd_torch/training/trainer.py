"""`train_and_evaluate(config, workdir)` on the torch twin (twin of sedd_jax/training/loop.py).

The same recipe and the same outputs as the JAX loop, on one torch device
(`config.device`: auto | cpu | cuda | mps):
1. read and split the data with the shared numpy pipeline; build graph, schedule,
   model, AdamW;
2. create the state, or resume it from the newest readable torch checkpoint;
3. run train steps; periodic hooks log (`train/loss`, ...), evaluate (`val/loss_params`,
   `val/loss_ema`) and checkpoint (`torch_checkpoints/checkpoint_step_<n>.pt`);
4. on the last step (or SIGTERM, or `stop_after_steps`) save; at the very end sample
   proteins with the EMA weights into samples.fasta.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from tqdm import tqdm

from sedd_jax.data.fasta import FastaRecord, write_fasta
from sedd_jax.data.pipeline import load_protein_data, make_batcher
from sedd_jax.training.loop import NonFiniteLossError
from sedd_jax.training.metrics_log import MetricsLogger
from sedd_jax.training.preemption import Preemption
from sedd_torch.device import resolve_device
from sedd_torch.diffusion.graphs import get_graph
from sedd_torch.diffusion.noise import absorbing_schedule_warning, get_noise
from sedd_torch.diffusion.oracles import unigram_log_score_fn
from sedd_torch.models.sedd import build_model, count_parameters
from sedd_torch.training import checkpoint
from sedd_torch.training.evaluation import model_score_fn, unigram_log_probs, validation_loss
from sedd_torch.training.generation import generate, make_sampler
from sedd_torch.training.optim import learning_rate_schedule, make_optimizer
from sedd_torch.training.state import create_train_state
from sedd_torch.training.step import train_step

log = logging.getLogger(__name__)


def to_device(batch: dict, accum: int, device) -> dict:
    """numpy [B, L] -> tensors [accum, B / accum, L] on `device`."""

    def reshape(a):
        b = a.shape[0]
        if b % accum:
            raise ValueError(f"training.batch_size={b} must be divisible by training.accum={accum}")
        tensor = torch.as_tensor(a.reshape(accum, b // accum, *a.shape[1:]), device=device)
        return tensor.long() if tensor.dtype == torch.int32 else tensor

    return {k: reshape(v) for k, v in batch.items()}


def train_and_evaluate(config, workdir: str) -> dict:
    """Train per `config` with the torch twin, writing checkpoints, metrics.jsonl and
    samples.fasta under `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    tc = config.training
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # initialisation and dropout
    data = load_protein_data(config.data, config.seed)
    graph = get_graph(config.graph, data.tokenizer.vocab_size)
    noise = get_noise(config.noise)
    if graph.absorb and (message := absorbing_schedule_warning(noise)):
        log.warning(message)
    model = build_model(config.model, graph.dim, graph.absorb).to(device)
    lr_schedule = learning_rate_schedule(config.optim, tc.n_steps)
    state = create_train_state(model, lambda params: make_optimizer(params, config.optim))
    if checkpoint.restore_latest(workdir, state) is not None:
        log.info("resumed from step %d", state.step)
    start = state.step
    config_dict = config.to_dict()
    meta = {
        "config": config_dict,
        "protein_vocab_size": data.tokenizer.vocab_size,
        "length_distribution": data.lengths.tolist(),
    }
    logger = MetricsLogger(workdir, config, start_step=start)
    if start == 0:
        logger.write(0, {"parameters": count_parameters(model)})

    batcher = make_batcher(data, tc.batch_size, config.seed)

    def val_loss(score_fn_for_batch):
        return validation_loss(
            score_fn_for_batch,
            graph,
            noise,
            data.val,
            batch_size=config.eval.batch_size,
            time_samples=config.eval.time_samples,
            max_batches=config.eval.max_batches,
            pad_id=data.tokenizer.pad_id,
            seed=config.seed,
            sampling_eps=tc.sampling_eps,
            device=device,
        )

    def evaluate(step):
        metrics = {"loss_params": val_loss(model_score_fn(state.model))}
        metrics["loss_ema"] = val_loss(model_score_fn(state.ema_model))
        logger.write(step, metrics, prefix="val/")
        return metrics

    def save():
        checkpoint.save(workdir, state, tc.ema, config_dict, meta, tc.keep_checkpoints)

    if start == 0:
        evaluate(0)
        # the best position-independent predictor, under the same evaluation
        log_p = unigram_log_probs(data.train["tokens"], data.train["valid"], graph.n)
        oracle = unigram_log_score_fn(torch.as_tensor(log_p, device=device), graph)
        logger.write(0, {"loss_unigram": val_loss(lambda valid: oracle)}, "val/")
    end = tc.n_steps if not tc.stop_after_steps else min(tc.n_steps, start + tc.stop_after_steps)
    preemption = Preemption().install()
    pending = []
    bar = tqdm(
        range(start, end), initial=start, total=tc.n_steps, disable=not config.logging.progress_bar
    )
    for step in bar:
        batch = to_device(batcher.batch(step), tc.accum, device)
        metrics = train_step(
            state,
            batch,
            graph=graph,
            noise=noise,
            lr_schedule=lr_schedule,
            ema=tc.ema,
            grad_clip=config.optim.grad_clip,
            sampling_eps=tc.sampling_eps,
            seed=config.seed,
            curriculum=config.curriculum,
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
    preemption.uninstall()
    summary = {"step": state.step}
    if state.step >= tc.n_steps and not preemption.stopping:
        summary.update(evaluate(state.step))
        summary["samples"] = write_samples(config, workdir, graph, noise, data, state, device)
    logger.close()
    return summary


def write_samples(config, workdir, graph, noise, data, state, device) -> str:
    """Sample `sampling.num_samples` proteins with the EMA weights into samples.fasta."""
    sampler = make_sampler(state.ema_model, graph, noise, config.sampling)
    tokens, valid = generate(
        sampler,
        graph,
        data.tokenizer,
        num=config.sampling.num_samples,
        max_len=config.data.max_len,
        length=config.sampling.length,
        length_dist=data.lengths,
        seed=config.seed,
        device=device,
    )
    sequences = data.tokenizer.decode_batch(tokens, valid)
    path = os.path.join(workdir, "samples.fasta")
    write_fasta(
        path,
        [
            FastaRecord(f"sample_{i}", f"step={state.step} len={len(s)}", s)
            for i, s in enumerate(sequences)
        ],
    )
    return path
