"""Data-path benchmark: prepare time, loader throughput, RSS over an epoch, padding, margin.

    python scripts/bench_data.py [--shards DIR] [--workers 0,2] [--json bench_data.json]

Prepares the 20,000 mmseqs2-examples sequences (unless --shards is given), then reads three
epochs of stable-config batches (B=128, L=512, random crops) with the grain loader at each
worker count, sampling the RSS of the loader's process tree; measures the pad fraction with
and without length bucketing; compares random reads from the flat memmapped shards with
ArrayRecord; and sets the loader's rate against what one 66.7M stable step consumes
(B x L = 128 x 512 tokens): on this CPU (docs/benchmarks.md: 11.54 s for B=4, L=512) and
on an H100 (an estimate from the model FLOPs; see `H100_*`). Prints a table, writes JSON.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sedd_jax.data.loader import FieldSpec, ShardLoader, pad_fraction  # noqa: E402
from sedd_jax.data.prepare import prepare  # noqa: E402
from sedd_jax.data.shards import ShardSet  # noqa: E402

B, L = 128, 512
STABLE_PARAMS, BLOCKS, D = 66_724_096, 8, 768
CPU_STEP_S, CPU_STEP_TOKENS = 11.54, 4 * 512  # docs/benchmarks.md, this machine, fp32
H100_BF16_PEAK = 989e12  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core FLOP/s
H100_MFU = 0.40  # assumed model-FLOP utilisation for a d=768 transformer at L=512


def step_flops(batch: int, length: int) -> float:
    """6 x params x tokens + attention (12 x blocks x B x L^2 x d), as scripts/bench_train.py."""
    return 6 * STABLE_PARAMS * batch * length + 12 * BLOCKS * batch * length**2 * D


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def read_epochs(source, workers: int, epochs: int = 3, bucket_window: int = 0) -> dict:
    spec = FieldSpec("tokens", "tokens", "valid", L, 1, "random")
    loader = ShardLoader(
        source, [spec], B, seed=0, num_workers=workers, prefetch=4, bucket_window=bucket_window
    )
    steps = epochs * loader.steps_per_epoch
    it = loader.iterate(0)
    first = next(it)  # worker start-up is not throughput
    rss, valid, positions = [tree_rss(os.getpid())], int(first["valid"].sum()), 0
    t0 = time.perf_counter()
    for i in range(1, steps):
        batch = next(it)
        valid += int(batch["valid"].sum())
        positions += batch["valid"].size
        if i % 10 == 0:
            rss.append(tree_rss(os.getpid()))
    seconds = time.perf_counter() - t0
    rss.append(tree_rss(os.getpid()))
    it.close()
    return {
        "workers": workers,
        "epochs": epochs,
        "steps": steps,
        "seconds": seconds,
        "sequences_per_s": (steps - 1) * B / seconds,
        "padded_tokens_per_s": positions / seconds,
        "valid_tokens_per_s": (valid - int(first["valid"].sum())) / seconds,
        "rss_mb_first": rss[0] / 2**20,
        "rss_mb_last": rss[-1] / 2**20,
        "rss_mb_max": max(rss) / 2**20,
    }


def pad_fractions(source) -> dict:
    out = {}
    for window in (0, 16):
        spec = FieldSpec("tokens", "tokens", "valid", L, 1, "random")
        loader = ShardLoader(source, [spec], B, seed=0, bucket_window=window)
        batches = [loader.batch(s) for s in range(loader.steps_per_epoch)]
        out[f"bucket_window={window}"] = {
            "pad_fraction": pad_fraction(batches),
            "shapes": sorted({b["tokens"].shape[1] for b in batches}),
        }
    return out


def record_formats(source, directory: str, reads: int = 20_000) -> dict:
    """Random single-record reads: flat memmap shards vs ArrayRecord (same records)."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    rng = np.random.default_rng(0)
    order = rng.integers(0, len(source), reads)
    t0 = time.perf_counter()
    for i in order.tolist():
        source[i]
    flat_s = time.perf_counter() - t0
    path = os.path.join(directory, "train.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    for i in range(len(source)):
        writer.write(source[i]["tokens"].tobytes())
    writer.close()
    reader = ArrayRecordReader(path)
    t0 = time.perf_counter()
    for i in order.tolist():
        np.frombuffer(reader.read([i])[0], np.uint8)
    ar_s = time.perf_counter() - t0
    flat_bytes = sum(
        os.path.getsize(os.path.join(source.directory, f"{n}.tokens{x}"))
        for n in source.shards
        for x in (".npy", ".offsets.npy")
    )
    return {
        "random_reads": reads,
        "flat_memmap_reads_per_s": reads / flat_s,
        "array_record_reads_per_s": reads / ar_s,
        "flat_bytes": flat_bytes,
        "array_record_bytes": os.path.getsize(path),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", default=None, help="a prepared directory (default: mmseqs)")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--json", default="bench_data.json")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_data_")
    result = {}
    directory = args.shards
    if directory is None:
        directory = os.path.join(tmp, "mmseqs")
        t0 = time.perf_counter()
        manifest = prepare("mmseqs_examples", directory, num_shards=32, workers=2, progress=False)
        result["prepare"] = {"seconds": time.perf_counter() - t0, "counts": manifest["counts"]}
    source = ShardSet(directory).source("train")
    result["epochs"] = [read_epochs(source, int(w)) for w in args.workers.split(",")]
    result["pad"] = pad_fractions(source)
    result["formats"] = record_formats(source, tmp)
    cpu_step = CPU_STEP_S * (B * L) / CPU_STEP_TOKENS
    h100_step = step_flops(B, L) / (H100_BF16_PEAK * H100_MFU)
    best = max(e["sequences_per_s"] for e in result["epochs"])
    result["consumption"] = {
        "cpu_step_s": cpu_step,
        "cpu_sequences_per_s": B / cpu_step,
        "h100_step_s_estimate": h100_step,
        "h100_sequences_per_s_estimate": B / h100_step,
        "margin_cpu": best / (B / cpu_step),
        "margin_one_h100": best / (B / h100_step),
        "margin_eight_h100": best / (8 * B / h100_step),
    }
    print(
        f"{'workers':>8} {'seq/s':>10} {'tokens/s':>12} {'valid tok/s':>12} "
        f"{'RSS MB first/last/max':>24}"
    )
    for e in result["epochs"]:
        rss = f"{e['rss_mb_first']:.0f}/{e['rss_mb_last']:.0f}/{e['rss_mb_max']:.0f}"
        print(
            f"{e['workers']:>8} {e['sequences_per_s']:>10.0f} {e['padded_tokens_per_s']:>12.0f} "
            f"{e['valid_tokens_per_s']:>12.0f} {rss:>24}"
        )
    for name, p in result["pad"].items():
        print(f"pad fraction {name}: {p['pad_fraction']:.3f} (shapes {p['shapes']})")
    f = result["formats"]
    print(
        f"random reads/s: flat memmap {f['flat_memmap_reads_per_s']:.0f}, ArrayRecord "
        f"{f['array_record_reads_per_s']:.0f}; bytes {f['flat_bytes']:,} vs "
        f"{f['array_record_bytes']:,}"
    )
    c = result["consumption"]
    print(
        f"stable step needs {c['cpu_sequences_per_s']:.2f} seq/s on this CPU, "
        f"~{c['h100_sequences_per_s_estimate']:.0f} seq/s on one H100 (estimate); loader margin "
        f"x{c['margin_cpu']:.0f} (CPU), x{c['margin_one_h100']:.2f} (1 H100), "
        f"x{c['margin_eight_h100']:.2f} (8 H100 per host)"
    )
    if "prepare" in result:
        p = result["prepare"]
        print(f"prepare 20k: {p['seconds']:.1f} s, counts {p['counts']}")
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
