"""Benchmark: network calls, seconds and oracle TV of each absorbing-graph sampler.

    python scripts/bench_samplers.py [--steps 128,1024] [--batch 64] [--length 128]

The score is the exact oracle of i.i.d. tokens (`diffusion.oracles`), so the token law
of the samples is known: TV is 0.5 sum |freq - p| over the B x L drawn tokens (sampling
error alone is about sqrt(V / (2 pi B L))). Seconds are the median of 3 jitted runs
after a compile run; the oracle is cheap, so seconds understate what skipped calls save
with a network: the calls column is the cost model for a trained network. remdm rows:
the default cap schedule (eta 0.008), rescale at eta 0.5 and conf (`diffusion/remdm.py`).
"""

from __future__ import annotations

import argparse
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="128,1024")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
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
