"""`python -m sedd_jax.evaluate --samples=FILE`: the sample-quality report of a sample file.

The reference set is `--reference=FILE` (FASTA, .smi or a pair CSV) or, by default, the
training split of the run in `--workdir`: the training records of the shards its trainer
read (`runs.open_run(...).data()`; proteins as windows of `max_len` starting at 0, pairs
with the SMILES of the protein-disjoint split, ligand-only runs their SMILES). The metrics
live in `sedd_jax/metrics/` (no jax); this module finds the inputs.
"""

from __future__ import annotations

import logging
import os

from ml_collections import ConfigDict

from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.track_data import TrackData, run_data
from sedd_jax.metrics import report as report_lib
from sedd_jax.metrics import samples as samples_lib

log = logging.getLogger(__name__)


def reference_from_data(config: ConfigDict, data: TrackData) -> tuple[dict[str, list[str]], str]:
    """Training proteins / SMILES of a run's shards (proteins as the training windows that
    start at 0), and a description of them."""
    train = data.train_arrays()
    source = f"training split of data.source={config.data.source!r}"
    if "protein" in data.tokenizers:  # pairs
        proteins = data.protein_tokenizer.decode_batch(train["protein"], train["protein_valid"])
        smiles = data.ligand_tokenizer.decode_batch(train["ligand"], train["ligand_valid"])
        what = (
            f"{source} ({len(smiles)} pairs, proteins cropped to "
            f"data.max_protein_len={config.data.max_protein_len})"
        )
        return {"proteins": list(dict.fromkeys(proteins)), "smiles": smiles}, what
    tokenizer = data.tokenizers["tokens"]
    decoded = tokenizer.decode_batch(train["tokens"], train["valid"])
    if isinstance(tokenizer, SmilesTokenizer):
        return {"proteins": [], "smiles": decoded}, f"{source} ({len(decoded)} molecules)"
    return {
        "proteins": decoded,
        "smiles": [],
    }, f"{source} (cropped to data.max_len={config.data.max_len})"


def reference_from_config(config: ConfigDict) -> tuple[dict[str, list[str]], str]:
    """`reference_from_data` of the shards the run of `config` trains on."""
    return reference_from_data(config, run_data(config))


def reference_from_workdir(workdir: str, step: int | None = None):
    from sedd_jax.runs import open_run

    run = open_run(workdir, step)
    return reference_from_data(run.config, run.data())


def default_report_dir(samples_path: str, workdir: str | None) -> str:
    stem = os.path.basename(samples_path).split(".")[0]
    return os.path.join(workdir or os.path.dirname(os.path.abspath(samples_path)), f"report_{stem}")


def run(
    samples_path: str,
    *,
    workdir: str | None = None,
    reference_path: str | None = None,
    report_dir: str | None = None,
    step: int | None = None,
    protein_kwargs: dict | None = None,
    ligand_kwargs: dict | None = None,
    progress: bool = True,
) -> dict:
    """Builds and writes the report of `samples_path`; returns the report (with `paths`)."""
    kind, columns = samples_lib.read_samples(samples_path)
    if reference_path:
        reference, what = samples_lib.read_reference(reference_path), reference_path
    elif workdir:
        reference, what = reference_from_workdir(workdir, step)
    else:
        raise ValueError("give --reference=FILE or --workdir of the run that made the samples")
    report = report_lib.build_report(
        kind,
        columns,
        reference,
        protein_kwargs=protein_kwargs,
        ligand_kwargs=ligand_kwargs,
        progress=progress,
    )
    report.update(samples=samples_path, reference=what)
    out = report_dir or default_report_dir(samples_path, workdir)
    report["paths"] = report_lib.write_report(report, out)
    return report
