"""Tokenizer, FASTA reading/writing and named sources."""

import ast
import gzip
import importlib.util
import os
import shutil

import numpy as np
import pytest

from sedd_jax.data import sources
from sedd_jax.data.fasta import FastaError, FastaReader, FastaRecord, read_fasta, write_fasta
from sedd_jax.data.protein import ProteinTokenizer, clean_sequence, standard_fraction
from tests.helpers import REPO


@pytest.fixture(scope="module")
def demo_records() -> list[FastaRecord]:
    return read_fasta(sources.demo_path())


# --- tokenizer ---------------------------------------------------------------------------


def test_tokenizer_ids_match_reference():
    tok = ProteinTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.unk_id, tok.absorbing_id) == (25, 1, 3, 25)
    assert tok.encode("ACDEFGHIKLMNPQRSTVWY").tolist() == list(range(5, 25))
    assert tok.encode("X").tolist() == [3]


def test_encode_is_int32_and_cleans_case_whitespace_and_stops():
    tok = ProteinTokenizer()
    ids = tok.encode(" mk\tV\nl*")
    assert ids.dtype == np.int32
    assert ids.tolist() == [15, 13, 22, 14]


@pytest.mark.parametrize("letter", list("XBZUOJ1-.?é"))
def test_nonstandard_characters_map_to_unk_and_are_never_dropped(letter):
    ids = ProteinTokenizer().encode(f"A{letter}C")
    assert ids.tolist() == [5, 3, 6]


def test_clean_sequence_keeps_one_character_per_character():
    assert clean_sequence("aß c*\n") == "A?C"


def test_decode_skips_special_and_absorbing_ids_and_writes_unk_as_x():
    tok = ProteinTokenizer()
    assert tok.decode([0, 5, 1, 3, 2, 24, 4, 25]) == "AXY"


def test_vocab_size_36_decodes_unused_ids_to_nothing():
    tok = ProteinTokenizer(36)
    assert tok.absorbing_id == 36
    assert tok.decode(np.array([5, 30, 35, 36, 6])) == "AC"
    with pytest.raises(ValueError, match="outside"):
        tok.decode([37])


@pytest.mark.parametrize("bad", [26, 100, -1])
def test_decode_rejects_out_of_range_ids(bad):
    with pytest.raises(ValueError, match=f"token id {bad} is outside"):
        ProteinTokenizer().decode([5, bad])


def test_vocab_size_below_25_is_rejected():
    with pytest.raises(ValueError, match=">= 25"):
        ProteinTokenizer(24)


def test_decode_batch_uses_valid_mask():
    tok = ProteinTokenizer()
    ids = np.array([[5, 6, 1], [7, 8, 9]])
    valid = np.array([[True, True, False], [True, False, False]])
    assert tok.decode_batch(ids, valid) == ["AC", "D"]


def test_round_trip_on_every_demo_protein(demo_records):
    tok = ProteinTokenizer()
    for record in demo_records:
        seq = clean_sequence(record.sequence)
        assert tok.decode(tok.encode(seq)) == seq


def test_standard_fraction_counts_standard_residues():
    assert standard_fraction("ACDX") == pytest.approx(0.75)
    assert standard_fraction("") == 0.0


# --- FASTA ---------------------------------------------------------------------------------


def test_demo_file_has_2100_records_with_stop_stripped(demo_records):
    assert len(demo_records) == 2100
    first = demo_records[0]
    assert first.id == "938293.PRJEB85.HG003688_1"
    assert first.description.startswith("# 204 # 629 # -1")
    assert first.sequence.startswith("MNINELLKDKDL") and first.sequence.endswith("A*")
    assert len(first.sequence) == 142


def test_gzip_round_trip_is_detected_by_magic_bytes(demo_records, tmp_path):
    out = tmp_path / "demo.fa.gz"
    assert write_fasta(out, demo_records[:50]) == 50
    with gzip.open(out, "rt") as f:
        lines = f.read().splitlines()
    assert max(len(line) for line in lines if not line.startswith(">")) == 60
    renamed = tmp_path / "no_suffix.txt"
    shutil.copy(out, renamed)
    assert read_fasta(renamed) == demo_records[:50]


def test_multiline_records_and_blank_lines(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text("\n>a first one\nMKV\n\nLLA\n>b\r\nW W\n\n")
    assert read_fasta(path) == [
        FastaRecord("a", "first one", "MKVLLA"),
        FastaRecord("b", "", "W W"),
    ]


def test_sequence_before_header_names_file_and_line(tmp_path):
    path = tmp_path / "bad.fa"
    path.write_text("\nMKV\n>a\nMKV\n")
    with pytest.raises(FastaError, match=r"bad\.fa:2: sequence data before the first"):
        read_fasta(path)


def test_empty_record_fails_with_line_or_is_skipped_and_counted(tmp_path):
    path = tmp_path / "empty.fa"
    path.write_text(">a\nMKV\n>b\n\n>c\nWW\n>\nAA\n>d\n")
    with pytest.raises(FastaError, match=r"empty\.fa:3: record 'b' has no sequence"):
        read_fasta(path)
    reader = FastaReader(path, on_error="skip")
    assert [r.id for r in reader] == ["a", "c"]
    assert reader.num_skipped == 3


def test_truncated_gzip_raises_fasta_error(demo_records, tmp_path):
    path = tmp_path / "cut.fa.gz"
    write_fasta(path, demo_records[:200])
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(FastaError, match=r"cut\.fa\.gz:\d+: corrupt or truncated gzip"):
        read_fasta(path)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "bin.fa"
    path.write_bytes(b">a\nMK\xffV\n")
    with pytest.raises(FastaError, match=r"bin\.fa:2: not UTF-8"):
        read_fasta(path)


def test_write_fasta_rejects_records_it_could_not_read_back(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_fasta(tmp_path / "o.fa", [FastaRecord("a b", "", "MK")])
    with pytest.raises(ValueError, match="empty sequence"):
        write_fasta(tmp_path / "o.fa", [FastaRecord("a", "", "")])


# --- sources -------------------------------------------------------------------------------


def test_demo_source_gives_2100_clean_sequences():
    seqs = sources.load_sequences("demo")
    assert len(seqs) == 2100
    assert not any("*" in s for s in seqs)
    assert seqs[0].startswith("MNINELLKDKDL") and len(seqs[0]) == 141


def test_min_len_and_max_count_filter_in_file_order():
    seqs = sources.load_sequences("demo", min_len=300, max_count=10)
    assert len(seqs) == 10 and min(len(s) for s in seqs) >= 300
    all_long = [s for s in sources.load_sequences("demo") if len(s) >= 300]
    assert seqs == all_long[:10]


def test_fasta_source_reads_user_file(tmp_path):
    path = tmp_path / "u.fa.gz"
    write_fasta(path, [FastaRecord("a", "", "mkv*"), FastaRecord("b", "", "WY")])
    assert sources.load_sequences("fasta", str(path)) == ["MKV", "WY"]


def test_source_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown protein source 'uniprot'.*demo"):
        sources.load_sequences("uniprot")
    with pytest.raises(ValueError, match="needs a path"):
        sources.load_sequences("fasta")
    with pytest.raises(ValueError, match="takes no path"):
        sources.load_sequences("demo", "x.fa")
    with pytest.raises(sources.SourceNotFoundError, match="no such file"):
        sources.load_sequences("fasta", str(tmp_path / "missing.fa"))


def test_missing_pyhmmer_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(sources.SourceNotFoundError, match=r"pip install pyhmmer==0\.12\.3"):
        sources.load_sequences("demo")


def test_mmseqs_examples_source():
    if os.environ.get("SEDD_REQUIRE_DATA") == "1" and shutil.which("apt-get"):
        # .ci/run installs Debian's mmseqs2-examples wherever apt exists
        assert os.path.isfile(sources.MMSEQS_EXAMPLES_PATH), sources.MMSEQS_EXAMPLES_PATH
    if not os.path.isfile(sources.MMSEQS_EXAMPLES_PATH):
        with pytest.raises(sources.SourceNotFoundError, match="apt-get install.*mmseqs2-examples"):
            sources.load_sequences("mmseqs_examples")
    else:
        assert len(sources.load_sequences("mmseqs_examples")) == 20000


def test_data_package_imports_neither_jax_nor_torch():
    data_dir = os.path.join(REPO, "sedd_jax", "data")
    imported = set()
    for name in os.listdir(data_dir):
        if name.endswith(".py"):
            with open(os.path.join(data_dir, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
    assert "numpy" in imported
    assert not imported & {"jax", "jaxlib", "flax", "torch"}
