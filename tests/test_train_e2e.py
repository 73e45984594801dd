"""End-to-end training on real proteins: learning, resuming, command-line behaviour."""

import csv
import json
import math

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.data.fasta import read_fasta
from sedd_jax.training.checkpoint import CheckpointMismatchError, make_manager
from sedd_jax.training.loop import train_and_evaluate
from tests.helpers import (
    LEARNS,
    REPO,
    SMALL_MODEL,
    TINY_MODEL,
    cli_overrides,
    run_cli,
    tiny_config,
)


def learning_config(**overrides):
    return tiny_config("base", **(LEARNS | overrides))


def last(rows, key):
    return [r[key] for r in rows if key in r][-1]


@pytest.mark.slow
def test_training_on_demo_proteins_beats_step0_and_unigram_baseline(tmp_path):
    # 200 of LEARNS' 300 steps: final 2.71 against unigram 2.80 (300 steps: 2.68)
    summary = train_and_evaluate(learning_config(**{"training.n_steps": 200}), str(tmp_path))
    rows = read_metrics(str(tmp_path))
    initial = [r["val/loss_ema"] for r in rows if "val/loss_ema" in r][0]
    unigram = last(rows, "val/loss_unigram")
    final = summary["loss_ema"]
    print(f"val loss: step0 {initial:.4f}  final {final:.4f}  unigram {unigram:.4f}")
    assert final < 0.85 * initial
    assert final < unigram - 0.02
    records = read_fasta(summary["samples"])
    assert len(records) == 4
    assert all(set(r.sequence) <= set("ACDEFGHIKLMNPQRSTVWYX") for r in records)

    # the sampling CLI reads everything from the checkpoint and honours a prefix prompt
    out = tmp_path / "prompted.fasta"
    result = _run_module(
        "sedd_jax.sample",
        f"--workdir={tmp_path}",
        "--num=3",
        "--prefix=MKV",
        "--steps=16",
        "--length=20",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr
    prompted = read_fasta(str(out))
    assert [len(r.sequence) for r in prompted] == [20, 20, 20]
    assert all(r.sequence.startswith("MKV") for r in prompted)

    # the likelihood bound of the validation split sits just above the training-time loss
    report, scores = tmp_path / "likelihood.json", tmp_path / "scores.csv"
    result = _run_module(
        "sedd_jax.evaluate",
        f"--workdir={tmp_path}",
        "--time_samples=8",
        f"--out={report}",
        f"--per_sequence={scores}",
    )
    assert result.returncode == 0, result.stderr
    bound = json.loads(report.read_text())
    # --per_sequence: one row per scored sequence, adding up to the JSON's means
    with open(scores) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == bound["sequences"] > 0
    assert sum(int(r["tokens"]) for r in rows) == bound["tokens"]
    # scored tokens: the residues and whichever of <s>, </s> the crop kept
    assert all(0 <= int(r["tokens"]) - len(r["sequence"]) <= 2 for r in rows)
    nll = np.array([float(r["nll_nats"]) for r in rows])
    full = np.array([float(r["nll_with_length_nats"]) for r in rows])
    assert nll.mean() == pytest.approx(bound["nats_per_sequence"], rel=1e-9)
    assert full.mean() == pytest.approx(bound["with_length_nats_per_sequence"], rel=1e-9)
    assert (full >= nll).all()  # -log p_hat(L) >= 0
    # E[bound] = E[validation loss] + prior + the [0, eps] sliver >= E[validation loss]: the
    # claim is one-sided; both estimates carry a Monte Carlo error of about the bound's se
    se = bound["nats_per_token_se"]
    assert 0 < se < 0.1
    assert bound["nats_per_token"] >= final - 3 * math.sqrt(2) * se
    assert bound["perplexity"] == pytest.approx(np.exp(bound["nats_per_token"]))


def _restore_tree(workdir, step):
    manager = make_manager(workdir, keep=10, async_save=False)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored.state


@pytest.mark.slow
def test_kill_and_resume_gives_bit_identical_parameters(tmp_path):
    overrides = SMALL_MODEL | {
        "model.dropout": 0.1,
        "training.n_steps": 8,
        "training.checkpoint_every": 3,
        "eval.max_batches": 1,
        "sampling.steps": 4,
        "sampling.num_samples": 2,
    }
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(learning_config(**overrides), straight)
    first = train_and_evaluate(
        learning_config(**overrides, **{"training.stop_after_steps": 4}), resumed
    )
    assert first["step"] == 4
    second = train_and_evaluate(learning_config(**overrides), resumed)
    assert second["step"] == 8
    a, b = _restore_tree(straight, 8), _restore_tree(resumed, 8)
    leaves_a = ocp.tree.to_flat_dict(a)
    leaves_b = ocp.tree.to_flat_dict(b)
    assert leaves_a.keys() == leaves_b.keys()
    for key in leaves_a:
        assert np.array_equal(np.asarray(leaves_a[key]), np.asarray(leaves_b[key])), key
    # and training moved the parameters at all
    start = _restore_tree(straight, 3)
    assert not np.array_equal(
        np.asarray(ocp.tree.to_flat_dict(start)[("params", "vocab_embed")]),
        np.asarray(leaves_a[("params", "vocab_embed")]),
    )


def _run_module(module, *args):
    return run_cli(module, *args, check=False)


def _run_cli(*args):
    return _run_module("sedd_jax.train", *args)


@pytest.mark.slow
def test_cli_rejects_unknown_config_key(tmp_path):
    result = _run_cli(
        "--config=configs/demo.py", "--config.optim.learning_rate=1", f"--workdir={tmp_path}"
    )
    assert result.returncode != 0
    assert "learning_rate" in result.stderr


@pytest.mark.slow
def test_stable_config_without_prepared_uniref50_says_how_to_get_it(tmp_path):
    result = _run_cli(
        "--config=configs/stable.py",
        f"--workdir={tmp_path}",
        f"--config.data.path={tmp_path}/missing_shards",
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.source='shards': no prepared shards")
    assert "python -m sedd_jax.data.download uniref50" in last
    assert "python -m sedd_jax.data.prepare" in last and "missing_shards" in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_readme_demo_command_writes_to_runs_demo_by_default(tmp_path):
    """The README's command has no --workdir: outputs go to ./runs/<config name>. (The
    tiny model: where outputs go does not depend on its size.)"""
    result = run_cli(
        "sedd_jax.train",
        f"--config={REPO / 'configs' / 'demo.py'}",
        *cli_overrides(TINY_MODEL | {"model.n_blocks": 1, "data.max_len": 32}),
        "--config.training.n_steps=2",
        "--config.eval.max_batches=1",
        "--config.sampling.steps=2",
        "--config.sampling.num_samples=2",
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs" / "demo"
    assert len(read_fasta(str(run / "samples.fasta"))) == 2
    assert [r["step"] for r in read_metrics(str(run)) if "train/loss" in r] == [2]
    assert (run / "checkpoints" / "2").is_dir()


@pytest.mark.slow
def test_resuming_with_a_changed_model_is_an_error_not_a_fresh_start(tmp_path):
    overrides = SMALL_MODEL | {
        "training.n_steps": 2,
        "eval.max_batches": 1,
        "sampling.steps": 2,
        "sampling.num_samples": 1,
    }
    train_and_evaluate(learning_config(**overrides), str(tmp_path))
    with pytest.raises(CheckpointMismatchError, match="new --workdir"):
        train_and_evaluate(learning_config(**{**overrides, "model.hidden": 48}), str(tmp_path))
    assert make_manager(str(tmp_path), keep=10, async_save=False).all_steps() == [2]
