"""Tests of the atom-level SMILES tokenizer and the RDKit helpers."""

import importlib.util
import json
import os

import numpy as np
import pytest

from sedd_jax.data.smiles import (
    SPECIAL_TOKENS,
    SmilesTokenizer,
    canonicalize,
    randomize,
    tokenize,
)


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return spec.submodule_search_locations[0] if spec is not None else None


@pytest.fixture(scope="module")
def nci_smiles() -> list[str]:
    """The 4,999 NCI SMILES shipped in the RDKit wheel (`SMILES<TAB>id`)."""
    rdkit_dir = _package_dir("rdkit")
    if rdkit_dir is None:
        pytest.skip("rdkit is not installed (it ships rdkit/Data/NCI/first_5K.smi)")
    with open(os.path.join(rdkit_dir, "Data", "NCI", "first_5K.smi")) as f:
        return [line.split("\t")[0] for line in f if line.strip()]


@pytest.fixture(scope="module")
def demo_smiles(missing_data) -> list[str]:
    """Distinct SMILES of the demo pair set, in first-seen order."""
    from sedd_jax.data.pairs import PairSourceNotFoundError, load_demo_pairs

    try:
        return list(dict.fromkeys(load_demo_pairs().smiles))
    except PairSourceNotFoundError as e:
        missing_data(e)


@pytest.mark.parametrize(
    "smiles, tokens",
    [
        ("Cl", ["Cl"]),
        ("Br", ["Br"]),
        ("CCl", ["C", "Cl"]),
        ("[C@@H]", ["[C@@H]"]),
        ("C%10CC%10", ["C", "%10", "C", "C", "%10"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("c1ccccc1", ["c", "1", "c", "c", "c", "c", "c", "1"]),
        ("C/C=C\\C", ["C", "/", "C", "=", "C", "\\", "C"]),
        ("[Na+].[O-]C#N", ["[Na+]", ".", "[O-]", "C", "#", "N"]),
        ("BrCCB", ["Br", "C", "C", "B"]),
    ],
)
def test_tokenize_splits_atoms_bonds_and_ring_closures(smiles, tokens):
    assert tokenize(smiles) == tokens
    assert "".join(tokenize(smiles)) == smiles


@pytest.mark.parametrize(
    "smiles, position", [("CC O", 2), ("C[CH", 1), ("CCX", 2), ("C%1", 1), ("", None)]
)
def test_tokenize_error_names_the_position(smiles, position):
    if position is None:
        assert tokenize(smiles) == []
        return
    with pytest.raises(ValueError, match=f"at position {position}"):
        tokenize(smiles)


def test_build_sorts_vocabulary_independently_of_data_order():
    data = ["CCO", "c1ccccc1Cl", "C[C@@H](N)C(=O)O"]
    forward = SmilesTokenizer.build(data)
    backward = SmilesTokenizer.build(reversed(data))
    assert forward.tokens == backward.tokens
    assert forward.tokens[:2] == SPECIAL_TOKENS == ("<pad>", "<unk>")
    assert list(forward.tokens[2:]) == sorted(forward.tokens[2:])
    # C O c 1 Cl [C@@H] ( N ) =
    assert forward.vocab_size == 2 + 10
    assert forward.absorbing_id == forward.vocab_size == 12


def test_min_count_drops_rare_tokens():
    tokenizer = SmilesTokenizer.build(["CCO", "CCN", "CCS"], min_count=2)
    assert tokenizer.tokens == ("<pad>", "<unk>", "C")


def test_unknown_token_encodes_to_unk_and_decodes_visibly():
    tokenizer = SmilesTokenizer.build(["CCO"])
    ids = tokenizer.encode("CCBr")
    assert ids.dtype == np.int32
    c = tokenizer.tokens.index("C")
    np.testing.assert_array_equal(ids, [c, c, tokenizer.unk_id])
    assert tokenizer.decode(ids) == "CC<unk>"


def test_decode_skips_pad_and_absorbing_ids():
    tokenizer = SmilesTokenizer.build(["CCO"])
    ids = np.concatenate([tokenizer.encode("OCC"), [tokenizer.absorbing_id, tokenizer.pad_id]])
    assert tokenizer.decode(ids) == "OCC"
    with pytest.raises(ValueError, match="outside"):
        tokenizer.decode([tokenizer.absorbing_id + 1])


def test_save_load_round_trip_gives_identical_ids(tmp_path, nci_smiles):
    tokenizer = SmilesTokenizer.build(nci_smiles[:500])
    path = tmp_path / "smiles_vocab.json"
    tokenizer.save(path)
    saved = json.loads(path.read_text())
    assert saved["version"] == 1 and saved["tokens"] == list(tokenizer.tokens)
    loaded = SmilesTokenizer.load(path)
    assert loaded.tokens == tokenizer.tokens
    for s in nci_smiles[:1000]:
        np.testing.assert_array_equal(loaded.encode(s), tokenizer.encode(s))


def test_load_rejects_other_versions_naming_the_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"format": "sedd-smiles-tokenizer", "version": 99, "tokens": []}))
    with pytest.raises(ValueError, match=f"{path}.*version 99"):
        SmilesTokenizer.load(path)


def test_round_trip_on_every_demo_pair_smiles(demo_smiles):
    tokenizer = SmilesTokenizer.build(demo_smiles)
    assert len(demo_smiles) == 900
    assert tokenizer.vocab_size == 48
    for s in demo_smiles:
        ids = tokenizer.encode(s)
        assert not (ids == tokenizer.unk_id).any()
        assert tokenizer.decode(ids) == s


def test_round_trip_on_rdkit_nci_smiles(nci_smiles):
    tokenizer = SmilesTokenizer.build(nci_smiles)
    assert len(nci_smiles) == 4999
    assert tokenizer.vocab_size == 84
    assert all(tokenizer.decode(tokenizer.encode(s)) == s for s in nci_smiles)


def test_canonicalize_returns_none_for_invalid_smiles():
    pytest.importorskip("rdkit", reason="canonicalize needs RDKit")
    assert canonicalize("OCC") == "CCO"
    assert canonicalize("C1CC") is None


def test_randomize_keeps_the_molecule_and_is_deterministic(demo_smiles):
    pytest.importorskip("rdkit", reason="randomize needs RDKit")
    sample = demo_smiles[:200]
    first = [randomize(s, np.random.default_rng(7)) for s in sample]
    again = [randomize(s, np.random.default_rng(7)) for s in sample]
    other = [randomize(s, np.random.default_rng(8)) for s in sample]
    assert first == again
    assert sum(a != b for a, b in zip(first, other, strict=True)) >= 190
    assert sum(r != s for r, s in zip(first, sample, strict=True)) >= 190
    for r, s in zip(first, sample, strict=True):
        assert canonicalize(r) == canonicalize(s)
