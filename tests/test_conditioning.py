"""Conditional generation from files: outputs keyed to inputs, the context echoed, and the
same output on 1 and 2 devices."""

import csv
import json

import pytest

from sedd_jax.conditioning import ConditionFileError, read_ligands, read_proteins
from sedd_jax.data.fasta import FastaRecord, write_fasta
from tests.helpers import run_cli


def test_ligand_files_read_smi_and_csv_with_ids(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO ethanol\n\nc1ccccc1\n")
    assert [(c.id, c.text) for c in read_ligands(str(smi))] == [
        ("ethanol", "CCO"),
        ("ligand_3", "c1ccccc1"),
    ]
    table = tmp_path / "in.csv"
    table.write_text("id,smiles\na,CCN\nb,\n")
    with pytest.raises(ConditionFileError, match="in.csv, line 3: empty smiles"):
        read_ligands(str(table))
    (tmp_path / "bad.csv").write_text("name,smi\na,CCN\n")
    with pytest.raises(ConditionFileError, match="needs a 'smiles' column"):
        read_ligands(str(tmp_path / "bad.csv"))
    fasta = tmp_path / "p.fasta"
    write_fasta(str(fasta), [FastaRecord("P1", "", "MKTAYIAK")])
    assert [(c.id, c.text) for c in read_proteins(str(fasta))] == [("P1", "MKTAYIAK")]


@pytest.fixture(scope="module")
def joint_run(tiny_pair_run):
    """The session's finished pair run and the demo pairs it trained on."""
    from sedd_jax.data.pairs import load_demo_pairs

    return tiny_pair_run.workdir, load_demo_pairs()


def run_sample(*args, devices=1):
    return run_module("sedd_jax.sample", *args, devices=devices)


def run_module(module, *args, devices=1):
    # SEDD_ALLOCATOR=system: no re-execution under tcmalloc (a second JAX import per run);
    # the allocator changes no output
    env = {"SEDD_ALLOCATOR": "system"}
    return run_cli(module, *args, env=env, devices=devices, timeout=600, check=False)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ligands_for_a_fasta_of_proteins_are_keyed_and_device_independent(joint_run, tmp_path):
    workdir, pairs = joint_run
    proteins = [s[:30] for s in dict.fromkeys(pairs.sequences)][:5]
    fasta = tmp_path / "targets.fasta"
    write_fasta(str(fasta), [FastaRecord(f"T{i}", "", s) for i, s in enumerate(proteins)])
    outs = []
    for devices in (1, 2):
        out = tmp_path / f"ligands_{devices}.csv"
        result = run_sample(
            f"--workdir={workdir}",
            "--task=ligand_given_protein",
            f"--proteins={fasta}",
            "--num=3",
            "--steps=4",
            "--batch=4",
            f"--out={out}",
            devices=devices,
        )
        assert result.returncode == 0, result.stderr
        outs.append(out)
    rows = read_rows(outs[0])
    assert len(rows) == 5 * 3
    for i, row in enumerate(rows):
        assert row["input_id"] == f"T{i // 3}" and row["sample"] == str(i % 3)
        assert row["sequence"] == proteins[i // 3]  # the context comes back unchanged
    assert read_rows(outs[1]) == rows  # 2 devices: token for token the same
    settings = [json.loads(open(f"{o}.json").read()) for o in outs]
    assert [s["devices"] for s in settings] == [1, 2]
    assert settings[0]["num_per_input"] == 3 and len(settings[0]["inputs_sha256"]) == 64
    assert settings[0]["length_from"] == "head"  # the run has length heads (the default)


@pytest.mark.slow
def test_proteins_for_a_smiles_file_echo_the_ligand(joint_run, tmp_path):
    workdir, pairs = joint_run
    ligands = [s for s in dict.fromkeys(pairs.smiles) if len(s) < 40][:2]
    smi = tmp_path / "ligands.smi"
    smi.write_text("".join(f"{s} L{i}\n" for i, s in enumerate(ligands)))
    out = tmp_path / "proteins.csv"
    result = run_sample(
        f"--workdir={workdir}",
        "--task=protein_given_ligand",
        f"--ligands={smi}",
        "--num=2",
        "--steps=4",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert [r["input_id"] for r in rows] == ["L0", "L0", "L1", "L1"]
    assert [r["smiles"] for r in rows] == [ligands[0]] * 2 + [ligands[1]] * 2
    assert all(r["sequence"] for r in rows)
    missing = run_sample(f"--workdir={workdir}", "--task=protein_given_ligand")
    assert missing.returncode != 0 and "needs --smiles or --ligands" in missing.stderr


@pytest.mark.slow
def test_evaluate_scores_pair_runs_per_task_and_track(joint_run, tmp_path):
    workdir, _ = joint_run
    out = tmp_path / "pairs.json"
    result = run_module(
        "sedd_jax.evaluate", f"--workdir={workdir}", "--time_samples=2", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    tasks = report["tasks"]
    # the mixture trains joint, ligand_given_protein and protein_given_ligand (defaults)
    assert set(tasks) == {"joint", "ligand_given_protein", "protein_given_ligand"}
    assert set(tasks["joint"]) == {"protein", "ligand"}
    assert set(tasks["ligand_given_protein"]) == {"ligand"}
    assert set(tasks["protein_given_ligand"]) == {"protein"}
    for tracks in tasks.values():
        for r in tracks.values():
            assert r["nats_per_token"] > 0 and 0 < r["nats_per_token_se"] < r["nats_per_token"]
    # conditional tasks: the full bound with the length head's -log p(L | context)
    for task, track in (("ligand_given_protein", "ligand"), ("protein_given_ligand", "protein")):
        r = tasks[task][track]
        assert r["length_nats_per_sequence"] > 0
        assert r["with_length_nats_per_sequence"] == pytest.approx(
            r["nats_per_sequence"] + r["length_nats_per_sequence"], rel=1e-6
        )
    assert "length_nats_per_sequence" not in tasks["joint"]["ligand"]
