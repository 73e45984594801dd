"""The PyTorch twin of sedd_jax: the same model, diffusion and a minimal trainer.

It mirrors sedd_jax module for module, so a diff between the two reads as a
translation. It exists to prove numerical parity (parity_tests/), to load and export
PyTorch checkpoints, and to give CUDA/MPS users a path; sedd_jax remains the product.
It needs numpy and torch, not jax, flax, optax or orbax: what it shares with sedd_jax
comes from the numpy-only `sedd_jax.common` and the data layer.
"""
