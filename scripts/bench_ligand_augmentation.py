"""How well a ligand vocabulary covers randomised SMILES (`data.randomize_smiles`).

For the training ligands of the demo pairs (or any pair data config), per representation
(SMILES tokens, SELFIES symbols) and per vocabulary (built over the canonical SMILES only,
or also over `shard_cache.VOCAB_RANDOM_FORMS` random forms per molecule, as prepared when
augmentation is on), draw `--forms` fresh random SMILES of every molecule (another seed
than the vocabulary's) and count the forms the loader cannot use, which then keep the
stored ids: a token outside the vocabulary (it would be `<unk>`), or longer than
`data.max_ligand_len`. Prints a table and writes JSON.

    python scripts/bench_ligand_augmentation.py --out=bench_ligand_augmentation.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sedd_jax.data.selfies import ligand_tokenizer_class
from sedd_jax.data.shard_cache import VOCAB_RANDOM_FORMS
from sedd_jax.data.smiles import randomize
from sedd_jax.data.track_data import load_pair_track
from sedd_jax.defaults import dual_base_config


def coverage(smiles: list[str], representation: str, vocab_forms: int, forms: int, max_len: int):
    cls = ligand_tokenizer_class(representation)
    vocab_rng = np.random.default_rng(1)
    corpus = list(smiles)
    for s in smiles:
        corpus += [randomize(s, vocab_rng) for _ in range(vocab_forms)]
    tok = cls.build(corpus)
    rng = np.random.default_rng(2)
    n = unk_forms = long_forms = unk_tokens = tokens = 0
    for s in smiles:
        for _ in range(forms):
            ids = tok.encode(randomize(s, rng))
            n += 1
            unk = int((ids == tok.unk_id).sum())
            unk_forms += unk > 0
            unk_tokens += unk
            tokens += len(ids)
            long_forms += len(ids) > max_len
    canonical_len = float(np.mean([len(tok.encode(s)) for s in smiles]))
    return {
        "representation": representation,
        "vocab_random_forms": vocab_forms,
        "vocab_size": tok.vocab_size,
        "forms": n,
        "forms_with_unk": unk_forms / n,
        "unk_token_fraction": unk_tokens / tokens,
        "forms_over_max_len": long_forms / n,
        "tokens_per_molecule_canonical": canonical_len,
        "tokens_per_molecule_random": tokens / n,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", type=int, default=3)
    parser.add_argument("--max_molecules", type=int, default=3000)
    parser.add_argument("--out", default="bench_ligand_augmentation.json")
    args = parser.parse_args()
    c = dual_base_config()
    c.data.max_protein_len, c.data.max_ligand_len = 64, 96  # configs/joint.py
    data = load_pair_track(c.data)
    smiles = sorted(set(data.train_smiles))[: args.max_molecules]
    rows = [
        coverage(smiles, rep, vf, args.forms, c.data.max_ligand_len)
        for rep in ("smiles", "selfies")
        for vf in (0, VOCAB_RANDOM_FORMS)
    ]
    print(f"{len(smiles)} demo training molecules, {args.forms} random forms each")
    print(
        "| representation | vocabulary over | vocab | forms with <unk> | <unk> tokens | "
        "forms > max_ligand_len | tokens/molecule canonical | random |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        over = "canonical" + (
            f" + {r['vocab_random_forms']} random" if r["vocab_random_forms"] else ""
        )
        print(
            f"| {r['representation']} | {over} | {r['vocab_size']} | {r['forms_with_unk']:.4f} | "
            f"{r['unk_token_fraction']:.5f} | {r['forms_over_max_len']:.4f} | "
            f"{r['tokens_per_molecule_canonical']:.1f} | {r['tokens_per_molecule_random']:.1f} |"
        )
    with open(args.out, "w") as f:
        json.dump({"molecules": len(smiles), "forms": args.forms, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
