"""Sample from a trained checkpoint.

Proteins (single-track runs), FASTA out:
    python -m sedd_jax.sample --workdir=runs/demo --num=16 --out=samples.fasta \
        [--steps=256 --predictor=analytic --length=120 --prefix=MKT --weights=ema]
    python -m sedd_jax.sample --workdir=runs/demo --template='MKT[10]GGSGG[5-20]W' --num=8
    python -m sedd_jax.sample --workdir=runs/demo --templates=scaffolds.fasta --num=8

Ligand-only runs (MOSES, SMILES files; SMILES or SELFIES tokens), .smi out
(`SMILES<TAB>sample_i[<TAB>SELFIES]`):
    python -m sedd_jax.sample --workdir=runs/ligand_moses --num=100 --out=ligands.smi

Protein–ligand runs, CSV out keyed to the inputs (`input_id, sample, sequence, smiles`)
with the settings in `<out>.json`: joint pairs, ligands for given proteins, or proteins
for given ligands, one string or a file of them:
    python -m sedd_jax.sample --workdir=runs/joint --task=ligand_given_protein \
        --proteins=targets.fasta --num=8 --out=ligands.csv
    python -m sedd_jax.sample --workdir=runs/joint --task=protein_given_ligand \
        --smiles='CC(=O)Oc1ccccc1C(=O)O' --num=4

Generated lengths: --length=N, else for the conditional tasks of a run with length heads
(`model.length_head`) a draw from p(L | context) per row, else the training length
distribution (`length_from` in `<out>.json` says which).

Everything needed (config, vocabularies, length distributions) is read from the
checkpoint, so no training data is required. The rows are sharded over all local
devices; the output depends on the seed, not on the number of devices.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict

from sedd_jax import allocator
from sedd_jax.common.generation import special_ids, tokenizer_forbidden
from sedd_jax.common.sample_files import write_smiles_samples
from sedd_jax.conditioning import (
    Condition,
    ConditionFileError,
    context_rows,
    file_sha256,
    generated_rows,
    read_ligands,
    read_proteins,
    sample_in_chunks,
    write_outputs,
)
from sedd_jax.data.fasta import FastaError, FastaRecord, read_fasta, write_fasta
from sedd_jax.data.templates import TemplateError, parse_template, template_rows
from sedd_jax.diffusion.guidance import UNCONDITIONAL
from sedd_jax.diffusion.joint import CONDITIONAL_TRACKS, TASKS
from sedd_jax.diffusion.parametrisation import parametrisation_of
from sedd_jax.runs import Run, open_run
from sedd_jax.training.generation import (
    generate,
    generate_rows,
    has_length_head,
    make_length_sampler,
    make_pair_sampler,
    make_sampler,
)
from sedd_jax.training.ligand_samples import selfies_of

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
_OUT = flags.DEFINE_string(
    "out", None, "Output .fasta (proteins), .smi (ligand-only runs) or .csv (pairs)."
)
_NUM = flags.DEFINE_integer("num", 8, "Number of samples.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps (default: the run's).")
_PREDICTOR = flags.DEFINE_enum(
    "predictor",
    None,
    ["euler", "analytic", "none", "cached", "first_hitting", "remdm"],
    "Predictor: euler, analytic, none, cached (absorbing graph: analytic steps "
    "that reuse the network output while no token changed), first_hitting (one "
    "token per call at its exact reveal time) or remdm (absorbing graph: analytic steps "
    "that may re-mask decoded tokens, see --remdm_*).",
)
_REMDM_SCHEDULE = flags.DEFINE_enum(
    "remdm_schedule", None, ["cap", "rescale", "conf"], "ReMDM: schedule of sigma_t."
)
_REMDM_ETA = flags.DEFINE_float("remdm_eta", None, "ReMDM: eta of the cap / rescale schedule.")
_REMDM_T_ON = flags.DEFINE_float("remdm_t_on", None, "ReMDM: re-masking only for t <= t_on.")
_LENGTH = flags.DEFINE_integer(
    "length", 0, "Length of generated tracks; 0 draws (length head or training data)."
)
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
_PROTEINS = flags.DEFINE_string(
    "proteins", "", "ligand_given_protein: a FASTA of proteins, --num ligands for each."
)
_LIGANDS = flags.DEFINE_string(
    "ligands", "", "protein_given_ligand: a SMILES file (SMILES [id]) or CSV (smiles, id)."
)
_GUIDANCE = flags.DEFINE_float(
    "guidance", 0.0, "Classifier-free guidance weight w of conditional tasks (0: none)."
)
_BATCH = flags.DEFINE_integer("batch", 64, "Rows per sampler call (sharded over devices).")


def sampling_config(config: ConfigDict) -> ConfigDict:
    sc = ConfigDict(config.sampling.to_dict())
    sc.steps = _STEPS.value or sc.steps
    sc.predictor = _PREDICTOR.value or sc.predictor
    options = (
        ("temperature", _TEMPERATURE),
        ("top_p", _TOP_P),
        ("remdm_schedule", _REMDM_SCHEDULE),
        ("remdm_eta", _REMDM_ETA),
        ("remdm_t_on", _REMDM_T_ON),
    )
    for key, flag in options:
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
    forbidden = tokenizer_forbidden(graph, tokenizer)
    tokens = generate_rows(sampler, params, x_init, valid, clamp, _SEED.value, forbidden)
    sequences = tokenizer.decode_batch(tokens, valid)
    counts = np.zeros(len(named), int)
    records = []
    for seq, t in zip(sequences, index, strict=True):
        name, text = named[t]
        records.append(FastaRecord(f"{name}_sample_{counts[t]}", f"template={text}", seq))
        counts[t] += 1
    return records


def _single_track_sampler(run: Run):
    """(sampler, graph) of a single-track run."""
    graph, noise, model = run.components.graph, run.components.noise, run.components.model
    sc, parametrisation = sampling_config(run.config), parametrisation_of(run.config)
    return make_sampler(model, graph, noise, sc, parametrisation), graph


def _draw(sampler, params, graph, tokenizer, meta, config, prefix: str = ""):
    """`--num` rows (tokens, valid), lengths from the run's distribution unless `--length`."""
    return generate(
        sampler,
        params,
        graph,
        tokenizer,
        num=_NUM.value,
        max_len=config.data.max_len,
        length=_LENGTH.value,
        length_dist=_length_distribution(meta, "length_distribution"),
        seed=_SEED.value,
        prefix=prefix,
    )


def sample_ligands(run: Run, params):
    """A ligand-only run (MOSES, SMILES files): SMILES (and SELFIES) lines in a .smi file."""
    for flag in (_PREFIX, _TEMPLATE, _TEMPLATES):
        if flag.value:
            sys.exit(f"--{flag.name} is for proteins; this checkpoint samples ligands")
    meta, config, tokenizer = run.meta, run.config, run.tokenizers.track
    sampler, graph = _single_track_sampler(run)
    tokens, valid = _draw(sampler, params, graph, tokenizer, meta, config)
    out = _OUT.value or "samples.smi"
    smiles = tokenizer.decode_batch(tokens, valid)
    write_smiles_samples(out, smiles, selfies_of(tokenizer, tokens, valid))
    return out


def sample_proteins(run: Run, params):
    meta, config, tokenizer = run.meta, run.config, run.tokenizers.track
    sampler, graph = _single_track_sampler(run)
    out = _OUT.value or "samples.fasta"
    if _TEMPLATE.value or _TEMPLATES.value:
        if _PREFIX.value:
            sys.exit("--prefix and --template(s) exclude each other (a prefix is MKT[N])")
        write_fasta(out, sample_templates(sampler, params, graph, tokenizer, config))
        return out
    tokens, valid = _draw(sampler, params, graph, tokenizer, meta, config, _PREFIX.value)
    sequences = tokenizer.decode_batch(tokens, valid)
    records = [FastaRecord(f"sample_{i}", f"len={len(s)}", s) for i, s in enumerate(sequences)]
    write_fasta(out, records)
    return out


def _conditions(task: str) -> list[Condition] | None:
    """The inputs of a conditional task (a string flag or a file); None for the others."""
    flags_of = {
        "ligand_given_protein": (_PROTEIN, _PROTEINS, read_proteins, "protein"),
        "protein_given_ligand": (_SMILES, _LIGANDS, read_ligands, "ligand"),
    }
    if task not in flags_of:
        return None
    one, many, read, name = flags_of[task]
    if one.value and many.value:
        sys.exit(f"give --{one.name} or --{many.name}, not both")
    if many.value:
        try:
            return read(many.value)
        except (OSError, ValueError) as e:
            sys.exit(f"--{many.name}: {e}")
    if one.value:
        return [Condition(f"{name}_0", one.value)]
    sys.exit(f"--task={task} needs --{one.name} or --{many.name}")


def sample_pairs_cli(run: Run, params):
    task = _TASK.value
    meta, config, step = run.meta, run.config, run.step
    protein_tok, ligand_tok = run.tokenizers.protein, run.tokenizers.ligand
    graphs, noise, model = run.components.graph, run.components.noise, run.components.model
    conditions = _conditions(task)
    dc, n = config.data, _NUM.value
    rows = n * (len(conditions) if conditions else 1)
    tracks = {
        "protein": (protein_tok, dc.max_protein_len, graphs.protein, "protein_length_distribution"),
        "ligand": (ligand_tok, dc.max_ligand_len, graphs.ligand, "ligand_length_distribution"),
    }
    context = CONDITIONAL_TRACKS.get(task, (None,))[0]
    arrays = {}
    if context is not None:
        tok, max_len = tracks[context][:2]
        try:
            arrays[context] = context_rows(conditions, n, tok.encode, max_len, tok.pad_id, context)
        except ConditionFileError as e:
            sys.exit(str(e))
    head_lengths = None
    if has_length_head(model, task):  # p(L | context) of the model, not the marginal
        draw = make_length_sampler(model, task)
        head_lengths = functools.partial(draw, params, *arrays[context])
    length_from = "fixed" if _LENGTH.value > 0 else "head" if head_lengths else "marginal"
    for offset, (track, (tok, max_len, graph, dist_key)) in enumerate(tracks.items()):
        if track != context:
            dist = None if length_from == "head" else _length_distribution(meta, dist_key)
            arrays[track] = generated_rows(
                rows,
                _LENGTH.value,
                max_len,
                dist,
                graph.mask_id,
                tok.pad_id,
                _SEED.value + offset,
                head_lengths,
            )
    (protein, p_valid), (ligand, l_valid) = arrays["protein"], arrays["ligand"]
    sc = sampling_config(config)
    if _GUIDANCE.value:
        alone = UNCONDITIONAL.get(task)
        if alone is None:
            sys.exit(f"--guidance applies to {sorted(UNCONDITIONAL)}, not --task={task}")
        if not config.task.get(alone, 0.0) > 0:
            sys.exit(
                f"--guidance needs the unconditional score of the generated track: a run "
                f"trained with task.{alone} > 0 (this one has {config.task.get(alone, 0.0)})"
            )
    forbidden = (
        tokenizer_forbidden(graphs.protein, protein_tok),
        tokenizer_forbidden(graphs.ligand, ligand_tok),
    )
    try:
        sampler = make_pair_sampler(
            model, graphs, noise, sc, task, _GUIDANCE.value, parametrisation_of(config)
        )
    except ValueError as e:
        sys.exit(f"--predictor={sc.predictor}: {e}")
    sampler = functools.partial(sampler, forbidden=forbidden)
    p, l = sample_in_chunks(
        sampler, params, [protein, ligand, p_valid, l_valid], _SEED.value, _BATCH.value
    )
    sequences = protein_tok.decode_batch(p, p_valid)
    smiles = [ligand_tok.decode(row[v]) for row, v in zip(l, l_valid, strict=True)]
    header = ["input_id", "sample", "sequence", "smiles"]
    columns = [
        [conditions[i // n].id if conditions else "" for i in range(rows)],
        [i % n for i in range(rows)],
        sequences,
        smiles,
    ]
    if ligand_tok.representation == "selfies":
        header.append("selfies")
        columns.append(
            [ligand_tok.decode_selfies(row[v]) for row, v in zip(l, l_valid, strict=True)]
        )
    inputs = _PROTEINS.value or _LIGANDS.value
    settings = {
        "workdir": os.path.abspath(_WORKDIR.value),
        "step": step,
        "weights": _WEIGHTS.value,
        "task": task,
        "num_per_input": n,
        "inputs": os.path.abspath(inputs) if inputs else None,
        "inputs_sha256": file_sha256(inputs) if inputs else None,
        "seed": _SEED.value,
        "batch": _BATCH.value,
        "devices": jax.local_device_count(),
        "length": _LENGTH.value,
        "length_from": length_from,  # fixed (--length) | head (p(L | context)) | marginal
        "sampling": {"temperature": 1.0, "top_p": 1.0} | sc.to_dict(),  # as applied
        "never_drawn": {"protein": special_ids(protein_tok), "ligand": special_ids(ligand_tok)},
        "guidance": _GUIDANCE.value,
    }
    out = _OUT.value or f"samples_{task}.csv"
    return write_outputs(out, header, zip(*columns, strict=True), settings)


def main(argv):
    del argv
    if not _WORKDIR.value:
        sys.exit("--workdir is required")
    run = open_run(_WORKDIR.value, _STEP.value)
    params = run.params(_WEIGHTS.value)
    if run.kind == "pair":
        out = sample_pairs_cli(run, params)
    elif run.tokenizers.track is run.tokenizers.ligand:
        out = sample_ligands(run, params)
    else:
        out = sample_proteins(run, params)
    print(f"wrote {_NUM.value} samples from step {run.step} ({_WEIGHTS.value} weights) to {out}")


if __name__ == "__main__":
    allocator.restart_if_needed("auto", "auto")  # freed sampler buffers stay mapped (CPU)
    app.run(main)
