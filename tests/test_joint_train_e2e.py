"""End-to-end protein–ligand training on real pairs (pydebiaseddta + pydta)."""

import csv

import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.training.loop import train_and_evaluate
from tests.helpers import tiny_config

pytest.importorskip("rdkit")


JOINT_LEARNS = {
    "data.max_protein_len": 32,
    "data.max_ligand_len": 64,
    "model.hidden": 64,
    "model.n_heads": 4,
    "model.cond_dim": 32,
    "model.n_blocks_protein": 2,
    "model.n_blocks_ligand": 2,
    "training.batch_size": 16,
    "training.n_steps": 200,  # passes at seeds 0 and 1 (worst: final/unigram 0.97)
    "training.ema": 0.99,
    "training.log_every": 50,
    "training.eval_every": 10_000,
    "training.checkpoint_every": 10_000,
    "optim.lr": 2e-3,
    "optim.warmup": 20,
    "eval.batch_size": 64,
    "eval.time_samples": 2,
    "eval.max_batches": 2,
    "eval.sample_metrics_num": 0,  # not checked here (tiny_pair_run's tests cover them)
    "sampling.steps": 16,
    "sampling.num_samples": 4,
}


def tiny_joint_config():
    return tiny_config("dual", **JOINT_LEARNS)


@pytest.mark.slow
def test_joint_training_lowers_both_tracks_below_step0_and_unigram(tmp_path, missing_data):
    try:
        summary = train_and_evaluate(tiny_joint_config(), str(tmp_path))
    except FileNotFoundError as error:
        missing_data(error)
    rows = read_metrics(str(tmp_path))
    first = next(r for r in rows if "val/joint/loss_protein_ema" in r)
    baseline = next(r for r in rows if "val/loss_unigram_protein" in r)
    for task, track in [
        ("joint", "protein"),
        ("joint", "ligand"),
        ("ligand_given_protein", "ligand"),
        ("protein_given_ligand", "protein"),
    ]:
        key = f"{task}/loss_{track}_ema"
        final, initial = summary[key], first[f"val/{key}"]
        unigram = baseline[f"val/loss_unigram_{track}"]
        print(f"{key}: step0 {initial:.3f} final {final:.3f} unigram {unigram:.3f}")
        assert final < 0.9 * initial, key
        assert final < unigram, key
    # the length heads learn p(L | context): lower than at step 0 (uniform over 0..max_len)
    train = [r for r in rows if "train/length_nll_ligand" in r]
    assert len(train) >= 2 and "train/length_nll_protein" in train[-1]
    assert train[-1]["train/length_nll_ligand"] < train[0]["train/length_nll_ligand"]
    for task, track in [("ligand_given_protein", "ligand"), ("protein_given_ligand", "protein")]:
        key = f"{task}/length_nll_{track}_ema"
        print(f"{key}: step0 {first[f'val/{key}']:.3f} final {summary[key]:.3f}")
        assert summary[key] < first[f"val/{key}"], key
    with open(summary["samples_joint"]) as f:
        joint = list(csv.DictReader(f))
    assert len(joint) == 4 and all(r["sequence"] for r in joint)
    with open(summary["samples_ligand_given_protein"]) as f:
        conditional = list(csv.DictReader(f))
    assert all(r["sequence"] for r in conditional)
