"""Objectives on a source of known entropy: loss.type x training.time_sampling.

A first-order Markov chain over the 20 amino-acid letters (seeded random transition
matrix, Dirichlet(0.3) rows, first letter from the stationary law), sequences of L = 64:
`--sequences` of them are written as FASTA for training (`data.source=fasta`) and
`--test` others, drawn with another seed, are scored. Each configuration trains
`configs/demo.py` at the benchmark size (`BENCH_MODEL`: 64 wide, 4 blocks with MLP ratio
2, batch 64; lr 1e-3, `--lr`; `--set` changes any key) for at most `--minutes` of wall
time (the run checkpoints and stops; the learning-rate schedule is that of `--steps`),
once per `--seeds` entry (the run's `seed`: initialisation, batch order and draws), then
`python -m sedd_jax.evaluate --fasta=<test> --per_sequence=<csv> --time_samples=256` gives
its bound on each test sequence (256 times per sequence: at 64 the Monte Carlo error was
most of the gap's standard error). The truth is the exact -log p of those same sequences
under the chain, and the gap's standard error is that of the per-sequence differences
bound - truth (paired: the test set's own spread cancels; what remains is the bound's
Monte Carlo error and how unevenly the model misses). Every sequence has L = 64 =
`data.max_len` (no padding, no special tokens), so the length term is 0.

    python scripts/bench_objectives.py --minutes 5 --out bench_objectives.json
    python scripts/bench_objectives.py --configs masked_ce:antithetic --seeds 0,1,2

Prints a table (bound and truth in nats per sequence, the gap relative to the truth), per
configuration the mean, least and greatest gap over the seeds (runs of one configuration
differ by more than one run's standard error), and writes JSON with the CPU model.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile

import numpy as np
from bench_utils import add_set_flag, cpu_model, parse_sets, python_module

from sedd_jax.common.metrics_log import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LETTERS = "ACDEFGHIKLMNPQRSTVWY"
# the model and harness of the benchmark: 3,500 steps in 5 CPU-minutes (2 cores); four
# blocks with a narrow MLP beat two or three full ones at equal time (docs/benchmarks.md);
# the in-training evaluation and samples cut to a token (the test set is scored after)
BENCH_MODEL = {
    "model.hidden": 64,
    "model.n_blocks": 4,
    "model.mlp_ratio": 2,
    "model.cond_dim": 32,
    "training.batch_size": 64,
    "eval.max_batches": 1,
    "sampling.num_samples": 1,
    "sampling.steps": 8,
}
CONFIGS = (
    "score_entropy:uniform,score_entropy:antithetic,masked_ce:uniform,masked_ce:antithetic,"
    "masked_ce:mask_count"
)


def markov_chain(seed: int = 0, concentration: float = 0.3):
    """(stationary law [20], transition [20, 20], entropy rate in nats/symbol)."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(20, concentration), size=20)
    evals, evecs = np.linalg.eig(trans.T)
    stat = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    stat = stat / stat.sum()
    rate = float(-(stat[:, None] * trans * np.log(np.maximum(trans, 1e-300))).sum())
    return stat, trans, rate


def sample_chain(n: int, length: int, stat, trans, rng) -> np.ndarray:
    """[n, length] symbol ids: x_1 ~ stat, x_i ~ trans[x_{i-1}] (inverse-CDF draws)."""
    x = np.empty((n, length), np.int64)
    x[:, 0] = np.minimum(np.searchsorted(np.cumsum(stat), rng.random(n)), 19)
    cdf = np.cumsum(trans, axis=1)
    for i in range(1, length):
        rows = cdf[x[:, i - 1]]
        x[:, i] = np.minimum((rows < rng.random(n)[:, None]).sum(axis=1), 19)
    return x


def chain_nll(x: np.ndarray, stat, trans) -> np.ndarray:
    """[n] exact -log p(x) in nats."""
    log_p = np.log(stat[x[:, 0]]) + np.log(trans[x[:, :-1], x[:, 1:]]).sum(axis=1)
    return -log_p


def write_fasta(path: str, x: np.ndarray) -> None:
    with open(path, "w") as f:
        for i, row in enumerate(x):
            f.write(f">s{i}\n{''.join(LETTERS[k] for k in row)}\n")


def run(args, fasta, test, truth: dict, loss_type: str, time_sampling: str, seed: int, workdir):
    """Trains and scores one configuration; `truth`: test sequence -> exact -log p."""
    env = dict(os.environ)
    overrides = (
        BENCH_MODEL
        | {
            "seed": seed,
            "data.source": "fasta",
            "data.path": fasta,
            "data.max_len": 64,
            "loss.type": loss_type,
            "training.time_sampling": time_sampling,
            "training.n_steps": args.steps,
            "training.eval_every": 10**9,  # the test set is scored after training
            "training.log_every": 100,
            "optim.lr": args.lr,
            "eval.sample_metrics_num": 0,
            "logging.progress_bar": False,
        }
        | parse_sets(args.set, "bench_objectives")
    )
    train_args = [f"--config={os.path.join(REPO, 'configs', 'demo.py')}", f"--workdir={workdir}"]
    train_args += [f"--config.{k}={v}" for k, v in overrides.items()]
    log = workdir + ".train.log"
    train_s = python_module("sedd_jax.train", train_args, env, log, args.minutes * 60)
    steps = max((r["step"] for r in read_metrics(workdir) if "step" in r), default=0)
    scores = workdir + ".scores.csv"
    eval_args = [f"--workdir={workdir}", f"--fasta={test}", f"--per_sequence={scores}"]
    eval_args += [f"--time_samples={args.time_samples}"]
    python_module("sedd_jax.evaluate", eval_args, env, workdir + ".eval.log")
    with open(scores) as f:
        rows = list(csv.DictReader(f))
    bound = np.array([float(r["nll_nats"]) for r in rows])
    exact = np.array([truth[r["sequence"]] for r in rows])
    diff = bound - exact
    return {
        "loss": loss_type,
        "time_sampling": time_sampling,
        "seed": seed,
        "steps": steps,
        "train_seconds": round(train_s, 1),
        "sequences": len(rows),
        "bound_nats_per_sequence": float(bound.mean()),
        "truth_nats_per_sequence": float(exact.mean()),
        "gap": float(diff.mean() / exact.mean()),
        "gap_se": float(diff.std(ddof=1) / np.sqrt(len(diff)) / exact.mean()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=CONFIGS, help="loss.type:time_sampling,...")
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-time cap")
    ap.add_argument("--steps", type=int, default=3500, help="the schedule's length")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--sequences", type=int, default=200000, help="training sequences")
    ap.add_argument("--seeds", default="0", help="comma-separated run seeds, each config")
    ap.add_argument("--test", type=int, default=512)
    ap.add_argument("--time_samples", type=int, default=256)
    ap.add_argument("--keep", default="", help="keep the runs in this directory")
    ap.add_argument("--out", default="bench_objectives.json")
    add_set_flag(ap)
    args = ap.parse_args()
    stat, trans, rate = markov_chain(0)
    train_x = sample_chain(args.sequences, 64, stat, trans, np.random.default_rng(1))
    test_x = sample_chain(args.test, 64, stat, trans, np.random.default_rng(2))
    test_nll = chain_nll(test_x, stat, trans)
    names = ["".join(LETTERS[k] for k in row) for row in test_x]
    truth = dict(zip(names, test_nll.tolist(), strict=True))
    print(f"CPU: {cpu_model()}; entropy rate {rate:.4f} nats/symbol; test -log p "
          f"{test_nll.mean():.3f} nats/sequence")  # fmt: skip
    print("| loss.type | time_sampling | seed | steps | train s | bound | truth | gap |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    results = []
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        os.makedirs(root, exist_ok=True)
        fasta, test = os.path.join(root, "train.fasta"), os.path.join(root, "test.fasta")
        write_fasta(fasta, train_x)
        write_fasta(test, test_x)
        for config in args.configs.split(","):
            loss_type, time_sampling = config.split(":")
            for seed in seeds:
                workdir = os.path.join(root, f"{loss_type}_{time_sampling}_seed{seed}")
                r = run(args, fasta, test, truth, loss_type, time_sampling, seed, workdir)
                results.append(r)
                print(
                    f"| {loss_type} | {time_sampling} | {seed} | {r['steps']} | "
                    f"{r['train_seconds']} | {r['bound_nats_per_sequence']:.3f} | "
                    f"{r['truth_nats_per_sequence']:.3f} | "
                    f"{100 * r['gap']:.2f} ± {100 * r['gap_se']:.2f} % |",
                    flush=True,
                )
    if len(seeds) > 1:
        print("\n| loss.type | time_sampling | seeds | mean gap | least | greatest |")
        print("|---|---|---:|---:|---:|---:|")
        for config in args.configs.split(","):
            loss_type, time_sampling = config.split(":")
            gaps = [
                r["gap"]
                for r in results
                if (r["loss"], r["time_sampling"]) == (loss_type, time_sampling)
            ]
            print(f"| {loss_type} | {time_sampling} | {len(gaps)} | {100 * np.mean(gaps):.2f} % | "
                  f"{100 * min(gaps):.2f} % | {100 * max(gaps):.2f} % |")  # fmt: skip
    summary = {
        "cpu": cpu_model(),
        "entropy_rate_nats": rate,
        "test_nats_per_sequence": float(test_nll.mean()),
        "args": vars(args),
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
