"""Joint protein–ligand demo: DualTrackSEDD on the 1,457 binding pairs of pydebiaseddta +
pydta (`data.binders = "authors"`: KIBA score >= 12.1, pKd >= 7; 1,324 training and 133
validation pairs, 297 proteins, 482 ligands; `data.binders=all` trains on all 9,998
pairs, binders and non-binders alike, as before).

One model learns joint generation, both conditional directions and both tracks alone
(task mixture 0.4 / 0.2 / 0.2 / 0.1 / 0.1): the unconditional modes give guidance its
reference and let `python -m sedd_jax.evaluate` report what the protein tells about its
ligand (bound(ligand alone) - bound(ligand | protein), with its standard error).
Demo-sized: trains on 2 CPU cores in minutes.
    pip install --no-deps pydebiaseddta==0.1.0 pydta==0.0.3
    python -m sedd_jax.train --config=configs/joint.py --workdir=runs/joint
"""

from sedd_jax.defaults import dual_base_config


def get_config():
    c = dual_base_config()
    c.data.max_protein_len = 64
    c.data.max_ligand_len = 96
    c.data.binders = "authors"
    c.model.hidden = 128
    c.model.n_blocks_protein = 3
    c.model.n_blocks_ligand = 3
    c.model.n_heads = 4
    c.model.cond_dim = 64
    c.model.dropout = 0.0
    c.task.joint = 0.4
    c.task.ligand_given_protein = 0.2
    c.task.protein_given_ligand = 0.2
    c.task.ligand_only = 0.1
    c.task.protein_only = 0.1
    c.training.batch_size = 32
    c.training.n_steps = 600
    c.training.ema = 0.999
    c.training.log_every = 50
    c.training.eval_every = 300
    c.training.checkpoint_every = 300
    c.optim.lr = 1e-3
    c.optim.warmup = 100
    c.eval.batch_size = 64
    c.eval.time_samples = 1
    c.eval.max_batches = 4
    c.sampling.steps = 64
    c.sampling.num_samples = 8
    return c
