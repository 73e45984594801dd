"""Length head (twin of `sedd_jax/models/length.py`): p(L_generated | clean context track).

(context tokens [B, Lc], context valid [B, Lc]) -> logits [B, max_len + 1]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sedd_torch.models.layers import sinusoidal_positions

HEAD_NAMES = {"ligand_given_protein": "length_ligand", "protein_given_ligand": "length_protein"}


class LengthHead(nn.Module):
    """Masked mean-pooled embedding -> MLP -> logits over generated lengths 0..max_len."""

    def __init__(self, vocab_size: int, max_len: int, hidden: int = 64, positions: int = 0):
        super().__init__()
        if positions % 2:
            raise ValueError(f"model.length_positions={positions}: expected an even number")
        self.positions = positions
        self.embed = nn.Embedding(vocab_size, hidden)
        self.mlp_in = nn.Linear(hidden * (positions + 1), hidden)
        self.mlp_out = nn.Linear(hidden, max_len + 1)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        emb = self.embed(tokens)
        if self.positions:
            length, p = tokens.shape[1], self.positions
            code = sinusoidal_positions(length, p, emb.device) * math.sqrt(p)
            code = torch.cat([torch.ones(length, 1, device=emb.device), code], dim=-1)
            emb = (emb[..., None] * code[:, None]).reshape(*tokens.shape, -1)
        weight = valid[..., None].float()
        pooled = (emb * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        return self.mlp_out(F.gelu(self.mlp_in(pooled))).float()


def length_nll(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """-log p(L | context) in nats per sequence, [B]."""
    return F.cross_entropy(logits, lengths.long(), reduction="none")


def sample_lengths(generator: torch.Generator | None, logits: torch.Tensor, min_len: int = 1):
    """Draw L ~ p(L | context) restricted to L >= min_len, [B] int64."""
    allowed = torch.arange(logits.shape[-1], device=logits.device) >= min_len
    probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
