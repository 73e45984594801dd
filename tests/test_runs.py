"""The run object: one validation split for training, evaluation, reports and the twin;
the twin batches the trainer's shards row for row; `open_run` reads orbax and twin runs
alike."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sedd_jax import evaluate, sample_report
from sedd_jax.data.track_data import load_pair_track, load_single_track
from sedd_jax.defaults import base_config, dual_base_config
from sedd_jax.runs import Run, Tokenizers, build_components, open_run

SEEDS = (0, 1, 7)


def _config(source: str, seed: int):
    """A tiny run of the demo proteins (`demo`) or the demo pairs (`demo_pairs`)."""
    if source == "demo":
        c = base_config()
        c.data.max_len = 32
        c.model.hidden, c.model.n_blocks, c.model.n_heads, c.model.cond_dim = 32, 1, 2, 16
    else:
        c = dual_base_config()
        c.data.max_protein_len, c.data.max_ligand_len = 32, 48
        c.model.hidden, c.model.n_heads, c.model.cond_dim = 32, 2, 16
        c.model.n_blocks_protein, c.model.n_blocks_ligand = 1, 1
    c.seed = seed
    c.model.dropout = 0.0
    c.training.batch_size, c.training.n_steps, c.training.log_every = 8, 2, 1
    c.training.eval_every = c.training.checkpoint_every = 1000
    c.eval.batch_size, c.eval.time_samples, c.eval.max_batches = 16, 1, 1
    c.eval.sample_metrics_num = 0
    c.sampling.steps, c.sampling.num_samples = 4, 2
    c.logging.progress_bar = False
    return c


def _trainer_data(config):
    """What the JAX trainer reads (`training/tasks.py`)."""
    if config.model.kind == "dual":
        return load_pair_track(config.data)
    return load_single_track(config.data)


def _unsaved_run(config, data) -> Run:
    """A run as `open_run` gives it, from the meta its trainer would save."""
    tokenizers = Tokenizers.from_data(data)
    meta = {"config": config.to_dict(), "protein_vocab_size": 25}
    if tokenizers.ligand is not None:
        meta["ligand_tokenizer"] = tokenizers.ligand.to_dict()
    return Run("<unsaved>", 0, meta, dict)


def _proteins(data, arrays) -> list[str]:
    key = "tokens" if "tokens" in arrays else "protein"
    tokenizer = data.tokenizers[key]
    return tokenizer.decode_batch(
        arrays[key], arrays["valid" if key == "tokens" else "protein_valid"]
    )


def _assert_same_rows(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("source", ["demo", "demo_pairs"])
@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_report_and_twin_validate_on_the_trainers_split(source, seed):
    from sedd_torch.training.tasks import build_task

    config = _config(source, seed)
    trainer = _trainer_data(config)
    run = _unsaved_run(config, trainer)
    evaluated = evaluate.validation_arrays(run)
    _assert_same_rows(evaluated, trainer.val)
    if source == "demo":
        arrays, long, _ = evaluate.evaluation_arrays(run)
        assert long is None
        _assert_same_rows(arrays, trainer.val)
    twin = build_task(config, "cpu")
    rows = len(twin.data.val["valid" if source == "demo" else "protein_valid"])
    assert rows == config.eval.batch_size * config.eval.max_batches
    _assert_same_rows(twin.data.val, {k: v[:rows] for k, v in trainer.val.items()})

    # no evaluated row is a training row (by content, against the training shards)
    training = set(_proteins(trainer, trainer.train_arrays()))
    assert not training & set(_proteins(trainer, evaluated))
    reference, _ = sample_report.reference_from_data(run.config, run.data())
    assert set(reference["proteins"]) == training


@pytest.mark.parametrize("source", ["demo", "demo_pairs"])
def test_twin_batcher_gives_the_grain_loaders_rows(source):
    config = _config(source, 7)
    if source == "demo":
        config.data.crop, config.data.bucket_window = "random", 2
    data = _trainer_data(config)
    for shard in (0, 1):
        loader = data.loader(config.data, 8, config.seed, num_shards=2, shard_index=shard)
        batcher = data.batcher(config.data, 8, config.seed, num_shards=2, shard_index=shard)
        last_epoch_step = loader.steps_per_epoch - 1
        for step in (0, 1, last_epoch_step, last_epoch_step + 1):
            _assert_same_rows(batcher.batch(step), loader.batch(step))


def test_build_components_reads_the_vocabularies_of_the_tokenizers():
    config = _config("demo", 0)
    data = _trainer_data(config)
    parts = build_components(config, Tokenizers.from_data(data))
    assert parts.graph.dim == 26 and parts.graph.absorb  # 25 tokens + the mask
    pairs = _config("demo_pairs", 0)
    pair_data = _trainer_data(pairs)
    graphs = build_components(pairs, Tokenizers.from_data(pair_data)).graph
    assert graphs.ligand.dim == pair_data.ligand_tokenizer.vocab_size + 1


@pytest.mark.slow
def test_open_run_reads_an_orbax_and_a_twin_workdir_alike(tmp_path):
    import torch

    from sedd_jax.training.loop import train_and_evaluate as train_jax
    from sedd_torch.training.loop import train_and_evaluate as train_twin

    torch.set_num_threads(1)
    jax_config, twin_config = _config("demo", 0), _config("demo", 0)
    twin_config.backend = "torch"
    train_jax(jax_config, str(tmp_path / "jax"))
    train_twin(twin_config, str(tmp_path / "twin"))
    a, b = open_run(str(tmp_path / "jax")), open_run(str(tmp_path / "twin"))
    assert a.step == b.step == 2 and a.kind == b.kind == "single"
    twin_settings = b.config.to_dict()
    assert twin_settings.pop("backend") == "torch"
    settings = a.config.to_dict()
    settings.pop("backend")
    assert settings == twin_settings
    assert a.tokenizers.track.vocab_size == b.tokenizers.track.vocab_size
    for weights in ("ema", "params"):
        shapes = [jax.tree_util.tree_map(np.shape, r.params(weights)) for r in (a, b)]
        assert shapes[0] == shapes[1]
    _assert_same_rows(a.data().val, b.data().val)


def test_a_ligand_only_run_reads_its_smiles_vocabulary_from_meta():
    from sedd_jax.data.smiles import SmilesTokenizer

    ligands = SmilesTokenizer.build(["CCO", "c1ccccc1", "CC(=O)N"], min_count=1)
    config = _config("demo", 0)
    meta = {"ligand_tokenizer": ligands.to_dict(), "protein_vocab_size": ligands.vocab_size}
    tokenizers = Tokenizers.from_meta(config, meta)
    assert tokenizers.protein is None and tokenizers.track is tokenizers.ligand
    assert tokenizers.track.vocab_size == ligands.vocab_size
    graph = build_components(config, tokenizers).graph
    assert graph.dim == ligands.vocab_size + 1
