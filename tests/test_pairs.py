"""Tests of pair-table reading, and the demo pairs (the split is `prepare`'s)."""

import gzip
import importlib.util

import pytest

from sedd_jax.data import pairs
from sedd_jax.data.pair_tables import PairTable, PairTableError, read_pair_table
from sedd_jax.data.pairs import DEMO_INSTALL, PairSourceNotFoundError, load_demo_pairs

HAS_RDKIT = importlib.util.find_spec("rdkit") is not None

GOOD = [("MKTAYIAK", "CCO"), ("GAVLIP", "c1ccccc1"), ("mkta", "C[C@@H](N)C(=O)O")]


def _write(path, header, rows, sep=","):
    lines = [sep.join(header)] + [sep.join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def demo(missing_data) -> PairTable:
    try:
        return load_demo_pairs()
    except PairSourceNotFoundError as e:
        missing_data(e)


def test_reads_configurable_columns_from_tsv(tmp_path):
    path = _write(
        tmp_path / "pairs.tsv", ["id", "lig", "prot"], [("a", s, p) for p, s in GOOD], "\t"
    )
    table = read_pair_table(path, sequence_column="prot", smiles_column="lig")
    assert list(table.pairs()) == GOOD
    assert len(table) == 3 and table.skipped == {}


def test_reads_gzip_csv_and_explicit_separator(tmp_path):
    path = tmp_path / "pairs.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("aa_sequence;smiles\n" + "".join(f"{p};{s}\n" for p, s in GOOD))
    assert list(read_pair_table(path, sep=";").pairs()) == GOOD


def test_reads_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "pairs.parquet"
    seqs, smis = [p for p, _ in GOOD] + [None], [s for _, s in GOOD] + ["CC"]
    pq.write_table(pa.table({"aa_sequence": seqs, "smiles": smis}), path)
    table = read_pair_table(path)
    assert list(table.pairs()) == GOOD
    assert table.skipped == {"malformed_row": 1}
    with pytest.raises(PairTableError, match=f"{path}: row 4: malformed row"):
        read_pair_table(path, on_error="fail")


def test_missing_column_names_file_and_available_columns(tmp_path):
    path = _write(tmp_path / "pairs.csv", ["sequence", "smiles"], [("MKT", "CCO")])
    with pytest.raises(PairTableError, match=r"pairs\.csv: no column\(s\) \['aa_sequence'\]") as e:
        read_pair_table(path)
    assert "available columns: ['sequence', 'smiles']" in str(e.value)


def test_unknown_extension_asks_for_a_separator(tmp_path):
    path = _write(tmp_path / "pairs.txt", ["aa_sequence", "smiles"], [("MKT", "CCO")])
    with pytest.raises(PairTableError, match="pass sep="):
        read_pair_table(path)


def test_bad_records_are_counted_per_reason(tmp_path):
    rows = [
        ("MKTAYIAK", "CCO"),  # line 2: good
        ("MKT1", "CCO"),  # line 3: digit in the sequence
        ("", "CCO"),  # line 4: empty sequence
        ("MKT", "CC O"),  # line 5: untokenizable SMILES
        ("MKT", ""),  # line 6: empty SMILES
        ("MKT", "C1CC"),  # line 7: unclosed ring, RDKit rejects
        ("MKT", "CCO", "extra"),  # line 8: too many fields
        ("GAVL", "c1ccccc1"),  # line 9: good
    ]
    path = _write(tmp_path / "pairs.csv", ["aa_sequence", "smiles"], rows)
    table = read_pair_table(path)
    invalid_smiles = 3 if HAS_RDKIT else 2
    assert table.skipped == {
        "invalid_sequence": 2,
        "invalid_smiles": invalid_smiles,
        "malformed_row": 1,
    }
    assert len(table) == 2 + (0 if HAS_RDKIT else 1)
    unvalidated = read_pair_table(path, validate_smiles=False)
    assert unvalidated.skipped["invalid_smiles"] == 2 and len(unvalidated) == 3


@pytest.mark.parametrize(
    "bad_row, reason",
    [
        (("MKT1", "CCO"), "invalid sequence"),
        (("MKT", "CC O"), "invalid smiles"),
        (("MKT",), "malformed row"),
    ],
)
def test_fail_mode_names_file_and_line(tmp_path, bad_row, reason):
    path = _write(tmp_path / "pairs.csv", ["aa_sequence", "smiles"], [GOOD[0], GOOD[1], bad_row])
    with pytest.raises(PairTableError, match=f"pairs.csv:4: {reason}"):
        read_pair_table(path, on_error="fail")


def test_invalid_rdkit_smiles_fails_with_line(tmp_path):
    pytest.importorskip("rdkit", reason="SMILES validation needs RDKit")
    path = _write(tmp_path / "pairs.csv", ["aa_sequence", "smiles"], [GOOD[0], ("MKT", "C1CC")])
    with pytest.raises(PairTableError, match="pairs.csv:3: invalid smiles: .*'C1CC'"):
        read_pair_table(path, on_error="fail")


def test_demo_pairs_count(demo):
    assert len(demo) == 9998
    assert len(set(demo.pairs())) == 9998
    assert len(set(demo.sequences)) == 438
    assert len(set(demo.smiles)) == 900
    assert demo.skipped == {}


def test_demo_error_gives_install_command(monkeypatch):
    monkeypatch.setattr(pairs, "_package_dir", lambda name: None)
    with pytest.raises(PairSourceNotFoundError) as e:
        load_demo_pairs()
    assert DEMO_INSTALL in str(e.value)
    assert DEMO_INSTALL == "pip install --no-deps pydebiaseddta==0.1.0 pydta==0.0.3"
