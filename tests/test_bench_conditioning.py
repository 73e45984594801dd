"""The known-answer pair source (`sedd_jax/data/synthetic_pairs.py`) and the
`scripts/bench_conditioning.py --quick` path."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from sedd_jax.data import synthetic_pairs as sp
from sedd_jax.data.batching import is_validation
from sedd_jax.data.fasta import read_fasta
from sedd_jax.data.pair_tables import read_pair_table
from sedd_jax.data.track_data import run_data
from tests.helpers import REPO, run_cli, tiny_config

DRUGS = ("CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1")


def _enumerate(source: sp.FamilySource):
    """log p(x | f) [20^Lp, F] over every sequence."""
    x = np.array(list(itertools.product(range(20), repeat=source.length)))
    return source.log_likelihoods(x)


def test_entropy_formula_matches_enumeration():
    source = sp.FamilySource.create(3, 3, 0.3, DRUGS[:3], seed=1)
    ll = _enumerate(source)
    np.testing.assert_allclose(np.exp(ll).sum(axis=0), 1.0, rtol=1e-12)  # p(. | f) is a law
    p = np.exp(ll).mean(axis=1)  # uniform families
    h_protein = float(-(p * np.log(p)).sum())
    post = np.exp(ll) / np.exp(ll).sum(axis=1, keepdims=True)
    h_f_given_x = float((p * -(post * np.log(post)).sum(axis=1)).sum())
    per_member = 3 * sp.mutation_entropy(0.3)
    assert h_protein == pytest.approx(math.log(3) + per_member - h_f_given_x, abs=1e-10)
    # the Monte-Carlo posterior entropy of the library agrees with the enumeration
    mc, _ = sp.posterior_entropy(source, 20_000)
    assert mc == pytest.approx(h_f_given_x, rel=0.05)


def test_members_mutate_at_rate_m_to_the_19_other_residues():
    source = sp.FamilySource.create(4, 48, 0.15, DRUGS)
    rng = np.random.default_rng(0)
    family = rng.integers(0, 4, 5000)
    x = source.members(family, rng)
    mutated = x != source.prototypes[family]
    assert mutated.mean() == pytest.approx(0.15, abs=0.003)
    shift = (x - source.prototypes[family]) % 20
    counts = np.bincount(shift[mutated], minlength=20)
    assert counts[0] == 0 and counts[1:].min() > 0.9 * counts[1:].mean()
    nll = -source.log_likelihoods(x)[np.arange(5000), family]
    assert nll.mean() == pytest.approx(48 * sp.mutation_entropy(0.15), abs=4 * nll.std() / 70)


def test_monte_carlo_protein_entropy_matches_the_exact_one_at_benchmark_size():
    drugs = [f"C{'C' * k}O" for k in range(16)]
    source = sp.FamilySource.create(16, 48, 0.15, drugs)
    truth = sp.exact_entropies(source, [len(d) for d in drugs])
    rng = np.random.default_rng(3)
    family = rng.integers(0, 16, 20_000)
    ll = source.log_likelihoods(source.members(family, rng))
    nll = -(np.logaddexp.reduce(ll, axis=1) - math.log(16))
    se = nll.std() / math.sqrt(len(nll))
    assert nll.mean() == pytest.approx(truth["protein"], abs=4 * se)
    assert truth["protein"] == pytest.approx(math.log(16) + 48 * sp.mutation_entropy(0.15))


def test_family_posterior_is_deterministic_so_information_is_log_f():
    drugs = [f"C{'C' * k}O" for k in range(16)]
    source = sp.FamilySource.create(16, 48, 0.15, drugs)
    truth = sp.exact_entropies(source, [len(d) for d in drugs])
    assert truth["ligand_given_protein"] < 1e-30
    assert truth["log_posterior_off_family_max"] < -50  # no member is near another family
    assert truth["information"] == pytest.approx(math.log(16))
    assert truth["ligand_length"] == pytest.approx(math.log(16))
    assert truth["ligand_given_length"] == pytest.approx(0.0)


def test_length_entropy_counts_shared_lengths():
    assert sp.length_entropy([5, 6, 7, 8]) == pytest.approx(math.log(4))
    assert sp.length_entropy([5, 5, 7, 8]) == pytest.approx(1.5 * math.log(2))


def test_nearest_family_recovers_members_and_counts_length_differences():
    source = sp.FamilySource.create(8, 32, 0.15, [f"C{'C' * k}" for k in range(8)])
    rng = np.random.default_rng(0)
    family = np.arange(8).repeat(10)
    members = sp.decode(source.members(family, rng))
    np.testing.assert_array_equal(sp.nearest_family(source, members), family)
    proto = sp.decode(source.prototypes[:1])[0]
    assert sp.nearest_family(source, [proto[:20], proto + "AAAA"]).tolist() == [0, 0]


def test_pick_drugs_gives_canonical_molecules_of_distinct_lengths():
    pool = ["OCC", "CCO", "CCCO", "c1ccccc1", "CCCCCO", "CC(C)O", "not a smiles"]
    drugs, lengths = sp.pick_drugs(pool, 3, len, 3, 8, seed=0)
    assert len(set(lengths)) == 3 and all(len(d) == n for d, n in zip(drugs, lengths, strict=True))
    assert set(drugs) <= {"CCO", "CCCO", "c1ccccc1", "CCCCCO", "CC(C)O"}
    with pytest.raises(ValueError, match="distinct lengths"):
        sp.pick_drugs(pool, 6, len, 3, 8)


def test_table_reads_back_through_pair_table_with_the_trainers_split(tmp_path, monkeypatch):
    monkeypatch.setenv("SEDD_DATA_CACHE", str(tmp_path / "cache"))
    source = sp.FamilySource.create(4, 24, 0.15, DRUGS)
    data = sp.write_pairs(source, str(tmp_path / "d"), per_family=50, val_fraction=0.1)
    table = read_pair_table(data["paths"]["pairs.csv"])
    assert len(table) == data["pairs"] and 190 < len(table) <= 200 and not table.skipped
    assert len(set(table.sequences)) == len(table)  # distinct, as the trainer keeps them
    for seq, smiles in table.pairs():  # the ligand is the family's drug
        assert smiles == source.drugs[sp.nearest_family(source, [seq])[0]]
    held = read_fasta(data["paths"]["held_out.fasta"])
    assert len(held) == data["held_out"] == sum(is_validation(s, 0.1) for s in table.sequences)
    config = tiny_config(
        "dual",
        **{
            "data.source": "pair_table",
            "data.path": data["paths"]["pairs.csv"],
            "data.val_fraction": 0.1,
            "data.max_protein_len": 24,
            "data.max_ligand_len": 32,
        },
    )
    track = run_data(config)
    assert sorted(track.val_sequences) == sorted(r.sequence for r in held)
    assert len(track.shards.source("train")) + len(held) == data["pairs"]


@pytest.mark.slow
def test_quick_benchmark_writes_every_field(tmp_path):
    out = tmp_path / "quick.json"
    run_cli(
        str(REPO / "scripts" / "bench_conditioning.py"),
        "--quick",
        "--guidance=1",  # one weight: the guided path, half the sampling runs of the default
        f"--workdir={tmp_path / 'work'}",
        f"--out={out}",
        timeout=600,
    )
    r = json.loads(out.read_text())
    assert r["source"]["held_out"] > 0 and r["timing"]["train_steps"] == 20
    numbers = [*r["exact_nats"].values(), *r["information_estimate_nats"].values()]
    for b in r["likelihood_nats_per_sequence"].values():
        numbers += [b["bound_given_length"], b["length_term"], b["total"]]
        assert b["pairs"] == r["source"]["held_out"]
    numbers += [v for v in r["timing"].values()]
    assert all(math.isfinite(v) for v in numbers)
    assert [s["guidance"] for s in r["sampling"]] == [1.0]
    for s in r["sampling"]:
        assert s["ligand_samples"] == 8 and s["protein_samples"] == 8
        for key in ("ligand_exact", "ligand_right_length", "ligand_valid"):
            assert 0.0 <= s[key] <= 1.0
        assert 0.0 <= s["protein_nearest_own_family"] <= 1.0
    assert r["machine"]["cpu"]
