"""Benchmark: train-step time and achieved FLOP/s of the JAX SEDD, against the matmul peak.

    python scripts/bench_train_step.py [--sizes demo,stable] [--batch 4] [--length 512]
        [--steps 5] [--dtype float32] [--mode jit] [--out bench_train_step.json]

Prints a table and writes JSON. Model FLOPs per step = 6 x (non-embedding params) x tokens
+ 12 x blocks x B x L^2 x d (attention scores and values, forward + backward).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.defaults import base_config
from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.models.sedd import build_model, count_parameters
from sedd_jax.training.optim import learning_rate_schedule, make_optimizer
from sedd_jax.training.parallel import make_parallel
from sedd_jax.training.state import create_train_state
from sedd_jax.training.step import train_step
from sedd_jax.training.tasks import single_track_objective

SIZES = {
    "demo": dict(hidden=128, n_blocks=4, n_heads=4, cond_dim=64),
    "small": dict(hidden=256, n_blocks=4, n_heads=4, cond_dim=128),
    "stable": dict(hidden=768, n_blocks=8, n_heads=12, cond_dim=256),
}


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n x n matmul."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(size: str, batch: int, length: int, steps: int, dtype: str, mode: str) -> dict:
    config = base_config()
    for key, value in SIZES[size].items():
        config.model[key] = value
    config.model.dtype = dtype
    config.model.dropout = 0.0
    graph, noise = Absorbing(36), LogLinearNoise()
    model = build_model(config.model, graph.dim, True)
    tx = make_optimizer(config.optim, 1000)
    tokens = jax.random.randint(jax.random.key(1), (batch, length), 5, 25)
    valid = jnp.ones((batch, length), bool)
    state = create_train_state(
        lambda k: model.init(k, tokens[:1], jnp.ones((1,)), valid[:1])["params"],
        tx,
        jax.random.key(0),
    )
    objective, step_metrics = single_track_objective(model, graph, noise, 1e-3)
    step_fn = functools.partial(
        train_step,
        objective=objective,
        step_metrics=step_metrics,
        tx=tx,
        lr_schedule=learning_rate_schedule(config.optim, 1000),
        ema=0.999,
    )
    config.parallel.mode = mode
    wrapper = make_parallel(config.parallel, step_fn, 1, state)
    host_batch = {
        "tokens": np.asarray(tokens),
        "valid": np.asarray(valid),
        "example_id": np.arange(batch, dtype=np.int32),
    }
    batch_arrays = wrapper.shard_batch(host_batch)
    compile_s = _timed(
        lambda: jax.block_until_ready(wrapper.step(wrapper.put_state(state), batch_arrays))
    )
    dstate = wrapper.put_state(state)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        dstate, metrics = wrapper.step(dstate, batch_arrays)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    params = count_parameters(state.params)
    d, blocks = config.model.hidden, config.model.n_blocks
    non_embedding = params - 2 * graph.dim * d
    flops = 6 * non_embedding * batch * length + 12 * blocks * batch * length**2 * d
    median = float(np.median(times))
    return {
        "size": size,
        "params": params,
        "batch": batch,
        "length": length,
        "dtype": dtype,
        "mode": mode,
        "compile_s": compile_s,
        "step_s": median,
        "gflops": flops / median / 1e9,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="demo,stable")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--mode", default="jit", help="parallel.mode: jit | shard_map | pmap")
    parser.add_argument("--out", default="bench_train_step.json")
    args = parser.parse_args()
    device = jax.devices()[0]
    peak = matmul_peak()
    rows = [
        bench(s, args.batch, args.length, args.steps, args.dtype, args.mode)
        for s in args.sizes.split(",")
    ]
    print(
        f"device: {device.device_kind} ({platform.processor() or platform.machine()}), "
        f"float32 matmul peak {peak:.1f} GFLOP/s"
    )
    print(
        f"{'size':8} {'params':>12} {'B x L':>10} {'dtype':>9} {'compile s':>10} "
        f"{'step s':>8} {'GFLOP/s':>8} {'% peak':>7}"
    )
    for r in rows:
        print(
            f"{r['size']:8} {r['params']:12,d} {r['batch']:>4} x {r['length']:<4} {r['dtype']:>9} "
            f"{r['compile_s']:10.1f} {r['step_s']:8.3f} {r['gflops']:8.1f} "
            f"{100 * r['gflops'] / peak:6.0f}%"
        )
    with open(args.out, "w") as f:
        json.dump({"device": str(device), "matmul_peak_gflops": peak, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
