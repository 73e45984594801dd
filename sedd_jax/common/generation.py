"""Sampling inputs both backends build the same way: lengths, padded start rows, and the
ids a sampler must never draw."""

from __future__ import annotations

import numpy as np

from sedd_jax.data.batching import sample_lengths
from sedd_jax.data.protein import FIRST_RESIDUE_ID, STANDARD_RESIDUES, ProteinTokenizer

_SPECIAL_ID_NAMES = ("bos_id", "pad_id", "eos_id", "unk_id", "mask_token_id")


def special_ids(tokenizer) -> tuple[int, ...]:
    """Ids that are no residue / atom: never drawn at a generated position.

    Proteins: `<s>`, `<pad>`, `</s>`, `<unk>`, the tokenizer's `<mask>` (id 4, not the
    absorbing state) and the unused ids 25..vocab_size-1 of reference-sized
    vocabularies; SMILES / SELFIES: `<pad>`, `<unk>`.
    """
    ids = {getattr(tokenizer, name) for name in _SPECIAL_ID_NAMES if hasattr(tokenizer, name)}
    if isinstance(tokenizer, ProteinTokenizer):
        ids |= set(range(FIRST_RESIDUE_ID + len(STANDARD_RESIDUES), tokenizer.vocab_size))
    return tuple(sorted(ids))


def forbidden_ids(dim: int, ids, mask_id: int | None = None) -> np.ndarray:
    """[dim] bool, True at `ids`: the samplers' `forbidden` argument. The absorbing
    state `mask_id` cannot be forbidden (every generated position starts there)."""
    ids = np.asarray(list(ids), np.int64)
    if mask_id is not None and (ids == mask_id).any():
        raise ValueError(f"the mask id {mask_id} cannot be a forbidden id")
    if ((ids < 0) | (ids >= dim)).any():
        raise ValueError(f"forbidden ids {ids.tolist()} are outside [0, {dim})")
    out = np.zeros(dim, bool)
    out[ids] = True
    return out


def tokenizer_forbidden(graph, tokenizer) -> np.ndarray:
    """`forbidden_ids` of the tokenizer's `special_ids` on `graph`'s vocabulary."""
    return forbidden_ids(graph.dim, special_ids(tokenizer), graph.mask_id)


def initial_tokens(lengths: np.ndarray, max_len: int, mask_id: int | None, pad_id: int):
    """Rows of the given lengths, padded: (x_init [B, L] int32, valid [B, L] bool).

    Valid positions hold the mask id (pad for graphs without one); samplers replace
    every unclamped valid position by a draw from the graph's limit anyway.
    """
    valid = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
    fill = pad_id if mask_id is None else mask_id
    return np.where(valid, fill, pad_id).astype(np.int32), valid


def draw_lengths(num: int, length: int, max_len: int, length_dist, rng) -> np.ndarray:
    """[num] lengths: `length` when > 0, else draws from the training distribution."""
    if length > 0:
        return np.full(num, min(length, max_len), np.int32)
    return np.maximum(sample_lengths(np.asarray(length_dist), num, rng), 1)
