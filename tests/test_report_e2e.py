"""End to end: a few training steps, the run's own samples, the report against its training data."""

import json
import os

import pytest

pytest.importorskip("parasail")
pytest.importorskip("rdkit")
pytest.importorskip("matplotlib")

from sedd_jax import sample_report  # noqa: E402
from sedd_jax.defaults import base_config, dual_base_config  # noqa: E402
from sedd_jax.training.loop import train_and_evaluate  # noqa: E402


def _short(c):
    c.model.hidden, c.model.n_heads, c.model.cond_dim = 32, 2, 16
    c.model.dropout = 0.0
    c.training.batch_size = 8
    c.training.n_steps = 3
    c.training.log_every = 3
    c.training.eval_every = 10_000
    c.training.checkpoint_every = 10_000
    c.eval.time_samples = 1
    c.eval.batch_size, c.eval.max_batches = 8, 1
    c.sampling.steps = 4
    c.sampling.num_samples = 8
    c.logging.progress_bar = False
    return c


@pytest.mark.slow
def test_demo_run_report_uses_the_runs_training_data(tmp_path):
    c = _short(base_config())
    c.data.max_len = 32
    c.model.n_blocks = 1
    summary = train_and_evaluate(c, str(tmp_path))
    report = sample_report.run(summary["samples"], workdir=str(tmp_path), progress=False)
    saved = json.loads(open(report["paths"]["json"]).read())
    assert saved["reference"].startswith("training split of data.source='demo'")
    assert saved["num_samples"] == 8
    assert 0.0 <= saved["headline"]["protein/novelty.max_identity_mean"] <= 1.0
    assert saved["tracks"]["protein"]["reference"]["length_mean"] <= 32
    assert os.path.isfile(os.path.join(tmp_path, "report_samples", "protein_composition.png"))


@pytest.mark.slow
def test_joint_demo_run_reports_both_pair_files(tmp_path):
    c = _short(dual_base_config())
    c.data.max_protein_len, c.data.max_ligand_len = 32, 64
    c.model.n_blocks_protein = c.model.n_blocks_ligand = 1
    try:
        summary = train_and_evaluate(c, str(tmp_path))
    except FileNotFoundError as error:  # the demo pairs are an optional install
        pytest.skip(str(error))
    small = {  # the reference side capped: the test is about plumbing, not the numbers
        "protein_kwargs": {"max_reference": 200, "families": False},
        "ligand_kwargs": {"fcd_size": None, "max_reference": 200},
        "progress": False,
    }
    joint = sample_report.run(summary["samples_joint"], workdir=str(tmp_path), **small)
    assert set(joint["tracks"]) == {"protein", "ligand"}
    assert 0.0 <= joint["headline"]["ligand/validity"] <= 1.0
    cond = sample_report.run(
        summary["samples_ligand_given_protein"], workdir=str(tmp_path), **small
    )
    assert set(cond["tracks"]) == {"ligand", "specificity"}
    for name in ("report_samples_joint", "report_samples_ligand_given_protein"):
        assert os.path.isfile(os.path.join(tmp_path, name, "report.md"))
