"""`python -m sedd_jax.evaluate --samples=FILE`: the sample-quality report of a sample file.

The reference set is `--reference=FILE` (FASTA, .smi or a pair CSV) or, by default, the
training split of the run in `--workdir`, rebuilt from the config saved in its newest
checkpoint with the training data loading (proteins: the training crops the model saw;
pairs: the training proteins, cropped likewise, and SMILES of the protein-disjoint
split). The metrics live in `sedd_jax/metrics/` (no jax); this module finds the inputs.
"""

from __future__ import annotations

import logging
import os

from ml_collections import ConfigDict

from sedd_jax.metrics import report as report_lib
from sedd_jax.metrics import samples as samples_lib

log = logging.getLogger(__name__)


def reference_from_config(config: ConfigDict) -> tuple[dict[str, list[str]], str]:
    """Training proteins / SMILES of a run's config, and a description of them."""
    if config.model.get("kind", "single") == "dual":
        from sedd_jax.data.pair_pipeline import load_pair_data

        data = load_pair_data(config.data, config.seed)
        train = data.train
        proteins = data.protein_tokenizer.decode_batch(train["protein"], train["protein_valid"])
        smiles = [
            data.ligand_tokenizer.decode(row[valid])
            for row, valid in zip(train["ligand"], train["ligand_valid"], strict=True)
        ]
        what = (
            f"training split of data.source={config.data.source!r} ({len(smiles)} pairs, "
            f"proteins cropped to data.max_protein_len={config.data.max_protein_len})"
        )
        return {"proteins": list(dict.fromkeys(proteins)), "smiles": smiles}, what
    from sedd_jax.data.pipeline import load_protein_data

    data = load_protein_data(config.data, config.seed)
    proteins = data.tokenizer.decode_batch(data.train["tokens"], data.train["valid"])
    what = (
        f"training split of data.source={config.data.source!r} "
        f"(cropped to data.max_len={config.data.max_len})"
    )
    return {"proteins": proteins, "smiles": []}, what


def reference_from_workdir(workdir: str, step: int | None = None):
    from sedd_jax.training.checkpoint import read_meta

    _, meta = read_meta(workdir, step)
    return reference_from_config(ConfigDict(meta["config"]))


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
