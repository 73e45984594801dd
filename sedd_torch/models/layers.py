"""Building blocks of the DDiT, the PyTorch twin of sedd_jax/models/layers.py.

Attribute names are the state_dict names of the PyTorch models the checkpoints come from:
`reference` naming (`transformer_v100.SEDD`: `mlp.fc1/fc2`, `output_layer.norm`) or
`upstream` naming (louaaron SEDD: `mlp.0/2`, `output_layer.norm_final`). Modules are
registered in those models' order, so `model.parameters()` (and an EMA's
`shadow_params` list) follow theirs. Torch `nn.Linear.weight` is the transposed flax
kernel.

Dense layers act on flattened tokens [N, d] (N = B * L), as in sedd_jax. The adaLN
modulations and the time embedding always run in float32 (the JAX Dense default), also
under a bfloat16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FREQUENCY_DIM = 256
NEG_INF = -1e30


def zero_init_(linear: nn.Linear) -> nn.Linear:
    nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class Float32Linear(nn.Linear):
    """nn.Linear computed in float32 even under autocast (adaLN, time embedding)."""

    def forward(self, x):
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class LayerNorm(nn.Module):
    """Weight-only LayerNorm (no bias), eps 1e-5, always computed in float32."""

    def __init__(self, dim: int, epsilon: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.epsilon = epsilon

    def forward(self, x):
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).square().mean(-1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.epsilon) * self.weight


class TimestepEmbedder(nn.Module):
    """sigma [B] -> [B, cond]: cos-first sinusoids (256 features) then Linear-SiLU-Linear."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(
            Float32Linear(FREQUENCY_DIM, hidden), nn.SiLU(), Float32Linear(hidden, hidden)
        )

    def forward(self, sigma):
        half = FREQUENCY_DIM // 2
        steps = torch.arange(half, dtype=torch.float32, device=sigma.device)
        freqs = torch.exp(-math.log(10000.0) * steps / half)
        args = sigma.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Rotary(nn.Module):
    """NeoX rotary tables [L, Dh]: inv_freq_k = 10000^(-2k/Dh), angles repeated twice.

    `inv_freq` [Dh / 2] is a buffer, as in both PyTorch models (it is in their state_dicts).
    """

    def __init__(self, head_dim: int):
        super().__init__()
        exponent = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
        self.register_buffer("inv_freq", 1.0 / (10000.0**exponent))

    def forward(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = positions[:, None] * self.inv_freq[None]
        angles = torch.cat([angles, angles], dim=-1)
        return torch.cos(angles), torch.sin(angles)


def sinusoidal_positions(length: int, hidden: int, device=None) -> torch.Tensor:
    """Absolute positions [L, d] / sqrt(d): sin and cos of position * 10000^(-2k/d), as
    `sedd_jax.models.layers.sinusoidal_positions`."""
    exponent = torch.arange(0, hidden, 2, dtype=torch.float32, device=device) / hidden
    positions = torch.arange(length, dtype=torch.float32, device=device)
    angles = positions[:, None] * (1.0 / (10000.0**exponent))[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1) / math.sqrt(hidden)


def apply_rotary(x, cos, sin):
    """x [B, L, H, Dh] -> x cos + rotate_half(x) sin, rotate_half([a, b]) = [-b, a]."""
    a, b = x.chunk(2, dim=-1)
    rotated = torch.cat([-b, a], dim=-1)
    return x * cos[None, :, None, :].to(x.dtype) + rotated * sin[None, :, None, :].to(x.dtype)


def attention(q, k, v, key_valid):
    """Bidirectional softmax(q k^T / sqrt(Dh)) v per sequence, pad keys excluded.

    q, k, v [B, L, H, Dh]; key_valid [B, L] bool or None -> [B, L, H, Dh].
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k).float() * scale
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], NEG_INF)
    weights = torch.softmax(logits, dim=-1).to(v.dtype)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v)


def modulate(x, shift, scale):
    """adaLN: x (1 + scale) + shift."""
    return x * (1.0 + scale) + shift


class MLP(nn.Module):
    """fc1 (d -> ratio d) -> GELU -> fc2, both with bias (reference names fc1/fc2)."""

    def __init__(self, hidden: int, ratio: int = 4, approximate_gelu: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(hidden, ratio * hidden)
        self.fc2 = nn.Linear(ratio * hidden, hidden)
        self.approximate = "tanh" if approximate_gelu else "none"

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


def sequential_mlp(hidden: int, ratio: int = 4, approximate_gelu: bool = True) -> nn.Sequential:
    """The same MLP with upstream SEDD's names: mlp.0 (fc1), mlp.2 (fc2)."""
    return nn.Sequential(
        nn.Linear(hidden, ratio * hidden),
        nn.GELU(approximate="tanh" if approximate_gelu else "none"),
        nn.Linear(ratio * hidden, hidden),
    )


class DDiTBlock(nn.Module):
    """adaLN-zero pre-LN transformer block with rotary self-attention.

    x [B, L, d], c [B, cond] -> [B, L, d]; adaLN_modulation gives (shift, scale, gate) for
    attention and for the MLP, zero-initialised, so a new block is the identity.
    """

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        cond_dim: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        approximate_gelu: bool = False,
        upstream_names: bool = False,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(hidden)
        self.attn_qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.attn_out = nn.Linear(hidden, hidden, bias=False)
        self.norm2 = LayerNorm(hidden)
        make_mlp = sequential_mlp if upstream_names else MLP
        self.mlp = make_mlp(hidden, mlp_ratio, approximate_gelu)
        self.adaLN_modulation = zero_init_(Float32Linear(cond_dim, 6 * hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, c, rotary, valid):
        batch, length, d = x.shape
        heads = self.n_heads
        mod = self.adaLN_modulation(c)[:, None, :]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)

        h = modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.attn_qkv(h.reshape(batch * length, d))
        qkv = qkv.reshape(batch, length, 3, heads, d // heads)
        q = apply_rotary(qkv[:, :, 0], *rotary)
        k = apply_rotary(qkv[:, :, 1], *rotary)
        out = attention(q, k, qkv[:, :, 2], valid).reshape(batch * length, d)
        out = self.attn_out(out)
        x = x + gate_msa * self.dropout(out.reshape(batch, length, d).float())

        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        out = self.mlp(h.reshape(batch * length, d))
        return x + gate_mlp * self.dropout(out.reshape(batch, length, d).float())


class OutputLayer(nn.Module):
    """Final adaLN (shift, scale) + LayerNorm + linear to the vocabulary: [B, L, d] -> [B, L, V].

    The LayerNorm is `norm` (reference) or `norm_final` (upstream names).
    """

    def __init__(
        self,
        hidden: int,
        vocab_size: int,
        cond_dim: int,
        use_bias: bool = False,
        zero_init: bool = False,
        upstream_names: bool = False,
    ):
        super().__init__()
        self.norm_name = "norm_final" if upstream_names else "norm"
        self.add_module(self.norm_name, LayerNorm(hidden))
        self.linear = nn.Linear(hidden, vocab_size, bias=use_bias)
        if zero_init:
            zero_init_(self.linear)
        self.adaLN_modulation = zero_init_(Float32Linear(cond_dim, 2 * hidden))

    def forward(self, x, c):
        batch, length, d = x.shape
        shift, scale = self.adaLN_modulation(c)[:, None, :].chunk(2, dim=-1)
        norm = getattr(self, self.norm_name)
        h = modulate(norm(x), shift, scale).reshape(batch * length, d)
        return self.linear(h).reshape(batch, length, -1).float()


class EmbeddingLayer(nn.Module):
    """Upstream SEDD's table `embedding` [V, d], kaiming-uniform (a = sqrt 5): U(+-1/sqrt d)."""

    def __init__(self, vocab_size: int, hidden: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, hidden))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, x):
        return self.embedding[x]
