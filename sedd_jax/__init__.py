"""Score Entropy Discrete Diffusion for proteins and protein-ligand pairs (JAX/Flax)."""
