"""The binder filter of the demo pairs (`data.binders`), its cache key and logged counts,
and the `center` protein crop."""

import csv
import json
import logging
import os

import numpy as np
import pytest

from sedd_jax.data import pair_tables, pairs, prepare, shard_cache
from sedd_jax.data.batching import encode_and_pad
from sedd_jax.data.plan import FieldSpec, fixed_window_start, window_start
from sedd_jax.data.protein import ProteinTokenizer
from tests.helpers import tiny_config

MINI_TRAIN = os.path.join("data", "dta", "dta_sample_data_mini", "train.csv")


@pytest.fixture(scope="module")
def package_dir(missing_data) -> str:
    directory = pairs._package_dir("pydebiaseddta")
    if directory is None:
        missing_data(pairs.PairSourceNotFoundError(pairs.DEMO_INSTALL))
    return directory


def test_keep_binders_keeps_exactly_the_rows_at_or_above_the_threshold(package_dir):
    path = os.path.join(package_dir, MINI_TRAIN)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    table = pair_tables.read_pair_table(
        path, validate_smiles=False, on_error="fail", affinity_column="affinity_score"
    )
    kept = pairs.keep_binders(table, 12.1)
    expected = [
        (r["aa_sequence"], r["smiles"], float(r["affinity_score"]))
        for r in rows
        if float(r["affinity_score"]) >= 12.1
    ]
    assert len(rows) == len(table) == 80
    assert list(zip(kept.sequences, kept.smiles, kept.affinities, strict=True)) == expected
    assert len(kept) == 13  # 3 of them exactly at 12.1: the threshold is inclusive
    assert sum(a == 12.1 for a in kept.affinities) == 3
    assert kept.skipped == {pair_tables.NOT_BINDER: 67}


def test_affinity_column_counts_non_numbers(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("aa_sequence,smiles,pkd\nMKT,CCO,7.5\nMKV,CCN,n/a\nMKW,CCC,inf\n")
    table = pair_tables.read_pair_table(path, validate_smiles=False, affinity_column="pkd")
    assert table.affinities == [7.5]
    assert table.skipped == {pair_tables.INVALID_AFFINITY: 2}
    with pytest.raises(pair_tables.PairTableError, match=r"pairs.csv:3: invalid affinity: .*'n/a'"):
        pair_tables.read_pair_table(
            path, validate_smiles=False, affinity_column="pkd", on_error="fail"
        )


def test_demo_binder_counts_per_table(missing_data):
    try:
        tables = pairs.demo_tables("authors")
        everything = pairs.load_demo_pairs("all")
    except pairs.PairSourceNotFoundError as e:
        missing_data(e)
    counts = {name: pair_tables.table_counts(t) for name, t in tables.items()}
    assert counts == {
        "pydebiaseddta": {"pairs": 841, "proteins": 136, "ligands": 261},
        "pydta": {"pairs": 618, "proteins": 234, "ligands": 222},
    }
    assert min(tables["pydebiaseddta"].affinities) >= 12.1
    assert min(tables["pydta"].affinities) >= 7.0
    binders = pairs.load_demo_pairs("authors")  # two pairs are in both tables
    assert pair_tables.table_counts(binders) == {"pairs": 1457, "proteins": 297, "ligands": 482}
    assert binders.skipped == {pair_tables.NOT_BINDER: 4159 + 4382}
    assert len(everything) == 9998 and everything.skipped == {}


def test_cache_key_changes_with_the_binder_filter(package_dir):
    config = tiny_config("dual")
    files = [os.path.join(package_dir, MINI_TRAIN)]
    name_all = shard_cache.cache_name("demo_pairs", files, shard_cache.pair_options(config.data))
    config.data.binders = "authors"
    options = shard_cache.pair_options(config.data)
    assert options["binders"] == "authors"
    name_binders = shard_cache.cache_name("demo_pairs", files, options)
    assert name_all != name_binders
    del options["binders"]  # "all" adds no option: the caches of earlier runs stay valid
    assert shard_cache.cache_name("demo_pairs", files, options) == name_all


def test_prepare_keeps_binders_and_logs_counts_once(tmp_path, caplog, missing_data):
    try:
        pairs.demo_tables()
    except pairs.PairSourceNotFoundError as e:
        missing_data(e)
    options = dict(binders="authors", num_shards=2, validate_smiles=False, on_error="skip")
    with caplog.at_level(logging.INFO, logger="sedd_jax.data.corpora"):
        manifest = prepare.prepare("demo_pairs", str(tmp_path / "b"), progress=False, **options)
        again = prepare.prepare("demo_pairs", str(tmp_path / "b"), progress=False, **options)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo_pairs")]
    assert lines == [
        "demo_pairs pydebiaseddta: 5000 rows, 841 kept (affinity >= 12.1), "
        "136 distinct proteins, 261 distinct ligands",
        "demo_pairs pydta: 5000 rows, 618 kept (affinity >= 7.0), "
        "234 distinct proteins, 222 distinct ligands",
    ]
    counts = manifest["counts"]
    assert counts["skipped"] == {pair_tables.NOT_BINDER: 8541}
    assert counts["read"] == 1457 and counts["train"] + counts["val"] == 1457
    assert manifest["filters"]["binders"] == "authors"
    assert json.dumps(again, sort_keys=True) == json.dumps(manifest, sort_keys=True)


def test_binders_refused_for_other_sources(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("aa_sequence,smiles\nMKT,CCO\n")
    with pytest.raises(prepare.DataError, match="no demo_pairs"):
        prepare.prepare(str(path), str(tmp_path / "out"), progress=False, binders="authors")


def test_center_crop_takes_the_middle_window():
    tok = ProteinTokenizer()
    seq = "ACDEFGHIKLMNPQRSTVWY"  # 20 residues, windows of 8
    tokens, valid = encode_and_pad([seq, "ACD"], tok, 8, "center")
    assert tok.decode(tokens[0][valid[0]]) == seq[6:14]
    assert tok.decode(tokens[1][valid[1]]) == "ACD"
    spec = FieldSpec("protein", "protein", "protein_valid", 8, tok.pad_id, "center")
    assert fixed_window_start(20, spec) == 6 == window_start(20, spec, 0, 3, 5)
    assert fixed_window_start(21, spec) == 6 and fixed_window_start(5, spec) == 0
    start = FieldSpec("protein", "protein", "protein_valid", 8, tok.pad_id, "start")
    assert fixed_window_start(20, start) == 0
    assert np.array_equal(encode_and_pad([seq], tok, 8, "start")[0][0], tok.encode(seq[:8]))
