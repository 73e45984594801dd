"""Protein tokenizer with the reference system's ids.

Ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4, then the twenty standard
residues ACDEFGHIKLMNPQRSTVWY as 5..24. The vocabulary size is a config value
(>= 25): 25 is exact, 36 matches the reference checkpoints, whose ids 25..35 are
never used. The diffusion model's absorbing (mask) state is id `vocab_size`, one
beyond the tokenizer; the tokenizer never emits it and `decode` skips it.
"""

from collections.abc import Iterable, Sequence

import numpy as np

STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
FIRST_RESIDUE_ID = len(SPECIAL_TOKENS)
MIN_VOCAB_SIZE = FIRST_RESIDUE_ID + len(STANDARD_RESIDUES)
UNKNOWN_LETTER = "X"

_STRIP = str.maketrans("", "", " \t\n\r\v\f*")


def clean_sequence(seq: str) -> str:
    """Removes whitespace and `*` (stop), upper-cases, and turns non-ASCII characters into `?`.

    One character in, at most one character out: every kept character of `seq`
    stays one residue (a non-ASCII one then encodes as `<unk>`).
    """
    return seq.translate(_STRIP).encode("ascii", errors="replace").decode("ascii").upper()


def standard_fraction(seq: str) -> float:
    """Fraction of the residues of `clean_sequence(seq)` that are one of the 20 standard ones.

    An empty sequence has fraction 0.
    """
    seq = clean_sequence(seq)
    if not seq:
        return 0.0
    return sum(seq.count(a) for a in STANDARD_RESIDUES) / len(seq)


class ProteinTokenizer:
    """Maps protein sequences to int32 ids and back (ids in the module docstring)."""

    bos_id = 0
    pad_id = 1
    eos_id = 2
    unk_id = 3
    mask_token_id = 4

    def __init__(self, vocab_size: int = MIN_VOCAB_SIZE):
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE}, got {vocab_size}")
        self._vocab_size = vocab_size
        self._encode_table = np.full(256, self.unk_id, dtype=np.int32)
        letters = [""] * (vocab_size + 1)
        letters[self.unk_id] = UNKNOWN_LETTER
        for i, residue in enumerate(STANDARD_RESIDUES):
            self._encode_table[ord(residue)] = FIRST_RESIDUE_ID + i
            letters[FIRST_RESIDUE_ID + i] = residue
        self._decode_table = tuple(letters)

    @property
    def vocab_size(self) -> int:
        """Number of tokenizer ids; the model's vocabulary is `vocab_size + 1` (absorbing)."""
        return self._vocab_size

    @property
    def absorbing_id(self) -> int:
        """The diffusion model's absorbing (mask) state, one beyond the tokenizer."""
        return self._vocab_size

    def encode(self, seq: str) -> np.ndarray:
        """Encodes one sequence to ids `[len(clean_sequence(seq))]` int32.

        Lower case is accepted, whitespace and `*` are removed, and every other
        non-standard character (X, B, Z, U, O, digits, ...) becomes `<unk>`.
        """
        raw = clean_sequence(seq).encode("ascii")
        return self._encode_table[np.frombuffer(raw, dtype=np.uint8)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decodes ids `[L]` to residue letters; `<unk>` becomes `X`.

        Pad, the other special ids, the unused ids 25..vocab_size-1 and the
        absorbing id `vocab_size` are skipped. Ids outside [0, vocab_size] raise
        ValueError.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode expects a 1-D id array, got shape {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"decode expects integer ids, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids > self._vocab_size)
        if bad.any():
            raise ValueError(
                f"token id {int(ids[bad][0])} is outside [0, {self._vocab_size}] "
                f"(vocab_size={self._vocab_size}, absorbing id {self._vocab_size})"
            )
        return "".join(self._decode_table[i] for i in ids.tolist())

    def encode_batch(self, seqs: Iterable[str]) -> list[np.ndarray]:
        """Encodes each sequence; see `encode`. Use `batching.encode_and_pad` for arrays."""
        return [self.encode(s) for s in seqs]

    def decode_batch(self, ids: np.ndarray, valid: np.ndarray | None = None) -> list[str]:
        """Decodes ids `[N, L]`, keeping only the positions where `valid` `[N, L]` is True."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"decode_batch expects ids [N, L], got shape {ids.shape}")
        if valid is None:
            return [self.decode(row) for row in ids]
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != ids.shape:
            raise ValueError(f"valid shape {valid.shape} != ids shape {ids.shape}")
        return [self.decode(row[mask]) for row, mask in zip(ids, valid, strict=True)]
