"""Benchmark: the JAX train step under process-level settings (allocator, XLA flags), A/B.

    python scripts/bench_env.py [--size stable] [--settings default,glibc_thp,jemalloc,...]
        [--rounds 2] [--repeats 3] [--out bench_env.json]

Settings that must be fixed before the process starts (LD_PRELOAD, MALLOC_*, XLA_FLAGS)
cannot be A/B-ed in one process, so each round runs `bench_train.py --modes jit
--no-torch` once per setting, in turn (round-robin: A B C A B C ...), each under
`/usr/bin/time -v`. Per setting: the median step over all its rounds, the median minor
page faults per step (getrusage around the step, from bench_train), the process's
maximum RSS, and the XLA matmul peak that process measured (a setting may change it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

LIB = "/usr/lib/x86_64-linux-gnu"
SETTINGS = {
    "default": {},
    # glibc: madvise(MADV_HUGEPAGE) on its mmaps (THP is `madvise` on most hosts)
    "glibc_thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    # glibc: never mmap, never trim: freed buffers stay mapped in the heap
    "glibc_nommap": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)},
    # ... and one arena: per-thread arena heaps are unmapped whenever they empty, whatever
    # the trim threshold, so only the main (sbrk) heap keeps freed pages
    "glibc_one_arena": {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
        f"glibc.malloc.trim_threshold={2**40}"
    },
    "jemalloc": {"LD_PRELOAD": f"{LIB}/libjemalloc.so.2"},
    "jemalloc_thp": {
        "LD_PRELOAD": f"{LIB}/libjemalloc.so.2",
        "MALLOC_CONF": "thp:always,metadata_thp:auto",
    },
    "tcmalloc": {"LD_PRELOAD": f"{LIB}/libtcmalloc_minimal.so.4"},
    "xla_no_ynn": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="},
    "xla_vector512": {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"},
    "xla_concurrency_scheduler": {
        "XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    },
    "xla_xnnpack": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"},
    "xla_onednn": {"XLA_FLAGS": "--xla_cpu_use_onednn=true"},
}


def run_once(name: str, size: str, repeats: int, workdir: str, index: int) -> dict:
    out = os.path.join(workdir, f"{name}_{index}.json")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_train.py")
    command = ["/usr/bin/time", "-v", sys.executable, script, "--sizes", size, "--modes"]
    command += ["jit", "--no-torch", "--repeats", str(repeats), "--pause", "0.5", "--out", out]
    command += ["--allocator", "system"]  # the setting's environment, nothing added
    env = dict(os.environ, **SETTINGS[name])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"setting": name, "error": done.stderr[-2000:]}
    row = json.load(open(out))["rows"][0]

    def field(label):
        return int(re.search(rf"{label}: (\d+)", done.stderr).group(1))

    return {
        "setting": name,
        "step_s_all": row["step_s_all"],
        "compile_s": row["compile_s"],
        "minflt_step": row["minflt"],
        "rss_step_mib": row["rss_step_mib"],
        "max_rss_mib": field(r"Maximum resident set size \(kbytes\)") / 1024,
        "minflt_process": field(r"Minor \(reclaiming a frame\) page faults"),
        "peak_gflops_xla": row["peak_gflops_xla"],
        "peak_gflops_torch": row["peak_gflops_torch"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="stable")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench_env.json")
    args = parser.parse_args()
    names = args.settings.split(",")
    load = os.getloadavg()
    runs = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as workdir:
        for index in range(args.rounds):
            for name in names:
                runs[name].append(run_once(name, args.size, args.repeats, workdir, index))
                print(json.dumps(runs[name][-1])[:300], flush=True)
    rows = []
    for name in names:
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            rows.append({"setting": name, "error": runs[name][0]["error"]})
            continue
        steps = [s for r in good for s in r["step_s_all"]]
        rows.append(
            {
                "setting": name,
                "env": SETTINGS[name],
                "step_s": statistics.median(steps),
                "steps": len(steps),
                "minflt_step": statistics.median(r["minflt_step"] for r in good),
                "max_rss_mib": max(r["max_rss_mib"] for r in good),
                "peak_gflops_xla": max(r["peak_gflops_xla"] for r in good),
                "peak_gflops_torch": max(r["peak_gflops_torch"] for r in good),
                "compile_s": statistics.median(r["compile_s"] for r in good),
            }
        )
    base = next((r for r in rows if r["setting"] == "default" and "step_s" in r), None)
    print(
        f"size {args.size}, {args.rounds} rounds x {args.repeats} steps per setting; load "
        f"average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print(
        f"{'setting':14} {'step s':>8} {'/ default':>9} {'faults/step':>11} {'max RSS MiB':>11} "
        f"{'XLA peak':>8} {'torch peak':>10} {'compile s':>9}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['setting']:14} failed: {r['error'][-200:]!r}")
            continue
        ratio = f"{r['step_s'] / base['step_s']:9.2f}" if base else f"{'-':>9}"
        print(
            f"{r['setting']:14} {r['step_s']:8.3f} {ratio} {r['minflt_step']:11.0f} "
            f"{r['max_rss_mib']:11.0f} {r['peak_gflops_xla']:8.0f} "
            f"{r['peak_gflops_torch']:10.0f} {r['compile_s']:9.1f}"
        )
    with open(args.out, "w") as f:
        json.dump({"load": [load, os.getloadavg()], "rows": rows, "runs": runs}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
