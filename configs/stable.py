"""The reference's "stable" UniRef50 run, on our fixed code paths.

66,724,096 parameters (d=768, 8 blocks, 12 heads, cond 256, V=37 with vocab_size 36:
the reference `transformer_v100.SEDD`). Optimiser values are those of the reference's
`config_uniref50_stable.yaml`; the schedule is loglinear (the reference's cosine with
sigma_max=0.5 never masks more than 39 % of tokens; defect B2).

Data: UniRef50 prepared into token shards (sequences stored whole, random 512-residue
crops per epoch at load), three commands:
    python -m sedd_jax.data.download uniref50 --out data/uniref50
    python -m sedd_jax.data.prepare --source=data/uniref50/uniref50.fasta.gz \
        --out=data/uniref50/shards --val_fraction=0.01 --min_len=20 --num_shards=256
    python -m sedd_jax.train --config=configs/stable.py
"""

from sedd_jax.defaults import base_config


def get_config():
    c = base_config()
    c.data.source = "shards"
    c.data.path = "data/uniref50/shards"
    c.data.vocab_size = 36
    c.data.max_len = 512
    c.data.min_len = 20
    c.data.val_fraction = 0.01
    c.data.crop = "random"  # a new window of long sequences every epoch
    c.data.num_workers = 4  # grain worker processes
    c.data.prefetch = 8
    c.model.hidden = 768
    c.model.n_blocks = 8
    c.model.n_heads = 12
    c.model.cond_dim = 256
    c.model.dropout = 0.1
    c.model.variant = "protlig"
    c.model.dtype = "bfloat16"
    c.training.batch_size = 128  # reference: 32 x accum 4
    c.training.accum = 4
    c.training.n_steps = 125_000  # reference: 500k micro-batches / accum 4
    c.training.ema = 0.9995
    c.training.log_every = 50
    c.training.eval_every = 1000
    c.training.checkpoint_every = 2000
    c.eval.max_batches = 64  # 2,048 validation sequences held in memory and evaluated
    c.optim.lr = 5e-5
    c.optim.beta2 = 0.999
    c.optim.weight_decay = 0.01
    c.optim.warmup = 10_000
    c.optim.warmup_init_fraction = 0.1
    c.optim.grad_clip = 0.5
    c.sampling.steps = 128
    c.sampling.num_samples = 16
    c.sampling.length = 0
    return c
