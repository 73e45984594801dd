"""SELFIES ligand tokens: every symbol string decodes to a molecule (Krenn et al., 2020).

Atom-level SMILES diffusion must learn to balance ring closures and branches over long
ranges; SELFIES moves that grammar into the decoder, so any sampled symbol sequence is a
valid molecule. The tokenizer takes and returns SMILES (what every file a user reads
holds) and keeps SELFIES symbols inside:

    encode(smiles) = ids of split_selfies(encoder(smiles))        [num_symbols] int32
    decode(ids)    = decoder("".join(symbols of ids))             a SMILES string

Ids follow `SmilesTokenizer`: `<pad>`=0, `<unk>`=1, then the training symbols in sorted
order; the absorbing (mask) state is `vocab_size`. Length limits count SELFIES symbols.
`<unk>` symbols are dropped when decoding (the remaining symbols still decode to a
molecule; there is no text to keep them as).

Some SMILES have no SELFIES under the default semantic constraints (hypervalent
iodine or chlorine, metal complexes): `encode` raises `SelfiesEncodeError` naming the
SMILES, and the data pipelines count and skip such ligands, or fail, by config.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import selfies

from sedd_jax.data.smiles import SmilesTokenizer

SELFIES_PIN = "selfies==2.2.0"


class SelfiesEncodeError(ValueError):
    """A SMILES that SELFIES cannot encode (or that does not parse)."""


def to_selfies(smiles: str) -> str:
    """The SELFIES string of one SMILES; `SelfiesEncodeError` names the SMILES."""
    try:
        return selfies.encoder(smiles)
    except selfies.EncoderError as e:
        raise SelfiesEncodeError(f"SMILES {smiles!r} has no SELFIES: {e}") from None


def to_smiles(selfies_string: str) -> str:
    """The SMILES of a SELFIES string (always a molecule, possibly the empty one)."""
    return selfies.decoder(selfies_string)


class SelfiesTokenizer(SmilesTokenizer):
    """SMILES in, SMILES out; SELFIES symbols as tokens (see the module docstring)."""

    representation = "selfies"
    file_format = "sedd-selfies-tokenizer"

    @staticmethod
    def split(smiles: str) -> list[str]:
        """The SELFIES symbols of one SMILES."""
        return list(selfies.split_selfies(to_selfies(smiles)))

    def encode(self, smiles: str) -> np.ndarray:
        """Ids `[num_symbols]` int32 of the SELFIES of `smiles`; unseen symbols are `<unk>`."""
        return self.encode_tokens(self.split(smiles))

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The SMILES of the symbols of `ids` (pads, the absorbing id and `<unk>` dropped)."""
        return to_smiles(self.decode_selfies(ids))

    def decode_selfies(self, ids: Iterable[int] | np.ndarray) -> str:
        """The SELFIES string of `ids`, without pads, the absorbing id and `<unk>`."""
        unk = self.tokens[self.unk_id]
        return "".join(s for s in self.decode_tokens(ids) if s != unk)


LIGAND_TOKENIZERS: dict[str, type[SmilesTokenizer]] = {
    SmilesTokenizer.representation: SmilesTokenizer,
    SelfiesTokenizer.representation: SelfiesTokenizer,
}


def ligand_tokenizer_class(representation: str) -> type[SmilesTokenizer]:
    """The tokenizer of `data.ligand_representation` (`smiles` or `selfies`)."""
    if representation not in LIGAND_TOKENIZERS:
        raise ValueError(
            f"data.ligand_representation={representation!r}; choose one of "
            f"{sorted(LIGAND_TOKENIZERS)}"
        )
    return LIGAND_TOKENIZERS[representation]


def ligand_tokenizer_from_dict(data: dict, source: str = "<dict>") -> SmilesTokenizer:
    """A saved ligand tokenizer of either representation (chosen by its `format`)."""
    formats = {cls.file_format: cls for cls in LIGAND_TOKENIZERS.values()}
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in formats:
        raise ValueError(
            f"{source}: not a ligand tokenizer (format {fmt!r}; expected one of {sorted(formats)})"
        )
    return formats[fmt].from_dict(data, source)
