"""Distances between two samples or two distributions (numpy only).

Conventions used by every metric of this package:

* `kl_divergence(p, q)` = KL(p ‖ q) = Σ_i p_i log(p_i / q_i) in nats. Callers pass the
  *reference* as `p` and the *generated* set as `q` (GuacaMol's direction): mass the
  reference has and the model misses is penalised without bound.
* Counts become probabilities with an additive pseudo-count (`smoothing`, default 1 per
  category on both sides), so a category the model never emits gives a large but
  finite KL.
* `ks_statistic` and `wasserstein_1d` compare two empirical samples (e.g. lengths):
  sup |F_a − F_b| and ∫ |F_a − F_b| dx (in the samples' own units).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalise_counts(counts: Sequence[float] | np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Counts `[K]` -> probabilities `(counts + smoothing) / Σ (counts + smoothing)`."""
    counts = np.asarray(counts, dtype=np.float64) + smoothing
    total = counts.sum()
    if total <= 0:
        raise ValueError("counts are all zero and smoothing is 0: no distribution")
    return counts / total


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) = Σ p log(p / q) in nats, for probability vectors `[K]` (terms with p=0 are 0)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p has shape {p.shape}, q has {q.shape}")
    support = p > 0
    if np.any(q[support] <= 0):
        return float("inf")
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence ½KL(p‖m) + ½KL(q‖m), m = (p+q)/2, in nats (≤ log 2)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def _ecdfs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        raise ValueError("both samples must be non-empty")
    grid = np.concatenate([a, b])
    grid.sort()
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return grid, fa, fb


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup_x |F_a(x) − F_b(x)| ∈ [0, 1]."""
    _, fa, fb = _ecdfs(np.asarray(a), np.asarray(b))
    return float(np.max(np.abs(fa - fb)))


def wasserstein_1d(a: Sequence[float], b: Sequence[float]) -> float:
    """Earth mover's distance W1 = ∫ |F_a(x) − F_b(x)| dx between two empirical samples."""
    grid, fa, fb = _ecdfs(np.asarray(a), np.asarray(b))
    return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(grid)))


def compare_samples(generated: Sequence[float], reference: Sequence[float]) -> dict:
    """Mean, std of both samples plus KS and W1 between them; None entries when one is empty."""
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    out = {
        "generated_mean": float(g.mean()) if len(g) else None,
        "generated_std": float(g.std()) if len(g) else None,
        "reference_mean": float(r.mean()) if len(r) else None,
        "reference_std": float(r.std()) if len(r) else None,
        "ks": None,
        "wasserstein": None,
    }
    if len(g) and len(r):
        out["ks"] = ks_statistic(g, r)
        out["wasserstein"] = wasserstein_1d(g, r)
    return out


def subsample(items: Sequence, max_count: int | None, seed: int = 0) -> list:
    """At most `max_count` items, a uniform random subset in the original order (seeded)."""
    items = list(items)
    if max_count is None or len(items) <= max_count:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), max_count, replace=False))
    return [items[i] for i in keep]
