"""Train/validation split, padding, and step-addressed batches.

`Batcher.batch(step)` is a pure function of (seed, step): the data position of a
run is its step, so a resumed run reads exactly the batches it would have read.
Multi-host runs give each host a contiguous slice of every global batch.
"""

import abc
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import numpy as np

from sedd_jax.data.protein import ProteinTokenizer

Crop = Literal["start", "center", "random"]
Batch = dict[str, np.ndarray]

_HASH_SCALE = float(2**64)
EXAMPLE_ID = "example_id"  # [b] int32 position of each row in its global batch


def is_validation(seq: str, val_fraction: float, seed: int = 0) -> bool:
    """True when `seq` belongs to validation: blake2b(seq, key=seed) / 2^64 < val_fraction.

    Depends only on the sequence string, so identical sequences land on the same
    side and the split is independent of file order.
    """
    digest = hashlib.blake2b(seq.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") / _HASH_SCALE < val_fraction


def split_train_val(
    seqs: Sequence[str], val_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Splits `seqs` into (train, validation) by `is_validation`, keeping input order."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train: list[str] = []
    val: list[str] = []
    for seq in seqs:
        (val if is_validation(seq, val_fraction, seed) else train).append(seq)
    return train, val


def _crop_start(length: int, max_len: int, rng: np.random.Generator | None) -> int:
    del length, max_len, rng
    return 0


def _crop_center(length: int, max_len: int, rng: np.random.Generator | None) -> int:
    del rng
    return (length - max_len) // 2


def _crop_random(length: int, max_len: int, rng: np.random.Generator | None) -> int:
    if rng is None:
        raise ValueError("crop='random' needs rng=np.random.Generator")
    return int(rng.integers(0, length - max_len + 1))


_CROP_OFFSET: dict[str, Callable[[int, int, np.random.Generator | None], int]] = {
    "start": _crop_start,
    "center": _crop_center,
    "random": _crop_random,
}


def encode_and_pad(
    seqs: Sequence[str],
    tokenizer: ProteinTokenizer,
    max_len: int,
    crop: Crop = "start",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes sequences into fixed-length arrays.

    Sequences longer than `max_len` are cropped to a window of `max_len`
    residues: the first ones (`crop="start"`, as the reference system), the middle
    ones (`crop="center"`, from (length - max_len) // 2) or a window drawn from `rng`
    (`crop="random"`). Shorter ones are padded with
    `tokenizer.pad_id`.

    Returns:
      tokens: `[N, max_len]` int32.
      valid: `[N, max_len]` bool, True at the min(len, max_len) residue positions.
    """
    if crop not in _CROP_OFFSET:
        raise ValueError(f"unknown crop {crop!r}; choose one of {sorted(_CROP_OFFSET)}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    crop_offset = _CROP_OFFSET[crop]
    tokens = np.full((len(seqs), max_len), tokenizer.pad_id, dtype=np.int32)
    valid = np.zeros((len(seqs), max_len), dtype=bool)
    for i, seq in enumerate(seqs):
        ids = tokenizer.encode(seq)
        if len(ids) > max_len:
            start = crop_offset(len(ids), max_len, rng)
            ids = ids[start : start + max_len]
        tokens[i, : len(ids)] = ids
        valid[i, : len(ids)] = True
    return tokens, valid


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> int:
    sizes = {name: len(a) for name, a in arrays.items()}
    if not sizes or len(set(sizes.values())) != 1:
        raise ValueError(f"arrays must share a non-empty leading axis, got sizes {sizes}")
    return next(iter(sizes.values()))


def _shard_slice(batch_size: int, num_shards: int, shard_index: int) -> slice:
    if batch_size < 1 or batch_size % num_shards:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of {num_shards=}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} not in [0, {num_shards})")
    local = batch_size // num_shards
    return slice(shard_index * local, (shard_index + 1) * local)


class StepBatches(abc.ABC):
    """Batches addressed by step: `batch(step)` is this host's part of global batch `step`,
    a pure function of (seed, step); `iterate(start)` the batches from `start` on. A
    subclass reads a checked step in `_read`."""

    @abc.abstractmethod
    def _read(self, step: int) -> Batch:
        """This host's part of global batch `step` >= 0."""

    def batch(self, step: int) -> Batch:
        """This host's part of global batch `step`: each array `[B / num_shards, ...]`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self._read(step)

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Batches `start_step`, `start_step + 1`, ... without end."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1


class Batcher(StepBatches):
    """Training batches addressed by step.

    Each epoch is a permutation of the N examples drawn from
    `np.random.default_rng([seed, epoch])`, cut into `steps_per_epoch = N // B`
    batches of the global batch size B (the incomplete last batch is dropped).
    With `num_shards=P`, `batch(step)` returns rows
    `[shard_index * B/P, (shard_index + 1) * B/P)` of the global batch. Every batch also
    carries `example_id` `[B/P]` int32: each row's position in the global batch, which keys
    its random draws in the train step (so they do not depend on devices or hosts).

    Args:
      arrays: named arrays sharing the leading axis N, e.g. `tokens` `[N, L]` int32
        and `valid` `[N, L]` bool from `encode_and_pad`.
      batch_size: the global batch size B, a multiple of `num_shards`.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        *,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
    ):
        self.arrays = {name: np.asarray(a) for name, a in arrays.items()}
        self.num_examples = _check_arrays(self.arrays)
        self.batch_size = batch_size
        self.seed = seed
        self.shard = _shard_slice(batch_size, num_shards, shard_index)
        self.steps_per_epoch = self.num_examples // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {self.num_examples} training examples"
            )
        self._cached_epoch = -1
        self._cached_perm = np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order `[N]` of the examples in `epoch`."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached_perm = rng.permutation(self.num_examples)
            self._cached_epoch = epoch
        return self._cached_perm

    def _read(self, step: int) -> Batch:
        epoch, index = divmod(step, self.steps_per_epoch)
        rows = self.permutation(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        rows = rows[self.shard]
        batch = {name: a[rows] for name, a in self.arrays.items()}
        batch[EXAMPLE_ID] = np.arange(self.shard.start, self.shard.stop, dtype=np.int32)
        return batch


def iter_eval_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    fill: Mapping[str, int | bool] | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
) -> Iterator[Batch]:
    """Every example once, in order, in global batches of B = `batch_size` rows.

    The last batch is padded to B rows with filler rows whose arrays hold
    `fill[name]` (0 / False where not given; give `{"tokens": pad_id}`), so every
    batch has the same shape and, with `valid` False, the filler carries no
    weight. With sharding, this shard's rows of each global batch are returned.

    Yields:
      dicts of arrays `[B / num_shards, ...]`.
    """
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    n = _check_arrays(arrays)
    shard = _shard_slice(batch_size, num_shards, shard_index)
    fill = dict(fill or {})
    unknown = set(fill) - set(arrays)
    if unknown:
        raise ValueError(f"fill names {sorted(unknown)} that are not arrays {sorted(arrays)}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        lo, hi = start + shard.start, min(start + shard.stop, stop)
        batch = {}
        for name, a in arrays.items():
            part = np.full((shard.stop - shard.start, *a.shape[1:]), fill.get(name, 0), a.dtype)
            if hi > lo:
                part[: hi - lo] = a[lo:hi]
            batch[name] = part
        yield batch


def length_distribution(valid: np.ndarray) -> np.ndarray:
    """Empirical distribution of lengths: `p[l]` = fraction of rows of `valid` `[N, L]` with l
    valid positions, as float64 `[L + 1]`."""
    valid = np.asarray(valid, dtype=bool)
    if valid.ndim != 2 or valid.shape[0] == 0:
        raise ValueError(f"valid must be [N, L] with N > 0, got shape {valid.shape}")
    counts = np.bincount(valid.sum(axis=1), minlength=valid.shape[1] + 1)
    return counts / counts.sum()


def sample_lengths(distribution: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """Draws `[num]` int32 lengths from `length_distribution` output `[L + 1]`."""
    return rng.choice(len(distribution), size=num, p=distribution).astype(np.int32)
