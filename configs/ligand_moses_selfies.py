"""Ligand-only SEDD on MOSES with SELFIES symbols: `configs/ligand_moses.py` with
`data.ligand_representation = "selfies"` (every sampled symbol string is a molecule).
    pip install --no-deps molsets==0.3.1 && pip install selfies==2.2.0
    python -m sedd_jax.data.prepare --source=moses --out=data/moses/shards_selfies \
        --val_fraction=0.01 --ligand_representation=selfies
    python -m sedd_jax.train --config=configs/ligand_moses_selfies.py
"""

import importlib.util
import os


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ligand_moses.py")
    spec = importlib.util.spec_from_file_location("configs_ligand_moses", path)
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    c = base.get_config()
    c.data.ligand_representation = "selfies"
    c.data.path = "data/moses/shards_selfies"
    return c
