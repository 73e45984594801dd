"""Single-track SEDD, the PyTorch twin of sedd_jax/models/sedd.py.

(x_t [B, L], sigma_bar [B]) -> log-scores [B, L, V]. Variants as in sedd_jax:
  * `protlig`: the reference `transformer_v100.SEDD`; its state_dict names and shapes
    exactly (`vocab_embed.weight`, `sigma_map.mlp.0.weight`, `blocks.i.mlp.fc1.weight`,
    `output_layer.norm.weight`, `output_layer.linear.weight`, buffer
    `rotary_emb.inv_freq`, ...), so `load_state_dict` takes its checkpoints as they are;
  * `sedd`: upstream louaaron SEDD, with its names (`vocab_embed.embedding`,
    `blocks.i.mlp.0/2`, `output_layer.norm_final`, `output_layer.linear.bias`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from sedd_jax.common.model_options import shared_fields
from sedd_torch.device import autocast_dtype
from sedd_torch.diffusion.graphs import esigm1
from sedd_torch.models.layers import (
    DDiTBlock,
    EmbeddingLayer,
    OutputLayer,
    Rotary,
    TimestepEmbedder,
)


@dataclasses.dataclass(frozen=True)
class Variant:
    silu_condition: bool
    approximate_gelu: bool
    output_bias: bool
    output_zero_init: bool
    upstream_names: bool  # torch only: the state_dict naming of the source model


VARIANTS = {
    "protlig": Variant(False, False, False, False, False),
    "sedd": Variant(True, True, True, True, True),
}


def make_embedding(variant: Variant, vocab_size: int, hidden: int) -> nn.Module:
    """nn.Embedding (`weight`, N(0, 1)) or upstream's EmbeddingLayer (`embedding`)."""
    if variant.upstream_names:
        return EmbeddingLayer(vocab_size, hidden)
    return nn.Embedding(vocab_size, hidden)


def compute_context(device_type: str, dtype: str):
    """bfloat16 autocast where `autocast_dtype` allows it, else plain float32."""
    amp = autocast_dtype(device_type, dtype)
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=amp)


def finish_log_score(logits, x, sigma, vocab_size: int, scale_by_sigma: bool):
    """scale_by_sigma shift -log(e^sigma - 1) - log(V - 1), then 0 at the current token."""
    if scale_by_sigma:
        floor = torch.finfo(torch.float32).tiny
        shift = torch.log(torch.clamp_min(esigm1(sigma), floor)) + math.log(vocab_size - 1)
        logits = logits - shift[:, None, None]
    return logits.scatter(-1, x[..., None], 0.0)


def condition(model: nn.Module, sigma):
    """The condition c [B, cond_dim] of a SEDD-family `model`: its `sigma_map` of sigma
    (of 0 for a sigma-free network), through SiLU in the `sedd` variant."""
    c = model.sigma_map(sigma if model.time_conditioning else torch.zeros_like(sigma))
    return F.silu(c) if model.variant.silu_condition else c


def make_blocks(count, hidden, n_heads, cond_dim, mlp_ratio, dropout, variant: Variant):
    """One stack of `count` DDiT blocks (the variant's GELU and state_dict names)."""
    return nn.ModuleList(
        DDiTBlock(
            hidden,
            n_heads,
            cond_dim,
            mlp_ratio,
            dropout,
            variant.approximate_gelu,
            variant.upstream_names,
        )
        for _ in range(count)
    )


def make_output_layer(hidden, vocab_size, cond_dim, variant: Variant) -> OutputLayer:
    """The output layer to a vocabulary of `vocab_size` (the variant's bias, init, names)."""
    return OutputLayer(
        hidden,
        vocab_size,
        cond_dim,
        variant.output_bias,
        variant.output_zero_init,
        variant.upstream_names,
    )


class SEDD(nn.Module):
    """The DDiT score network. Arguments mirror `config.model`."""

    def __init__(
        self,
        vocab_size: int,
        hidden: int = 768,
        n_blocks: int = 8,
        n_heads: int = 12,
        cond_dim: int = 256,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        variant: str = "protlig",
        scale_by_sigma: bool = True,
        absorb: bool = True,
        dtype: str = "float32",
        time_conditioning: bool = True,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"model.variant={variant!r}; choose one of {sorted(VARIANTS)}")
        self.variant = VARIANTS[variant]
        self.vocab_size = vocab_size
        self.time_conditioning = time_conditioning
        self.scale_by_sigma = scale_by_sigma and absorb
        self.dtype = dtype
        self.vocab_embed = make_embedding(self.variant, vocab_size, hidden)
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.rotary_emb = Rotary(hidden // n_heads)
        self.blocks = make_blocks(
            n_blocks, hidden, n_heads, cond_dim, mlp_ratio, dropout, self.variant
        )
        self.output_layer = make_output_layer(hidden, vocab_size, cond_dim, self.variant)

    def forward(self, x, sigma, valid=None):
        """x [B, L] long, sigma [B] float, valid [B, L] bool or None -> log-scores [B, L, V]."""
        h = self.vocab_embed(x)
        c = condition(self, sigma)
        rotary = self.rotary_emb(x.shape[1])
        with compute_context(x.device.type, self.dtype):
            for block in self.blocks:
                h = block(h, c, rotary, valid)
            logits = self.output_layer(h, c)
        return finish_log_score(logits, x, sigma, self.vocab_size, self.scale_by_sigma)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(model_config, vocab_size: int, absorb: bool) -> SEDD:
    """SEDD from `config.model` (every field consumed) and the graph's V."""
    fields = shared_fields(model_config, absorb)
    return SEDD(vocab_size=vocab_size, n_blocks=model_config.n_blocks, **fields)
