"""Dual-track SEDD, the PyTorch twin of sedd_jax/models/dual.py.

    (protein x_t [B, Lp], ligand x_t [B, Ll], sigma_bar [B])
        -> (protein log-scores [B, Lp, Vp] | None, ligand log-scores [B, Ll, Vl] | None)

One DDiT stack per modality, aligned at the top; in each of the last min(n_p, n_l)
layers both tracks first read each other's previous hidden state through adaLN-gated
cross-attention (synchronous update), then run their own block. Modes as sedd_jax
(`MODES` is sedd_jax's table). State_dict names follow the conversion rule:
`protein_embed.weight`, `blocks_protein.i.*`, `cross_protein.k.{norm_q, norm_kv, attn_q,
attn_kv, attn_out, adaLN_modulation}`, `protein_output.*`, and likewise for the ligand;
with `length_head` the length heads `length_ligand.*`, `length_protein.*` (each `embed`,
`mlp_in`, `mlp_out`), registered last, read by `length_logits`.
"""

from __future__ import annotations

import torch
from torch import nn

from sedd_jax.common.tasks import MODES
from sedd_torch.models.layers import (
    Float32Linear,
    LayerNorm,
    Rotary,
    TimestepEmbedder,
    attention,
    modulate,
    sinusoidal_positions,
    zero_init_,
)
from sedd_torch.models.length import HEAD_NAMES, LengthHead
from sedd_torch.models.sedd import (
    VARIANTS,
    compute_context,
    condition,
    finish_log_score,
    make_blocks,
    make_embedding,
    make_output_layer,
    shared_fields,
)


class CrossAttention(nn.Module):
    """adaLN-gated cross-attention: x [B, Lq, d] reads context [B, Lk, d] -> [B, Lq, d].

    x + gate * W_o attn(W_q modulate(LN_q(x)), W_kv LN_kv(context)); no rotary; rows with
    no valid context key get exactly x back.
    """

    def __init__(self, hidden: int, n_heads: int, cond_dim: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.norm_q = LayerNorm(hidden)
        self.norm_kv = LayerNorm(hidden)
        self.attn_q = nn.Linear(hidden, hidden, bias=False)
        self.attn_kv = nn.Linear(hidden, 2 * hidden, bias=False)
        self.attn_out = nn.Linear(hidden, hidden, bias=False)
        self.adaLN_modulation = zero_init_(Float32Linear(cond_dim, 3 * hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, context, c, context_valid):
        batch, q_len, d = x.shape
        k_len = context.shape[1]
        heads, head_dim = self.n_heads, d // self.n_heads
        shift, scale, gate = self.adaLN_modulation(c)[:, None, :].chunk(3, dim=-1)

        h = modulate(self.norm_q(x), shift, scale).reshape(batch * q_len, d)
        ctx = self.norm_kv(context).reshape(batch * k_len, d)
        q = self.attn_q(h).reshape(batch, q_len, heads, head_dim)
        kv = self.attn_kv(ctx).reshape(batch, k_len, 2, heads, head_dim)
        out = attention(q, kv[:, :, 0], kv[:, :, 1], context_valid).reshape(batch * q_len, d)
        out = self.attn_out(out).reshape(batch, q_len, d).float()
        if context_valid is not None:
            out = torch.where(context_valid.any(dim=-1)[:, None, None], out, 0.0)
        return x + gate * self.dropout(out)


class DualTrackSEDD(nn.Module):
    """The protein–ligand score network. Arguments mirror `config.model`."""

    def __init__(
        self,
        protein_vocab: int,
        ligand_vocab: int,
        hidden: int = 768,
        n_blocks_protein: int = 8,
        n_blocks_ligand: int = 8,
        n_heads: int = 12,
        cond_dim: int = 256,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        variant: str = "protlig",
        scale_by_sigma: bool = True,
        absorb: bool = True,
        dtype: str = "float32",
        cross_attention: bool = True,
        length_head: bool = False,
        length_hidden: int = 64,
        length_positions: int = 0,
        absolute_positions: bool = False,
        time_conditioning: bool = True,
        max_protein_len: int = 0,
        max_ligand_len: int = 0,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"model.variant={variant!r}; choose one of {sorted(VARIANTS)}")
        self.variant = v = VARIANTS[variant]
        self.vocab = {"protein": protein_vocab, "ligand": ligand_vocab}
        self.n_blocks = {"protein": n_blocks_protein, "ligand": n_blocks_ligand}
        self.scale_by_sigma = scale_by_sigma and absorb
        self.cross_attention = cross_attention
        self.absolute_positions = absolute_positions
        self.time_conditioning = time_conditioning
        self.hidden = hidden
        self.dtype = dtype
        paired = min(n_blocks_protein, n_blocks_ligand) if cross_attention else 0

        def crosses():
            return nn.ModuleList(
                CrossAttention(hidden, n_heads, cond_dim, dropout) for _ in range(paired)
            )

        self.protein_embed = make_embedding(v, protein_vocab, hidden)
        self.ligand_embed = make_embedding(v, ligand_vocab, hidden)
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.rotary_emb = Rotary(hidden // n_heads)
        block_args = (hidden, n_heads, cond_dim, mlp_ratio, dropout, v)
        self.blocks_protein = make_blocks(n_blocks_protein, *block_args)
        self.blocks_ligand = make_blocks(n_blocks_ligand, *block_args)
        self.cross_protein = crosses()
        self.cross_ligand = crosses()
        self.protein_output = make_output_layer(hidden, protein_vocab, cond_dim, v)
        self.ligand_output = make_output_layer(hidden, ligand_vocab, cond_dim, v)
        self.length_head = length_head
        if length_head:
            if min(max_protein_len, max_ligand_len) < 1:
                raise ValueError("model.length_head needs the tracks' max lengths (data.max_*_len)")
            heads = {"hidden": length_hidden, "positions": length_positions}
            self.length_ligand = LengthHead(protein_vocab, max_ligand_len, **heads)
            self.length_protein = LengthHead(ligand_vocab, max_protein_len, **heads)

    def length_logits(self, context, context_valid, task: str):
        """Logits [B, max_len + 1] of p(L_generated | clean context) of a conditional task."""
        if task not in HEAD_NAMES:
            raise ValueError(f"length_logits: task={task!r}; choose one of {sorted(HEAD_NAMES)}")
        return getattr(self, HEAD_NAMES[task])(context, context_valid)

    def _embed(self, table, x):
        h = table(x)
        if self.absolute_positions:
            h = h + sinusoidal_positions(x.shape[1], self.hidden, h.device)[None].to(h.dtype)
        return h

    def _head(self, track, h, c, x, sigma):
        logits = getattr(self, f"{track}_output")(h, c)
        return finish_log_score(logits, x, sigma, self.vocab[track], self.scale_by_sigma)

    def forward(
        self, protein, ligand, sigma, protein_valid=None, ligand_valid=None, mode: str = "joint"
    ):
        """protein [B, Lp] long, ligand [B, Ll] long, sigma [B], *_valid [B, L] bool or None.

        Returns (protein log-scores or None, ligand log-scores or None), per `mode`.
        """
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose one of {sorted(MODES)}")
        protein_head, ligand_head, coupled = MODES[mode]
        cross = self.cross_attention and coupled
        run_p, run_l = protein_head or cross, ligand_head or cross

        c = condition(self, sigma)
        h_p = h_l = rot_p = rot_l = None
        if run_p:
            h_p, rot_p = self._embed(self.protein_embed, protein), self.rotary_emb(protein.shape[1])
        if run_l:
            h_l, rot_l = self._embed(self.ligand_embed, ligand), self.rotary_emb(ligand.shape[1])

        n_p, n_l = self.n_blocks["protein"], self.n_blocks["ligand"]
        depth, paired = max(n_p, n_l), min(n_p, n_l)
        device = (protein if run_p else ligand).device
        with compute_context(device.type, self.dtype):
            for step in range(depth):
                i_p, i_l, k = step - (depth - n_p), step - (depth - n_l), step - (depth - paired)
                last = step == depth - 1
                # A context track's last block feeds only its (absent) head: skip it.
                act_p = run_p and i_p >= 0 and (protein_head or not last)
                act_l = run_l and i_l >= 0 and (ligand_head or not last)
                if cross and k >= 0:
                    new_p, new_l = h_p, h_l
                    if act_p:
                        new_p = self.cross_protein[k](h_p, h_l, c, ligand_valid)
                    if act_l:
                        new_l = self.cross_ligand[k](h_l, h_p, c, protein_valid)
                    h_p, h_l = new_p, new_l
                if act_p:
                    h_p = self.blocks_protein[i_p](h_p, c, rot_p, protein_valid)
                if act_l:
                    h_l = self.blocks_ligand[i_l](h_l, c, rot_l, ligand_valid)

            protein_scores = ligand_scores = None
            if protein_head:
                protein_scores = self._head("protein", h_p, c, protein, sigma)
            if ligand_head:
                ligand_scores = self._head("ligand", h_l, c, ligand, sigma)
        return protein_scores, ligand_scores


def build_dual_model(
    model_config,
    protein_vocab: int,
    ligand_vocab: int,
    absorb: bool,
    max_lens: tuple[int, int] = (0, 0),
):
    """DualTrackSEDD from `config.model` (every field consumed), the two graphs' V and
    max_lens = (data.max_protein_len, data.max_ligand_len), the length heads' ranges."""
    fields = shared_fields(model_config, absorb)
    return DualTrackSEDD(
        protein_vocab=protein_vocab,
        ligand_vocab=ligand_vocab,
        n_blocks_protein=model_config.n_blocks_protein,
        n_blocks_ligand=model_config.n_blocks_ligand,
        cross_attention=model_config.cross_attention,
        length_head=model_config.get("length_head", False),
        length_hidden=model_config.get("length_hidden", 64),
        length_positions=model_config.get("length_positions", 0),
        absolute_positions=model_config.get("absolute_positions", False),
        max_protein_len=max_lens[0],
        max_ligand_len=max_lens[1],
        **fields,
    )
