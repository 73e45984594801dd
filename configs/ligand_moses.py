"""Ligand-only SEDD on MOSES: 1,584,663 drug-like SMILES (ZINC Clean Leads) of the molsets wheel.

A single-track SEDD over SMILES tokens (the same `SingleTrack` adapter and loop as for
proteins; the tokenizer, here atom-level SMILES with a vocabulary built from the training
SMILES, comes from the prepared manifest). SMILES longer than `data.max_len` tokens are not
used (a cut SMILES is no molecule); nothing is cropped.
    pip install --no-deps molsets==0.3.1
    python -m sedd_jax.data.prepare --source=moses --out=data/moses/shards --val_fraction=0.01
    python -m sedd_jax.train --config=configs/ligand_moses.py
(`--config.data.source=moses` prepares on the fly into the cache instead.)
SELFIES twin: `configs/ligand_moses_selfies.py`; randomised SMILES:
`--config.data.randomize_smiles=True` (prepare with `--vocab_random_forms=2`).
"""

from sedd_jax.defaults import base_config


def get_config():
    c = base_config()
    c.data.source = "shards"
    c.data.path = "data/moses/shards"
    c.data.max_len = 64  # MOSES SMILES are at most 54 tokens (measured on the prepared set)
    c.data.min_len = 1
    c.data.val_fraction = 0.01
    c.data.num_workers = 2
    c.model.hidden = 384
    c.model.n_blocks = 6
    c.model.n_heads = 6
    c.model.cond_dim = 128
    c.model.dropout = 0.1
    c.model.variant = "sedd"
    c.training.batch_size = 256
    c.training.n_steps = 50_000
    c.training.ema = 0.9995
    c.training.log_every = 100
    c.training.eval_every = 2000
    c.training.checkpoint_every = 2000
    c.optim.lr = 3e-4
    c.optim.weight_decay = 0.01
    c.optim.warmup = 2000
    c.eval.batch_size = 256
    c.eval.max_batches = 16
    c.eval.sample_metrics_num = 64  # val/ligand_validity etc. at every evaluation
    c.sampling.steps = 128
    c.sampling.num_samples = 64
    return c
