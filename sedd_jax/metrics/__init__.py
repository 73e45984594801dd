"""Sample-quality metrics for proteins, ligands and pairs (numpy, RDKit, parasail, pyhmmer, fcd).

No jax here: the metrics run wherever the samples are. Definitions: docs/metrics.md.
RDKit-, parasail- and fcd-based modules import those packages (`pip install 'sedd[metrics]'`).
"""

from sedd_jax.metrics.headline import HeadlineReference, headline_metrics, prepare_reference

__all__ = ["HeadlineReference", "headline_metrics", "prepare_reference"]
