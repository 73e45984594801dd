"""Sequence identity by a real aligner (parasail), and nearest neighbours in a reference set.

Identity definition. Two sequences are aligned semi-globally (`parasail.sg`: end gaps
free on both, BLOSUM62, gap open 11, extend 1 — BLAST's protein defaults), and

    identity(a, b) = identical positions / max(min(len a, len b), alignment length),

where the alignment length counts the columns between the first and the last aligned
pair (internal gaps included, the free end gaps not).

Why: free end gaps let a sample that reproduces a *crop* of a longer training protein
(training crops to `max_len`) score 1.0, as it should for a memorised sequence. The
shorter length in the denominator (CD-HIT's convention) keeps an end-to-end *overlap*
(a's tail aligned to b's head) from scoring 1 on a short overlap; the alignment length
makes internal indels count (a copy with a 2-residue deletion scores 10/12, not 1).
identity(a, a) = 1 exactly and identity ≤ 1 always. A limitation: a very short sample
can reach a high identity to some long reference by chance; lengths are reported too.

Speed. Aligning every sample against every reference protein costs
N_samples × N_ref alignments (~0.04 ms each at 256 × 256 on one core). Nearest
neighbours are therefore found in two stages: (1) a k-mer prefilter (distinct shared
3-mers / distinct 3-mers of the shorter sequence, a sparse matrix product) keeps the
`candidates` best references of each sample; (2) only those are aligned. The reference
set can also be capped (`max_reference`, a seeded random subset). Exact copies are
always found (they share every k-mer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import parasail
from scipy import sparse

GAP_OPEN = 11
GAP_EXTEND = 1
KMER = 3
_ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
_CODE = np.full(256, len(_ALPHABET), dtype=np.int64)
_CODE[np.frombuffer(_ALPHABET.encode(), dtype=np.uint8)] = np.arange(len(_ALPHABET))


def identity(a: str, b: str) -> float:
    """Identical positions / max(shorter length, alignment length), semi-global BLOSUM62."""
    if not a or not b:
        return 0.0
    if a in b or b in a:  # exact copy or crop; also right where BLOSUM62 scores X·X < 0
        return 1.0
    result = parasail.sg_stats_striped_16(a, b, GAP_OPEN, GAP_EXTEND, parasail.blosum62)
    if result.saturated:
        result = parasail.sg_stats_striped_32(a, b, GAP_OPEN, GAP_EXTEND, parasail.blosum62)
    return result.matches / max(min(len(a), len(b)), result.length)


def kmer_matrix(seqs: Sequence[str], k: int = KMER) -> sparse.csr_matrix:
    """Binary presence of each k-mer over the 20 standard residues: `[N, 20^k]` CSR.

    k-mers containing a non-standard letter are skipped.
    """
    base = len(_ALPHABET)
    rows, cols = [], []
    for i, s in enumerate(seqs):
        codes = _CODE[np.frombuffer(s.encode("ascii", "replace"), dtype=np.uint8)]
        if len(codes) < k:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(codes, k)
        windows = windows[np.all(windows < base, axis=1)]
        ids = np.unique(windows @ (base ** np.arange(k - 1, -1, -1)))
        rows.append(np.full(len(ids), i))
        cols.append(ids)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(seqs), base**k))


def kmer_candidates(
    queries: Sequence[str], reference: Sequence[str], candidates: int, chunk: int = 256
) -> np.ndarray:
    """Indices `[N_q, C]` of the references sharing the largest fraction of distinct k-mers.

    Score = |K(q) ∩ K(r)| / min(|K(q)|, |K(r)|); C = min(candidates, N_ref).
    """
    q_mat, r_mat = kmer_matrix(queries), kmer_matrix(reference)
    q_n = np.asarray(q_mat.sum(axis=1)).ravel()
    r_n = np.asarray(r_mat.sum(axis=1)).ravel()
    r_t = r_mat.T.tocsc()
    c = min(candidates, len(reference))
    out = np.zeros((len(queries), c), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        shared = (q_mat[start : start + chunk] @ r_t).toarray()
        denom = np.maximum(np.minimum(q_n[start : start + chunk, None], r_n[None, :]), 1)
        score = shared / denom
        top = np.argpartition(-score, c - 1, axis=1)[:, :c] if c < score.shape[1] else None
        out[start : start + chunk] = (
            top if top is not None else np.tile(np.arange(c), (len(score), 1))
        )
    return out


def max_identity(
    queries: Sequence[str],
    reference: Sequence[str],
    candidates: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the highest identity to any reference and that reference's index.

    Returns (identity `[N_q]` float, nearest `[N_q]` int). Exact copies short-cut to 1.
    With `candidates >= len(reference)` every pair is aligned (no prefilter).
    """
    if not len(reference):
        raise ValueError("empty reference set")
    exact = {s: i for i, s in enumerate(reference)}
    best = np.zeros(len(queries))
    nearest = np.full(len(queries), -1, dtype=np.int64)
    if candidates >= len(reference):
        cand = np.tile(np.arange(len(reference)), (len(queries), 1))
    else:
        cand = kmer_candidates(queries, reference, candidates)
    rows = range(len(queries))
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="novelty (identity to reference)", unit="seq")
    for i in rows:
        q = queries[i]
        if q in exact:
            best[i], nearest[i] = 1.0, exact[q]
            continue
        for j in cand[i]:
            ident = identity(q, reference[j])
            if ident > best[i]:
                best[i], nearest[i] = ident, j
    return best, nearest


def pairwise_identities(seqs: Sequence[str], progress: bool = False) -> np.ndarray:
    """Identities of all unordered pairs i < j, `[N (N-1) / 2]` in row-major order."""
    pairs = [(i, j) for i in range(len(seqs)) for j in range(i + 1, len(seqs))]
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="diversity (pairwise identity)", unit="pair", miniters=1000)
    return np.array([identity(seqs[i], seqs[j]) for i, j in pairs], dtype=np.float64)
