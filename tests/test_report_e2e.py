"""End to end: a few training steps, the run's own samples, the report against its training data."""

import json
import os

import pytest

pytest.importorskip("parasail")
pytest.importorskip("rdkit")
pytest.importorskip("matplotlib")

from sedd_jax import sample_report  # noqa: E402


@pytest.mark.slow
def test_demo_run_report_uses_the_runs_training_data(tiny_single_run):
    summary, workdir = tiny_single_run.summary, tiny_single_run.workdir
    report = sample_report.run(summary["samples"], workdir=str(workdir), progress=False)
    saved = json.loads(open(report["paths"]["json"]).read())
    assert saved["reference"].startswith("training split of data.source='demo'")
    assert saved["num_samples"] == 8
    assert 0.0 <= saved["headline"]["protein/novelty.max_identity_mean"] <= 1.0
    assert saved["tracks"]["protein"]["reference"]["length_mean"] <= 32
    assert os.path.isfile(os.path.join(workdir, "report_samples", "protein_composition.png"))


@pytest.mark.slow
def test_joint_demo_run_reports_both_pair_files(tiny_pair_run):
    summary, workdir = tiny_pair_run.summary, tiny_pair_run.workdir
    small = {  # the reference side capped: the test is about plumbing, not the numbers
        "protein_kwargs": {"max_reference": 200, "families": False},
        "ligand_kwargs": {"fcd_size": None, "max_reference": 200},
        "progress": False,
    }
    joint = sample_report.run(summary["samples_joint"], workdir=str(workdir), **small)
    assert set(joint["tracks"]) == {"protein", "ligand"}
    assert 0.0 <= joint["headline"]["ligand/validity"] <= 1.0
    cond = sample_report.run(summary["samples_ligand_given_protein"], workdir=str(workdir), **small)
    assert set(cond["tracks"]) == {"ligand", "specificity"}
    for name in ("report_samples_joint", "report_samples_ligand_given_protein"):
        assert os.path.isfile(os.path.join(workdir, name, "report.md"))
