"""Benchmark: network calls, seconds and oracle TV of each absorbing-graph sampler; with
`--workdir`, the same samplers on a trained protein run with its sample statistics.

    python scripts/bench_samplers.py [--steps 128,1024] [--batch 64] [--length 128]
    python scripts/bench_samplers.py --workdir=runs/demo [--steps 1024] [--batch 64]

The score is the exact oracle of i.i.d. tokens (`diffusion.oracles`), so the token law
of the samples is known: TV is 0.5 sum |freq - p| over the B x L drawn tokens (sampling
error alone is about sqrt(V / (2 pi B L))). Seconds are the median of 3 jitted runs
after a compile run; the oracle is cheap, so seconds understate what skipped calls save
with a network: the calls column is the cost model for a trained network. remdm rows:
the default cap schedule (eta 0.008), rescale at eta 0.5 and conf (`diffusion/remdm.py`).

`--workdir` (a single-track protein run, e.g. `configs/demo.py`): every sampler draws
`--batch` proteins per repeat (`--repeats` seeds; the same lengths, drawn once from the
run's training length distribution) with its EMA weights; reported per sampler: network
calls, median seconds per batch (after a compile run), and per repeat's batch the
composition KL to the run's training proteins, mean length, unique fraction, mean
pairwise identity (diversity) and rep-3, as mean ± standard error over the repeats. The
row "euler (other seeds)" (`euler_other`) is euler again on fresh seeds: the difference
between the two euler rows is what sampling noise alone gives. `--samplers` picks rows.
Writes `--out` JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.diffusion.graphs import Absorbing
from sedd_jax.diffusion.noise import LogLinearNoise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.remdm import RemdmSettings
from sedd_jax.diffusion.sampling import pc_sample

P = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.01, 0.01])
SAMPLERS = {  # row label: (predictor, remdm settings)
    "euler": ("euler", None),
    "analytic": ("analytic", None),
    "cached": ("cached", None),
    "first_hitting": ("first_hitting", None),
    "remdm cap 0.008": ("remdm", RemdmSettings("cap", 0.008)),
    "remdm rescale 0.5": ("remdm", RemdmSettings("rescale", 0.5)),
    "remdm conf": ("remdm", RemdmSettings("conf")),
}


TRAINED = {  # key: (row label, sampling-config overrides, seed offset)
    "euler": ("euler", {"predictor": "euler"}, 0),
    "euler_other": ("euler (other seeds)", {"predictor": "euler"}, 100),
    "analytic": ("analytic", {"predictor": "analytic"}, 0),
    "cached": ("cached", {"predictor": "cached"}, 0),
    "first_hitting": ("first_hitting", {"predictor": "first_hitting"}, 0),
    "remdm": ("remdm cap 0.008", {"predictor": "remdm"}, 0),
}
STATISTICS = ("composition KL", "length", "unique", "pairwise identity", "rep-3")
TRAINED_COLUMNS = ("sampler", "steps", "calls", "seconds", "speed-up", *STATISTICS)


def sample_statistics(sequences: list[str], reference: list[str]) -> dict:
    """The compared statistics of one set of sampled proteins."""
    from sedd_jax.metrics.alignment import pairwise_identities
    from sedd_jax.metrics.protein import composition_kl, sequence_statistics

    stats = sequence_statistics(sequences)
    return {
        "composition KL": composition_kl(sequences, reference),
        "length": stats["length_mean"],
        "unique": stats["unique_fraction"],
        "pairwise identity": float(pairwise_identities(sequences).mean()),
        "rep-3": stats["rep_3"],
    }


def trained_rows(
    workdir: str, steps_list: list[int], batch: int, repeats: int, samplers, seed: int = 0
):
    """Each sampler of TRAINED (keys `samplers`, "euler" first) at each step count on the
    protein run at `workdir`. Statistics: the mean over repeats and its standard error."""
    from ml_collections import ConfigDict

    from sedd_jax.common.generation import draw_lengths, initial_tokens, tokenizer_forbidden
    from sedd_jax.data.smiles import SmilesTokenizer
    from sedd_jax.diffusion.parametrisation import parametrisation_of
    from sedd_jax.runs import open_run
    from sedd_jax.sample_report import reference_from_data
    from sedd_jax.training.generation import make_sampler

    run = open_run(workdir)
    config, tokenizer = run.config, run.tokenizers.track
    if run.kind != "single" or isinstance(tokenizer, SmilesTokenizer):
        raise SystemExit(f"{workdir}: not a protein run; --workdir takes a protein run")
    graph, noise, model = run.components.graph, run.components.noise, run.components.model
    reference = reference_from_data(config, run.data())[0]["proteins"]
    lengths = draw_lengths(
        batch, 0, config.data.max_len, run.meta["length_distribution"], np.random.default_rng(seed)
    )
    x_init, valid = initial_tokens(lengths, config.data.max_len, graph.mask_id, tokenizer.pad_id)
    inputs = (run.params("ema"), jnp.asarray(x_init), jnp.asarray(valid), jnp.zeros_like(valid))
    forbidden = jnp.asarray(tokenizer_forbidden(graph, tokenizer))
    rows = []
    for steps in steps_list:
        for name in samplers:
            label, overrides, offset = TRAINED[name]
            sc = ConfigDict(dict(config.sampling.to_dict(), steps=steps, **overrides))
            sampler = make_sampler(
                model, graph, noise, sc, parametrisation_of(config), return_calls=True
            )
            jax.block_until_ready(sampler(*inputs, jax.random.key(seed + 10**6), forbidden))
            times, per_repeat = [], []
            for r in range(repeats):
                start = time.perf_counter()
                tokens, calls = jax.block_until_ready(
                    sampler(*inputs, jax.random.key(seed + offset + r), forbidden)
                )
                times.append(time.perf_counter() - start)
                decoded = tokenizer.decode_batch(np.asarray(tokens), valid)
                per_repeat.append(sample_statistics(decoded, reference))
            row = {"sampler": label, "steps": steps, "calls": int(calls)}
            row["seconds"] = statistics.median(times)
            for stat in STATISTICS:
                values = np.array([p[stat] for p in per_repeat])
                se = values.std(ddof=1) / np.sqrt(repeats) if repeats > 1 else float("nan")
                row[stat], row[stat + " se"] = float(values.mean()), float(se)
            rows.append(row)
            euler = next(r for r in rows if r["steps"] == steps and r["sampler"] == "euler")
            row["speed-up"] = euler["seconds"] / row["seconds"]
            print(" | ".join(_cell(row, c) for c in TRAINED_COLUMNS), flush=True)
    return rows


def _cell(row: dict, column: str) -> str:
    value = row[column]
    if column + " se" in row:
        return f"{value:.4f} ± {row[column + ' se']:.4f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="128,1024")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--workdir", default="", help="a trained protein run (see above)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samplers", default=",".join(TRAINED), help="--workdir rows")
    parser.add_argument("--out", default="bench_samplers.json")
    args = parser.parse_args()
    if args.workdir:
        print(" | ".join(TRAINED_COLUMNS))
        steps = [int(s) for s in args.steps.split(",")]
        samplers = args.samplers.split(",")
        unknown = sorted(set(samplers) - set(TRAINED))
        if unknown or samplers[0] != "euler":
            raise SystemExit(f"--samplers: euler first, then any of {list(TRAINED)}: {unknown}")
        rows = trained_rows(args.workdir, steps, args.batch, args.repeats, samplers)
        with open(args.out, "w") as f:
            json.dump({"workdir": args.workdir, "batch": args.batch, "rows": rows}, f, indent=1)
        return
    graph = Absorbing(len(P))
    fn = unigram_log_score_fn(jnp.log(P), graph)
    x0 = jnp.full((args.batch, args.length), graph.mask_id, jnp.int32)
    print("| sampler | steps | network calls | seconds | TV |")
    print("|---|---:|---:|---:|---:|")
    for steps in [int(s) for s in args.steps.split(",")]:
        for label, (predictor, remdm) in SAMPLERS.items():
            run = jax.jit(
                lambda key, p=predictor, s=steps, r=remdm: pc_sample(
                    fn,
                    graph,
                    LogLinearNoise(1e-3),
                    x0,
                    key,
                    steps=s,
                    predictor=p,
                    remdm=r,
                    return_calls=True,
                )
            )
            jax.block_until_ready(run(jax.random.PRNGKey(0)))
            times = []
            for r in range(3):
                start = time.perf_counter()
                x, calls = jax.block_until_ready(run(jax.random.PRNGKey(r + 1)))
                times.append(time.perf_counter() - start)
            x = np.asarray(x)
            counts = np.bincount(x.ravel(), minlength=graph.dim)
            tv = 0.5 * np.abs(counts[: len(P)] / x.size - P).sum() + 0.5 * counts[-1] / x.size
            print(
                f"| {label} | {steps} | {int(calls)} | {statistics.median(times):.3f} | {tv:.4f} |"
            )


if __name__ == "__main__":
    main()
