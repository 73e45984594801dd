"""Atom-level SMILES tokenizer, plus optional RDKit canonicalisation and augmentation.

Tokens follow the atom-level regex of Schwaller et al. (Molecular Transformer,
2019): bracket atoms `[C@@H]`, the two-letter organic atoms `Br` and `Cl`, the
organic subset `B C N O P S F I` and its aromatic forms `b c n o p s`, ring
closures `1`..`9` and `%10`..`%99`, bonds `- = # $ : / \\ ~`, branches `( )`,
`.`, `+`, `@`, `?`, `>` and `*`.

Ids: `<pad>`=0, `<unk>`=1, then the tokens of the training SMILES in sorted
order. The diffusion model's absorbing (mask) state is id `vocab_size`, one
beyond the tokenizer; the tokenizer never emits it and `decode` skips it. The
vocabulary is saved as JSON beside each checkpoint.

RDKit is optional: only `canonicalize` and `randomize` need it, and they import
it when called.
"""

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

SMILES_REGEX = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])"
)
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)
FILE_FORMAT = "sedd-smiles-tokenizer"
FILE_VERSION = 1
RDKIT_INSTALL = "pip install rdkit==2026.9.1  (or: pip install 'sedd[chem]')"


def tokenize(smiles: str) -> list[str]:
    """Splits a SMILES string into atom-level tokens; `"".join(tokenize(s)) == s`.

    Raises:
      ValueError: a character the regex cannot cover (whitespace, an unclosed
        bracket, a lone `%`, an element outside the organic subset written
        without brackets, ...), naming its 0-based position.
    """
    tokens = []
    position = 0
    for match in SMILES_REGEX.finditer(smiles):
        if match.start() != position:
            break
        tokens.append(match.group())
        position = match.end()
    if position != len(smiles):
        raise ValueError(
            f"SMILES {smiles!r}: cannot tokenize character {smiles[position]!r} "
            f"at position {position}"
        )
    return tokens


class SmilesTokenizer:
    """Maps SMILES strings to int32 ids and back, with a vocabulary built from data."""

    pad_id = 0
    unk_id = 1
    representation = "smiles"
    file_format = FILE_FORMAT

    def __init__(self, tokens: Sequence[str]):
        """Builds the tokenizer from its ordered token list (the specials first).

        Use `SmilesTokenizer.build` to make one from training SMILES and
        `SmilesTokenizer.load` to read a saved one.
        """
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"token list must start with {list(SPECIAL_TOKENS)}, got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            duplicates = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"token list has duplicates: {duplicates}")
        self._tokens = tuple(tokens)
        self._ids = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, smiles: Iterable[str], min_count: int = 1) -> "SmilesTokenizer":
        """Builds the vocabulary from training SMILES.

        Tokens seen at least `min_count` times are kept, in sorted (code point)
        order after the specials, so the ids depend only on the set of tokens
        kept, not on the order of the data.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for s in smiles:
            counts.update(cls.split(s))
        kept = sorted(t for t, n in counts.items() if n >= min_count and t not in SPECIAL_TOKENS)
        return cls(SPECIAL_TOKENS + tuple(kept))

    @staticmethod
    def split(smiles: str) -> list[str]:
        """The tokens of one training string (`tokenize`; SELFIES symbols in the subclass)."""
        return tokenize(smiles)

    @property
    def vocab_size(self) -> int:
        """Number of tokenizer ids; the model's vocabulary is `vocab_size + 1` (absorbing)."""
        return len(self._tokens)

    @property
    def absorbing_id(self) -> int:
        """The diffusion model's absorbing (mask) state, one beyond the tokenizer."""
        return len(self._tokens)

    @property
    def tokens(self) -> tuple[str, ...]:
        """The vocabulary in id order."""
        return self._tokens

    def encode(self, smiles: str) -> np.ndarray:
        """Encodes one SMILES to ids `[num_tokens]` int32; unseen tokens become `<unk>`."""
        return self.encode_tokens(tokenize(smiles))

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids `[len(tokens)]` int32 of a token list; unseen tokens become `<unk>`."""
        return np.array([self._ids.get(t, self.unk_id) for t in tokens], dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Joins the tokens of `ids` `[L]`, skipping `<pad>` and the absorbing id.

        `<unk>` is written as the text `<unk>`, so a SMILES with an unseen token
        does not silently turn into a different molecule.
        """
        return "".join(self.decode_tokens(ids))

    def decode_tokens(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """The tokens of `ids` `[L]`, without `<pad>` and the absorbing id."""
        pieces = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if i == self.pad_id or i == self.absorbing_id:
                continue
            if not 0 <= i < len(self._tokens):
                raise ValueError(f"id {i} is outside [0, {self.absorbing_id}]")
            pieces.append(self._tokens[i])
        return pieces

    def decode_batch(self, ids: np.ndarray, valid: np.ndarray) -> list[str]:
        """Decodes ids `[N, L]` at the positions where `valid` `[N, L]` is True."""
        ids, valid = np.asarray(ids), np.asarray(valid, dtype=bool)
        return [self.decode(row[mask]) for row, mask in zip(ids, valid, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-able form written by `save`."""
        return {"format": self.file_format, "version": FILE_VERSION, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "SmilesTokenizer":
        """Inverse of `to_dict`; `source` names the file in error messages."""
        if not isinstance(data, dict) or data.get("format") != cls.file_format:
            raise ValueError(
                f"{source}: not a {cls.representation} tokenizer file "
                f"(format {data.get('format') if isinstance(data, dict) else None!r} "
                f"!= {cls.file_format!r})"
            )
        if data.get("version") != FILE_VERSION:
            raise ValueError(
                f"{source}: unsupported tokenizer file version {data.get('version')!r}, "
                f"expected {FILE_VERSION}"
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{source}: 'tokens' must be a list of strings")
        try:
            return cls(tokens)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON (see `to_dict`)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SmilesTokenizer":
        """Reads a vocabulary written by `save`."""
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{os.fspath(path)}: invalid JSON: {e}") from e
        return cls.from_dict(data, source=os.fspath(path))


def _rdkit_chem() -> ModuleType:
    try:
        from rdkit import Chem
    except ImportError as e:
        raise ImportError(f"this SMILES function needs RDKit: {RDKIT_INSTALL}") from e
    return Chem


def canonicalize(smiles: str) -> str | None:
    """RDKit canonical SMILES, or None when RDKit cannot parse `smiles`."""
    Chem = _rdkit_chem()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def randomize(smiles: str, rng: np.random.Generator) -> str:
    """A random, non-canonical SMILES of the same molecule (augmentation).

    The atoms are renumbered by a permutation drawn from `rng`, and the SMILES is
    written from atom 0 in the new order, so the result depends only on the
    state of `rng`. Stereochemistry is kept.

    Raises:
      ValueError: RDKit cannot parse `smiles`.
    """
    Chem = _rdkit_chem()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    order = rng.permutation(mol.GetNumAtoms()).tolist()
    return Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False)


class RandomizedSmiles:
    """Augmentation of one stored molecule: the ids of a random SMILES of it (or None).

    `__call__(smiles, rng, max_len)` writes `randomize(smiles, rng)` with `tokenizer`
    (for SELFIES: the SELFIES of the random SMILES). It returns None, so the caller keeps
    the stored ids, when that form is longer than `max_len` (a cut ligand is no molecule),
    holds a token outside the vocabulary (`<unk>` would change the molecule), or cannot be
    written (RDKit or SELFIES refuses it). Picklable: it runs in grain worker processes.
    """

    def __init__(self, tokenizer: SmilesTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, smiles: str, rng: np.random.Generator, max_len: int) -> np.ndarray | None:
        try:
            ids = self.tokenizer.encode(randomize(smiles, rng))
        except ValueError:  # unparsable, or no SELFIES (SelfiesEncodeError is a ValueError)
            return None
        if len(ids) > max_len or (ids == self.tokenizer.unk_id).any():
            return None
        return ids
