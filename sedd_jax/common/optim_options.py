"""Optimizer options both backends read alike from `config.optim` (numpy-free)."""

from __future__ import annotations

OPTIMIZERS = ("adamw", "muon")  # optim.optimizer
# `muon`: the top-level modules whose 2-D kernels (flax) / weights (torch) Muon updates
MUON_MODULES = ("blocks", "cross")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"config.optim.optimizer={name!r}; choose one of {OPTIMIZERS}")


def is_muon_module(top: str) -> bool:
    """Whether a matrix under top-level module `top` (`blocks_0`, `cross_protein_1`;
    torch `blocks`, `cross_protein`) is Muon's."""
    return top.startswith(MUON_MODULES)
