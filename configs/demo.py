"""Demo: a 0.9M-parameter protein SEDD on 2,100 real bacterial proteins (pyhmmer wheel).

Learns visibly in about five minutes on two CPU cores:
    python -m sedd_jax.train --config=configs/demo.py --workdir=runs/demo
"""

from sedd_jax.defaults import base_config


def get_config():
    c = base_config()
    c.data.max_len = 64
    c.model.hidden = 128
    c.model.n_blocks = 4
    c.model.n_heads = 4
    c.model.cond_dim = 64
    c.model.dropout = 0.0
    c.training.batch_size = 32
    c.training.n_steps = 800
    c.training.ema = 0.999
    c.training.log_every = 50
    c.training.eval_every = 200
    c.training.checkpoint_every = 200
    c.optim.lr = 1e-3
    c.optim.warmup = 100
    c.sampling.steps = 128
    c.sampling.num_samples = 8
    return c
