"""Train/validation split, padding, step-addressed batches and evaluation batches."""

import numpy as np
import pytest

from sedd_jax.data import sources
from sedd_jax.data.batching import (
    Batcher,
    encode_and_pad,
    is_validation,
    iter_eval_batches,
    length_distribution,
    sample_lengths,
    split_train_val,
)
from sedd_jax.data.protein import ProteinTokenizer

TOK = ProteinTokenizer()


@pytest.fixture(scope="module")
def demo_seqs() -> list[str]:
    return sources.load_sequences("demo")


def _toy_arrays(n: int, length: int = 8) -> dict[str, np.ndarray]:
    """Row i holds the value i, so batch rows identify their examples."""
    tokens = np.repeat(np.arange(n, dtype=np.int32)[:, None], length, axis=1)
    return {"tokens": tokens, "valid": np.ones((n, length), dtype=bool)}


# --- split ---------------------------------------------------------------------------------


@pytest.mark.parametrize("val_fraction", [0.05, 0.1, 0.3])
def test_split_is_disjoint_complete_and_near_requested_fraction(demo_seqs, val_fraction):
    train, val = split_train_val(demo_seqs, val_fraction, seed=0)
    assert len(train) + len(val) == len(demo_seqs) == 2100
    assert not set(train) & set(val)
    assert abs(len(val) / len(demo_seqs) - val_fraction) <= 0.02


def test_split_is_deterministic_and_independent_of_order(demo_seqs):
    train, val = split_train_val(demo_seqs, 0.1, seed=3)
    shuffled = list(np.random.default_rng(0).permutation(demo_seqs))
    train2, val2 = split_train_val(shuffled, 0.1, seed=3)
    assert sorted(train) == sorted(train2) and sorted(val) == sorted(val2)
    assert split_train_val(demo_seqs, 0.1, seed=3) == (train, val)


def test_split_seed_changes_split_and_duplicates_stay_together(demo_seqs):
    _, val0 = split_train_val(demo_seqs, 0.1, seed=0)
    _, val1 = split_train_val(demo_seqs, 0.1, seed=1)
    assert set(val0) != set(val1)
    seq = val0[0]
    train, val = split_train_val([seq, "MKV", seq], 0.1, seed=0)
    assert val.count(seq) == 2 and seq not in train
    assert is_validation(seq, 0.1, seed=0)


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(["MK"], 1.0)


# --- encode_and_pad ------------------------------------------------------------------------


def test_encode_and_pad_shapes_truncation_and_valid_counts(demo_seqs):
    seqs = demo_seqs[:200]
    tokens, valid = encode_and_pad(seqs, TOK, max_len=128)
    assert tokens.shape == valid.shape == (200, 128)
    assert tokens.dtype == np.int32 and valid.dtype == bool
    lengths = np.array([len(s) for s in seqs])
    np.testing.assert_array_equal(valid.sum(axis=1), np.minimum(lengths, 128))
    assert np.all(tokens[~valid] == TOK.pad_id)
    assert np.all(tokens[valid] >= 3)
    long = int(np.argmax(lengths > 128))
    assert TOK.decode(tokens[long]) == seqs[long][:128]
    short = int(np.argmax(lengths < 128))
    assert TOK.decode(tokens[short]) == seqs[short]


def test_random_crop_is_a_window_of_the_sequence_drawn_from_rng():
    seq = "ACDEFGHIKLMNPQRSTVWY" * 3
    crops = [
        TOK.decode(encode_and_pad([seq], TOK, 10, "random", np.random.default_rng(i))[0][0])
        for i in range(20)
    ]
    assert all(c in seq and len(c) == 10 for c in crops)
    assert len(set(crops)) > 1
    again = encode_and_pad([seq], TOK, 10, "random", np.random.default_rng(0))[0]
    assert TOK.decode(again[0]) == crops[0]
    with pytest.raises(ValueError, match="rng"):
        encode_and_pad([seq], TOK, 10, "random")
    with pytest.raises(ValueError, match="unknown crop"):
        encode_and_pad([seq], TOK, 10, "end")


# --- Batcher -------------------------------------------------------------------------------


def test_batch_is_a_pure_function_of_seed_and_step():
    arrays = _toy_arrays(103)
    a, b = Batcher(arrays, 8, seed=5), Batcher(arrays, 8, seed=5)
    first = a.batch(30)
    a.batch(2)
    for batch in (a.batch(30), b.batch(30)):
        np.testing.assert_array_equal(batch["tokens"], first["tokens"])
    assert first["tokens"].shape == (8, 8) and first["valid"].shape == (8, 8)
    assert not np.array_equal(Batcher(arrays, 8, seed=6).batch(30)["tokens"], first["tokens"])


def test_every_example_once_per_epoch_and_epochs_differ():
    n, bsz = 103, 8
    batcher = Batcher(_toy_arrays(n), bsz, seed=0)
    assert batcher.steps_per_epoch == 12
    epochs = []
    for epoch in range(2):
        steps = range(epoch * 12, (epoch + 1) * 12)
        seen = np.concatenate([batcher.batch(s)["tokens"][:, 0] for s in steps])
        assert len(seen) == 96 and len(np.unique(seen)) == 96
        assert set(seen) <= set(range(n))
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("num_shards", [2, 4])
def test_sharded_batches_concatenate_to_the_global_batch(num_shards):
    arrays = _toy_arrays(50)
    full = Batcher(arrays, 8, seed=1)
    shards = [
        Batcher(arrays, 8, seed=1, num_shards=num_shards, shard_index=i) for i in range(num_shards)
    ]
    for step in (0, 5, 17):
        parts = [s.batch(step) for s in shards]
        assert parts[0]["tokens"].shape == (8 // num_shards, 8)
        for name in ("tokens", "valid"):
            np.testing.assert_array_equal(
                np.concatenate([p[name] for p in parts]), full.batch(step)[name]
            )


def test_batcher_rejects_bad_configuration():
    arrays = _toy_arrays(10)
    with pytest.raises(ValueError, match="multiple"):
        Batcher(arrays, 6, num_shards=4)
    with pytest.raises(ValueError, match="exceeds"):
        Batcher(arrays, 16)
    with pytest.raises(ValueError, match="shard_index"):
        Batcher(arrays, 4, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="leading axis"):
        Batcher({"tokens": np.zeros((10, 4)), "valid": np.zeros((9, 4))}, 2)


# --- evaluation batches --------------------------------------------------------------------


def test_eval_batches_cover_every_example_once_with_fixed_shapes():
    n, bsz = 23, 8
    batches = list(iter_eval_batches(_toy_arrays(n), bsz, fill={"tokens": TOK.pad_id}))
    assert len(batches) == 3
    assert all(b["tokens"].shape == (8, 8) for b in batches)
    rows_valid = np.concatenate([b["valid"].any(axis=1) for b in batches])
    assert rows_valid.sum() == n and not rows_valid[n:].any()
    ids = np.concatenate([b["tokens"][:, 0] for b in batches])[rows_valid]
    np.testing.assert_array_equal(ids, np.arange(n))
    assert np.all(batches[-1]["tokens"][7:] == TOK.pad_id)


@pytest.mark.parametrize("num_shards", [2, 4])
def test_sharded_eval_batches_concatenate_to_the_global_batches(num_shards):
    arrays = _toy_arrays(21)
    full = list(iter_eval_batches(arrays, 8, fill={"tokens": TOK.pad_id}))
    shards = [
        list(
            iter_eval_batches(
                arrays,
                8,
                fill={"tokens": TOK.pad_id},
                num_shards=num_shards,
                shard_index=i,
            )
        )
        for i in range(num_shards)
    ]
    assert all(len(s) == len(full) for s in shards)
    for k, batch in enumerate(full):
        for name in ("tokens", "valid"):
            np.testing.assert_array_equal(np.concatenate([s[k][name] for s in shards]), batch[name])


# --- lengths -------------------------------------------------------------------------------


def test_length_distribution_matches_valid_counts():
    valid = np.zeros((4, 5), dtype=bool)
    for row, length in enumerate([2, 2, 5, 0]):
        valid[row, :length] = True
    dist = length_distribution(valid)
    np.testing.assert_allclose(dist, [0.25, 0, 0.5, 0, 0, 0.25])
    drawn = sample_lengths(dist, 4000, np.random.default_rng(0))
    assert drawn.dtype == np.int32 and set(np.unique(drawn)) == {0, 2, 5}
    assert abs(np.mean(drawn == 2) - 0.5) < 0.03
