"""Protein families bound to drugs: a pair source whose entropies are known exactly.

F families, each a random prototype protein c_f of length Lp over the 20 standard amino
acids; a member of family f copies c_f and mutates each position independently with
probability m to one of the 19 other residues; its ligand is the family's drug d_f, a real
molecule (canonical SMILES). With f uniform:

    p(x | f)  = prod_i [(1 - m) if x_i = c_f,i else m / 19]
    H(x | f)  = Lp (H_b(m) + m log 19),          H_b(m) = -m log m - (1 - m) log(1 - m)
    H(protein) = H(f) + H(x | f) - H(f | x) = log F + Lp (H_b(m) + m log 19) - H(f | x)
    H(ligand) = log F (distinct drugs),  H(ligand | protein) = H(f | x),
    I(protein; ligand) = log F - H(f | x),
    H(protein | ligand) = H(x | f).

H(f | x) = E_x[-sum_f p(f | x) log p(f | x)] with the Bayes posterior
p(f | x) ∝ p(x | f): a member sits ~Lp m mismatches from its prototype and ~Lp (1 - 1/20)
from the others, each mismatch costing log((1 - m) 19 / m) nats, so the posterior is a
point mass up to e^-100s and H(f | x) is estimated by Monte Carlo (`posterior_entropy`).
The ligand's length (in the representation's tokens) splits H(ligand) = H(L) + H(ligand | L);
with distinct lengths H(L) = log F and H(ligand | L) = 0.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from sedd_jax.data.batching import is_validation

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def mutation_entropy(mutation: float) -> float:
    """H(x_i | f) per position in nats: H_b(m) + m log 19."""
    m = mutation
    binary = -sum(p * math.log(p) for p in (m, 1.0 - m) if p > 0)
    return binary + m * math.log(len(AMINO_ACIDS) - 1)


@dataclasses.dataclass(frozen=True)
class FamilySource:
    """Prototypes [F, Lp] (amino-acid indices), mutation rate m, one drug per family."""

    prototypes: np.ndarray
    mutation: float
    drugs: tuple[str, ...]

    @classmethod
    def create(cls, families: int, length: int, mutation: float, drugs, seed: int = 0):
        if len(drugs) != families:
            raise ValueError(f"{families} families need {families} drugs, got {len(drugs)}")
        rng = np.random.default_rng([seed, 0xFA])
        prototypes = rng.integers(0, len(AMINO_ACIDS), size=(families, length))
        return cls(prototypes, float(mutation), tuple(drugs))

    @property
    def families(self) -> int:
        return len(self.prototypes)

    @property
    def length(self) -> int:
        return self.prototypes.shape[1]

    def members(self, family: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One member per entry of `family` [N]: indices [N, Lp]."""
        x = self.prototypes[family].copy()
        mutate = rng.random(x.shape) < self.mutation
        shift = rng.integers(1, len(AMINO_ACIDS), size=x.shape)  # one of the 19 others
        return np.where(mutate, (x + shift) % len(AMINO_ACIDS), x)

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """log p(x | f) [N, F] of indices x [N, Lp]."""
        m = self.mutation
        matches = (x[:, None, :] == self.prototypes[None]).sum(-1)
        return matches * math.log1p(-m) + (self.length - matches) * math.log(m / 19.0)

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """Bayes p(f | x) [N, F] under uniform families."""
        ll = self.log_likelihoods(x)
        ll = ll - ll.max(axis=1, keepdims=True)
        p = np.exp(ll)
        return p / p.sum(axis=1, keepdims=True)


def posterior_entropy(source: FamilySource, samples: int, seed: int = 0) -> tuple[float, float]:
    """Monte-Carlo H(f | x) in nats, and the largest log posterior mass off the true family
    (log sum_{g != f} p(g | x)) over the draws."""
    rng = np.random.default_rng([seed, 0xB0])
    family = rng.integers(0, source.families, samples)
    x = source.members(family, rng)
    post = source.posterior(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(post > 0, -post * np.log(post), 0.0)
    ll = source.log_likelihoods(x)
    own = ll[np.arange(samples), family]
    ll[np.arange(samples), family] = -np.inf
    log_off = np.logaddexp.reduce(ll, axis=1) - np.logaddexp(own, np.logaddexp.reduce(ll, axis=1))
    return float(terms.sum(axis=1).mean()), float(log_off.max())


def length_entropy(lengths) -> float:
    """H(L) in nats of the drugs' token lengths under uniform families."""
    _, counts = np.unique(np.asarray(lengths), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def exact_entropies(source: FamilySource, lengths, samples: int = 4096) -> dict:
    """The known answers in nats per sequence (`lengths`: the drugs' token lengths)."""
    f = source.families
    h_member = source.length * mutation_entropy(source.mutation)
    h_f_given_x, log_off = posterior_entropy(source, samples)
    h_ligand = math.log(len(set(source.drugs))) if len(set(source.drugs)) == f else math.nan
    h_length = length_entropy(lengths)
    return {
        "protein": math.log(f) + h_member - h_f_given_x,
        "protein_given_ligand": h_member,
        "ligand": h_ligand,
        "ligand_length": h_length,
        "ligand_given_length": h_ligand - h_length,
        "ligand_given_protein": h_f_given_x,
        "information": h_ligand - h_f_given_x,
        "log_posterior_off_family_max": log_off,
    }


def decode(x: np.ndarray) -> list[str]:
    return ["".join(AMINO_ACIDS[i] for i in row) for row in x]


def nearest_family(source: FamilySource, sequences: list[str]) -> np.ndarray:
    """The prototype nearest each sequence by Hamming distance on aligned positions
    (positions past the shorter one count as mismatches) [N]; ties to the lower index."""
    index = {a: i for i, a in enumerate(AMINO_ACIDS)}
    lp = source.length
    out = np.zeros(len(sequences), np.int64)
    for n, s in enumerate(sequences):
        x = np.array([index.get(a, -1) for a in s[:lp]], np.int64)
        mismatches = (x[None] != source.prototypes[:, : len(x)]).sum(-1) + abs(lp - len(s))
        out[n] = int(np.argmin(mismatches))
    return out


def write_pairs(source: FamilySource, out_dir: str, per_family: int, val_fraction: float, seed=0):
    """`pairs.csv` (columns `aa_sequence,smiles`, the pair_table defaults) of the distinct
    sequences among `per_family` members of each family, `held_out.fasta`
    (`>f<family>_<i>`: the members the trainer's split holds out, `batching.is_validation`
    on the protein) and `drugs.smi` (`SMILES f<family>`).
    Returns {"pairs": n, "held_out": n, "paths": {name: path}}."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng([seed, 0x9E])
    family = np.repeat(np.arange(source.families), per_family)
    sequences = decode(source.members(family, rng))
    keep = sorted({s: i for i, s in reversed(list(enumerate(sequences)))}.values())
    sequences, family = [sequences[i] for i in keep], family[keep]  # as the trainer's dedup
    paths = {k: os.path.join(out_dir, k) for k in ("pairs.csv", "held_out.fasta", "drugs.smi")}
    held = 0
    with open(paths["pairs.csv"], "w", newline="") as t, open(paths["held_out.fasta"], "w") as h:
        writer = csv.writer(t)
        writer.writerow(["aa_sequence", "smiles"])
        for i, (seq, f) in enumerate(zip(sequences, family, strict=True)):
            writer.writerow([seq, source.drugs[f]])
            if is_validation(seq, val_fraction):
                h.write(f">f{f}_{i}\n{seq}\n")
                held += 1
    with open(paths["drugs.smi"], "w") as f:
        f.writelines(f"{d} f{k}\n" for k, d in enumerate(source.drugs))
    return {"pairs": len(sequences), "held_out": held, "paths": paths}


def pick_drugs(smiles, families: int, token_length, min_len: int, max_len: int, seed: int = 0):
    """`families` canonical SMILES of distinct token lengths in [min_len, max_len] drawn from
    `smiles` (RDKit canonical forms; `token_length(smiles) -> int` in the representation).
    Returns (drugs, lengths); raises when fewer distinct lengths exist."""
    from sedd_jax.data.smiles import canonicalize

    by_length: dict[int, list[str]] = {}
    for s in sorted(set(smiles)):
        c = canonicalize(s)
        if c is None:
            continue
        try:
            n = token_length(c)
        except ValueError:
            continue
        if min_len <= n <= max_len and c not in by_length.setdefault(n, []):
            by_length[n].append(c)
    lengths = sorted(n for n, group in by_length.items() if group)
    if len(lengths) < families:
        raise ValueError(f"{len(lengths)} distinct lengths in [{min_len}, {max_len}] < {families}")
    rng = np.random.default_rng([seed, 0xD7])
    chosen = sorted(rng.choice(lengths, families, replace=False).tolist())
    drugs = [by_length[n][rng.integers(len(by_length[n]))] for n in chosen]
    order = rng.permutation(families)  # the length does not follow the family index
    return [drugs[i] for i in order], [chosen[i] for i in order]
