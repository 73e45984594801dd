"""Sample from a trained checkpoint.

Proteins (single-track runs), FASTA out:
    python -m sedd_jax.sample --workdir=runs/demo --num=16 --out=samples.fasta \
        [--steps=256 --predictor=analytic --length=120 --prefix=MKT --weights=ema]

Protein–ligand runs, CSV out (`--task`): joint pairs, ligands for given proteins, or
proteins for given ligands:
    python -m sedd_jax.sample --workdir=runs/joint --task=ligand_given_protein \
        --protein=MSQERPTFYRQ... --num=8 --out=ligands.csv

Everything needed (config, vocabularies, length distributions) is read from the
checkpoint, so no training data is required.
"""

from __future__ import annotations

import csv
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict

from sedd_jax.data.fasta import FastaError, FastaRecord, read_fasta, write_fasta
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.selfies import ligand_tokenizer_from_dict
from sedd_jax.data.templates import TemplateError, parse_template, template_rows
from sedd_jax.diffusion.graphs import get_graph
from sedd_jax.diffusion.joint import TASKS, PairGraphs
from sedd_jax.diffusion.noise import get_noise
from sedd_jax.models.dual import build_dual_model
from sedd_jax.models.sedd import build_model
from sedd_jax.training import checkpoint
from sedd_jax.training.generation import (
    draw_lengths,
    generate,
    generate_rows,
    initial_tokens,
    make_pair_sampler,
    make_sampler,
)

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
_OUT = flags.DEFINE_string("out", None, "Output .fasta (proteins) or .csv (pairs).")
_NUM = flags.DEFINE_integer("num", 8, "Number of samples.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps (default: the run's).")
_PREDICTOR = flags.DEFINE_enum("predictor", None, ["euler", "analytic", "none"], "Predictor.")
_LENGTH = flags.DEFINE_integer("length", 0, "Length of generated tracks; 0 draws from data.")
_PREFIX = flags.DEFINE_string("prefix", "", "Protein prefix held fixed (single track).")
_TEMPLATE = flags.DEFINE_string(
    "template", "", "Infilling template, e.g. MKT[10]GGSGG[5-20]W (fixed residues, gaps)."
)
_TEMPLATES = flags.DEFINE_string(
    "templates", "", "FASTA of templates; --num samples of each, named <id>_sample_<j>."
)
_TEMPERATURE = flags.DEFINE_float(
    "temperature", None, "Temperature of each step's transition distribution (heuristic)."
)
_TOP_P = flags.DEFINE_float("top_p", None, "Nucleus (top-p) cut of each step's transition.")
_WEIGHTS = flags.DEFINE_enum("weights", "ema", ["ema", "params"], "Which weights.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_TASK = flags.DEFINE_enum("task", "joint", list(TASKS), "Pair runs: what to generate.")
_PROTEIN = flags.DEFINE_string("protein", "", "Context protein sequence (pair runs).")
_SMILES = flags.DEFINE_string("smiles", "", "Context ligand SMILES (pair runs).")


def sampling_config(config: ConfigDict) -> ConfigDict:
    sc = ConfigDict(config.sampling.to_dict())
    sc.steps = _STEPS.value or sc.steps
    sc.predictor = _PREDICTOR.value or sc.predictor
    for key, flag in (("temperature", _TEMPERATURE), ("top_p", _TOP_P)):
        if flag.value is not None:
            sc[key] = flag.value
    return sc


def _length_distribution(meta, key):
    """The run's training length distribution; imported checkpoints have none."""
    if _LENGTH.value <= 0 and key not in meta:
        sys.exit(f"this checkpoint records no {key} (an imported model?): pass --length=N")
    return meta.get(key)


def _templates() -> list[tuple[str, str]]:
    """(id, template text) pairs from --template / --templates."""
    if _TEMPLATE.value and _TEMPLATES.value:
        sys.exit("give --template or --templates, not both")
    if _TEMPLATE.value:
        return [("template_0", _TEMPLATE.value)]
    try:
        return [(r.id, r.sequence) for r in read_fasta(_TEMPLATES.value)]
    except (OSError, FastaError) as e:
        sys.exit(f"--templates={_TEMPLATES.value}: {e}")


def sample_templates(sampler, params, graph, tokenizer, config) -> list[FastaRecord]:
    """--num samples per template; fixed residues come back unchanged."""
    named = _templates()
    try:
        templates = [parse_template(text) for _, text in named]
        x_init, valid, clamp, index = template_rows(
            templates,
            _NUM.value,
            tokenizer.encode,
            config.data.max_len,
            graph.mask_id,
            tokenizer.pad_id,
            np.random.default_rng(_SEED.value),
        )
    except TemplateError as e:
        sys.exit(str(e))
    tokens = generate_rows(sampler, params, x_init, valid, clamp, _SEED.value)
    sequences = tokenizer.decode_batch(tokens, valid)
    counts = np.zeros(len(named), int)
    records = []
    for seq, t in zip(sequences, index, strict=True):
        name, text = named[t]
        records.append(FastaRecord(f"{name}_sample_{counts[t]}", f"template={text}", seq))
        counts[t] += 1
    return records


def sample_proteins(params, meta, config):
    tokenizer = ProteinTokenizer(meta["protein_vocab_size"])
    graph = get_graph(config.graph, tokenizer.vocab_size)
    noise = get_noise(config.noise)
    model = build_model(config.model, graph.dim, graph.absorb)
    sampler = make_sampler(model, graph, noise, sampling_config(config))
    out = _OUT.value or "samples.fasta"
    if _TEMPLATE.value or _TEMPLATES.value:
        if _PREFIX.value:
            sys.exit("--prefix and --template(s) exclude each other (a prefix is MKT[N])")
        write_fasta(out, sample_templates(sampler, params, graph, tokenizer, config))
        return out
    tokens, valid = generate(
        sampler,
        params,
        graph,
        tokenizer,
        num=_NUM.value,
        max_len=config.data.max_len,
        length=_LENGTH.value,
        length_dist=_length_distribution(meta, "length_distribution"),
        seed=_SEED.value,
        prefix=_PREFIX.value,
    )
    sequences = tokenizer.decode_batch(tokens, valid)
    records = [FastaRecord(f"sample_{i}", f"len={len(s)}", s) for i, s in enumerate(sequences)]
    write_fasta(out, records)
    return out


def _track(tokenizer, text, num, max_len, length, length_dist, mask_id, rng, name):
    """Context rows (the given text, repeated) or rows to generate (mask-filled)."""
    if text:
        ids = tokenizer.encode(text)
        if len(ids) > max_len:
            sys.exit(f"--{name} has {len(ids)} tokens; the model takes at most {max_len}")
        x, valid = initial_tokens(np.full(num, len(ids)), max_len, None, tokenizer.pad_id)
        x[:, : len(ids)] = ids
        return x, valid
    lengths = draw_lengths(num, length, max_len, length_dist, rng)
    return initial_tokens(lengths, max_len, mask_id, tokenizer.pad_id)


def sample_pairs_cli(params, meta, config):
    task = _TASK.value
    protein_tok = ProteinTokenizer(meta["protein_vocab_size"])
    ligand_tok = ligand_tokenizer_from_dict(meta["ligand_tokenizer"], source=_WORKDIR.value)
    graphs = PairGraphs(
        get_graph(config.graph, protein_tok.vocab_size),
        get_graph(config.graph, ligand_tok.vocab_size),
    )
    needs = {"ligand_given_protein": "protein", "protein_given_ligand": "smiles"}
    if task in needs and not (_PROTEIN.value if needs[task] == "protein" else _SMILES.value):
        sys.exit(f"--task={task} needs --{needs[task]}")
    noise = get_noise(config.noise)
    model = build_dual_model(
        config.model, graphs.protein.dim, graphs.ligand.dim, graphs.protein.absorb
    )
    rng = np.random.default_rng(_SEED.value)
    dc, n = config.data, _NUM.value
    given_protein = _PROTEIN.value if task == "ligand_given_protein" else ""
    given_smiles = _SMILES.value if task == "protein_given_ligand" else ""
    protein, p_valid = _track(
        protein_tok,
        given_protein,
        n,
        dc.max_protein_len,
        _LENGTH.value,
        _length_distribution(meta, "protein_length_distribution"),
        graphs.protein.mask_id,
        rng,
        "protein",
    )
    ligand, l_valid = _track(
        ligand_tok,
        given_smiles,
        n,
        dc.max_ligand_len,
        _LENGTH.value,
        _length_distribution(meta, "ligand_length_distribution"),
        graphs.ligand.mask_id,
        rng,
        "smiles",
    )
    sampler = make_pair_sampler(model, graphs, noise, sampling_config(config), task)
    p, l = sampler(
        params,
        jnp.asarray(protein),
        jnp.asarray(ligand),
        jnp.asarray(p_valid),
        jnp.asarray(l_valid),
        jax.random.key(_SEED.value),
    )
    sequences = protein_tok.decode_batch(np.asarray(p), p_valid)
    smiles = [ligand_tok.decode(row[v]) for row, v in zip(np.asarray(l), l_valid, strict=True)]
    out = _OUT.value or f"samples_{task}.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("sequence", "smiles"))
        writer.writerows(zip(sequences, smiles, strict=True))
    return out


def main(argv):
    del argv
    if not _WORKDIR.value:
        sys.exit("--workdir is required")
    params, meta, step = checkpoint.load_params(_WORKDIR.value, _STEP.value, _WEIGHTS.value)
    config = ConfigDict(meta["config"])
    run = sample_pairs_cli if config.model.get("kind", "single") == "dual" else sample_proteins
    out = run(params, meta, config)
    print(f"wrote {_NUM.value} samples from step {step} ({_WEIGHTS.value} weights) to {out}")


if __name__ == "__main__":
    app.run(main)
