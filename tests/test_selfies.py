"""SELFIES ligand tokens: exact round trips to canonical SMILES, and every id string is a
molecule."""

import gzip
import importlib.util
import os

import numpy as np
import pytest

from sedd_jax.data.selfies import (
    SelfiesEncodeError,
    SelfiesTokenizer,
    ligand_tokenizer_class,
    ligand_tokenizer_from_dict,
    to_selfies,
)
from sedd_jax.data.smiles import SmilesTokenizer, canonicalize

pytest.importorskip("rdkit")
from rdkit import Chem, rdBase  # noqa: E402


def round_trip_failures(smiles_list):
    """(encode failures, mismatches): canonical SMILES -> SELFIES tokens -> SMILES."""
    tok = SelfiesTokenizer.build([s for s in smiles_list if _encodable(s)])
    unencodable, mismatched = [], []
    for s in smiles_list:
        try:
            ids = tok.encode(s)
        except SelfiesEncodeError:
            unencodable.append(s)
            continue
        assert (ids != tok.unk_id).all()
        if canonicalize(tok.decode(ids)) != canonicalize(s):
            mismatched.append(s)
    return unencodable, mismatched


def _encodable(s):
    try:
        to_selfies(s)
        return True
    except SelfiesEncodeError:
        return False


def test_aspirin_symbols_round_trip_through_ids():
    smiles = "CC(=O)Oc1ccccc1C(=O)O"
    tok = SelfiesTokenizer.build([smiles])
    ids = tok.encode(smiles)
    assert ids.dtype == np.int32 and len(ids) == 19  # 19 SELFIES symbols
    assert tok.decode_selfies(ids) == to_selfies(smiles)
    assert canonicalize(tok.decode(ids)) == canonicalize(smiles)
    # pads and the absorbing id are skipped, as for SMILES tokens
    padded = np.concatenate([ids, [tok.pad_id, tok.absorbing_id, tok.pad_id]])
    assert tok.decode(padded) == tok.decode(ids)


def test_demo_pair_ligands_round_trip_exactly(missing_data):
    from sedd_jax.data.pairs import PairSourceNotFoundError, load_demo_pairs

    try:
        smiles = sorted(set(load_demo_pairs().smiles))
    except PairSourceNotFoundError as e:
        missing_data(e)
    unencodable, mismatched = round_trip_failures(smiles)
    assert smiles
    assert mismatched == [] and unencodable == []


@pytest.mark.slow
def test_nci_set_round_trips_except_hypervalent_atoms():
    import rdkit

    path = os.path.join(os.path.dirname(rdkit.__file__), "Data", "NCI", "first_5K.smi")
    with open(path) as f:
        smiles = [line.split("\t")[0] for line in f if line.strip()]
    with rdBase.BlockLogs():
        smiles = [s for s in smiles if Chem.MolFromSmiles(s) is not None]
    unencodable, mismatched = round_trip_failures(smiles)
    assert mismatched == []
    # the exceptions are SELFIES' semantic constraints: hypervalent I / Cl, metal complexes
    assert len(unencodable) <= 0.005 * len(smiles), unencodable
    assert all(any(a in s for a in ("I", "Cl", "Fe", "Co", "Pt", "Hg", "Sn")) for s in unencodable)


def moses_train_csv():
    spec = importlib.util.find_spec("moses")  # located, never imported (its import is broken)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "dataset", "data", "train.csv.gz")
    return path if os.path.isfile(path) else None


@pytest.mark.slow
def test_ten_thousand_moses_smiles_round_trip(missing_data):
    path = moses_train_csv()
    if path is None:
        missing_data("MOSES CSVs: pip install --no-deps molsets")
    with gzip.open(path, "rt") as f:
        assert f.readline().strip() == "SMILES"
        smiles = [f.readline().strip() for _ in range(10_000)]
    unencodable, mismatched = round_trip_failures(smiles)
    failures = len(unencodable) + len(mismatched)
    assert failures <= 10, (unencodable, mismatched)  # >= 99.9 %


def test_random_symbol_strings_decode_to_valid_molecules():
    tok = SelfiesTokenizer.build(["CC(=O)Oc1ccccc1C(=O)O", "c1ccncc1", "C[N+](C)(C)CC(=O)[O-]"])
    rng = np.random.default_rng(0)
    with rdBase.BlockLogs():
        for _ in range(200):
            ids = rng.integers(0, tok.absorbing_id + 1, size=rng.integers(1, 40))
            smiles = tok.decode(ids)
            assert Chem.MolFromSmiles(smiles) is not None, smiles


def test_unencodable_smiles_error_names_the_smiles():
    with pytest.raises(SelfiesEncodeError, match=r"Cl\[I\]Cl"):
        to_selfies("Cl[I]Cl")


def test_saved_tokenizers_reload_as_their_own_representation(tmp_path):
    smiles = ["CCO", "c1ccccc1O"]
    for cls in (SmilesTokenizer, SelfiesTokenizer):
        tok = cls.build(smiles)
        back = ligand_tokenizer_from_dict(tok.to_dict(), source="meta.json")
        assert type(back) is cls and back.tokens == tok.tokens
        np.testing.assert_array_equal(back.encode("CCO"), tok.encode("CCO"))
        assert ligand_tokenizer_class(cls.representation) is cls
    with pytest.raises(ValueError, match="meta.json.*not a ligand tokenizer"):
        ligand_tokenizer_from_dict({"format": "x"}, source="meta.json")
    with pytest.raises(ValueError, match="not a selfies tokenizer"):
        SelfiesTokenizer.from_dict(SmilesTokenizer.build(smiles).to_dict())
    with pytest.raises(ValueError, match="data.ligand_representation='inchi'"):
        ligand_tokenizer_class("inchi")
