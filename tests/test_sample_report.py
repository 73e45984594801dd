"""The sample-quality report: `python -m sedd_jax.evaluate --samples=FILE` and its inputs."""

import csv
import json
import os

import pytest

pytest.importorskip("parasail")
pytest.importorskip("rdkit")
pytest.importorskip("matplotlib")

from sedd_jax import sample_report  # noqa: E402
from sedd_jax.data.fasta import FastaRecord, read_fasta, write_fasta  # noqa: E402
from sedd_jax.data.sources import demo_path  # noqa: E402
from sedd_jax.metrics import samples as samples_lib  # noqa: E402
from tests.helpers import load_config, run_cli  # noqa: E402

SMILES = [
    "CCO",
    "c1ccccc1",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CCN(CC)CC",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "O=C(O)c1ccccc1O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "c1ccc2ccccc2c1",
]


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_sample_files_are_recognised_by_content(tmp_path):
    fasta = tmp_path / "s.fasta"
    write_fasta(fasta, [FastaRecord("a", "", "ACDE")])
    joint = _write_csv(tmp_path / "j.csv", ("sequence", "smiles"), [("acd", "CCO")])
    cond = _write_csv(
        tmp_path / "c.csv", ("sequence", "reference_smiles", "sampled_smiles"), [("AC", "C", "N")]
    )
    assert samples_lib.read_samples(str(fasta)) == ("protein", {"sequence": ["ACDE"]})
    assert samples_lib.read_samples(joint) == ("joint", {"sequence": ["ACD"], "smiles": ["CCO"]})
    assert samples_lib.read_samples(cond)[0] == "ligand_given_protein"
    bad = _write_csv(tmp_path / "b.csv", ("foo",), [("x",)])
    with pytest.raises(ValueError, match="none of"):
        samples_lib.read_samples(bad)


def test_reference_from_the_demo_config_is_its_training_crops():
    reference, what = sample_report.reference_from_config(load_config("demo"))
    assert "training split" in what and not reference["smiles"]
    assert 1000 < len(reference["proteins"]) < 2100  # the validation share is held out
    assert max(len(p) for p in reference["proteins"]) == 64  # data.max_len


@pytest.mark.slow
def test_report_cli_on_a_small_fasta_writes_json_markdown_and_plots(tmp_path):
    proteins = [r.sequence for r in read_fasta(demo_path())[:200]]
    samples = tmp_path / "samples.fasta"
    write_fasta(samples, [FastaRecord(f"s{i}", "", p[:80]) for i, p in enumerate(proteins[:20])])
    reference = tmp_path / "reference.fasta"
    write_fasta(reference, [FastaRecord(f"r{i}", "", p) for i, p in enumerate(proteins)])
    out = tmp_path / "report"
    run_cli(
        "sedd_jax.evaluate",
        f"--samples={samples}",
        f"--reference={reference}",
        f"--report_dir={out}",
    )
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "protein" and report["num_samples"] == 20
    assert report["headline"]["protein/novelty.max_identity_mean"] == 1.0  # crops of the reference
    assert set(report["tracks"]["protein"]) >= {
        "composition_kl",
        "length",
        "novelty",
        "diversity",
        "family_hits",
        "generated",
        "reference",
    }
    assert "_values" not in report["tracks"]["protein"]
    assert report["plots"] == ["protein_composition.png", "protein_lengths.png"]
    for name in report["plots"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "protein/composition_kl" in (out / "report.md").read_text()


@pytest.mark.slow
def test_report_on_pair_csvs_scores_both_tracks_and_specificity(tmp_path):
    proteins = [r.sequence[:60] for r in read_fasta(demo_path())[:8]]
    reference = _write_csv(
        tmp_path / "train.csv", ("sequence", "smiles"), list(zip(proteins, SMILES, strict=True))
    )
    joint = _write_csv(
        tmp_path / "samples_joint.csv",
        ("sequence", "smiles"),
        [(p[:50], s) for p, s in zip(proteins, SMILES[::-1], strict=True)] + [("ACDE", "C1CC")],
    )
    report = sample_report.run(
        joint, reference_path=reference, report_dir=str(tmp_path / "rj"), progress=False
    )
    h = report["headline"]
    assert h["ligand/validity"] == pytest.approx(8 / 9) and h["ligand/novelty"] == 0.0
    assert h["ligand/fcd"] is not None and h["protein/novelty.max_identity_mean"] < 1.0
    assert sorted(os.listdir(tmp_path / "rj")) == [
        "ligand_properties.png",
        "protein_composition.png",
        "protein_lengths.png",
        "report.json",
        "report.md",
    ]
    cond = _write_csv(
        tmp_path / "samples_ligand_given_protein.csv",
        ("sequence", "reference_smiles", "sampled_smiles"),
        [(p, s, s) for p, s in zip(proteins, SMILES, strict=True)],
    )
    report = sample_report.run(
        cond,
        reference_path=reference,
        report_dir=str(tmp_path / "rc"),
        ligand_kwargs={"fcd_size": None},
        progress=False,
    )
    saved = json.loads((tmp_path / "rc" / "report.json").read_text())
    assert saved["kind"] == "ligand_given_protein"
    assert saved["headline"]["specificity/matched"] == pytest.approx(1.0)
    assert saved["headline"]["specificity/specificity_gap"] > 0.5
    assert saved["headline"]["specificity/within_protein"] is None  # one sample per protein
    assert set(saved["tracks"]) == {"ligand", "specificity"}
