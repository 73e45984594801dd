"""Tests of scripts/ingest_complexes.py on the PoseBusters complexes and on bad inputs."""

import csv
import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.helpers import load_script

Chem = pytest.importorskip("rdkit.Chem", reason="ingestion needs RDKit")
pytest.importorskip("biotite.structure", reason="ingestion needs biotite")

EXPECTED = {  # system: (nearest chain, residues observed in that chain)
    "1ia1": ("B", 192),
    "1of6": ("A", 350),
    "1s3v": ("A", 186),
    "1uou": ("A", 438),
}


ingest = load_script("ingest_complexes")


@pytest.fixture(scope="module")
def posebusters_dir() -> Path:
    if importlib.util.find_spec("posebusters") is None:
        pytest.skip("the PoseBusters complexes need: pip install posebusters==0.6.5")
    return ingest.posebusters_demo_dir()


def test_posebusters_nearest_chain_pairs(posebusters_dir):
    report = ingest.ingest_directory(posebusters_dir, chains="nearest")
    assert (report.systems, report.systems_with_pairs, len(report.rows)) == (4, 4, 4)
    assert report.skipped == {}
    for row in report.rows:
        chain, length = EXPECTED[row.system_id]
        assert (row.chain_id, len(row.aa_sequence)) == (chain, length)
        assert set(row.aa_sequence) <= set("ACDEFGHIKLMNPQRSTVWY")
        sdf = posebusters_dir / row.system_id / f"{row.system_id}_ligand.sdf"
        reference = next(iter(Chem.SDMolSupplier(str(sdf))))
        mol = Chem.MolFromSmiles(row.smiles)
        assert mol is not None
        assert mol.GetNumHeavyAtoms() == reference.GetNumHeavyAtoms()
        assert "[H]" not in row.smiles


def test_posebusters_all_chains(posebusters_dir):
    report = ingest.ingest_directory(posebusters_dir, chains="all")
    per_system = {s: [r.chain_id for r in report.rows if r.system_id == s] for s in EXPECTED}
    assert per_system == {
        "1ia1": ["A", "B"],
        "1of6": list("ABCDEFGH"),
        "1s3v": ["A"],
        "1uou": ["A"],
    }


def test_main_writes_pair_table_readable_by_read_pair_table(posebusters_dir, tmp_path):
    from sedd_jax.data.pair_tables import read_pair_table

    out = tmp_path / "pairs.csv"
    assert ingest.main([str(posebusters_dir), str(out)]) == 0
    with open(out) as f:
        assert next(csv.reader(f)) == ["system_id", "chain_id", "aa_sequence", "smiles"]
    table = read_pair_table(out, on_error="fail")
    assert len(table) == 4
    assert sorted(len(s) for s in table.sequences) == [186, 192, 350, 438]


def test_plinder_layout_and_bad_files_are_counted(posebusters_dir, tmp_path, caplog):
    source = posebusters_dir / "1s3v"
    good = tmp_path / "good_system"
    (good / "ligand_files").mkdir(parents=True)
    shutil.copy(source / "1s3v_protein_one_lig_removed.pdb", good / "receptor.pdb")
    shutil.copy(source / "1s3v_ligands.sdf", good / "ligand_files" / "A.sdf")
    bad_receptor = tmp_path / "bad_receptor"
    bad_receptor.mkdir()
    (bad_receptor / "receptor.pdb").write_text("HETATM    1  O   HOH A   1       0.0   0.0\n")
    shutil.copy(source / "1s3v_ligand.sdf", bad_receptor / "lig.sdf")
    bad_ligand = tmp_path / "bad_ligand"
    bad_ligand.mkdir()
    shutil.copy(source / "1s3v_protein_one_lig_removed.pdb", bad_ligand / "receptor.pdb")
    block = (source / "1s3v_ligand.sdf").read_text().rstrip("\n") + "\n$$$$\n"
    pentavalent_f = block.replace(" C   0  0  2", " F   0  0  2", 1)
    (bad_ligand / "lig.sdf").write_text(pentavalent_f + block)
    (bad_ligand / "empty.sdf").write_text("")
    (tmp_path / "no_ligand").mkdir()
    shutil.copy(
        source / "1s3v_protein_one_lig_removed.pdb", tmp_path / "no_ligand" / "x_protein.pdb"
    )

    report = ingest.ingest_directory(tmp_path)
    assert [(r.system_id, r.chain_id, len(r.aa_sequence)) for r in report.rows] == [
        ("bad_ligand", "A", 186),
        ("good_system", "A", 186),
    ]
    assert report.skipped == {
        "bad_receptor": 1,
        "bad_ligand_file": 1,
        "bad_ligand_record": 1,
        "no_ligand_files": 1,
    }
    assert report.systems == 3 and report.systems_with_pairs == 2
    assert any(str(bad_receptor / "receptor.pdb") in m for m in report.messages)
    assert any(f"{bad_ligand / 'lig.sdf'}: record 1 is not" in m for m in report.messages)
    assert any(str(bad_ligand / "empty.sdf") in m for m in report.messages)
    assert str(bad_ligand / "lig.sdf") in caplog.text


def test_read_chains_skips_water_and_hetero_groups(posebusters_dir):
    chains = ingest.read_chains(posebusters_dir / "1ia1" / "1ia1_protein_one_lig_removed.pdb")
    assert [(c.chain_id, len(c.sequence)) for c in chains] == [("A", 192), ("B", 192)]
    assert all("X" not in c.sequence for c in chains)


def test_reads_gzip_mmcif_like_pdb(posebusters_dir, tmp_path):
    import gzip

    from biotite.structure.io import load_structure, pdbx

    pdb_path = posebusters_dir / "1s3v" / "1s3v_protein_one_lig_removed.pdb"
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, load_structure(str(pdb_path)))
    cif_path = tmp_path / "receptor.cif"
    cif.write(str(cif_path))
    gz_path = tmp_path / "receptor.cif.gz"
    gz_path.write_bytes(gzip.compress(cif_path.read_bytes()))
    expected = [(c.chain_id, c.sequence) for c in ingest.read_chains(pdb_path)]
    assert [(c.chain_id, c.sequence) for c in ingest.read_chains(cif_path)] == expected
    assert [(c.chain_id, c.sequence) for c in ingest.read_chains(gz_path)] == expected


def test_modified_residues_stay_in_chain_and_free_amino_acids_do_not(posebusters_dir, tmp_path):
    pdb_path = posebusters_dir / "1s3v" / "1s3v_protein_one_lig_removed.pdb"
    (original,) = ingest.read_chains(pdb_path)
    lines = []
    for line in pdb_path.read_text().splitlines():
        if line.startswith("ATOM") and line[17:20] == "MET":
            line = "HETATM" + line[6:17] + "MSE" + line[20:]
        lines.append(line)
    free_tyr = "HETATM 9999  CA  TYR A 900      10.000  10.000  10.000  1.00  0.00           C"
    end = next(i for i, line in enumerate(lines) if line.startswith("END"))
    lines.insert(end, free_tyr)
    modified = tmp_path / "modified.pdb"
    modified.write_text("\n".join(lines) + "\n")
    (chain,) = ingest.read_chains(modified)
    assert original.sequence.count("M") == 6
    assert chain.sequence == original.sequence
