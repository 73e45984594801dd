"""Ligands as SMILES tokens or SELFIES symbols (`data.ligand_representation`), randomised
SMILES at load time (`data.randomize_smiles`), and ligand validity in the run itself."""

import csv
import os

import numpy as np
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.data import prepare
from sedd_jax.data.shards import DataError
from sedd_jax.data.smiles import canonicalize
from sedd_jax.data.track_data import load_pair_track
from sedd_jax.defaults import dual_base_config
from sedd_jax.training.loop import train_and_evaluate

pytest.importorskip("rdkit")
pytest.importorskip("selfies")
from rdkit import Chem, rdBase  # noqa: E402

PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MSQERPTFYRQELNKTIWEVPE", "MGSSHHHHHHSSGLVPRGSHMA"]


def nci_smiles(n):
    import rdkit

    path = os.path.join(os.path.dirname(rdkit.__file__), "Data", "NCI", "first_5K.smi")
    out = []
    with open(path) as f, rdBase.BlockLogs():
        for line in f:
            s = line.split("\t")[0]
            mol = Chem.MolFromSmiles(s)
            if mol is not None and "." not in s and 10 <= mol.GetNumAtoms() <= 30:
                out.append(Chem.MolToSmiles(mol))
            if len(out) == n:
                return out
    return out


def pair_table(tmp_path, n=60, extra=()):
    """A pair CSV: n NCI ligands over 12 proteins (plus `extra` (protein, smiles) rows)."""
    path = tmp_path / "pairs.csv"
    rows = [
        (PROTEINS[i % 3] + "ACDEFGHIKL"[i % 10] * (1 + i % 4), s)
        for i, s in enumerate(nci_smiles(n))
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["aa_sequence", "smiles"])
        writer.writerows([*rows, *extra])
    return str(path)


def pair_config(path, representation="selfies", randomize=False):
    c = dual_base_config()
    c.data.source = "pair_table"
    c.data.path = path
    c.data.max_protein_len = 32
    c.data.max_ligand_len = 64
    c.data.val_fraction = 0.3
    c.data.ligand_representation = representation
    c.data.randomize_smiles = randomize
    return c


def test_shards_of_the_other_representation_are_refused(tmp_path):
    out = tmp_path / "shards"
    prepare.prepare(
        pair_table(tmp_path, 20), str(out), progress=False, num_shards=2, val_fraction=0.3
    )
    c = pair_config("", "selfies")
    c.data.source, c.data.path = "shards", str(out)
    with pytest.raises(
        DataError, match="ligand_representation='smiles', but the config asks for 'selfies'"
    ) as e:
        load_pair_track(c.data)
    assert "\n" not in str(e.value)
    c.data.ligand_representation = "smiles"
    assert load_pair_track(c.data).ligand_tokenizer.representation == "smiles"


def test_selfies_shards_hold_symbol_ids_and_count_unencodable_ligands(tmp_path, monkeypatch):
    monkeypatch.setenv("SEDD_DATA_CACHE", str(tmp_path / "cache"))
    hypervalent = (PROTEINS[0], "F[I](F)(F)(F)F")  # iodine pentafluoride: no SELFIES
    c = pair_config(pair_table(tmp_path, 30, extra=[hypervalent]), "selfies")
    data = load_pair_track(c.data)
    counts = data.shards.manifest["counts"]
    assert counts["skipped"] == {"no_selfies": 1}
    assert counts["train"] + counts["val"] == 30
    tok = data.ligand_tokenizer
    assert tok.representation == "selfies" and all(t.startswith("[") for t in tok.tokens[2:])
    source = data.shards.source("train")
    for i in range(len(source)):  # ids are SELFIES symbols that decode to the stored molecule
        record = source[i]
        smiles = record["ligand_smiles"].tobytes().decode()
        assert canonicalize(tok.decode(record["ligand"])) == canonicalize(smiles)
        assert len(record["ligand"]) == len(tok.split(smiles))
    c.data.on_error = "fail"
    with pytest.raises(DataError, match="no selfies"):
        load_pair_track(c.data)


@pytest.mark.parametrize("representation", ["smiles", "selfies"])
def test_randomized_smiles_resume_reads_the_same_batches_and_keeps_the_molecule(
    tmp_path, monkeypatch, representation
):
    monkeypatch.setenv("SEDD_DATA_CACHE", str(tmp_path / "cache"))
    c = pair_config(pair_table(tmp_path, 40), representation, randomize=True)
    data = load_pair_track(c.data)
    loader = data.loader(c.data, 8, seed=3)
    spe = loader.steps_per_epoch
    steps = 3 * spe
    straight = [b for _, b in zip(range(steps), loader.iterate(0), strict=False)]
    resumed_loader = data.loader(c.data, 8, seed=3)  # a fresh process after a restart
    resumed = [
        b for _, b in zip(range(steps - spe - 1), resumed_loader.iterate(spe + 1), strict=False)
    ]
    for a, b in zip(straight[spe + 1 :], resumed, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(straight[2][k], loader.batch(2)[k]) for k in straight[2])

    tok = data.ligand_tokenizer
    source = data.shards.source("train")
    forms: dict[int, list] = {}
    for step, batch in enumerate(straight):
        epoch, records = loader.plan.records(step)
        for row, record in enumerate(records.tolist()):
            ids = batch["ligand"][row][batch["ligand_valid"][row]]
            stored = source[record]
            smiles = stored["ligand_smiles"].tobytes().decode()
            assert canonicalize(tok.decode(ids)) == canonicalize(smiles)  # same molecule
            forms.setdefault(record, []).append(tuple(ids.tolist()))
    changed = np.mean([len(set(f)) > 1 for f in forms.values() if len(f) == 3])
    print(f"{representation}: {changed:.2f} of the molecules change tokens across 3 epochs")
    assert changed > 0.8
    # validation arrays stay the stored (canonical) ids
    val = data.val["ligand"][0][data.val["ligand_valid"][0]]
    assert np.array_equal(val, data.shards.source("val")[0]["ligand"])


def tiny_pair_run(c):
    c.model.hidden, c.model.n_heads, c.model.cond_dim = 32, 2, 16
    c.model.n_blocks_protein = c.model.n_blocks_ligand = 1
    c.model.dropout = 0.0
    c.training.batch_size = 8
    c.training.n_steps = 20
    c.training.log_every = 10
    c.training.eval_every = 10
    c.training.checkpoint_every = 20
    c.eval.batch_size = 16
    c.eval.time_samples = 1
    c.eval.max_batches = 1
    c.eval.sample_metrics_num = 8
    c.sampling.steps = 8
    c.sampling.num_samples = 8
    c.logging.progress_bar = False
    return c


@pytest.mark.slow
def test_every_selfies_sample_of_a_trained_pair_model_is_a_molecule(tmp_path, monkeypatch):
    monkeypatch.setenv("SEDD_DATA_CACHE", str(tmp_path / "cache"))
    c = tiny_pair_run(pair_config(pair_table(tmp_path, 60), "selfies", randomize=True))
    summary = train_and_evaluate(c, str(tmp_path / "run"))
    sampled = []
    for name, column in (
        ("samples_joint", "smiles"),
        ("samples_ligand_given_protein", "sampled_smiles"),
    ):
        with open(summary[name]) as f:
            rows = list(csv.DictReader(f))
        assert rows and all(
            r["selfies" if name == "samples_joint" else "sampled_selfies"] for r in rows
        )
        sampled += [r[column] for r in rows]
    with rdBase.BlockLogs():
        mols = [Chem.MolFromSmiles(s) for s in sampled]
    assert len(sampled) == 16 and all(m is not None and m.GetNumAtoms() > 0 for m in mols)

    rows = read_metrics(str(tmp_path / "run"))
    evals = [r for r in rows if "val/ligand_validity_ema" in r]
    assert [r["step"] for r in evals] == [0, 10, 20]
    for r in evals:
        for kind in ("params", "ema"):
            assert r[f"val/ligand_validity_{kind}"] == 1.0  # SELFIES: every sample
            for metric in ("uniqueness", "novelty"):
                assert 0.0 <= r[f"val/ligand_{metric}_{kind}"] <= 1.0
    end = [r for r in rows if "samples/joint/ligand_validity" in r]
    assert len(end) == 1 and end[0]["step"] == 20
    for task in ("joint", "ligand_given_protein"):
        assert end[0][f"samples/{task}/ligand_validity"] == 1.0
        assert summary[f"samples/{task}/ligand_validity"] == 1.0
        assert 0.0 <= end[0][f"samples/{task}/ligand_novelty"] <= 1.0
