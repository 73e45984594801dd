"""DualTrackSEDD at the reference's intended size: d=768, 8 + 8 blocks, 12 heads.

The reference's dual-track model (`transformers_protlig_cross.py`) attended over the batch
axis (defect D1) and never trained; this is the same scale on the fixed architecture.
Data: a pair table (CSV/TSV/parquet with sequence and SMILES columns), e.g. produced from
PLINDER systems by `scripts/ingest_complexes.py`.
"""

from sedd_jax.defaults import dual_base_config


def get_config():
    c = dual_base_config()
    c.data.source = "pair_table"
    c.data.path = "data/pairs/plinder_pairs.csv"
    c.data.vocab_size = 36
    c.data.max_protein_len = 512
    c.data.max_ligand_len = 128
    c.data.canonicalize = True
    c.model.hidden = 768
    c.model.n_blocks_protein = 8
    c.model.n_blocks_ligand = 8
    c.model.n_heads = 12
    c.model.cond_dim = 256
    c.model.dropout = 0.1
    c.model.dtype = "bfloat16"
    c.training.batch_size = 64
    c.training.n_steps = 200_000
    c.training.ema = 0.9995
    c.training.eval_every = 2000
    c.training.checkpoint_every = 2000
    c.optim.lr = 1e-4
    c.optim.weight_decay = 0.01
    c.optim.warmup = 5000
    c.optim.grad_clip = 1.0
    c.sampling.num_samples = 16
    return c
