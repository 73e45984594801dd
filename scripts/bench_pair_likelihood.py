"""Where the time of the pair likelihood bound goes (`python -m sedd_jax.evaluate` on a
pair run): compilation and seconds per batch, per task and time chunk.

    python scripts/bench_pair_likelihood.py --workdir=runs/joint [--chunks=1,8,16,32]
        [--batches=2] [--batch_size=32] [--time_samples=128] [--tasks=joint,...]
        [--out=pair_likelihood.json]

For each trained task and `time_chunk` c (time samples per model call,
`likelihood.time_map`): the first call (compilation + one batch) and the median of the
next `--batches` calls on the run's validation pairs, the projected time of the whole
split, and the largest difference of the bound from c = the first chunk (the terms are
the same draws for every c, so only rounding differs). Seconds are wall-clock and CPU
(all threads of this process: the robust number on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from sedd_jax.data.batching import iter_eval_batches
from sedd_jax.diffusion.joint import TASKS
from sedd_jax.diffusion.likelihood import make_pair_likelihood_fn
from sedd_jax.runs import open_run


def timed(fn, *args) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of this process's threads, output)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--chunks", default="1,8,16,32")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--time_samples", type=int, default=128)
    parser.add_argument("--tasks", default="", help="comma-separated (default: all trained)")
    parser.add_argument("--out", default="pair_likelihood.json")
    args = parser.parse_args()
    run = open_run(args.workdir)
    params = run.params("ema")
    graphs, noise, model = run.components.graph, run.components.noise, run.components.model
    arrays = run.data().val
    n = len(arrays["protein"])
    num_batches = -(-n // args.batch_size)
    batches = list(iter_eval_batches(arrays, args.batch_size))[: args.batches + 1]
    key = jax.random.key(0)
    tasks = [t for t in TASKS if run.config.task.get(t, 0.0) > 0]
    rows = []
    print(f"{n} pairs, {num_batches} batches of {args.batch_size}, K={args.time_samples}")
    header = ("task", "chunk", "first s", "s/batch", "cpu s/batch", "split s", "max |d|")
    print("{:22s} {:>5s} {:>8s} {:>8s} {:>11s} {:>8s} {:>9s}".format(*header))
    for task in [t for t in tasks if t in args.tasks.split(",")] if args.tasks else tasks:
        reference = None
        for chunk in [int(c) for c in args.chunks.split(",")]:
            fn = make_pair_likelihood_fn(
                model, graphs, noise, task=task, time_samples=args.time_samples, time_chunk=chunk
            )
            first, _, out = timed(fn, params, batches[0], key)
            steady = [timed(fn, params, b, key)[:2] for b in batches[1:]] or [(first, first)]
            per_batch = statistics.median(w for w, _ in steady)
            cpu_per_batch = statistics.median(c for _, c in steady)
            nll = np.concatenate([np.asarray(out[f"{tr}_nll"]) for tr in ("protein", "ligand")])
            reference = nll if reference is None else reference
            row = {
                "task": task,
                "time_chunk": chunk,
                "first_call_s": round(first, 2),
                "per_batch_s": round(per_batch, 3),
                "cpu_per_batch_s": round(cpu_per_batch, 3),
                "split_s": round(first + per_batch * (num_batches - 1), 1),
                "max_abs_diff": float(np.abs(nll - reference).max()),
            }
            rows.append(row)
            print(
                f"{task:22s} {chunk:5d} {row['first_call_s']:8.2f} {row['per_batch_s']:8.3f} "
                f"{row['cpu_per_batch_s']:11.3f} {row['split_s']:8.1f} {row['max_abs_diff']:9.2e}"
            )
    with open(args.out, "w") as f:
        json.dump({"pairs": n, "batch_size": args.batch_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
