"""Conditional generation against a known answer: protein families bound to drugs.

`sedd_jax/data/synthetic_pairs.py` makes F families of mutated copies of random
prototype proteins, each bound to one real drug (canonical SMILES of distinct token
lengths, from the demo pairs), so H(ligand) = log F, H(ligand | protein) ≈ 0 and
I(protein; ligand) ≈ log F exactly. The script writes the pair table, trains
`configs/joint.py` at 64 wide and batch 64 (`BENCH_MODEL`) on it (`python -m
sedd_jax.train`, data.source=pair_table, a task mix with both unconditional modes for
guidance), then on the members the trainer's split held out reports

1. the pair likelihood bounds (`python -m sedd_jax.evaluate`), nats per sequence, beside
   the exact entropies: diffusion bound given the length, the length term (the
   evaluator's when it reports one, else -log p_hat(L) of the run's training length
   distribution: the marginal), and their sum; I estimate = bound(ligand) -
   bound(ligand | protein);
2. for each guidance weight, `ligand_given_protein` samples (`python -m sedd_jax.sample`)
   that are exactly their family's drug (canonical SMILES), of its token length, valid;
3. `protein_given_ligand` samples nearest (Hamming) to their own family's prototype;
4. training wall time, steps and the CPU model (`lscpu`).

    python scripts/bench_conditioning.py --minutes=15 --out=bench_conditioning.json
    python scripts/bench_conditioning.py --quick --out=/tmp/quick.json  # 1.5 CPU-minutes

`--minutes` stops training at that wall time (SIGUSR1: the run checkpoints at the next
step and exits; the learning-rate schedule stays that of `--steps`). Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
from bench_utils import add_set_flag, cpu_model, parse_sets, python_module

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.data import synthetic_pairs as sp
from sedd_jax.data.pairs import load_demo_pairs
from sedd_jax.data.selfies import ligand_tokenizer_class
from sedd_jax.data.smiles import canonicalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The conditional directions the benchmark scores get most of the rows; the unconditional
# modes keep 0.05 each for guidance; joint generation is not scored here (docs/benchmarks.md:
# the mixes compared within the 15-minute budget)
TASK_MIX = {
    "joint": 0.0,
    "ligand_given_protein": 0.55,
    "protein_given_ligand": 0.35,
    "ligand_only": 0.05,
    "protein_only": 0.05,
}
QUICK = {
    "families": 4,
    "length": 16,
    "per_family": 40,
    "steps": 20,
    "inputs": 4,
    "per_input": 2,
    "sampling_steps": 8,
    "time_samples": 2,
    "guidance": "0,1",
}
SAMPLING_KEYS = (
    "ligand_exact",
    "ligand_right_length",
    "ligand_valid",
    "protein_nearest_own_family",
)
QUICK_MODEL = {
    "model.hidden": 32,
    "model.n_blocks_protein": 1,
    "model.n_blocks_ligand": 1,
    "model.n_heads": 2,
    "model.cond_dim": 16,
    "training.batch_size": 8,
    "eval.batch_size": 8,
    "eval.max_batches": 1,
    "optim.warmup": 5,
}
# configs/joint.py a quarter the size at twice the batch: 2.7x the rows per CPU-second
# (0.14 s per step of 64 rows against 0.2 s per 32), which learns both directions within
# 15 CPU-minutes where the demo-sized model does not for SELFIES (docs/benchmarks.md)
BENCH_MODEL = {
    "model.hidden": 64,
    "model.cond_dim": 32,
    "training.batch_size": 64,
    "optim.lr": 2e-3,
}


def train_overrides(args, data: dict, max_ligand_len: int) -> dict:
    steps = args.steps
    overrides = {
        "data.source": "pair_table",
        "data.path": data["paths"]["pairs.csv"],
        "data.binders": "all",  # every synthetic pair binds (the demo's filter is by affinity)
        "data.val_fraction": args.val_fraction,
        "data.max_protein_len": args.length,
        "data.max_ligand_len": max_ligand_len,
        "data.ligand_representation": args.representation,
        "training.n_steps": steps,
        "training.eval_every": steps,
        "training.checkpoint_every": steps,
        "training.log_every": max(1, min(50, steps // 4)),
        "eval.sample_metrics_num": 0,
        "sampling.num_samples": 2,
        "sampling.steps": args.sampling_steps,
        "logging.progress_bar": False,
        **{f"task.{k}": v for k, v in TASK_MIX.items()},
        **BENCH_MODEL,
    }
    if args.width:
        overrides["model.hidden"] = args.width
    overrides |= QUICK_MODEL if args.quick else {}
    return overrides | parse_sets(args.set, "bench_conditioning")


def length_terms(run, track: str) -> np.ndarray:
    """-log p_hat(L) [N] of the held-out pairs under the run's training length law."""
    from sedd_jax.diffusion.likelihood import length_log_probs

    val = run.data().val
    lengths = np.asarray(val[f"{track}_valid"]).sum(axis=1)
    log_p = length_log_probs(run.meta[f"{track}_length_distribution"], val[track].shape[1])
    return -log_p[lengths]


def bounds(evaluated: dict, run) -> dict:
    """Per task and track: diffusion bound | L, length term, total (nats per sequence)."""
    out = {}
    for task, track in (
        ("ligand_given_protein", "ligand"),
        ("ligand_only", "ligand"),
        ("protein_given_ligand", "protein"),
        ("protein_only", "protein"),
    ):
        r = evaluated["tasks"][task][track]
        if "with_length_nats_per_sequence" in r:
            length, source = r["length_nats_per_sequence"], "evaluator"
        else:
            length, source = float(length_terms(run, track).mean()), "marginal p_hat(L)"
        bound = r["nats_per_sequence"]
        out[task] = {
            "bound_given_length": bound,
            "length_term": length,
            "length_source": source,
            "total": bound + length,
            "pairs": r["sequences"],
        }
    return out


def read_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ligand_scores(rows, family_of, source, drug_lengths, representation) -> dict:
    split = ligand_tokenizer_class(representation).split
    exact = right_length = valid = 0
    for row in rows:
        f = family_of[row["input_id"]]
        c = canonicalize(row["smiles"]) if row["smiles"] else None
        valid += bool(c)
        exact += c == source.drugs[f]
        try:
            n = len(split(row["smiles"]) if representation == "smiles" else _selfies(row))
        except ValueError:
            n = -1
        right_length += n == drug_lengths[f]
    n = max(len(rows), 1)
    return {"exact": exact / n, "right_length": right_length / n, "valid": valid / n}


def _selfies(row) -> list[str]:
    import selfies

    return list(selfies.split_selfies(row["selfies"]))


def protein_scores(rows, source) -> float:
    nearest = sp.nearest_family(source, [r["sequence"] for r in rows])
    own = np.array([int(r["input_id"][1:]) for r in rows])
    return float((nearest == own).mean()) if len(rows) else math.nan


def held_out_inputs(path: str, inputs: int, out: str) -> dict:
    """The first held-out members round-robin over families, written to `out`;
    returns input id -> family."""
    from sedd_jax.data.fasta import FastaRecord, read_fasta, write_fasta

    by_family: dict[int, list] = {}
    for r in read_fasta(path):
        by_family.setdefault(int(r.id[1:].split("_")[0]), []).append(r)
    chosen, depth = [], 0
    while len(chosen) < inputs and any(depth < len(v) for v in by_family.values()):
        chosen += [v[depth] for _, v in sorted(by_family.items()) if depth < len(v)]
        depth += 1
    chosen = chosen[:inputs]
    write_fasta(out, [FastaRecord(r.id, "", r.sequence) for r in chosen])
    return {r.id: int(r.id[1:].split("_")[0]) for r in chosen}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--representation", choices=("smiles", "selfies"), default="smiles")
    ap.add_argument("--families", type=int, default=16)
    ap.add_argument("--length", type=int, default=48, help="prototype length Lp")
    ap.add_argument("--mutation", type=float, default=0.15)
    ap.add_argument("--per_family", type=int, default=400, help="members per family")
    ap.add_argument("--ligand_lengths", default="12,48", help="min,max drug token length")
    ap.add_argument("--val_fraction", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=6000, help="the cosine schedule's length")
    ap.add_argument("--minutes", type=float, default=0.0, help="training wall-time cap")
    ap.add_argument("--width", type=int, default=0, help="model.hidden (0: BENCH_MODEL's 64)")
    ap.add_argument("--guidance", default="0,1,2")
    ap.add_argument("--inputs", type=int, default=32, help="held-out proteins to condition on")
    ap.add_argument("--per_input", type=int, default=4, help="samples per input")
    ap.add_argument("--sampling_steps", type=int, default=64)
    ap.add_argument("--time_samples", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="default: a temporary directory")
    add_set_flag(ap)
    ap.add_argument(
        "--quick", action="store_true", help="a tiny run (~1.5 CPU-minutes; given flags win)"
    )
    ap.add_argument("--out", default="bench_conditioning.json")
    args = ap.parse_args()
    if args.quick:  # the tiny sizes, except where a flag was given
        for key, value in QUICK.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    return args


def main():
    args = parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-conditioning-")
    env = dict(os.environ, SEDD_DATA_CACHE=os.path.join(workdir, "cache"))
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
    split = ligand_tokenizer_class(args.representation).split
    lo, hi = (int(v) for v in args.ligand_lengths.split(","))
    drugs, drug_lengths = sp.pick_drugs(
        load_demo_pairs().smiles, args.families, lambda s: len(split(s)), lo, hi, args.seed
    )
    source = sp.FamilySource.create(args.families, args.length, args.mutation, drugs, args.seed)
    truth = sp.exact_entropies(source, drug_lengths)
    data = sp.write_pairs(
        source, os.path.join(workdir, "data"), args.per_family, args.val_fraction, args.seed
    )
    run_dir = os.path.join(workdir, "run")
    overrides = train_overrides(args, data, max(drug_lengths))
    train_args = [f"--config={os.path.join(REPO, 'configs', 'joint.py')}", f"--workdir={run_dir}"]
    train_args += [f"--config.{k}={v}" for k, v in overrides.items()]
    log = os.path.join(workdir, "train.log")
    train_s = python_module("sedd_jax.train", train_args, env, log, args.minutes * 60)

    from sedd_jax.runs import open_run

    os.environ["SEDD_DATA_CACHE"] = env["SEDD_DATA_CACHE"]
    run = open_run(run_dir)
    lik_path = os.path.join(workdir, "likelihood.json")
    eval_args = [f"--workdir={run_dir}", f"--time_samples={args.time_samples}", f"--out={lik_path}"]
    eval_s = python_module("sedd_jax.evaluate", eval_args, env, os.path.join(workdir, "eval.log"))
    with open(lik_path) as f:
        likelihood = bounds(json.load(f), run)
    lg, l_ = likelihood["ligand_given_protein"], likelihood["ligand_only"]
    pg, p_ = likelihood["protein_given_ligand"], likelihood["protein_only"]
    information = {
        "from_ligand": l_["total"] - lg["total"],
        "from_ligand_given_length": l_["bound_given_length"] - lg["bound_given_length"],
        "from_protein": p_["total"] - pg["total"],
    }

    fasta = os.path.join(workdir, "inputs.fasta")
    family_of = held_out_inputs(data["paths"]["held_out.fasta"], args.inputs, fasta)
    common = [f"--workdir={run_dir}", f"--num={args.per_input}", f"--seed={args.seed}"]
    common.append(f"--steps={args.sampling_steps}")
    rows, sample_s = [], 0.0
    for w in (float(x) for x in args.guidance.split(",")):
        out_l, out_p = (os.path.join(workdir, f"{t}_w{w:g}.csv") for t in ("lig", "prot"))
        sample_s += python_module(
            "sedd_jax.sample",
            [*common, "--task=ligand_given_protein", f"--proteins={fasta}", f"--guidance={w}"]
            + [f"--out={out_l}"],
            env,
            out_l + ".log",
        )
        sample_s += python_module(
            "sedd_jax.sample",
            [*common, "--task=protein_given_ligand", f"--ligands={data['paths']['drugs.smi']}"]
            + [f"--guidance={w}", f"--out={out_p}"],
            env,
            out_p + ".log",
        )
        ligand_rows = read_rows(out_l)
        scores = ligand_scores(ligand_rows, family_of, source, drug_lengths, args.representation)
        rows.append(
            {
                "guidance": w,
                "ligand_samples": len(ligand_rows),
                "ligand_exact": scores["exact"],
                "ligand_right_length": scores["right_length"],
                "ligand_valid": scores["valid"],
                "protein_samples": len(read_rows(out_p)),
                "protein_nearest_own_family": protein_scores(read_rows(out_p), source),
            }
        )

    steps = run.step
    step_times = [r["train/step_time_s"] for r in read_metrics(run_dir) if "train/step_time_s" in r]
    result = {
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "settings": vars(args) | {"task_mix": TASK_MIX, "train_overrides": overrides},
        "source": {
            "families": args.families,
            "protein_length": args.length,
            "mutation": args.mutation,
            "drugs": list(source.drugs),
            "drug_token_lengths": drug_lengths,
            "pairs": data["pairs"],
            "held_out": data["held_out"],
        },
        "exact_nats": truth,
        "likelihood_nats_per_sequence": likelihood,
        "information_estimate_nats": information,
        "sampling": rows,
        "timing": {
            "train_wall_s": round(train_s, 1),
            "train_steps": steps,
            "train_s_per_step": round(train_s / max(steps, 1), 3),  # start-up included
            "median_step_time_s": float(np.median(step_times)) if step_times else math.nan,
            "eval_wall_s": round(eval_s, 1),
            "sample_wall_s": round(sample_s, 1),
        },
        "workdir": workdir,
    }
    print_table(result)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


def print_table(r: dict) -> None:
    t, lik = r["exact_nats"], r["likelihood_nats_per_sequence"]
    info, timing = r["information_estimate_nats"], r["timing"]
    print(
        f"{r['machine']['cpu']}: {timing['train_steps']} steps in {timing['train_wall_s']} s; "
        f"{r['source']['held_out']} held-out pairs; length term: "
        f"{lik['ligand_given_protein']['length_source']}"
    )
    print(f"{'nats per sequence':32s} {'bound|L':>8s} {'length':>7s} {'total':>8s} {'exact':>7s}")
    for name, task, exact in (
        ("ligand | protein", "ligand_given_protein", t["ligand_given_protein"]),
        ("ligand", "ligand_only", t["ligand"]),
        ("protein | ligand", "protein_given_ligand", t["protein_given_ligand"]),
        ("protein", "protein_only", t["protein"]),
    ):
        b = lik[task]
        print(
            f"{name:32s} {b['bound_given_length']:8.3f} {b['length_term']:7.3f} "
            f"{b['total']:8.3f} {exact:7.3f}"
        )
    for name, key in (
        ("I(protein; ligand), ligand side", "from_ligand"),
        ("I, protein side", "from_protein"),
    ):
        print(f"{name:32s} {'':16s} {info[key]:8.3f} {t['information']:7.3f}")
    print(f"{'guidance w':32s} " + " ".join(f"{s['guidance']:>7g}" for s in r["sampling"]))
    for key in SAMPLING_KEYS:
        print(f"{key:32s} " + " ".join(f"{s[key]:7.3f}" for s in r["sampling"]))


if __name__ == "__main__":
    main()
