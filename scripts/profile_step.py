"""Profile: where the time of one JAX train step goes, per compiled HLO op.

    python scripts/profile_step.py [--size stable] [--steps 3] [--attention current]
        [--out profile_step.json]

Builds the step of `bench_train.py` (same model, batch and optimizer; `jit` mode), runs it
once to compile, then `--steps` more under `jax.profiler.trace` and sums the duration of
every XLA op event in the trace (per op, and per kind: the op's name without its numeric
suffix, e.g. `ynn_fusion`, `loop_multiply_fusion`). Ops are also classified from the
compiled HLO text as `dot` (the op is or contains a dot / convolution) or `other`. XLA's
cost analysis of the compiled step (flops, bytes accessed) is printed alongside. Prints
a table, writes JSON. Times are per step (summed op time / steps); on a multi-threaded
CPU, ops of one step may overlap, so op time can exceed wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
from bench_train import ATTENTION, LIGAND_V, PROTEIN_V, SIZES, build, first_step, jax_step

from sedd_jax.training.throughput import model_flops

SUFFIX = re.compile(r"(\.\d+)+$")


def trace_events(log_dir: str) -> list[dict]:
    paths = glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
        raise SystemExit(f"no *.trace.json.gz under {log_dir}: the profiler wrote nothing")
    with gzip.open(max(paths, key=os.path.getmtime)) as f:
        trace = json.load(f)
    return [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]


def dot_ops(hlo_text: str) -> set[str]:
    """Names of the ops in the entry computations that are, or call, a dot/convolution."""
    computations, current = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(1)
            computations[current] = []
        elif current is not None:
            computations[current].append(line)
    has_dot = {
        name: any(re.search(r"\b(dot|convolution)\(", ln) for ln in body)
        for name, body in computations.items()
    }
    names = set()
    for body in computations.values():
        for ln in body:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?\b(dot|convolution)\(", ln)
            if m:
                names.add(m.group(1))
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*calls=%?([\w.\-]+)", ln)
            if m and has_dot.get(m.group(2)):
                names.add(m.group(1))
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="stable", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--attention", default="current", choices=sorted(ATTENTION))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="profile_step.json")
    parser.add_argument("--hlo", default="", help="also write the compiled HLO text here")
    args = parser.parse_args()

    kind, fields, config, model, params, host, _ = build(args.size)
    run, compile_s = first_step(args.attention, jax_step, kind, config, model, params, host, "jit")
    compiled = run.compiled()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    hlo_text = compiled.as_text()
    dots = dot_ops(hlo_text)
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(hlo_text)

    with tempfile.TemporaryDirectory() as log_dir:
        walls = []
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                start = time.perf_counter()
                run()
                walls.append(time.perf_counter() - start)
        events = trace_events(log_dir)

    per_op = collections.Counter()
    for e in events:
        per_op[e["name"]] += e["dur"] / 1e6 / args.steps
    ops = {name: s for name, s in per_op.items() if name in dots or SUFFIX.search(name)}
    per_kind = collections.Counter()
    per_class = collections.Counter()
    for name, s in ops.items():
        per_kind[SUFFIX.sub("", name)] += s
        per_class["dot" if name in dots else "other"] += s
    total = sum(ops.values())
    wall = min(walls)
    flops = model_flops(fields, SIZES[args.size][2], SIZES[args.size][3], (PROTEIN_V, LIGAND_V))
    print(
        f"{args.size}, attention {args.attention}: compile {compile_s:.1f} s, step wall "
        f"{wall:.3f} s (best of {args.steps}), op time {total:.3f} s/step; model "
        f"{flops:.3g} FLOP, XLA cost analysis {cost.get('flops', float('nan')):.3g} FLOP, "
        f"{cost.get('bytes accessed', float('nan')) / 2**30:.2f} GiB accessed"
    )
    print(f"{'class':8} {'s/step':>8} {'share':>6}")
    for name, s in per_class.most_common():
        print(f"{name:8} {s:8.3f} {100 * s / total:5.1f}%")
    print(f"\n{'kind':40} {'s/step':>8} {'share':>6}")
    for name, s in per_kind.most_common(args.top):
        print(f"{name:40} {s:8.3f} {100 * s / total:5.1f}%")
    print(f"\n{'op':40} {'class':6} {'s/step':>8} {'share':>6}")
    for name, s in collections.Counter(ops).most_common(args.top):
        print(f"{name:40} {'dot' if name in dots else '':6} {s:8.3f} {100 * s / total:5.1f}%")
    with open(args.out, "w") as f:
        json.dump(
            {
                "size": args.size,
                "attention": args.attention,
                "compile_s": compile_s,
                "step_wall_s": walls,
                "op_seconds_per_step": dict(ops),
                "per_kind": dict(per_kind),
                "per_class": dict(per_class),
                "model_flops": flops,
                "xla_cost": {k: float(cost[k]) for k in ("flops", "bytes accessed") if k in cost},
                "load": os.getloadavg(),
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
