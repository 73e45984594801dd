"""Objectives on a source of known entropy: loss.type x training.time_sampling.

A first-order Markov chain over the 20 amino-acid letters (seeded random transition
matrix, Dirichlet(0.3) rows), sequences of L = 64, is written as FASTA and trained on with
`data.source=fasta` by a small model per (objective, time sampling) for a fixed number of
steps. Reported: the final validation loss (the training objective's bound, nats/token,
over every scored token including specials) beside the chain's entropy rate. Prints a
table and writes JSON.

    python scripts/bench_objectives.py --steps 150 --out /tmp/bench_objectives.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.defaults import base_config
from sedd_jax.training.loop import train_and_evaluate

LETTERS = "ACDEFGHIKLMNPQRSTVWY"


def markov_chain(seed: int = 0, concentration: float = 0.3):
    """(initial [20], transition [20, 20], entropy rate in nats/symbol)."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(20, concentration), size=20)
    evals, evecs = np.linalg.eig(trans.T)
    stat = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    stat = stat / stat.sum()
    rate = float(-(stat[:, None] * trans * np.log(np.maximum(trans, 1e-300))).sum())
    return stat, trans, rate


def write_fasta(path: str, n: int, length: int, seed: int = 0) -> float:
    stat, trans, rate = markov_chain(seed)
    rng = np.random.default_rng(seed + 1)
    with open(path, "w") as f:
        for i in range(n):
            s = [rng.choice(20, p=stat)]
            for _ in range(length - 1):
                s.append(rng.choice(20, p=trans[s[-1]]))
            f.write(f">s{i}\n{''.join(LETTERS[k] for k in s)}\n")
    return rate


def run(fasta: str, loss_type: str, time_sampling: str, steps: int, workdir: str) -> dict:
    c = base_config()
    c.data.source, c.data.path, c.data.max_len = "fasta", fasta, 66
    c.loss.type, c.training.time_sampling = loss_type, time_sampling
    c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 64, 2, 4, 32
    c.model.dropout = 0.0
    c.training.batch_size, c.training.n_steps = 32, steps
    c.training.log_every, c.training.eval_every, c.training.checkpoint_every = 50, steps, 10**6
    c.optim.lr, c.optim.warmup = 2e-3, 20
    c.eval.time_samples = 8
    c.sampling.steps, c.sampling.num_samples = 4, 2
    c.logging.progress_bar = False
    start = time.perf_counter()
    train_and_evaluate(c, workdir)
    seconds = time.perf_counter() - start
    rows = read_metrics(workdir)
    val = [r["val/loss_params"] for r in rows if "val/loss_params" in r]
    return {
        "loss": loss_type,
        "time_sampling": time_sampling,
        "steps": steps,
        "val_loss": val[-1] if val else float("nan"),
        "seconds": round(seconds, 1),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--sequences", type=int, default=2000)
    ap.add_argument("--out", default="bench_objectives.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fasta = os.path.join(tmp, "markov.fasta")
        rate = write_fasta(fasta, args.sequences, 64)
        results = []
        for loss_type in ("score_entropy", "masked_ce"):
            for time_sampling in ("uniform", "antithetic"):
                workdir = os.path.join(tmp, f"{loss_type}_{time_sampling}")
                results.append(run(fasta, loss_type, time_sampling, args.steps, workdir))
                r = results[-1]
                print(
                    f"{r['loss']:14s} {r['time_sampling']:11s} val {r['val_loss']:.4f}"
                    f"  entropy rate {rate:.4f}  {r['seconds']} s",
                    flush=True,
                )
    with open(args.out, "w") as f:
        json.dump({"entropy_rate_nats": rate, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
