"""Objectives on a source of known entropy: loss.type x training.time_sampling.

A first-order Markov chain over the 20 amino-acid letters (seeded random transition
matrix, Dirichlet(0.3) rows, first letter from the stationary law), sequences of L = 64:
`--sequences` of them are written as FASTA for training (`data.source=fasta`) and
`--test` others, drawn with another seed, are scored. Each configuration trains
`configs/demo.py` at the benchmark size (`BENCH_MODEL`: 64 wide, 4 blocks with MLP ratio
2, batch 64; lr 1e-3, `--lr`; `--set` changes any key) for at most `--minutes` of wall
time (the run checkpoints and stops; the learning-rate schedule is that of `--steps`),
once per `--seeds` entry (the run's `seed`: initialisation, batch order and draws), then
`python -m sedd_jax.evaluate --fasta=<test> --per_sequence=<csv> --time_samples=256` gives
its bound on each test sequence (256 times per sequence: at 64 the Monte Carlo error was
most of the gap's standard error). The truth is the exact -log p of those same sequences
under the chain, and the gap's standard error is that of the per-sequence differences
bound - truth (paired: the test set's own spread cancels; what remains is the bound's
Monte Carlo error and how unevenly the model misses). Every sequence has L = 64 =
`data.max_len` (no padding, no special tokens), so the length term is 0.

    python scripts/bench_objectives.py --minutes 5 --out bench_objectives.json
    python scripts/bench_objectives.py --configs masked_ce:antithetic --seeds 0,1,2
    # the recommended configuration (0.46 % above the truth on average over seeds 0-4 in
    # 5 minutes on a 2-core Intel Xeon; docs/benchmarks.md)
    python scripts/bench_objectives.py --configs masked_ce:antithetic --lr 2e-3 \
        --steps auto --seeds 0,1,2,3,4 --set optim.optimizer=muon

`--steps auto` fits the schedule to the cap on this machine (`fit_steps`: a short probe
run of each configuration, outside the cap), so the schedule anneals inside the budget
whatever the machine's speed.

Prints a table (bound and truth in nats per sequence, the gap relative to the truth), per
configuration the mean, least and greatest gap over the seeds (runs of one configuration
differ by more than one run's standard error), and writes JSON with the CPU model.

`--breakdown N` (default 10; 0: off) also says where each run's gap lies: over N time
bins, the bound's integrand with the run's network against the same integrand with the
chain's exact conditionals on the same masked sequences (`gap_by_time`; ~20 s per run,
after its training, outside the cap). The bins sum to the gap up to Monte Carlo error.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile

import numpy as np
from bench_utils import add_set_flag, cpu_model, parse_sets, python_module

from sedd_jax.common.metrics_log import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LETTERS = "ACDEFGHIKLMNPQRSTVWY"
# the model and harness of the benchmark: 3,500 steps in 5 CPU-minutes (2 cores); four
# blocks with a narrow MLP beat two or three full ones at equal time (docs/benchmarks.md);
# the in-training evaluation and samples cut to a token (the test set is scored after)
BENCH_MODEL = {
    "model.hidden": 64,
    "model.n_blocks": 4,
    "model.mlp_ratio": 2,
    "model.cond_dim": 32,
    "training.batch_size": 64,
    "eval.max_batches": 1,
    "sampling.num_samples": 1,
    "sampling.steps": 8,
}
PROBE_STEPS = 150  # `--steps auto`: the probe run that times a step
CONFIGS = (
    "score_entropy:uniform,score_entropy:antithetic,masked_ce:uniform,masked_ce:antithetic,"
    "masked_ce:mask_count"
)


def markov_chain(seed: int = 0, concentration: float = 0.3):
    """(stationary law [20], transition [20, 20], entropy rate in nats/symbol)."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(20, concentration), size=20)
    evals, evecs = np.linalg.eig(trans.T)
    stat = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    stat = stat / stat.sum()
    rate = float(-(stat[:, None] * trans * np.log(np.maximum(trans, 1e-300))).sum())
    return stat, trans, rate


def sample_chain(n: int, length: int, stat, trans, rng) -> np.ndarray:
    """[n, length] symbol ids: x_1 ~ stat, x_i ~ trans[x_{i-1}] (inverse-CDF draws)."""
    x = np.empty((n, length), np.int64)
    x[:, 0] = np.minimum(np.searchsorted(np.cumsum(stat), rng.random(n)), 19)
    cdf = np.cumsum(trans, axis=1)
    for i in range(1, length):
        rows = cdf[x[:, i - 1]]
        x[:, i] = np.minimum((rows < rng.random(n)[:, None]).sum(axis=1), 19)
    return x


def chain_nll(x: np.ndarray, stat, trans) -> np.ndarray:
    """[n] exact -log p(x) in nats."""
    log_p = np.log(stat[x[:, 0]]) + np.log(trans[x[:, :-1], x[:, 1:]]).sum(axis=1)
    return -log_p


def chain_conditionals(x: np.ndarray, masked: np.ndarray, stat, trans) -> np.ndarray:
    """[n, L, 20] log p(x_i = y | the unmasked symbols of x) at every position.

    For a first-order chain only the nearest unmasked symbol on each side matters: l at
    distance a to the left, r at distance b to the right give p(y) proportional to
    (T^a)[l, y] (T^b)[y, r]; with none to the left the stationary law replaces the first
    factor, with none to the right the second is 1. Computed at every position.
    """
    n, length = x.shape
    powers = [np.eye(20)]
    for _ in range(length):
        powers.append(powers[-1] @ trans)
    powers = np.stack(powers)  # [L + 1, 20, 20]
    pos = np.arange(length)
    visible = ~masked
    # nearest visible index strictly left / right of each position (-1 / L: none)
    left = np.maximum.accumulate(np.where(visible, pos, -1), axis=1)
    left = np.concatenate([np.full((n, 1), -1), left[:, :-1]], axis=1)
    right = np.minimum.accumulate(np.where(visible, pos, length)[:, ::-1], axis=1)[:, ::-1]
    right = np.concatenate([right[:, 1:], np.full((n, 1), length)], axis=1)
    rows = np.arange(n)[:, None]
    has_left, has_right = left >= 0, right < length
    l_sym = x[rows, np.clip(left, 0, length - 1)]
    r_sym = x[rows, np.clip(right, 0, length - 1)]
    from_left = np.where(
        has_left[..., None], powers[np.where(has_left, pos - left, 0), l_sym], stat
    )
    columns = powers[np.where(has_right, right - pos, 0)]  # [n, L, 20, 20]
    column = np.take_along_axis(columns, r_sym[..., None, None], axis=-1)[..., 0]
    to_right = np.where(has_right[..., None], column, 1.0)
    p = from_left * to_right
    with np.errstate(divide="ignore"):
        return np.log(p / p.sum(-1, keepdims=True))


def gap_by_time(workdir: str, test_x: np.ndarray, stat, trans, bins: int, draws: int):
    """`excess_by_time` of the trained run in `workdir` (EMA weights, its own
    parametrisation) on the test sequences test_x [n, L] (symbol ids)."""
    import jax.numpy as jnp

    from sedd_jax.diffusion.parametrisation import applied_log_score_fn, parametrisation_of
    from sedd_jax.runs import open_run

    run = open_run(workdir)
    graph, noise, model = run.components.graph, run.components.noise, run.components.model
    valid = jnp.ones(test_x.shape, bool)
    fn = applied_log_score_fn(
        model, run.params("ema"), valid, parametrisation_of(run.config), graph.mask_id
    )
    ids = np.asarray(run.tokenizers.track.encode(LETTERS))
    return excess_by_time(fn, graph, noise, ids, test_x, stat, trans, bins, draws)


def excess_by_time(log_score_fn, graph, noise, ids, test_x, stat, trans, bins, draws):
    """Where a model's bound exceeds the truth, per time bin [k/bins, (k+1)/bins).

    At times drawn uniformly in each bin, the test sequences test_x [n, L] (symbol ids;
    `ids` maps them to token ids) are masked as the forward process masks them, and the
    bound's integrand (`per_token_loss`, the evaluator's term) is computed twice on the
    same x_t: with `log_score_fn(x_t, sigma)` and with the exact conditionals of the chain
    (`chain_conditionals`, mapped to log-scores by RADD's relation). Their difference,
    integrated over the bin, is the bin's share of the gap in nats per sequence (the bins
    sum to the diffusion part of bound - truth, up to Monte Carlo error; the prior term is
    the same for both); `kl_per_masked` is the mean excess -log p per masked letter.
    """
    import jax
    import jax.numpy as jnp

    from sedd_jax.diffusion.losses import per_token_loss
    from sedd_jax.diffusion.parametrisation import mean_to_log_score

    x0 = jnp.asarray(ids[test_x], jnp.int32)
    valid = jnp.ones(x0.shape, bool)

    @jax.jit
    def terms(x_t, t, exact_log_p):
        def oracle(x, sigma):
            logits = jnp.full((*x.shape, graph.dim), -1e4).at[..., ids].set(exact_log_p)
            return mean_to_log_score(logits, sigma, x, graph.mask_id)

        model_t = per_token_loss(log_score_fn, graph, noise, x0, valid, t, x_t=x_t)
        exact_t = per_token_loss(oracle, graph, noise, x0, valid, t, x_t=x_t)
        return model_t.sum(-1), exact_t.sum(-1)

    rng = np.random.default_rng(12345)
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        excess, masked_count, kl_sum = [], 0, 0.0
        for _ in range(draws):
            t = lo + (hi - lo) * rng.random(len(test_x))
            sigma, dsigma = (np.asarray(v) for v in noise(jnp.asarray(t, jnp.float32)))
            masked = rng.random(test_x.shape) < -np.expm1(-sigma)[:, None]
            exact = chain_conditionals(test_x, masked, stat, trans)
            x_t = jnp.where(jnp.asarray(masked), graph.mask_id, x0)
            m, e = terms(x_t, jnp.asarray(t, jnp.float32), jnp.asarray(exact, jnp.float32))
            diff = np.asarray(m) - np.asarray(e)  # [n] nats, weighted by dsigma / expm1(sigma)
            excess.append(float(diff.mean()) * (hi - lo))
            masked_count += int(masked.sum())
            kl_sum += float((diff * np.expm1(sigma) / dsigma).sum())
        rows.append(
            {
                "t_from": lo,
                "t_to": hi,
                "excess_nats_per_sequence": float(np.mean(excess)),
                "kl_per_masked": kl_sum / max(masked_count, 1),
            }
        )
    return rows


def write_fasta(path: str, x: np.ndarray) -> None:
    with open(path, "w") as f:
        for i, row in enumerate(x):
            f.write(f">s{i}\n{''.join(LETTERS[k] for k in row)}\n")


def train_overrides(args, fasta, loss_type, time_sampling, seed: int, steps: int) -> dict:
    return (
        BENCH_MODEL
        | {
            "seed": seed,
            "data.source": "fasta",
            "data.path": fasta,
            "data.max_len": 64,
            "loss.type": loss_type,
            "training.time_sampling": time_sampling,
            "training.n_steps": steps,
            "training.eval_every": 10**9,  # the test set is scored after training
            "training.log_every": 100,
            "optim.lr": args.lr,
            "eval.sample_metrics_num": 0,
            "logging.progress_bar": False,
        }
        | parse_sets(args.set, "bench_objectives")
    )


def train(overrides: dict, workdir: str, deadline_s: float = 0) -> float:
    """`python -m sedd_jax.train` on configs/demo.py with `overrides`; its wall seconds."""
    train_args = [f"--config={os.path.join(REPO, 'configs', 'demo.py')}", f"--workdir={workdir}"]
    train_args += [f"--config.{k}={v}" for k, v in overrides.items()]
    return python_module("sedd_jax.train", train_args, dict(os.environ), workdir + ".train.log",
                         deadline_s)  # fmt: skip


def fit_steps(args, fasta, loss_type, time_sampling, seed: int, workdir: str) -> dict:
    """The schedule length this machine finishes inside the cap (`--steps auto`): a probe
    run of PROBE_STEPS steps gives the median step time s and the fixed cost c (start-up,
    compile, final checkpoint: the probe's wall time minus its steps); the schedule is
    0.94 (cap - c) / s steps, so that it anneals before the cap instead of being cut
    early (a cut cosine ends at a higher learning rate). A long run steps 5-8 % slower
    than the probe (0.080-0.085 against 0.076-0.079 s on an Intel Xeon), so the cap may
    still cut the last ~1 % of the schedule, where the rate is at its floor."""
    overrides = train_overrides(args, fasta, loss_type, time_sampling, seed, PROBE_STEPS)
    wall = train(overrides | {"training.log_every": 25}, workdir)
    step_s = float(np.median([r["train/step_time_s"] for r in read_metrics(workdir)
                              if "train/step_time_s" in r]))  # fmt: skip
    fixed_s = max(wall - PROBE_STEPS * step_s, 0.0)
    steps = int(0.94 * (args.minutes * 60 - fixed_s) / step_s)
    return {"schedule_steps": steps, "probe_step_s": step_s, "probe_fixed_s": fixed_s}


def run(args, fasta, test, truth: dict, loss_type, time_sampling, seed, steps, workdir, chain):
    """Trains and scores one configuration; `truth`: test sequence -> exact -log p."""
    env = dict(os.environ)
    overrides = train_overrides(args, fasta, loss_type, time_sampling, seed, steps)
    train_s = train(overrides, workdir, args.minutes * 60)
    done = max((r["step"] for r in read_metrics(workdir) if "step" in r), default=0)
    scores = workdir + ".scores.csv"
    eval_args = [f"--workdir={workdir}", f"--fasta={test}", f"--per_sequence={scores}"]
    eval_args += [f"--time_samples={args.time_samples}"]
    python_module("sedd_jax.evaluate", eval_args, env, workdir + ".eval.log")
    with open(scores) as f:
        rows = list(csv.DictReader(f))
    bound = np.array([float(r["nll_nats"]) for r in rows])
    exact = np.array([truth[r["sequence"]] for r in rows])
    diff = bound - exact
    by_time = []
    if args.breakdown:
        test_x, stat, trans = chain
        by_time = gap_by_time(workdir, test_x, stat, trans, args.breakdown, args.breakdown_draws)
    return {
        "loss": loss_type,
        "time_sampling": time_sampling,
        "seed": seed,
        "steps": done,
        "schedule_steps": steps,
        "train_seconds": round(train_s, 1),
        "sequences": len(rows),
        "bound_nats_per_sequence": float(bound.mean()),
        "truth_nats_per_sequence": float(exact.mean()),
        "gap": float(diff.mean() / exact.mean()),
        "gap_se": float(diff.std(ddof=1) / np.sqrt(len(diff)) / exact.mean()),
        "by_time": by_time,
    }


def print_breakdown(results: list, truth: float) -> None:
    """One row per time bin, one column per run: the bin's share of the gap (% of the
    truth) and the excess -log p per masked letter (nats)."""
    names = [f"{r['loss']}:{r['time_sampling']} seed {r['seed']}" for r in results]
    print("\nWhere the gap lies (share of the truth; excess nats per masked letter):")
    print("| t | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for k, row in enumerate(results[0]["by_time"]):
        cells = [
            f"{100 * b['excess_nats_per_sequence'] / truth:.3f} % ({b['kl_per_masked']:.4f})"
            for b in (r["by_time"][k] for r in results)
        ]
        print(f"| {row['t_from']:.2f}-{row['t_to']:.2f} | " + " | ".join(cells) + " |")
    totals = [sum(b["excess_nats_per_sequence"] for b in r["by_time"]) for r in results]
    print("| all | " + " | ".join(f"{100 * x / truth:.3f} %" for x in totals) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=CONFIGS, help="loss.type:time_sampling,...")
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-time cap")
    ap.add_argument(
        "--steps", default="3500", help="the schedule's length, or 'auto': fit it to the cap"
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--sequences", type=int, default=200000, help="training sequences")
    ap.add_argument("--seeds", default="0", help="comma-separated run seeds, each config")
    ap.add_argument("--test", type=int, default=512)
    ap.add_argument("--time_samples", type=int, default=256)
    ap.add_argument("--keep", default="", help="keep the runs in this directory")
    ap.add_argument("--breakdown", type=int, default=10, help="time bins of the gap (0: none)")
    ap.add_argument("--breakdown_draws", type=int, default=4, help="masks per sequence and bin")
    ap.add_argument("--out", default="bench_objectives.json")
    add_set_flag(ap)
    args = ap.parse_args()
    stat, trans, rate = markov_chain(0)
    train_x = sample_chain(args.sequences, 64, stat, trans, np.random.default_rng(1))
    test_x = sample_chain(args.test, 64, stat, trans, np.random.default_rng(2))
    test_nll = chain_nll(test_x, stat, trans)
    names = ["".join(LETTERS[k] for k in row) for row in test_x]
    truth = dict(zip(names, test_nll.tolist(), strict=True))
    print(f"CPU: {cpu_model()}; entropy rate {rate:.4f} nats/symbol; test -log p "
          f"{test_nll.mean():.3f} nats/sequence")  # fmt: skip
    print("| loss.type | time_sampling | seed | steps (schedule) | train s | bound | truth | gap |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    results = []
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        os.makedirs(root, exist_ok=True)
        fasta, test = os.path.join(root, "train.fasta"), os.path.join(root, "test.fasta")
        write_fasta(fasta, train_x)
        write_fasta(test, test_x)
        for config in args.configs.split(","):
            loss_type, time_sampling = config.split(":")
            fit = {}
            if args.steps == "auto":  # one probe per configuration, on its first seed
                probe = os.path.join(root, f"{loss_type}_{time_sampling}_probe")
                fit = fit_steps(args, fasta, loss_type, time_sampling, seeds[0], probe)
                step_s, fixed_s = fit["probe_step_s"], fit["probe_fixed_s"]
                print(f"# {config}: {step_s:.4f} s/step, {fixed_s:.1f} s fixed: "
                      f"a schedule of {fit['schedule_steps']} steps")  # fmt: skip
            steps = fit.get("schedule_steps") or int(args.steps)
            for seed in seeds:
                workdir = os.path.join(root, f"{loss_type}_{time_sampling}_seed{seed}")
                chain = (test_x, stat, trans)
                r = run(args, fasta, test, truth, loss_type, time_sampling, seed, steps, workdir,
                        chain)  # fmt: skip
                r |= fit
                results.append(r)
                print(
                    f"| {loss_type} | {time_sampling} | {seed} | "
                    f"{r['steps']} ({r['schedule_steps']}) | "
                    f"{r['train_seconds']} | {r['bound_nats_per_sequence']:.3f} | "
                    f"{r['truth_nats_per_sequence']:.3f} | "
                    f"{100 * r['gap']:.2f} ± {100 * r['gap_se']:.2f} % |",
                    flush=True,
                )
    if len(seeds) > 1:
        print("\n| loss.type | time_sampling | seeds | mean gap | least | greatest |")
        print("|---|---|---:|---:|---:|---:|")
        for config in args.configs.split(","):
            loss_type, time_sampling = config.split(":")
            gaps = [
                r["gap"]
                for r in results
                if (r["loss"], r["time_sampling"]) == (loss_type, time_sampling)
            ]
            print(f"| {loss_type} | {time_sampling} | {len(gaps)} | {100 * np.mean(gaps):.2f} % | "
                  f"{100 * min(gaps):.2f} % | {100 * max(gaps):.2f} % |")  # fmt: skip
    if args.breakdown:
        print_breakdown(results, float(test_nll.mean()))
    summary = {
        "cpu": cpu_model(),
        "entropy_rate_nats": rate,
        "test_nats_per_sequence": float(test_nll.mean()),
        "args": vars(args),
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
