"""Dual-track SEDD: one DDiT stack per modality, coupled by gated cross-attention.

    (protein x_t [B, Lp], ligand x_t [B, Ll], sigma_bar [B])
        -> (protein log-scores [B, Lp, Vp] | None, ligand log-scores [B, Ll, Vl] | None)

The reference model (`transformers_protlig_cross.DualTrackDiffusionTransformer`) ran its
self-attention over the batch axis (defect D1) and hard-coded both vocabularies (D19).
Here self-attention runs over the sequence axis (the DDiT block of `layers.py`), each
vocabulary comes from its graph, and pad positions are hidden from self- and
cross-attention.

Pairing and the synchronous update. With n_p protein and n_l ligand blocks, depth =
max(n_p, n_l) and m = min(n_p, n_l). The stacks are aligned at the top: the longer stack
first runs its |n_p - n_l| extra blocks alone (a modality-specific encoder, as the extra
language layers before the co-attention layers of ViLBERT/LXMERT), then the last m blocks
of both stacks run in lockstep. Paired step k (k = 0..m-1) is

    p' = h_p + gate_p * CrossAttn_p(h_p -> h_l)    (cross_protein_k)
    l' = h_l + gate_l * CrossAttn_l(h_l -> h_p)    (cross_ligand_k)
    h_p <- blocks_protein_{n_p - m + k}(p'),  h_l <- blocks_ligand_{n_l - m + k}(l')

so each track reads the other's hidden state from the previous layer (the embedding at
k = 0). Top alignment keeps this well defined at unequal depths (both partners are always
one layer in) and lets the last exchange reach both output heads; proportional pairing
would make one block read a partner several layers away, or read one partner twice. With
equal depths every block is paired.

A cross-attention block: adaLN (shift, scale, gate) from the condition, zero-initialised,
so a new model is two independent single-track SEDDs; q from the modulated LayerNorm of
the track, k/v from the LayerNorm of the other track, no rotary (positions of different
modalities are unrelated), bias-free projections, and an exact zero where the other track
has no valid token (that example then runs as a single track; joint.py uses this for
`protein_only` / `ligand_only` examples inside a task mixture).

Modes (static): `joint` runs both tracks with cross-attention and both heads;
`ligand_given_protein` / `protein_given_ligand` are the same network but only the
generated track's head runs (the context track's final block is skipped, since nothing
reads it); `protein_only` / `ligand_only` run one track, no cross-attention, and the
other track's inputs may be None. Conditional generation differs from joint generation
only in the diffusion (the context track is clean, unscored and clamped): see
`sedd_jax/diffusion/joint.py`.

Length heads (`length_head`, `models/length.py`): p(L_ligand | protein) as
`length_ligand` and p(L_protein | ligand) as `length_protein`, each reading the clean
context track (its own small embedding, hidden `length_hidden`), logits over
0..max_ligand_len resp. 0..max_protein_len; `apply(..., method="length_logits")`. They
are created in `setup` and initialised by `init_dual_params` (the `joint` init calls
them), so they live in the one parameter tree; the score network never reads them.

Parameter names (torch `a.b.weight` [out, in] <-> flax `a/b/kernel` [in, out], as
`layers.py`): `protein_embed`, `ligand_embed` (tables [V, d]), `sigma_map`,
`blocks_protein_i`, `blocks_ligand_i`, `cross_protein_k`, `cross_ligand_k` (each
`adaLN_modulation`, `norm_q`, `norm_kv`, `attn_q`, `attn_kv`, `attn_out`),
`protein_output`, `ligand_output`, and with the heads `length_ligand`, `length_protein`
(each `embed/embedding` (torch `embed.weight`), `mlp_in`, `mlp_out`).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from sedd_jax.common.tasks import CONDITIONAL_TRACKS, MODES
from sedd_jax.models.layers import (
    FREQUENCY_DIM,
    Dense,
    Dropout,
    LayerNorm,
    attend,
    modulate,
    remat_block,
    rotary_cos_sin,
    sinusoidal_positions,
)
from sedd_jax.models.length import HEAD_NAMES, LengthHead
from sedd_jax.models.sedd import (
    DTYPES,
    VARIANTS,
    condition,
    ddit_block,
    embedding_init,
    score_head,
    shared_fields,
)


class CrossAttention(nn.Module):
    """adaLN-gated cross-attention: x [B, Lq, d] reads context [B, Lk, d] -> [B, Lq, d].

    x + gate * W_o attn(W_q modulate(LN_q(x)), W_kv LN_kv(context)); context_valid [B, Lk]
    hides pad keys, and rows with no valid key get exactly x back. query_valid [B, Lq]
    (x's own padding) only lets the fused attention skip pad queries.
    """

    hidden: int
    n_heads: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # model.attention (`layers.resolve_attention`)

    @nn.compact
    def __call__(
        self,
        x,
        context,
        c,
        context_valid,
        deterministic: bool = True,
        example_ids=None,
        query_valid=None,
    ):
        batch, q_len, d = x.shape
        k_len = context.shape[1]
        heads, head_dim = self.n_heads, d // self.n_heads
        mod = Dense(3 * d, zero_init=True, name="adaLN_modulation")(c)[:, None, :]
        shift, scale, gate = jnp.split(mod, 3, -1)

        h = modulate(LayerNorm(name="norm_q")(x), shift, scale).reshape(batch * q_len, d)
        ctx = LayerNorm(name="norm_kv")(context).reshape(batch * k_len, d)
        q = Dense(d, use_bias=False, dtype=self.dtype, name="attn_q")(h)
        kv = Dense(2 * d, use_bias=False, dtype=self.dtype, name="attn_kv")(ctx)
        q = q.reshape(batch, q_len, heads, head_dim)
        kv = kv.reshape(batch, k_len, 2, heads, head_dim)
        out = attend(q, kv[:, :, 0], kv[:, :, 1], query_valid, context_valid, self.attention)
        out = out.reshape(batch * q_len, d)
        out = Dense(d, use_bias=False, dtype=self.dtype, name="attn_out")(out)
        out = out.reshape(batch, q_len, d).astype(jnp.float32)
        if context_valid is not None:
            out = jnp.where(context_valid.any(axis=-1)[:, None, None], out, 0.0)
        return x + gate * Dropout(self.dropout)(out, deterministic, example_ids)


class DualTrackSEDD(nn.Module):
    """The protein–ligand score network. Config fields mirror `config.model`."""

    protein_vocab: int  # Vp, absorbing id included
    ligand_vocab: int  # Vl, absorbing id included
    hidden: int = 768
    n_blocks_protein: int = 8
    n_blocks_ligand: int = 8
    n_heads: int = 12
    cond_dim: int = 256
    mlp_ratio: int = 4
    dropout: float = 0.1
    variant: str = "protlig"
    scale_by_sigma: bool = True
    absorb: bool = True
    dtype: str = "float32"
    cross_attention: bool = True
    remat: str = "none"  # none | block: recompute each DDiT / cross block when differentiating
    attention: str = "auto"  # auto | xla | cudnn (`layers.resolve_attention`)
    length_head: bool = False  # p(L_generated | context) heads (`models/length.py`)
    absolute_positions: bool = False  # add sinusoidal absolute positions to the embeddings
    time_conditioning: bool = True  # False: sigma-free network (absorbing graph; RADD)
    length_hidden: int = 64  # the heads' embedding and MLP width
    length_positions: int = 0  # the heads' position-code features (`models/length.py`)
    max_protein_len: int = 0  # the heads' ranges (data.max_*_len); used with length_head
    max_ligand_len: int = 0

    def setup(self):
        if not self.length_head:
            return
        if min(self.max_protein_len, self.max_ligand_len) < 1:
            raise ValueError("model.length_head needs the tracks' max lengths (data.max_*_len)")
        heads = {"hidden": self.length_hidden, "positions": self.length_positions}
        self.length_ligand = LengthHead(self.protein_vocab, self.max_ligand_len, **heads)
        self.length_protein = LengthHead(self.ligand_vocab, self.max_protein_len, **heads)

    def length_logits(self, context, context_valid, task: str):
        """Logits [B, max_len + 1] of p(L_generated | clean context) of a conditional
        `task`: context [B, Lc] int and context_valid [B, Lc] bool are the context track
        (the protein for `ligand_given_protein`, the ligand for `protein_given_ligand`)."""
        if task not in HEAD_NAMES:
            raise ValueError(f"length_logits: task={task!r}; choose one of {sorted(HEAD_NAMES)}")
        return getattr(self, HEAD_NAMES[task])(context, context_valid)

    def _cross(self, name):
        return remat_block(CrossAttention, self.remat)(
            self.hidden, self.n_heads, self.dropout, DTYPES[self.dtype], self.attention, name=name
        )

    @nn.compact
    def __call__(
        self,
        protein,
        ligand,
        sigma,
        protein_valid=None,
        ligand_valid=None,
        mode: str = "joint",
        deterministic: bool = True,
        example_ids=None,
    ):
        """protein [B, Lp] int, ligand [B, Ll] int, sigma [B], *_valid [B, L] bool or None;
        example_ids [B] int (optional) key each row's dropout masks (`layers.Dropout`).

        Returns (protein log-scores [B, Lp, Vp] or None, ligand log-scores [B, Ll, Vl] or
        None); a head is None where `mode` does not produce it (see the module docstring).
        """
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose one of {sorted(MODES)}")
        protein_head, ligand_head, coupled = MODES[mode]
        cross = self.cross_attention and coupled
        run_p, run_l = protein_head or cross, ligand_head or cross
        variant = VARIANTS[self.variant]
        head_dim = self.hidden // self.n_heads

        c = condition(self, sigma)

        def embed(name, vocab_size, x):
            init = embedding_init(variant.embedding_init, self.hidden)
            table = self.param(name, init, (vocab_size, self.hidden), jnp.float32)
            h = jnp.take(table, x, axis=0)
            if self.absolute_positions:
                h = h + sinusoidal_positions(x.shape[1], self.hidden)[None]
            return h

        if run_p:
            h_p = embed("protein_embed", self.protein_vocab, protein)
            rot_p = rotary_cos_sin(protein.shape[1], head_dim)
        if run_l:
            h_l = embed("ligand_embed", self.ligand_vocab, ligand)
            rot_l = rotary_cos_sin(ligand.shape[1], head_dim)

        n_p, n_l = self.n_blocks_protein, self.n_blocks_ligand
        depth, paired = max(n_p, n_l), min(n_p, n_l)
        for step in range(depth):
            i_p, i_l, k = step - (depth - n_p), step - (depth - n_l), step - (depth - paired)
            last = step == depth - 1
            # A context track's last block feeds only its (absent) head: skip it.
            act_p = run_p and i_p >= 0 and (protein_head or not last)
            act_l = run_l and i_l >= 0 and (ligand_head or not last)
            if cross and k >= 0:
                new_p, new_l = h_p, h_l
                if act_p:
                    new_p = self._cross(f"cross_protein_{k}")(
                        h_p, h_l, c, ligand_valid, deterministic, example_ids, protein_valid
                    )
                if act_l:
                    new_l = self._cross(f"cross_ligand_{k}")(
                        h_l, h_p, c, protein_valid, deterministic, example_ids, ligand_valid
                    )
                h_p, h_l = new_p, new_l
            if act_p:
                h_p = ddit_block(self, f"blocks_protein_{i_p}")(
                    h_p, c, rot_p, protein_valid, deterministic, example_ids
                )
            if act_l:
                h_l = ddit_block(self, f"blocks_ligand_{i_l}")(
                    h_l, c, rot_l, ligand_valid, deterministic, example_ids
                )

        if self.length_head and self.is_initializing():
            tracks = {"protein": (protein, protein_valid), "ligand": (ligand, ligand_valid)}
            for task, (context, _) in CONDITIONAL_TRACKS.items():
                x, valid = tracks[context]
                if x is not None:  # `init_dual_params` (joint mode) gives both tracks
                    valid = jnp.ones(x.shape, bool) if valid is None else valid
                    self.length_logits(x, valid, task)

        protein_scores = ligand_scores = None
        if protein_head:
            protein_scores = score_head(
                self, "protein_output", self.protein_vocab, h_p, c, protein, sigma
            )
        if ligand_head:
            ligand_scores = score_head(
                self, "ligand_output", self.ligand_vocab, h_l, c, ligand, sigma
            )
        return protein_scores, ligand_scores


def init_dual_params(model: DualTrackSEDD, key, protein_len: int = 8, ligand_len: int = 8):
    """All parameters, initialised under jit in `joint` mode (which touches every module)."""
    protein = jnp.zeros((1, protein_len), jnp.int32)
    ligand = jnp.zeros((1, ligand_len), jnp.int32)
    init = jax.jit(functools.partial(model.init, mode="joint"))
    return init(key, protein, ligand, jnp.ones((1,)))["params"]


def expected_dual_parameter_count(
    protein_vocab,
    ligand_vocab,
    hidden,
    n_blocks_protein,
    n_blocks_ligand,
    cond_dim,
    mlp_ratio=4,
    variant="protlig",
    cross_attention=True,
    length_head: tuple[int, int, int] | None = None,
):
    """Closed form of the parameter count of `DualTrackSEDD`.

    embeddings (Vp + Vl) d; sigma_map 256 c + c^2 + 2c; per DDiT block
    (4 + 2r) d^2 + 6 c d + (r + 9) d; per head 2 c d + 3 d + V d (+ V with the `sedd`
    output bias); per cross block (two per paired layer) 4 d^2 + 3 c d + 5 d;
    `length_head` = (h, max_protein_len Mp, max_ligand_len Ml[, P]): per length head
    reading V_context and predicting 0..M, V h + (P + 1) h^2 + h + (h + 1)(M + 1) (P: the
    heads' position-code features, default 0).
    """
    d, c, r = hidden, cond_dim, mlp_ratio
    vocab = protein_vocab + ligand_vocab
    block = (4 + 2 * r) * d * d + 6 * c * d + (r + 9) * d
    head = 2 * c * d + 3 * d
    cross = 4 * d * d + 3 * c * d + 5 * d
    paired = min(n_blocks_protein, n_blocks_ligand) if cross_attention else 0
    total = (
        2 * vocab * d
        + FREQUENCY_DIM * c
        + c * c
        + 2 * c
        + (n_blocks_protein + n_blocks_ligand) * block
        + 2 * head
        + 2 * paired * cross
    )
    if length_head is not None:
        h, max_p, max_l, positions = (*length_head, 0)[:4]
        for context_vocab, max_len in ((protein_vocab, max_l), (ligand_vocab, max_p)):
            total += context_vocab * h + (positions + 1) * h * h + h + (h + 1) * (max_len + 1)
    return total + (vocab if VARIANTS[variant].output_bias else 0)


def build_dual_model(
    model_config,
    protein_vocab: int,
    ligand_vocab: int,
    absorb: bool,
    max_lens: tuple[int, int] = (0, 0),
):
    """DualTrackSEDD from `config.model` (every field consumed), the two graphs' V and
    max_lens = (data.max_protein_len, data.max_ligand_len), the length heads' ranges.
    A config without `length_head` (an older checkpoint's) builds no heads."""
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
