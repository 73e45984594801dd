"""The train state and the EMA (twin of sedd_jax/training/state.py).

The EMA is a second copy of the model whose parameters are the shadow parameters, so
evaluation and sampling with EMA weights need no swapping; its `parameters()` are the
reference checkpoint's `ema_state_dict.shadow_params` list.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn


@dataclasses.dataclass
class TrainState:
    """Everything a resumed run needs; the data position and the draws are pure in `step`."""

    step: int  # optimizer steps taken
    model: nn.Module
    ema_model: nn.Module
    optimizer: torch.optim.Optimizer


def create_train_state(model: nn.Module, make_optimizer) -> TrainState:
    ema_model = copy.deepcopy(model).requires_grad_(False)
    return TrainState(0, model, ema_model, make_optimizer(model.named_parameters()))


def ema_decay(decay: float, num_updates: int) -> torch.Tensor:
    """Warm-up of the EMA decay: min(decay, (1 + n) / (10 + n)), n = updates so far (>= 1),
    in float32 as sedd_jax."""
    n = torch.tensor(float(num_updates), dtype=torch.float32)
    return torch.minimum(torch.tensor(decay, dtype=torch.float32), (1.0 + n) / (10.0 + n))


@torch.no_grad()
def update_ema(ema_params, params, decay: torch.Tensor) -> None:
    """In place: ema <- ema - (1 - decay) (ema - params)."""
    one_minus = 1.0 - decay
    for e, p in zip(ema_params, params, strict=True):
        e.sub_(one_minus.to(e.device) * (e - p))
