"""`train_and_evaluate(config, workdir)`: the single-track training recipe, top to bottom.

1. read and split the data; build graph, schedule, model, optimizer;
2. create the state, or resume it from the newest readable checkpoint;
3. run pmapped train steps; periodic hooks log, evaluate and checkpoint;
4. on the last step (or SIGTERM, or `stop_after_steps`) save; at the very end sample
   proteins with the EMA weights and write them as FASTA.
"""

from __future__ import annotations

import logging
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sedd_jax.data.fasta import FastaRecord, write_fasta
from sedd_jax.data.pipeline import load_protein_data, make_batcher
from sedd_jax.diffusion.graphs import get_graph
from sedd_jax.diffusion.noise import absorbing_schedule_warning, get_noise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.models.sedd import build_model, count_parameters
from sedd_jax.training import checkpoint
from sedd_jax.training.evaluation import (
    make_eval_step,
    make_oracle_eval_step,
    unigram_log_probs,
    validation_loss,
)
from sedd_jax.training.generation import generate, make_sampler
from sedd_jax.training.metrics_log import MetricsLogger
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.state import create_train_state
from sedd_jax.training.step import make_pmap_train_step, replicate, unreplicate

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss; the last good checkpoint is kept on disk."""


class Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (then it saves and exits)."""

    def __init__(self):
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            pass

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True


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


def run_metadata(config, data) -> dict:
    return {
        "config": config.to_dict(),
        "protein_vocab_size": data.tokenizer.vocab_size,
        "length_distribution": data.lengths.tolist(),
    }


def train_and_evaluate(config, workdir: str) -> dict:
    """Train per `config`, writing checkpoints, metrics.jsonl and samples under `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    tc = config.training
    data = load_protein_data(config.data, config.seed)
    graph = get_graph(config.graph, data.tokenizer.vocab_size)
    noise = get_noise(config.noise)
    if graph.absorb and (message := absorbing_schedule_warning(noise)):
        log.warning(message)
    model = build_model(config.model, graph.dim, graph.absorb)
    tx = make_optimizer(config.optim, tc.n_steps)
    lr_schedule = learning_rate_schedule(config.optim, tc.n_steps)

    example = {k: jnp.asarray(v[:1]) for k, v in data.train.items()}
    state = create_train_state(
        model, tx, jax.random.key(config.seed), example["tokens"], example["valid"]
    )
    manager = checkpoint.make_manager(workdir, tc.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        state = restored[0]
        log.info("resumed from step %d", int(state.step))
    start = int(state.step)
    meta = run_metadata(config, data)
    logger = MetricsLogger(workdir, config, enabled=jax.process_index() == 0)
    if start == 0:
        logger.write(0, {"parameters": count_parameters(state.params)})

    num_devices = jax.local_device_count()
    batcher = make_batcher(data, tc.batch_size, config.seed)
    p_step = make_pmap_train_step(
        model=model,
        graph=graph,
        noise=noise,
        tx=tx,
        lr_schedule=lr_schedule,
        ema=tc.ema,
        sampling_eps=tc.sampling_eps,
    )
    eval_step = make_eval_step(model, graph, noise, tc.sampling_eps)

    def val_loss(step_fn, params):
        return validation_loss(
            step_fn,
            params,
            data.val,
            batch_size=config.eval.batch_size,
            time_samples=config.eval.time_samples,
            max_batches=config.eval.max_batches,
            pad_id=data.tokenizer.pad_id,
            seed=config.seed,
        )

    def evaluate(step, params_state):
        metrics = {"loss_params": val_loss(eval_step, params_state.params)}
        metrics["loss_ema"] = val_loss(eval_step, params_state.ema_params)
        logger.write(step, metrics, prefix="val/")
        return metrics

    if start == 0:
        evaluate(0, state)
        if graph.absorb:
            # the best position-independent predictor, under the same evaluation
            oracle = make_oracle_eval_step(unigram_log_score_fn, graph, noise, tc.sampling_eps)
            log_p = unigram_log_probs(data.train["tokens"], data.train["valid"], graph.n)
            logger.write(0, {"loss_unigram": val_loss(oracle, jnp.asarray(log_p))}, "val/")
    end = tc.n_steps if not tc.stop_after_steps else min(tc.n_steps, start + tc.stop_after_steps)
    preemption = Preemption()
    rstate = replicate(state, num_devices)
    pending = []
    bar = tqdm(
        range(start, end), initial=start, total=tc.n_steps, disable=not config.logging.progress_bar
    )
    for step in bar:
        batch = split_for_devices(batcher.batch(step), num_devices, tc.accum)
        rstate, metrics = p_step(rstate, batch)
        pending.append(metrics)
        done = step + 1
        if done % tc.log_every == 0 or done == end:
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
        if done % tc.checkpoint_every == 0 or done == end or preemption.requested:
            checkpoint.save(manager, done, unreplicate(rstate), meta)
        if preemption.requested:
            log.warning("SIGTERM: saved step %d, exiting", done)
            break
    manager.wait_until_finished()
    state = unreplicate(rstate)
    summary = {"step": int(state.step)}
    if int(state.step) >= tc.n_steps and not preemption.requested:
        summary.update(evaluate(int(state.step), state))
        summary["samples"] = write_samples(config, workdir, model, graph, noise, data, state)
    logger.close()
    manager.close()
    return summary


def write_samples(config, workdir, model, graph, noise, data, state) -> str:
    """Sample `sampling.num_samples` proteins with the EMA weights into samples.fasta."""
    sampler = make_sampler(model, graph, noise, config.sampling)
    tokens, valid = generate(
        sampler,
        state.ema_params,
        graph,
        data.tokenizer,
        num=config.sampling.num_samples,
        max_len=config.data.max_len,
        length=config.sampling.length,
        length_dist=data.lengths,
        seed=config.seed,
    )
    sequences = data.tokenizer.decode_batch(tokens, valid)
    path = os.path.join(workdir, "samples.fasta")
    step = int(state.step)
    write_fasta(
        path,
        [
            FastaRecord(f"sample_{i}", f"step={step} len={len(s)}", s)
            for i, s in enumerate(sequences)
        ],
    )
    return path
