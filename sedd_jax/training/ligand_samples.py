"""Ligand samples in a run: validity, uniqueness and novelty of sampled SMILES.

The task adapters (`training/tasks/`) sample `eval.sample_metrics_num` ligands at each
evaluation with fixed keys and report `ligand_validity`, `ligand_uniqueness`,
`ligand_novelty` (`metrics/headline.py`, MOSES definitions); at the end of a run the
same numbers of each samples file are appended to metrics.jsonl as `samples/<task>/...`.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from ml_collections import ConfigDict

from sedd_jax.common.metrics_log import MetricsLogger
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.metrics.headline import headline_metrics

SAMPLE_METRICS_SEED = 0x5A3  # fixed keys of the in-training samples (added to config.seed)
# which task the in-training ligand samples come from: the first one the mixture trains
SAMPLE_METRICS_TASKS = ("ligand_given_protein", "joint", "ligand_only")


def sample_metrics_num(config, tokenizer, warnings: list[str]) -> int:
    """Ligands to sample per evaluation (0 for proteins, or without RDKit, with a warning)."""
    n = config.eval.get("sample_metrics_num", 0)
    if not n or not isinstance(tokenizer, SmilesTokenizer):
        return 0
    if importlib.util.find_spec("rdkit") is None:
        warnings.append(f"eval.sample_metrics_num={n} needs RDKit (pip install rdkit); skipped")
        return 0
    return n


def ligand_metrics(smiles, reference) -> dict:
    """`ligand_validity`, `ligand_uniqueness`, `ligand_novelty` of sampled SMILES."""
    return {f"ligand_{k}": v for k, v in headline_metrics("ligand", smiles, reference).items()}


def selfies_of(tokenizer, tokens, valid) -> list[str] | None:
    """The SELFIES strings of sampled rows, for SELFIES tokenizers (None for SMILES)."""
    if getattr(tokenizer, "representation", "smiles") != "selfies":
        return None
    tokens, valid = np.asarray(tokens), np.asarray(valid)
    return [tokenizer.decode_selfies(row[v]) for row, v in zip(tokens, valid, strict=True)]


def log_sample_metrics(workdir: str, step: int, metrics: dict) -> None:
    """Appends end-of-run sample metrics to metrics.jsonl (the loop's logger has written
    its last row; wandb holds the same numbers of the final evaluation)."""
    if metrics:
        MetricsLogger(workdir, _NO_WANDB).write(step, metrics, prefix="samples/")


_NO_WANDB = ConfigDict({"logging": {"wandb": "disabled"}})
