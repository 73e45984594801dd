"""Token shards: preparing real corpora, resuming after kill -9, the grain loader's contract
(pure in (seed, step), host halves, crops per epoch, bucketing) and bad-input errors."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sedd_jax.data import corpora, sources
from sedd_jax.data.batching import is_validation
from sedd_jax.data.fasta import read_fasta, write_fasta
from sedd_jax.data.loader import FieldSpec, ShardLoader, pad_fraction, window_start
from sedd_jax.data.prepare import prepare
from sedd_jax.data.protein import ProteinTokenizer, clean_sequence
from sedd_jax.data.shards import DataError, ShardSet, UnfinishedPreparationError
from tests.helpers import cli_overrides, run_cli, start_cli, tiny_config

HAS_MMSEQS = os.path.isfile(sources.MMSEQS_EXAMPLES_PATH)
needs_mmseqs = pytest.mark.skipif(
    not HAS_MMSEQS, reason="apt-get install --no-install-recommends mmseqs2-examples"
)


def _prepare_cli(*args, timeout=120):
    return run_cli("sedd_jax.data.prepare", "--no_progress", *args, timeout=timeout, check=False)


def _one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def _shard_hashes(directory) -> dict:
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    return {
        k: v
        for split in ("train", "val")
        for s in manifest["shards"][split]
        for k, v in s["files"].items()
    }


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "shards"
    prepare("demo", str(out), val_fraction=0.05, num_shards=4, progress=False)
    return ShardSet(str(out))


@pytest.fixture(scope="module")
def mmseqs_dir(tmp_path_factory):
    if not HAS_MMSEQS:
        pytest.skip("apt-get install --no-install-recommends mmseqs2-examples")
    out = tmp_path_factory.mktemp("mmseqs") / "shards"
    prepare("mmseqs_examples", str(out), num_shards=32, workers=2, progress=False)
    return str(out)


# --- preparing -----------------------------------------------------------------------------


@needs_mmseqs
def test_mmseqs_examples_20000_prepare_to_18801_unique_split_by_hash(mmseqs_dir):
    shards = ShardSet(mmseqs_dir)
    counts = shards.manifest["counts"]
    assert (counts["read"], counts["duplicates"]) == (20_000, 1_199)
    unique = list(
        dict.fromkeys(clean_sequence(r.sequence) for r in read_fasta(sources.MMSEQS_EXAMPLES_PATH))
    )
    expected_val = sum(is_validation(s, 0.01) for s in unique)
    assert (counts["train"], counts["val"]) == (len(unique) - expected_val, expected_val)
    assert counts["val"] == 204
    tok = ProteinTokenizer()

    def as_stored(seq):  # non-standard letters come back as X
        return "".join(c if c in "ACDEFGHIKLMNPQRSTVWY" else "X" for c in seq)

    decoded = {}
    for split in ("train", "val"):
        src = shards.source(split)
        records = [src[i]["tokens"] for i in range(len(src))]
        assert records[0].dtype == np.uint8
        decoded[split] = [tok.decode(r) for r in records]
    assert sorted(decoded["val"]) == sorted(as_stored(s) for s in unique if is_validation(s, 0.01))
    assert sorted(decoded["train"] + decoded["val"]) == sorted(as_stored(s) for s in unique)
    assert shards.manifest["sources"][0]["sha256"]


@pytest.mark.slow
@needs_mmseqs
def test_kill_9_while_preparing_leaves_a_directory_that_resumes(mmseqs_dir, tmp_path):
    out = tmp_path / "killed"
    args = ["--source=mmseqs_examples", f"--out={out}", "--num_shards=32", "--workers=1"]
    proc = start_cli(
        "sedd_jax.data.prepare", "--no_progress", *args, text=False, stdout=subprocess.DEVNULL
    )
    marker = out / ".tmp" / "clean-00003.json"
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    with pytest.raises(UnfinishedPreparationError, match="rerun the same .* to resume"):
        ShardSet(str(out))
    other = _prepare_cli("--source=demo", f"--out={out}")
    assert "unfinished preparation of another source" in _one_line_error(other)
    resumed = _prepare_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert _shard_hashes(out) == _shard_hashes(mmseqs_dir)
    assert not (out / ".tmp").exists()


def test_moses_smiles_are_read_from_the_csv_without_importing_moses(tmp_path):
    try:
        path = corpora.moses_path()
    except sources.SourceNotFoundError:
        pytest.skip("pip install --no-deps molsets==0.3.1")
    m = prepare("moses", str(tmp_path / "m"), max_records=3000, num_shards=2, progress=False)
    assert m["kind"] == "smiles" and m["counts"]["read"] == 3000
    assert m["counts"]["train"] + m["counts"]["val"] + m["counts"]["duplicates"] == 3000
    assert m["fields"]["tokens"]["dtype"] == "uint8"
    with gzip.open(path, "rt") as f:
        first = [next(f).strip() for _ in range(3001)][1:]
    shards = ShardSet(str(tmp_path / "m"))
    tok = shards.smiles_tokenizer("tokens")
    src = shards.source("train")
    assert {tok.decode(src[i]["tokens"]) for i in range(len(src))} <= set(first)
    assert "moses" not in sys.modules


def test_pair_tables_go_through_shards_split_by_protein(tmp_path):
    table = tmp_path / "pairs.csv"
    rows = ["aa_sequence,smiles"] + [
        f"M{'ACDEFGHIKLMNPQRSTVWY'[i % 20]}{'K' * (i % 3 + 1)}W,{'C' * (i % 5 + 1)}O"
        for i in range(70)
    ]
    distinct = len(set(rows[1:]))
    rows += [rows[1], "MKV,"]  # a duplicate and an empty SMILES
    table.write_text("\n".join(rows) + "\n")
    m = prepare(
        str(table),
        str(tmp_path / "p"),
        val_fraction=0.3,
        on_error="skip",
        num_shards=3,
        progress=False,
    )
    assert distinct == 60 and m["counts"]["duplicates"] == 71 - distinct
    assert m["counts"]["skipped"] == {"invalid_smiles": 1}
    shards = ShardSet(str(tmp_path / "p"))
    tok = ProteinTokenizer()
    proteins = {
        split: {
            tok.decode(shards.source(split)[i]["protein"]) for i in range(len(shards.source(split)))
        }
        for split in ("train", "val")
    }
    assert proteins["train"] and proteins["val"] and not proteins["train"] & proteins["val"]
    assert all(is_validation(p, 0.3) for p in proteins["val"])


# --- the loader ----------------------------------------------------------------------------


def _loader(shards, **kw):
    spec = FieldSpec(
        "tokens", "tokens", "valid", kw.pop("max_len", 64), 1, kw.pop("crop", "random")
    )
    return ShardLoader(shards.source("train"), [spec], kw.pop("batch_size", 128), seed=3, **kw)


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resumed_iteration_reads_exactly_the_uninterrupted_batches(demo_shards):
    loader = _loader(demo_shards)
    assert loader.steps_per_epoch == 15  # 1,977 // 128: steps 10..20 cross an epoch
    it = loader.iterate(0)
    uninterrupted = [next(it) for _ in range(21)]
    it.close()
    it = _loader(demo_shards, num_workers=2).iterate(10)  # a fresh process pool, as a restart
    resumed = [next(it) for _ in range(11)]
    it.close()
    assert all(_same(a, b) for a, b in zip(uninterrupted[10:], resumed, strict=True))
    assert all(_same(loader.batch(s), uninterrupted[s]) for s in (0, 14, 15, 20))
    assert uninterrupted[0]["tokens"].dtype == np.int32
    assert uninterrupted[0]["valid"].dtype == bool
    assert not _same(uninterrupted[0], uninterrupted[15])  # epochs are reshuffled


def test_random_crops_are_drawn_per_seed_epoch_and_record(demo_shards):
    spec = FieldSpec("tokens", "tokens", "valid", 64, 1, "random")
    starts = [[window_start(400, spec, 3, e, r) for r in range(20)] for e in (0, 1)]
    assert starts[0] != starts[1] and max(starts[0] + starts[1]) <= 336
    assert starts[0] == [window_start(400, spec, 3, 0, r) for r in range(20)]
    loader = _loader(demo_shards, max_len=64)
    source = demo_shards.source("train")
    for step in (0, 16):
        epoch, records = loader.plan.records(step)
        batch = loader.batch(step)
        for row in range(0, 128, 9):
            ids = source[int(records[row])]["tokens"]
            start = window_start(len(ids), spec, 3, epoch, int(records[row]))
            n = min(64, len(ids))
            assert np.array_equal(batch["tokens"][row, :n], ids[start : start + n])
            assert batch["valid"][row].sum() == n


def _host_script(directory, host, out):
    return (
        "import numpy as np\n"
        "from sedd_jax.data.shards import ShardSet\n"
        "from sedd_jax.data.loader import FieldSpec, ShardLoader\n"
        f"s = ShardSet({directory!r})\n"
        "spec = FieldSpec('tokens', 'tokens', 'valid', 64, 1, 'random')\n"
        "L = ShardLoader(s.source('train'), [spec], 128, seed=3, num_shards=2,"
        f" shard_index={host})\n"
        "rec = [L.plan.records(t)[1][L.rows] for t in range(L.steps_per_epoch)]\n"
        "b = [L.batch(t) for t in range(L.steps_per_epoch)]\n"
        f"np.savez({out!r}, records=np.stack(rec), tokens=np.stack([x['tokens'] for x in b]),"
        " ids=np.stack([x['example_id'] for x in b]))\n"
    )


@pytest.mark.slow
def test_two_hosts_read_disjoint_halves_of_every_batch_and_together_the_epoch(
    demo_shards, tmp_path
):
    procs = [
        start_cli(
            "-c",
            _host_script(demo_shards.directory, h, str(tmp_path / f"h{h}.npz")),
            stdout=None,
            stderr=None,
        )
        for h in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    h0, h1 = (np.load(tmp_path / f"h{h}.npz") for h in (0, 1))
    single = _loader(demo_shards)
    for step in range(single.steps_per_epoch):
        assert not set(h0["records"][step]) & set(h1["records"][step])
        whole = single.batch(step)
        assert np.array_equal(
            np.concatenate([h0["tokens"][step], h1["tokens"][step]]), whole["tokens"]
        )
        assert np.array_equal(np.concatenate([h0["ids"][step], h1["ids"][step]]), np.arange(128))
    epoch = np.concatenate([h0["records"].ravel(), h1["records"].ravel()])
    assert len(set(epoch.tolist())) == len(epoch) == 15 * 128  # every record at most once


def test_length_bucketing_cuts_padding_and_keeps_each_record_once_per_epoch(demo_shards):
    plain = _loader(demo_shards, max_len=512, crop="start", batch_size=64)
    bucketed = _loader(demo_shards, max_len=512, crop="start", batch_size=64, bucket_window=8)
    steps = range(plain.steps_per_epoch)
    before = pad_fraction([plain.batch(s) for s in steps])
    batches = [bucketed.batch(s) for s in steps]
    after = pad_fraction(batches)
    assert before > 0.4 and after < before / 2
    assert {b["tokens"].shape[1] % 64 for b in batches} == {0}
    records = np.concatenate([bucketed.plan.records(s)[1] for s in steps])
    assert len(set(records.tolist())) == len(records)
    # the same records per epoch (only their grouping differs), so the same valid tokens
    assert sum(int(b["valid"].sum()) for b in batches) == sum(
        int(plain.batch(s)["valid"].sum()) for s in steps
    )


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.slow
def test_truncated_gzip_is_one_line_naming_file_and_line(tmp_path):
    src = tmp_path / "cut.fasta.gz"
    write_fasta(src, read_fasta(sources.demo_path())[:300])
    src.write_bytes(src.read_bytes()[:-2000])
    line = _one_line_error(_prepare_cli(f"--source={src}", f"--out={tmp_path / 'o'}"))
    assert "cut.fasta.gz:" in line and "corrupt or truncated gzip" in line


@pytest.mark.slow
def test_non_fasta_text_and_empty_records_name_the_line(tmp_path):
    text = tmp_path / "notes.fasta"
    text.write_text("these are my notes\n>a\nMKV\n")
    line = _one_line_error(_prepare_cli(f"--source={text}", f"--out={tmp_path / 'o1'}"))
    assert "notes.fasta:1: sequence data before the first '>' header" in line
    empty = tmp_path / "empty.fa"
    empty.write_text(">a\nMKV\n>b\n>c\nWW\n")
    line = _one_line_error(_prepare_cli(f"--source={empty}", f"--out={tmp_path / 'o2'}"))
    assert "empty.fa:3: record 'b' has no sequence" in line
    unknown = tmp_path / "data.bin"
    unknown.write_text("hello\n")
    line = _one_line_error(_prepare_cli(f"--source={unknown}", f"--out={tmp_path / 'o3'}"))
    assert "data.bin: cannot tell what this file holds" in line


@pytest.mark.slow
def test_smiles_file_with_unparsable_line_fails_naming_it_or_is_skipped(tmp_path):
    smi = tmp_path / "mols.smi"
    smi.write_text("CCO ethanol\nc1ccccc1\nC1CC!x\nCC(=O)O\n")
    line = _one_line_error(_prepare_cli(f"--source={smi}", f"--out={tmp_path / 'o'}"))
    assert "mols.smi:3: invalid smiles: 'C1CC!x'" in line
    m = prepare(
        str(smi),
        str(tmp_path / "ok"),
        on_error="skip",
        val_fraction=0.0,
        num_shards=1,
        progress=False,
    )
    assert m["counts"]["skipped"] == {"invalid_smiles": 1} and m["counts"]["train"] == 3


def test_manifest_of_another_vocabulary_and_changed_shards_are_refused(demo_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_shards.directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["fields"]["tokens"]["tokenizer"]["tokens"][5:7] = ["C", "A"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        DataError,
        match=r"copy/manifest.json: field 'tokens' was written by "
        r"another protein vocabulary",
    ):
        ShardSet(str(copy))
    shutil.copy(os.path.join(demo_shards.directory, "manifest.json"), copy / "manifest.json")
    shard = copy / "train-00002.tokens.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-00002\.tokens\.npy: sha256 does not match"):
        ShardSet(str(copy))


@pytest.mark.slow
def test_train_cli_refuses_changed_shards_in_one_line_before_training(demo_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_shards.directory, copy)
    shard = copy / "val-00001.tokens.offsets.npy"
    shard.write_bytes(shard.read_bytes()[:-8])
    result = run_cli(
        "sedd_jax.train",
        "--config=configs/demo.py",
        f"--workdir={tmp_path / 'run'}",
        "--config.data.source=shards",
        f"--config.data.path={copy}",
        "--config.data.min_len=1",
        check=False,
    )
    line = _one_line_error(result)
    assert "val-00001.tokens.offsets.npy: sha256 does not match" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_ligand_only_training_on_smiles_writes_smiles_samples(tmp_path):
    try:
        path = corpora.moses_path()
    except sources.SourceNotFoundError:
        pytest.skip("pip install --no-deps molsets==0.3.1")
    with gzip.open(path, "rt") as f:
        lines = [next(f).strip() for _ in range(1501)][1:]
    smi = tmp_path / "moses_head.smi"
    smi.write_text("\n".join(lines) + "\n")
    overrides = {
        "data.source": "smiles",
        "data.path": str(smi),
        "data.val_fraction": 0.05,
        "data.num_workers": 0,  # batches in the training process: no worker start-up
        "model.hidden": 32,
        "model.n_blocks": 1,
        "model.n_heads": 2,
        "model.cond_dim": 16,
        "training.batch_size": 16,
        "training.n_steps": 4,
        "training.log_every": 2,
        "training.eval_every": 100,
        "training.checkpoint_every": 4,
        "eval.batch_size": 16,
        "eval.max_batches": 1,
        "sampling.steps": 4,
        "sampling.num_samples": 4,
        "logging.progress_bar": False,
    }
    result = run_cli(
        "sedd_jax.train",
        "--config=configs/ligand_moses.py",
        f"--workdir={tmp_path / 'run'}",
        *cli_overrides(overrides),
        timeout=600,
        env={"SEDD_DATA_CACHE": str(tmp_path / "cache")},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    samples = (tmp_path / "run" / "samples.smi").read_text().splitlines()
    assert len(samples) == 4 and all(line.endswith(f"sample_{i}") for i, line in enumerate(samples))
    # the sample CLI reads the ligand tokenizer from the checkpoint: a .smi of 6 samples
    out = tmp_path / "more.smi"
    cli = ["sedd_jax.sample", f"--workdir={tmp_path / 'run'}"]
    sampled = run_cli(*cli, "--num=6", "--steps=4", f"--out={out}", check=False)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert [row[1] for row in rows] == [f"sample_{i}" for i in range(6)]
    # decoded with the run's SMILES vocabulary: only characters of the training SMILES (an
    # untrained model also draws the unknown-token id, decoded as <unk>)
    characters = set("".join(lines))
    assert all(set(row[0].replace("<unk>", "")) <= characters for row in rows), rows
    assert sum(len(row[0]) for row in rows) > 0
    refused = run_cli(*cli, "--num=2", "--prefix=MKT", check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].endswith("this checkpoint samples ligands")
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in m for m in metrics)
    # evaluate reads the SMILES vocabulary too: a bound on the run's validation SMILES
    scored = tmp_path / "likelihood.json"
    run_cli(
        "sedd_jax.evaluate",
        f"--workdir={tmp_path / 'run'}",
        "--time_samples=2",
        f"--out={scored}",
        env={"SEDD_DATA_CACHE": str(tmp_path / "cache")},
    )
    assert json.loads(scored.read_text())["nats_per_token"] > 0


def _tiny_train_config(**data):
    overrides = {
        "data.max_len": 16,
        "data.crop": "random",  # almost every demo protein is cropped
        "training.batch_size": 8,
        "training.n_steps": 6,
        "training.log_every": 3,
        "training.eval_every": 100,
        "training.checkpoint_every": 3,
        "eval.max_batches": 1,
        "sampling.steps": 2,
        "sampling.num_samples": 2,
    }
    return tiny_config("base", **(overrides | {f"data.{k}": v for k, v in data.items()}))


@pytest.mark.slow
def test_resumed_training_with_random_crops_and_workers_is_bit_identical(tmp_path):
    import orbax.checkpoint as ocp

    from sedd_jax.training.checkpoint import make_manager
    from sedd_jax.training.loop import train_and_evaluate

    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(_tiny_train_config(), straight)
    config = _tiny_train_config(num_workers=2)  # the resumed leg reads from grain workers
    config.training.stop_after_steps = 3
    assert train_and_evaluate(config, resumed)["step"] == 3
    assert train_and_evaluate(_tiny_train_config(num_workers=2), resumed)["step"] == 6

    def restore(workdir):
        manager = make_manager(workdir, keep=10, async_save=False)
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        return ocp.tree.to_flat_dict(manager.restore(6, args=args).state)

    a, b = restore(straight), restore(resumed)
    assert a.keys() == b.keys()
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_shards_prepared_with_other_options_are_refused_naming_the_option(demo_shards):
    from sedd_jax.data.track_data import load_single_track

    c = _tiny_train_config(source="shards", path=demo_shards.directory, min_len=1)
    assert len(load_single_track(c.data).val["tokens"]) == 118
    c.data.val_fraction = 0.01
    with pytest.raises(
        DataError,
        match=r"prepared with val_fraction=0.05, but the config asks "
        r"for 0.01",
    ):
        load_single_track(c.data)
    c = _tiny_train_config(source="shards", path=demo_shards.directory + "/nowhere")
    with pytest.raises(DataError, match="no prepared shards .* python -m sedd_jax.data.prepare"):
        load_single_track(c.data)
