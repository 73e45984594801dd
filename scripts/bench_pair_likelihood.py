"""Where the time of the pair likelihood bound goes (`python -m sedd_jax.evaluate` on a
pair run): compilation and seconds per batch, per task and number of time samples K.

    python scripts/bench_pair_likelihood.py --workdir=runs/joint [--time_samples=128,32]
        [--batches=2] [--batch_size=32] [--tasks=joint,...] [--out=pair_likelihood.json]

For each trained task and K: the first call (compilation + one batch) and the median of
the next `--batches` calls on the run's validation pairs, and the projected time of the
whole split. Seconds are wall-clock and CPU (all threads of this process: the robust
number on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax

from sedd_jax.data.batching import iter_eval_batches
from sedd_jax.diffusion.joint import TASKS
from sedd_jax.diffusion.pair_likelihood import make_pair_likelihood_fn
from sedd_jax.runs import open_run


def timed(fn, *args) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of this process's threads, output)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--time_samples", default="128,32")
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
    print(f"{n} pairs, {num_batches} batches of {args.batch_size}")
    header = ("task", "K", "first s", "s/batch", "cpu s/batch", "split s", "split cpu s")
    print("{:22s} {:>4s} {:>8s} {:>8s} {:>11s} {:>8s} {:>11s}".format(*header))
    for task in [t for t in tasks if t in args.tasks.split(",")] if args.tasks else tasks:
        for time_samples in [int(k) for k in args.time_samples.split(",")]:
            fn = make_pair_likelihood_fn(model, graphs, noise, task=task, time_samples=time_samples)
            first, first_cpu, _ = timed(fn, params, batches[0], key)
            steady = [timed(fn, params, b, key)[:2] for b in batches[1:]]
            steady = steady or [(first, first_cpu)]
            per_batch = statistics.median(w for w, _ in steady)
            cpu_per_batch = statistics.median(c for _, c in steady)
            row = {
                "task": task,
                "time_samples": time_samples,
                "first_call_s": round(first, 2),
                "per_batch_s": round(per_batch, 3),
                "cpu_per_batch_s": round(cpu_per_batch, 3),
                "split_s": round(first + per_batch * (num_batches - 1), 1),
                "split_cpu_s": round(first_cpu + cpu_per_batch * (num_batches - 1), 1),
            }
            rows.append(row)
            print(
                f"{task:22s} {time_samples:4d} {row['first_call_s']:8.2f} "
                f"{row['per_batch_s']:8.3f} {row['cpu_per_batch_s']:11.3f} "
                f"{row['split_s']:8.1f} {row['split_cpu_s']:11.1f}"
            )
    with open(args.out, "w") as f:
        json.dump({"pairs": n, "batch_size": args.batch_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
