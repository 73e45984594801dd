"""The joint protein–ligand demo with SELFIES ligands: `configs/joint.py`, ligand track as
SELFIES symbols (`data.ligand_representation = "selfies"`), so every sampled ligand is a
molecule (measured: docs/ligands.md).
    pip install --no-deps pydebiaseddta==0.1.0 pydta==0.0.3 && pip install selfies==2.2.0
    python -m sedd_jax.train --config=configs/joint_selfies.py --workdir=runs/joint_selfies
"""

import importlib.util
import os


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "joint.py")
    spec = importlib.util.spec_from_file_location("configs_joint", path)
    joint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(joint)
    c = joint.get_config()
    c.data.ligand_representation = "selfies"
    return c
