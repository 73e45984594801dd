"""What both backends share, in plain Python and numpy (no jax, flax, optax, orbax, torch).

`sedd_jax` modules import these names and keep them under their old names; the torch
twin (`sedd_torch`) imports them from here, so it needs only numpy, torch and the data
layer (tested by `tests/test_twin_standalone.py`).
"""
