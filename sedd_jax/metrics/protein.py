"""Sample-quality metrics of generated protein sequences against a reference set.

Every per-set statistic is computed for the samples *and* the reference, so a number
is read against what real proteins give (real proteins have low-complexity stretches
and repeats too). Definitions (docs/metrics.md):

* composition: frequencies of the 20 standard residues (non-standard letters are
  counted apart, as `nonstandard_fraction`); `composition_kl` = KL(ref ‖ gen) in nats
  with a pseudo-count of 1 per residue on both sides (`stats.kl_divergence`).
* lengths: KS statistic and Wasserstein-1 (residues) between the length samples.
* novelty: each sample's maximum identity to the reference (`alignment.identity`,
  semi-global BLOSUM62, k-mer prefiltered); novelty = 1 − mean max identity.
* diversity: mean pairwise identity over a seeded subsample, fraction unique (exact).
* low complexity: a SEG-like rule — a residue is low-complexity when a 12-residue
  window containing it has Shannon entropy < 2.2 bits (SEG's window and K1).
* homopolymers: a run of ≥ 6 identical residues; the rate is the fraction of
  sequences with one, plus the fraction of residues inside runs of ≥ 4.
* Rep-n (Welleck et al., 2019): 1 − distinct n-grams / n-grams, per sequence, averaged.
* family hits: `pyhmmer` phmmer of each sample against (a capped subset of) the
  reference sequences, or hmmsearch with the user's HMM file; a hit is E ≤ 1e-3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from sedd_jax.metrics import stats

STANDARD = "ACDEFGHIKLMNPQRSTVWY"
LC_WINDOW = 12
LC_ENTROPY_BITS = 2.2
HOMOPOLYMER_RUN = 6
HOMOPOLYMER_RESIDUE_RUN = 4
REP_N = (2, 3, 4)
HIT_EVALUE = 1e-3


def composition_counts(seqs: Sequence[str]) -> tuple[np.ndarray, int]:
    """Counts of the 20 standard residues `[20]` (in `STANDARD` order) and of other letters."""
    counts = Counter()
    for s in seqs:
        counts.update(s)
    standard = np.array([counts.get(a, 0) for a in STANDARD], dtype=np.float64)
    return standard, int(sum(counts.values()) - standard.sum())


def composition(seqs: Sequence[str], smoothing: float = 1.0) -> np.ndarray:
    """Smoothed residue frequencies `[20]`."""
    return stats.normalise_counts(composition_counts(seqs)[0], smoothing)


def composition_kl(samples: Sequence[str], reference: Sequence[str]) -> float:
    """KL(P_ref ‖ P_gen) of residue composition, nats, pseudo-count 1 per residue."""
    return stats.kl_divergence(composition(reference), composition(samples))


def low_complexity_mask(seq: str) -> np.ndarray:
    """`[L]` bool: residue lies in a 12-window of Shannon entropy < 2.2 bits (SEG-like)."""
    n = len(seq)
    mask = np.zeros(n, dtype=bool)
    if n < LC_WINDOW:
        return mask
    _, codes = np.unique(
        np.frombuffer(seq.encode("ascii", "replace"), np.uint8), return_inverse=True
    )
    onehot = np.zeros((n + 1, codes.max() + 1))
    onehot[np.arange(1, n + 1), codes] = 1
    cum = np.cumsum(onehot, axis=0)
    window = (cum[LC_WINDOW:] - cum[:-LC_WINDOW]) / LC_WINDOW  # [n - w + 1, K]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(window > 0, window * np.log2(window), 0.0), axis=1)
    low = np.flatnonzero(entropy < LC_ENTROPY_BITS)
    if len(low):
        cover = np.zeros(n + 1, dtype=np.int64)
        np.add.at(cover, low, 1)
        np.add.at(cover, low + LC_WINDOW, -1)
        mask = np.cumsum(cover)[:n] > 0
    return mask


def run_lengths(seq: str) -> np.ndarray:
    """Lengths of the maximal runs of one repeated letter, in order (`"AAB"` -> [2, 1])."""
    if not seq:
        return np.zeros(0, dtype=np.int64)
    arr = np.frombuffer(seq.encode("ascii", "replace"), np.uint8)
    starts = np.flatnonzero(np.concatenate([[True], arr[1:] != arr[:-1], [True]]))
    return np.diff(starts)


def rep_n(seq: str, n: int) -> float:
    """1 − distinct n-grams / n-grams of one sequence (0 when shorter than n)."""
    total = len(seq) - n + 1
    if total <= 0:
        return 0.0
    return 1.0 - len({seq[i : i + n] for i in range(total)}) / total


def sequence_statistics(seqs: Sequence[str]) -> dict:
    """Per-set statistics needing no reference: composition, lengths, complexity, repeats."""
    if not seqs:
        raise ValueError("no sequences")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    residues = max(int(lengths.sum()), 1)
    counts, other = composition_counts(seqs)
    lc = [low_complexity_mask(s) for s in seqs]
    runs = [run_lengths(s) for s in seqs]
    longest = np.array([r.max(initial=0) for r in runs])
    in_runs = sum(int(r[r >= HOMOPOLYMER_RESIDUE_RUN].sum()) for r in runs)
    frequencies = counts / counts.sum() if counts.sum() else None
    return {
        "count": len(seqs),
        "length_mean": float(lengths.mean()),
        "length_std": float(lengths.std()),
        "composition": None
        if frequencies is None
        else dict(zip(STANDARD, frequencies.tolist(), strict=True)),
        "nonstandard_fraction": other / residues,
        "unique_fraction": len(set(seqs)) / len(seqs),
        "low_complexity_residue_fraction": sum(int(m.sum()) for m in lc) / residues,
        "low_complexity_sequence_rate": float(np.mean([m.any() for m in lc])),
        "homopolymer_rate": float(np.mean(longest >= HOMOPOLYMER_RUN)),
        "homopolymer_residue_fraction": in_runs / residues,
        "longest_run_mean": float(longest.mean()),
        **{f"rep_{n}": float(np.mean([rep_n(s, n) for s in seqs])) for n in REP_N},
    }


def _digital_block(seqs: Sequence[str], prefix: str):
    from pyhmmer.easel import Alphabet, DigitalSequenceBlock, TextSequence

    abc = Alphabet.amino()
    known = set(abc.symbols)
    digital = [
        TextSequence(
            name=f"{prefix}{i}".encode(), sequence="".join(c if c in known else "X" for c in s)
        ).digitize(abc)
        for i, s in enumerate(seqs)
    ]
    return abc, DigitalSequenceBlock(abc, digital)


def family_hits(
    samples: Sequence[str],
    reference: Sequence[str] | None = None,
    hmm_file: str | None = None,
    evalue: float = HIT_EVALUE,
    progress: bool = False,
) -> dict:
    """Fraction of samples with a pyhmmer hit at E ≤ `evalue`, and how many targets are hit.

    With `hmm_file` (e.g. Pfam-A.hmm or an HMM built from training families) the HMMs
    are searched against the samples (hmmsearch); otherwise each sample is a phmmer
    query against the `reference` sequences. E-values use the searched database size.
    """
    import pyhmmer

    abc, queries = _digital_block(samples, "s")
    hit_by_sample: dict[int, float] = {}
    targets: set[str] = set()
    if hmm_file:
        with pyhmmer.plan7.HMMFile(hmm_file) as f:
            hmms = list(f)
        searches = pyhmmer.hmmer.hmmsearch(hmms, queries, cpus=1, E=evalue)
        for top in _progress(searches, progress, "family hits (hmmsearch)", len(hmms)):
            for hit in top:
                if hit.evalue <= evalue:
                    i = int(_name(hit)[1:])
                    hit_by_sample[i] = min(hit.evalue, hit_by_sample.get(i, np.inf))
                    targets.add(_name(top.query))
        database = f"{len(hmms)} HMMs from {hmm_file}"
    else:
        if not reference:
            raise ValueError("family_hits needs reference sequences or an hmm_file")
        _, db = _digital_block(reference, "r")
        searches = pyhmmer.hmmer.phmmer(queries, db, cpus=1, E=evalue)
        for i, top in enumerate(
            _progress(searches, progress, "family hits (phmmer)", len(samples))
        ):
            good = [h for h in top if h.evalue <= evalue]
            if good:
                hit_by_sample[i] = min(h.evalue for h in good)
                targets.update(_name(h) for h in good)
        database = f"phmmer against {len(reference)} reference sequences"
    return {
        "hit_rate": len(hit_by_sample) / max(len(samples), 1),
        "targets_hit": len(targets),
        "evalue_threshold": evalue,
        "database": database,
    }


def _name(obj) -> str:
    name = obj.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _progress(iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="seq")


def protein_metrics(
    samples: Sequence[str],
    reference: Sequence[str],
    *,
    max_reference: int = 20_000,
    candidates: int = 32,
    diversity_subsample: int = 300,
    family_reference: int = 1_000,
    hmm_file: str | None = None,
    families: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """All protein metrics of `samples` against `reference` (raw sequences, cleaned).

    The reference is capped at `max_reference` sequences for everything (a seeded
    subset) and at `family_reference` for phmmer; diversity uses
    `diversity_subsample` samples. The sizes used are reported.
    """
    from sedd_jax.metrics import alignment  # parasail, scipy

    samples = [s for s in samples if s]
    if not samples:
        raise ValueError("no non-empty protein samples")
    reference = stats.subsample(reference, max_reference, seed)
    best, _ = alignment.max_identity(samples, reference, candidates, progress)
    div = stats.subsample(samples, diversity_subsample, seed)
    pair_ids = alignment.pairwise_identities(div, progress)
    gen_lengths = [len(s) for s in samples]
    ref_lengths = [len(s) for s in reference]
    out = {
        "generated": sequence_statistics(samples),
        "reference": sequence_statistics(reference),
        "composition_kl": composition_kl(samples, reference),
        "composition_js": stats.js_divergence(composition(reference), composition(samples)),
        "length": stats.compare_samples(gen_lengths, ref_lengths),
        "novelty": {
            "max_identity_mean": float(best.mean()),
            "max_identity_median": float(np.median(best)),
            "fraction_identity_ge_0.9": float(np.mean(best >= 0.9)),
            "fraction_identical": float(np.mean(best >= 1.0)),
            "novelty": float(1.0 - best.mean()),
            "reference_size": len(reference),
            "prefilter_candidates": candidates,
        },
        "diversity": {
            "mean_pairwise_identity": float(pair_ids.mean()) if len(pair_ids) else None,
            "subsample": len(div),
            "unique_fraction": len(set(samples)) / len(samples),
        },
        "_values": {
            "generated_lengths": gen_lengths,
            "reference_lengths": ref_lengths,
            "max_identity": best.tolist(),
        },
    }
    if families:
        fam_ref = None if hmm_file else stats.subsample(reference, family_reference, seed)
        out["family_hits"] = family_hits(samples, fam_ref, hmm_file, progress=progress)
    return out
