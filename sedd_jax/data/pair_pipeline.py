"""Moved: `encode_pairs` lives in `sedd_jax.data.pairs`; the split is the trainer's shards
(`track_data.run_data`). This name stays only until `training/tasks` imports from `pairs`."""

from sedd_jax.data.pairs import encode_pairs  # noqa: F401
