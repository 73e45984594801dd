"""Likelihood bound of a trained checkpoint on held-out data, or a sample-quality report
of a sample file. Pair (DualTrackSEDD) runs are scored per task and track on their
validation pairs: -log p(protein, ligand), -log p(ligand | protein), ..., and, where the
run trained the single-track modes too, how much the context lowers each bound.

    python -m sedd_jax.evaluate --workdir=runs/demo [--fasta=proteins.fasta]
        [--time_samples=128] [--method=stratified|antithetic] [--weights=ema|params]
        [--out=likelihood.json] [--per_sequence=scores.csv]
    python -m sedd_jax.evaluate --workdir=runs/demo --samples=runs/demo/samples.fasta
        [--reference=train.fasta|train.csv|train.smi] [--report_dir=DIR] [--hmm=Pfam-A.hmm]

With --samples (FASTA, `samples_joint.csv`, `samples_ligand_given_protein.csv` or .smi)
the report is written instead (`sedd_jax/sample_report.py`; definitions in
docs/metrics.md): report.json, report.md and PNG plots in --report_dir (default
`<workdir>/report_<samples name>/`).

Without --fasta the run's own validation split is evaluated: the validation records of
the shards its trainer read (`runs.open_run(...).data()`), whatever the run's seed.
Reports the SEDD ELBO (`sedd_jax/diffusion/likelihood.py`, with the
decoder term for schedules with sigma_bar(0) > 0) as nats and bits per token with its
standard error over sequences, and perplexity = exp(NLL bound / tokens): an upper bound
on the true perplexity given the length; with the run's length distribution also the
full bound -log p(x) adding -log p_hat(L). FASTA sequences longer than max_len are
counted, left out of the headline, and scored as their first window separately.
`--per_sequence` writes one CSV row per scored sequence (single-track runs): its index,
the sequence, its scored tokens, and its bound in nats (given the length, and with the
length term): the scores to rank variants by.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
from absl import app, flags

from sedd_jax import allocator
from sedd_jax.data.batching import encode_and_pad
from sedd_jax.data.fasta import read_fasta
from sedd_jax.data.protein import clean_sequence
from sedd_jax.diffusion.likelihood import dataset_likelihood, make_likelihood_fn
from sedd_jax.diffusion.parametrisation import parametrisation_of
from sedd_jax.runs import Run, open_run

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
_FASTA = flags.DEFINE_string("fasta", None, "Proteins to score (default: validation split).")
_TIME_SAMPLES = flags.DEFINE_integer(
    "time_samples", None, "Monte-Carlo times per sequence (default: eval.likelihood_time_samples)."
)
_METHOD = flags.DEFINE_enum(
    "method", None, ["stratified", "antithetic"], "t draws (default: eval.likelihood_method)."
)
_WEIGHTS = flags.DEFINE_enum("weights", "ema", ["ema", "params"], "Which weights.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the time and corruption draws.")
_OUT = flags.DEFINE_string("out", None, "Also write the result as JSON here.")
_PER_SEQUENCE = flags.DEFINE_string(
    "per_sequence", None, "Single track: also write each sequence's bound as CSV here."
)
_SAMPLES = flags.DEFINE_string("samples", None, "Write the sample-quality report of this file.")
_REFERENCE = flags.DEFINE_string(
    "reference", None, "Reference set of the report (default: the run's training data)."
)
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Report directory.")
_HMM = flags.DEFINE_string("hmm", None, "HMM file for protein family hits (default: phmmer).")
_FCD_SIZE = flags.DEFINE_integer("fcd_size", 10_000, "Molecules per side for FCD (0: skip).")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Pairs: a progress bar per task.")


def sample_report() -> None:
    from sedd_jax import sample_report as sample_report_lib

    report = sample_report_lib.run(
        _SAMPLES.value,
        workdir=_WORKDIR.value,
        reference_path=_REFERENCE.value,
        report_dir=_REPORT_DIR.value,
        step=_STEP.value,
        protein_kwargs={"hmm_file": _HMM.value, "seed": _SEED.value},
        ligand_kwargs={"fcd_size": _FCD_SIZE.value or None, "seed": _SEED.value},
    )
    for key, value in report["headline"].items():
        print(f"  {key}: {value}")
    print(f"report: {report['paths']['markdown']}")


def validation_arrays(run: Run) -> dict:
    """The run's validation rows: those of the shards and split its trainer read."""
    return run.data().val


def write_per_sequence(path: str, sequences: list[str], rows: dict) -> None:
    """CSV: index, sequence, tokens, nll_nats (given the length), nll_with_length_nats."""
    nll = np.asarray(rows["nll"], np.float64)  # full precision: the rows add up to the JSON
    with_length = nll - np.asarray(rows.get("length_log_prob", np.nan), np.float64)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["index", "sequence", "tokens", "nll_nats", "nll_with_length_nats"])
        for i, seq in enumerate(sequences):
            out.writerow([i, seq, int(rows["tokens"][i]), float(nll[i]), float(with_length[i])])


def evaluation_arrays(run: Run, fasta: str | None = None):
    """(arrays whose sequences fit max_len, arrays of first windows of longer ones or None,
    a description of the data): the proteins of `fasta`, else the validation split."""
    config, tokenizer = run.config, run.tokenizers.track
    max_len = config.data.max_len
    if fasta:
        if run.tokenizers.protein is not tokenizer:
            sys.exit("--fasta scores protein runs; this run models ligands")
        seqs = [clean_sequence(r.sequence) for r in read_fasta(fasta)]
        fit = [s for s in seqs if len(s) <= max_len]
        long = [s for s in seqs if len(s) > max_len]
        if not fit:
            sys.exit(f"--fasta={fasta}: no sequence of at most {max_len} residues")
        arrays = [
            dict(
                zip(
                    ("tokens", "valid"),
                    encode_and_pad(part, tokenizer, max_len, "start"),
                    strict=True,
                )
            )
            if part
            else None
            for part in (fit, long)
        ]
        return arrays[0], arrays[1], fasta
    return validation_arrays(run), None, f"validation split of data.source={config.data.source!r}"


def context_information(alone: dict, given: dict, meta: dict, track: str, max_len: int) -> dict:
    """What the context tells about `track` on the same pairs: bound(alone) -
    bound(given), per sequence and token with paired standard errors (`rows` of
    `pair_dataset_likelihood`). "given_length" compares the bounds given the length;
    "with_length", where the conditional task has the length head's term, compares full
    bounds: the unconditional one with -log p_hat(L) of the training lengths."""
    from sedd_jax.diffusion.likelihood import length_log_probs
    from sedd_jax.diffusion.likelihood_stats import paired_difference

    out = {"given_length": paired_difference(alone["nll"], given["nll"], given["tokens"])}
    if "length_log_prob" in given:
        lengths = given["tokens"].astype(np.int64)
        marginal = length_log_probs(meta[f"{track}_length_distribution"], max_len)[lengths]
        out["with_length"] = paired_difference(
            alone["nll"] - marginal, given["nll"] - given["length_log_prob"], given["tokens"]
        )
    return out


def pair_likelihood(run: Run, params) -> None:
    """Per task and track: the bound on the validation pairs, nats/token with its error
    (given the length; conditional tasks of runs with length heads also the full bound
    with -log p(L | context)); and, where the run trained both, what the protein tells
    about its ligand (and back): bound(ligand alone) - bound(ligand | protein), per
    ligand token and per molecule."""
    from tqdm import tqdm

    from sedd_jax.diffusion.joint import TASKS
    from sedd_jax.diffusion.pair_likelihood import make_pair_likelihood_fn, pair_dataset_likelihood

    if _FASTA.value:
        sys.exit("--fasta scores single-track runs; pair runs are scored on their validation pairs")
    config, step = run.config, run.step
    graphs, noise, model = run.components.graph, run.components.noise, run.components.model
    arrays = validation_arrays(run)
    time_samples = _TIME_SAMPLES.value or config.eval.get("likelihood_time_samples", 128)
    result = {"step": step, "weights": _WEIGHTS.value, "time_samples": time_samples, "tasks": {}}
    print(
        f"validation pairs of data.source={config.data.source!r}: {len(arrays['protein'])} "
        f"pairs (checkpoint step {step}, {_WEIGHTS.value} weights, K={time_samples})",
        flush=True,
    )
    for task in TASKS:
        if not config.task.get(task, 0.0) > 0:
            continue  # a mode the network never trained bounds nothing useful
        fn = make_pair_likelihood_fn(
            model,
            graphs,
            noise,
            task=task,
            time_samples=time_samples,
            parametrisation=parametrisation_of(config),
        )
        with tqdm(
            total=len(arrays["protein"]), desc=task, unit="pair", disable=not _PROGRESS.value
        ) as bar:
            tracks = pair_dataset_likelihood(
                fn,
                params,
                arrays,
                batch_size=_BATCH.value,
                seed=_SEED.value,
                on_batch=bar.update,
                keep_rows=True,
            )
        result["tasks"][task] = tracks
        for track, r in tracks.items():
            print(
                f"  {task:22s} {track:8s} <= {r['nats_per_token']:.4f} ± "
                f"{r['nats_per_token_se']:.4f} nats/token "
                f"({r['nats_per_sequence']:.2f} per sequence)",
                flush=True,
            )
            if "length_nats_per_sequence" in r:
                print(
                    f"  {'':22s} {'':8s} with -log p(L | context) from the length head "
                    f"({r['length_nats_per_sequence']:.3f} nats/sequence): "
                    f"{r['with_length_nats_per_token']:.4f} nats/token "
                    f"({r['with_length_nats_per_sequence']:.2f} per sequence)"
                )
    rows = {
        task: {t: r.pop("rows") for t, r in tracks.items()}
        for task, tracks in result["tasks"].items()
    }
    for track, alone, given in (
        ("ligand", "ligand_only", "ligand_given_protein"),
        ("protein", "protein_only", "protein_given_ligand"),
    ):
        if alone in rows and given in rows:
            gain = context_information(
                rows[alone][track], rows[given][track], run.meta, track, arrays[track].shape[1]
            )
            result[f"{track}_information"] = gain
            g = gain["given_length"]
            print(
                f"  the context lowers the {track} bound by {g['nats_per_token']:.4f} ± "
                f"{g['nats_per_token_se']:.4f} nats/token ({g['nats_per_sequence']:.2f} ± "
                f"{g['nats_per_sequence_se']:.2f} per sequence, given the length)"
            )
            if "with_length" in gain:
                w = gain["with_length"]
                print(
                    f"  {'':22s} with the lengths (head vs the training marginal): "
                    f"{w['nats_per_sequence']:.2f} ± {w['nats_per_sequence_se']:.2f} per sequence"
                )
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)


def main(argv):
    del argv
    if _SAMPLES.value:
        return sample_report()
    if not _WORKDIR.value:
        sys.exit("--workdir is required")
    run = open_run(_WORKDIR.value, _STEP.value)
    params = run.params(_WEIGHTS.value)
    if run.kind == "pair":
        if _PER_SEQUENCE.value:
            sys.exit("--per_sequence scores single-track runs; this is a pair run")
        return pair_likelihood(run, params)
    config, meta, step, tokenizer = run.config, run.meta, run.step, run.tokenizers.track
    graph, noise, model = run.components.graph, run.components.noise, run.components.model
    arrays, long, what = evaluation_arrays(run, _FASTA.value)
    time_samples = _TIME_SAMPLES.value or config.eval.get("likelihood_time_samples", 128)
    method = _METHOD.value or config.eval.get("likelihood_method", "stratified")
    fn = make_likelihood_fn(
        model,
        graph,
        noise,
        time_samples=time_samples,
        method=method,
        parametrisation=parametrisation_of(config),
    )
    common = dict(batch_size=_BATCH.value, pad_id=tokenizer.pad_id, seed=_SEED.value)
    lengths = meta.get("length_distribution")
    per_sequence = _PER_SEQUENCE.value
    result = dataset_likelihood(
        fn, params, arrays, length_distribution=lengths, keep_rows=bool(per_sequence), **common
    )
    if per_sequence:
        sequences = tokenizer.decode_batch(arrays["tokens"], arrays["valid"])
        write_per_sequence(per_sequence, sequences, result.pop("rows"))
    result.update(
        step=step,
        weights=_WEIGHTS.value,
        data=what,
        time_samples=time_samples,
        method=method,
        longer_than_max_len=0 if long is None else len(long["tokens"]),
    )
    if long is not None:  # not part of the headline: their first window only, no length term
        result["longer_first_window"] = dataset_likelihood(fn, params, long, **common)
    se = result["nats_per_token_se"]
    print(
        f"{what}: {result['sequences']} sequences, {result['tokens']:.0f} tokens "
        f"(checkpoint step {step}, {_WEIGHTS.value} weights, K={time_samples} {method})"
    )
    print(
        f"  -log p(x | length) <= {result['nats_per_token']:.4f} ± {se:.4f} nats/token "
        f"(standard error over sequences) = {result['bits_per_token']:.4f} bits/token; "
        f"perplexity <= {result['perplexity']:.3f}"
    )
    if lengths is not None:
        print(
            f"  -log p(x) <= {result['with_length_nats_per_token']:.4f} nats/token with the "
            f"length term -log p_hat(L) ({result['length_nats_per_sequence']:.3f} nats/sequence, "
            "training length distribution)"
        )
    else:
        print("  (no length distribution in this checkpoint: the bound is given the length)")
    if long is not None:
        window = result["longer_first_window"]
        print(
            f"  {len(long['tokens'])} sequences longer than max_len={config.data.max_len} are "
            f"left out above; their first windows: {window['nats_per_token']:.4f} nats/token "
            "(a bound on the window, not on the whole sequence)"
        )
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    allocator.restart_if_needed("auto", "auto")  # freed sampler buffers stay mapped (CPU)
    app.run(main)
