"""Sample-quality metrics on hand-computed cases (sedd_jax/metrics, docs/metrics.md)."""

import math

import numpy as np
import pytest

pytest.importorskip("parasail")
pytest.importorskip("rdkit")

from sedd_jax.metrics import alignment, headline_metrics, ligand, pairs, protein, stats  # noqa: E402
from tests.helpers import run_cli

AA = "ACDEFGHIKLMNPQRSTVWY"


def random_protein(rng, n):
    return "".join(rng.choice(list(AA), n))


# --- distances ---------------------------------------------------------------------------


def test_kl_of_known_distributions():
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert stats.kl_divergence(p, q) == pytest.approx(expected, abs=1e-12)
    assert stats.kl_divergence(p, p) == 0.0
    assert stats.kl_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == math.inf
    assert stats.js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(
        math.log(2)
    )


def test_smoothing_adds_one_pseudo_count_per_category():
    np.testing.assert_allclose(stats.normalise_counts([3, 0, 1]), [4 / 7, 1 / 7, 2 / 7])


def test_ks_and_wasserstein_of_known_samples():
    assert stats.ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert stats.ks_statistic([0, 0], [1, 1]) == 1.0
    assert stats.ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    assert stats.wasserstein_1d([0], [1]) == pytest.approx(1.0)
    assert stats.wasserstein_1d([0, 2], [1, 3]) == pytest.approx(1.0)


# --- proteins ----------------------------------------------------------------------------


def test_identity_of_known_aligned_pairs():
    assert alignment.identity("ACDEFGHIK", "ACDEFGHIK") == 1.0
    assert alignment.identity("ACDEFGHIK", "ACDWFGHIK") == pytest.approx(8 / 9)  # 1 mismatch
    assert alignment.identity("CDEFG", "AAACDEFGHHH") == 1.0  # a crop of a longer protein
    # internal 2-residue deletion: ACDEFGH--LMN, 10 identical of 12 aligned columns
    assert alignment.identity("ACDEFGHIKLMN", "ACDEFGHLMN") == pytest.approx(10 / 12)
    # end-to-end overlap of 9 residues, divided by the shorter length 17, not by 9
    assert alignment.identity("WWWWWWWWACDEFGHIK", "ACDEFGHIKYYYYYYYY") == pytest.approx(9 / 17)
    assert alignment.identity("", "ACD") == 0.0


def test_prefiltered_nearest_neighbour_finds_the_mutated_parent():
    rng = np.random.default_rng(0)
    reference = [random_protein(rng, 200) for _ in range(300)]
    queries, parents = [], rng.choice(300, 20, replace=False)
    for j in parents:
        seq = list(reference[j])
        for pos in rng.choice(200, 20, replace=False):  # 10 % substitutions
            seq[pos] = AA[(AA.index(seq[pos]) + 1) % 20]
        queries.append("".join(seq))
    best, nearest = alignment.max_identity(queries, reference, candidates=8)
    np.testing.assert_array_equal(nearest, parents)
    np.testing.assert_allclose(best, 0.9)


def test_repeat_homopolymer_and_low_complexity_on_hand_cases():
    assert protein.rep_n("AAAA", 2) == pytest.approx(2 / 3)
    assert protein.rep_n("ACDE", 2) == 0.0
    np.testing.assert_array_equal(protein.run_lengths("AABCCC"), [2, 1, 3])
    assert protein.low_complexity_mask("A" * 20).all()
    assert not protein.low_complexity_mask(AA).any()  # 12 distinct residues: log2 12 bits
    s = protein.sequence_statistics(["A" * 30, AA])
    assert s["homopolymer_rate"] == 0.5
    assert s["homopolymer_residue_fraction"] == pytest.approx(30 / 50)
    assert s["composition"]["A"] == pytest.approx(31 / 50)


def test_composition_kl_counts_reference_against_samples():
    ref, gen = ["AC"], ["AAAC"]  # counts A:1 C:1 vs A:3 C:1, +1 on each of 20 residues
    p = stats.normalise_counts([1, 1] + [0] * 18)  # adds the 1s
    q = stats.normalise_counts([3, 1] + [0] * 18)
    assert p[0] == pytest.approx(2 / 22) and q[0] == pytest.approx(4 / 24)
    assert protein.composition_kl(gen, ref) == pytest.approx(float(np.sum(p * np.log(p / q))))


@pytest.fixture(scope="module")
def demo_proteins():
    from sedd_jax.data.fasta import read_fasta
    from sedd_jax.data.sources import demo_path

    return [r.sequence[:256] for r in read_fasta(demo_path())[:300]]


def test_training_proteins_against_themselves_give_the_extremes(demo_proteins):
    m = protein.protein_metrics(demo_proteins[:60], demo_proteins, diversity_subsample=30)
    assert m["novelty"]["max_identity_mean"] == 1.0
    assert m["novelty"]["novelty"] == 0.0
    assert m["family_hits"]["hit_rate"] == 1.0
    same = protein.protein_metrics(
        demo_proteins, demo_proteins, diversity_subsample=10, families=False
    )
    assert same["composition_kl"] == 0.0 and same["length"]["ks"] == 0.0


def test_random_and_homopolymer_proteins_give_the_other_extremes(demo_proteins):
    rng = np.random.default_rng(1)
    uniform = [random_protein(rng, 200) for _ in range(40)]
    m = protein.protein_metrics(uniform, demo_proteins, diversity_subsample=20)
    assert m["novelty"]["max_identity_mean"] < 0.4
    assert m["family_hits"]["hit_rate"] <= 0.05
    assert m["composition_kl"] > 0.05
    assert m["diversity"]["mean_pairwise_identity"] < 0.2
    junk = protein.sequence_statistics(["A" * 100, "G" * 80])
    assert junk["homopolymer_rate"] == 1.0
    assert junk["low_complexity_residue_fraction"] == 1.0
    assert junk["rep_3"] == pytest.approx(1 - (1 / 98 + 1 / 78) / 2)


def test_family_hits_with_a_user_hmm_file(tmp_path, demo_proteins):
    from pyhmmer.easel import Alphabet, TextSequence
    from pyhmmer.plan7 import Background, Builder

    abc = Alphabet.amino()
    builder, background = Builder(abc), Background(abc)
    path = tmp_path / "families.hmm"
    with open(path, "wb") as f:
        for i, seq in enumerate(demo_proteins[:5]):
            digital = TextSequence(name=f"fam{i}".encode(), sequence=seq).digitize(abc)
            builder.build(digital, background)[0].write(f)
    rng = np.random.default_rng(0)
    samples = [demo_proteins[0][:120], demo_proteins[3], random_protein(rng, 150)]
    hits = protein.family_hits(samples, hmm_file=str(path))
    assert hits["hit_rate"] == pytest.approx(2 / 3) and hits["targets_hit"] == 2


# --- ligands -----------------------------------------------------------------------------


def test_validity_of_known_good_and_bad_smiles():
    smiles = ["CCO", "c1ccccc1", "C1CC", "", "C(C)(C)(C)(C)C", "xyz"]  # ring open, 5-valent C
    assert ligand.validity(smiles) == pytest.approx(2 / 6)


def test_uniqueness_and_novelty_follow_moses():
    valid = ligand.canonical(["CCO", "OCC", "c1ccccc1", "CCN"])  # OCC is CCO
    assert ligand.unique_at(valid, 1000) == (0.75, 4)
    assert ligand.unique_at(valid, 2) == (0.5, 2)
    assert ligand.novelty(valid, {"CCO"}) == pytest.approx(2 / 3)  # over 3 distinct


def test_tanimoto_of_known_molecules_matches_rdkit():
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    smiles = ["CCO", "CCN", "c1ccccc1", "Cc1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"]
    mols = [ligand.to_mol(s) for s in smiles]
    sim = ligand.tanimoto_matrix(ligand.fingerprints(mols), ligand.fingerprints(mols))
    assert sim[0, 1] == pytest.approx(1 / 3)  # ethanol vs ethylamine: 2 of 6 bits shared
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(m) for m in mols]
    for i, fp in enumerate(fps):
        np.testing.assert_allclose(sim[i], DataStructs.BulkTanimotoSimilarity(fp, fps), 1e-6)


def test_internal_diversity_of_copies_is_zero():
    fps = ligand.fingerprints([ligand.to_mol("c1ccccc1")] * 3)
    assert ligand.internal_diversity(fps) == pytest.approx(0.0)
    two = ligand.fingerprints([ligand.to_mol("CCO"), ligand.to_mol("CCN")])
    assert ligand.internal_diversity(two) == pytest.approx(2 / 3)
    moses = ligand.fingerprints([ligand.to_mol("CCO"), ligand.to_mol("CCN")], bits=1024)
    # MOSES IntDiv1 keeps the two self pairs: 1 - (1 + 1 + 1/3 + 1/3) / 4
    assert ligand.internal_diversity(moses, include_self=True) == pytest.approx(1 / 3, abs=1e-6)


def test_lipinski_violations_count_the_four_rules():
    p = {"mw": 600, "logp": 6, "hbd": 2, "hba": 11}
    assert ligand.lipinski_violations(p) == 3


@pytest.fixture(scope="module")
def demo_smiles():
    from sedd_jax.data.pairs import load_demo_pairs

    try:
        table = load_demo_pairs()
    except Exception as e:  # noqa: BLE001 - the demo pairs are an optional install
        pytest.skip(f"demo pairs unavailable: {e}")
    return list(dict.fromkeys(table.smiles))[:120]


def test_fcd_of_a_set_against_itself_is_zero(demo_smiles):
    pytest.importorskip("fcd")
    a = demo_smiles[:40]
    alkanes = ["C" * i for i in range(1, 41)]
    assert abs(ligand.fcd_distance(a, a)) < 1e-3
    assert ligand.fcd_distance(a, alkanes) > 10.0


def test_training_smiles_against_themselves_and_scrambled(demo_smiles):
    m = ligand.ligand_metrics(demo_smiles, demo_smiles, fcd_size=None)
    assert m["validity"] == 1.0 and m["novelty"] == 0.0 and m["unique@1000"] == 1.0
    assert m["properties"]["mw"]["wasserstein"] == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    scrambled = ["".join(rng.permutation(list(s))) for s in demo_smiles]
    assert ligand.validity(scrambled) < 0.1


# --- pairs and headline ------------------------------------------------------------------


def test_specificity_separates_a_conditional_model_from_one_that_ignores_the_protein():
    refs = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"]
    prots = ["PA", "PB", "PC"]
    good = pairs.ligand_specificity(prots * 2, refs * 2, refs * 2)
    assert good["matched"] == pytest.approx(1.0)
    assert good["within_protein"] == pytest.approx(1.0)
    assert good["specificity_gap"] > 0.5
    ignoring = pairs.ligand_specificity(prots * 2, ["CCN"] * 6, refs * 2)
    assert ignoring["specificity_gap"] == pytest.approx(0.0, abs=1e-6)
    assert ignoring["within_protein"] == ignoring["between_proteins"] == pytest.approx(1.0)


def test_headline_metrics_are_cheap_numbers():
    h = headline_metrics("ligand", ["CCO", "OCC", "C1CC", "CCN"], ["CCO"])
    assert h == {"validity": 0.75, "uniqueness": pytest.approx(2 / 3), "novelty": 0.5}
    p = headline_metrics("protein", ["AAAAAAAC", "ACDE"], ["ACDE"])
    assert p["unique_fraction"] == 1.0 and p["homopolymer_rate"] == 0.5
    assert headline_metrics("protein", ["ACDE"], ["ACDE"])["composition_kl"] == 0.0


@pytest.mark.slow
def test_metrics_package_imports_no_jax():
    code = (
        "import sys; import sedd_jax.metrics.report, sedd_jax.metrics.samples, "
        "sedd_jax.metrics.headline; assert 'jax' not in sys.modules, 'jax imported'"
    )
    run_cli("-c", code, timeout=120)
