"""Benchmark: memory of the train step with and without block rematerialisation.

    python scripts/bench_memory.py [--sizes demo,stable] [--lengths 512,1024] [--batch 4]
        [--dtype float32] [--no-compile] [--out bench_memory.json]

Two numbers per (size, L, model.remat), neither of which runs a step:
  * residual MiB: what JAX hands the backward pass to keep (the leaves of the VJP closure
    of the loss, `jax.eval_shape` of `jax.vjp`): activation memory as the program asks
    for it, the same on every backend. It includes the parameters the recomputation
    reads.
  * temp MiB: XLA's temporary buffers of the compiled one-device train step (loss,
    gradient, AdamW, EMA; `jit(...).lower(...).compile().memory_analysis()`), on this
    backend. On CPU, XLA removes the optimisation barriers that keep a recomputation
    apart from the forward pass before it schedules the program, merges the two, and so
    the CPU number does not change with remat; the GPU compiler keeps them until after
    scheduling.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
from bench_utils import bench_train_step

from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.defaults import base_config
from sedd_jax.models.sedd import count_parameters
from sedd_jax.runs import Tokenizers, build_components
from sedd_jax.training.optim import make_optimizer
from sedd_jax.training.state import create_train_state
from sedd_jax.training.tasks import single_track_objective

SIZES = {
    "demo": dict(hidden=128, n_blocks=4, n_heads=4, cond_dim=64),
    "stable": dict(hidden=768, n_blocks=8, n_heads=12, cond_dim=256),
}
MIB = 2**20


def _nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def measure(size: str, length: int, batch: int, remat: str, dtype: str, compile_: bool):
    config = base_config()
    for key, value in SIZES[size].items():
        config.model[key] = value
    config.model.update(dtype=dtype, dropout=0.0, remat=remat)
    parts = build_components(config, Tokenizers.of_track(ProteinTokenizer(36)))
    graph, noise, model = parts.graph, parts.noise, parts.model
    tx = make_optimizer(config.optim, 1000)
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    valid = jax.ShapeDtypeStruct((batch, length), jnp.bool_)

    def init(key):
        x, v = jnp.zeros((1, length), jnp.int32), jnp.ones((1, length), bool)
        return model.init(key, x, jnp.ones((1,)), v)["params"]

    state = jax.eval_shape(lambda: create_train_state(init, tx, jax.random.key(0)))
    objective, step_metrics = single_track_objective(model, graph, noise, 1e-3)

    def loss(params, tokens, valid):
        ids = jnp.arange(tokens.shape[0], dtype=jnp.int32)
        batch_ = {"tokens": tokens, "valid": valid, "example_id": ids}
        return objective(params, batch_, jax.random.key(1), 0, jax.random.key(2))[0]

    residuals = jax.eval_shape(
        lambda p, t, v: jax.vjp(lambda q: loss(q, t, v), p)[1], state.params, tokens, valid
    )
    row = {
        "size": size,
        "params": count_parameters(state.params),
        "batch": batch,
        "length": length,
        "dtype": dtype,
        "remat": remat,
        "residual_mib": _nbytes(residuals) / MIB,
    }
    if compile_:
        step = jax.jit(bench_train_step(objective, step_metrics, tx, config.optim, axis_name=None))
        rstate = state
        rbatch = {  # [accum = 1, batch, length], as the step takes it
            "tokens": jax.ShapeDtypeStruct((1, batch, length), jnp.int32),
            "valid": jax.ShapeDtypeStruct((1, batch, length), jnp.bool_),
            "example_id": jax.ShapeDtypeStruct((1, batch), jnp.int32),
        }
        start = time.perf_counter()
        analysis = step.lower(rstate, rbatch).compile().memory_analysis()
        row["compile_s"] = time.perf_counter() - start
        row["temp_mib"] = analysis.temp_size_in_bytes / MIB
        row["argument_mib"] = analysis.argument_size_in_bytes / MIB
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="demo,stable")
    parser.add_argument("--lengths", default="512,1024")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-compile", action="store_true", help="residuals only")
    parser.add_argument("--out", default="bench_memory.json")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        for length in map(int, args.lengths.split(",")):
            for remat in ("none", "block"):
                rows.append(
                    measure(size, length, args.batch, remat, args.dtype, not args.no_compile)
                )
                print(json.dumps(rows[-1]), flush=True)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), batch {args.batch}, {args.dtype}")
    print(
        f"{'size':7} {'params':>11} {'L':>5} {'remat':>6} {'residual MiB':>13} "
        f"{'temp MiB':>9} {'compile s':>9}"
    )
    for r in rows:
        temp = f"{r['temp_mib']:9.1f}" if "temp_mib" in r else f"{'-':>9}"
        comp = f"{r['compile_s']:9.1f}" if "compile_s" in r else f"{'-':>9}"
        print(
            f"{r['size']:7} {r['params']:11,d} {r['length']:5d} {r['remat']:>6} "
            f"{r['residual_mib']:13.1f} {temp} {comp}"
        )
    with open(args.out, "w") as f:
        json.dump({"device": str(device), "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
