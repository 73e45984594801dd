"""Benchmark: sampling throughput of the JAX sampler (`generation.make_sampler`) against the twin.

    python scripts/bench_sample.py [--steps 32,128,1024] [--predictors euler,analytic]
        [--batch 16] [--length 128] [--lengths 128,512,1024] [--batches 1,4,16,64]
        [--scale-steps 16] [--repeats 5] [--pause 0.5] [--threads 2] [--out bench_sample.json]

The `--size` model (default demo: d 128, 4 blocks; random weights, the same in both
frameworks), `--dtype` (default float32),
all-mask start, every position valid, final denoise on. Part 1: sequences/s for each
(steps, predictor) at B x L = `--batch` x `--length`. Part 2: seconds per step (a run of
`--scale-steps` steps + the denoise, divided by steps + 1) against length at `--batch`
and against batch at `--length`, Euler. JAX and the twin alternate with a `--pause`
before each call, `--repeats` rounds, medians; the first JAX call of each shape
(compile) is timed apart. `compiles` counts XLA compilations over the timed calls (the
sampler must compile once per shape and configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import ml_collections
import numpy as np
import torch
from bench_train import build

from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.training import generation
from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.graphs import Absorbing as TorchAbsorbing
from sedd_torch.diffusion.noise import LogLinearNoise as TorchLogLinear
from sedd_torch.training import generation as torch_generation

PROTEIN_V = 37


class CompileCounter:
    """Number of XLA backend compilations since `reset` (jax.monitoring events)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        del duration, kwargs
        if event == self.EVENT:
            self.count += 1


def samplers(model, twin, params, steps: int, predictor: str, device: str = "cpu"):
    config = ml_collections.ConfigDict(
        dict(steps=steps, predictor=predictor, eps=1e-5, denoise=True)
    )
    jax_sample = generation.make_sampler(model, Absorbing(PROTEIN_V - 1), LogLinearNoise(), config)
    torch_sample = torch_generation.make_sampler(
        twin, TorchAbsorbing(PROTEIN_V - 1), TorchLogLinear(), config
    )

    def jax_run(batch, length, seed):
        x, valid = generation.initial_tokens(np.full(batch, length), length, PROTEIN_V - 1, 1)
        return generation.generate_rows(jax_sample, params, x, valid, np.zeros_like(valid), seed)

    def torch_run(batch, length, seed):
        x, valid = generation.initial_tokens(np.full(batch, length), length, PROTEIN_V - 1, 1)
        rand = generator_rand(torch.Generator().manual_seed(seed), device)
        tensors = [torch.as_tensor(a).to(device) for a in (x, valid, np.zeros_like(valid))]
        return torch_sample(tensors[0].long(), tensors[1], tensors[2], rand).cpu().numpy()

    return {"jax": jax_run, "torch": torch_run}


def measure(runs: dict, batch: int, length: int, args, counter) -> dict:
    """Median seconds per call of each framework, interleaved; JAX's first call apart."""
    start = time.perf_counter()
    runs["jax"](batch, length, 0)
    first = time.perf_counter() - start
    before = counter.count
    seconds = {name: [] for name in runs}
    for r in range(args.repeats):
        for name, run in runs.items():
            time.sleep(args.pause)
            start = time.perf_counter()
            run(batch, length, r + 1)
            seconds[name].append(time.perf_counter() - start)
    return {
        "jax_first_call_s": first,
        "compiles_after_first": counter.count - before,
        **{f"{name}_s": statistics.median(s) for name, s in seconds.items()},
        **{f"{name}_s_all": s for name, s in seconds.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="32,128,1024")
    parser.add_argument("--predictors", default="euler,analytic")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--lengths", default="128,512,1024")
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--scale-steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--size", default="demo", help="a bench_train size: demo | stable")
    parser.add_argument("--dtype", default="float32", help="model.dtype of both")
    parser.add_argument("--torch-device", default="cpu", help="cpu | cuda (the twin's device)")
    parser.add_argument("--out", default="bench_sample.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    counter = CompileCounter()
    _, _, _, model, params, _, twin = build(args.size, dtype=args.dtype)
    twin.to(args.torch_device).eval()
    load = os.getloadavg()
    throughput, scaling = [], []
    for steps in map(int, args.steps.split(",")):
        for predictor in args.predictors.split(","):
            runs = samplers(model, twin, params, steps, predictor, args.torch_device)
            row = measure(runs, args.batch, args.length, args, counter)
            row.update(steps=steps, predictor=predictor, batch=args.batch, length=args.length)
            throughput.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("all")}), flush=True)
    runs = samplers(model, twin, params, args.scale_steps, "euler", args.torch_device)
    shapes = [(args.batch, n) for n in map(int, args.lengths.split(","))]
    shapes += [(b, args.length) for b in map(int, args.batches.split(",")) if b != args.batch]
    for batch, length in shapes:
        row = measure(runs, batch, length, args, counter)
        row.update(steps=args.scale_steps, predictor="euler", batch=batch, length=length)
        scaling.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("all")}), flush=True)

    print(
        f"{os.cpu_count()} cores, load average {load[0]:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end; torch threads {args.threads}"
    )
    print(
        f"sampling, {args.size} model, {args.dtype}, {jax.devices()[0].device_kind}, "
        f"B x L = {args.batch} x {args.length}: sequences/s"
    )
    print(f"{'steps':>6} {'predictor':9} {'JAX seq/s':>10} {'twin seq/s':>11} {'JAX/twin':>9}")
    for r in throughput:
        jax_rate, torch_rate = r["batch"] / r["jax_s"], r["batch"] / r["torch_s"]
        print(
            f"{r['steps']:6d} {r['predictor']:9} {jax_rate:10.2f} {torch_rate:11.2f} "
            f"{jax_rate / torch_rate:9.2f}"
        )
    print(f"seconds per step (Euler, {args.scale_steps} steps + denoise)")
    print(f"{'B':>4} {'L':>5} {'JAX ms':>8} {'twin ms':>8} {'JAX/twin time':>14}")
    for r in scaling:
        per = 1e3 / (r["steps"] + 1)
        print(
            f"{r['batch']:4d} {r['length']:5d} {r['jax_s'] * per:8.1f} "
            f"{r['torch_s'] * per:8.1f} {r['jax_s'] / r['torch_s']:14.2f}"
        )
    with open(args.out, "w") as f:
        json.dump(
            {"load": [load, os.getloadavg()], "throughput": throughput, "scaling": scaling},
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
