"""Length head: p(L_generated | clean context track), one head per conditional direction.

    (context tokens [B, Lc], context valid [B, Lc]) -> logits [B, max_len + 1]

The generated track's length is a categorical over 0..max_len, predicted from a masked
mean-pool of the clean context track's token embeddings (its own table, independent of
the diffusion model's) followed by an MLP. With `positions` = P > 0 each embedding is
first multiplied by [1, sin/cos code of its position (P numbers)], so the pool holds
which tokens stand where, not only the composition (a 16-family benchmark whose members
share most residues at fixed positions needs that; P = 0 is the composition head of
older checkpoints). Trained with cross-entropy in nats per
sequence; sampling draws L from it instead of the marginal p(L), and the likelihood
uses -log p(L | context) as its length term for conditional tasks.

The heads are submodules of `DualTrackSEDD` (`model.length_head`): `length_ligand` for
ligand | protein (reads the protein vocabulary, logits over 0..data.max_ligand_len) and
`length_protein` for protein | ligand, each with `embed/embedding` [V, d] (torch
`embed.weight`), `mlp_in`, `mlp_out` (torch `a.weight` [out, in] <-> flax `a/kernel`
[in, out]), so checkpoints, EMA, optimizer state and conversion carry them as any other
parameter.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sedd_jax.models.layers import sinusoidal_positions

HEAD_NAMES = {"ligand_given_protein": "length_ligand", "protein_given_ligand": "length_protein"}


class LengthHead(nn.Module):
    """Masked mean-pooled embedding -> MLP -> logits over generated lengths 0..max_len."""

    vocab_size: int
    max_len: int
    hidden: int = 64
    positions: int = 0  # P: position-code features per embedding dimension (even; 0: none)

    @nn.compact
    def __call__(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        emb = nn.Embed(self.vocab_size, self.hidden, name="embed")(tokens)
        if self.positions:
            emb = emb[..., None] * position_code(tokens.shape[1], self.positions)[:, None]
            emb = emb.reshape(*tokens.shape, self.hidden * (self.positions + 1))
        weight = valid[..., None].astype(jnp.float32)
        pooled = (emb * weight).sum(axis=1) / jnp.maximum(weight.sum(axis=1), 1.0)
        h = nn.gelu(nn.Dense(self.hidden, name="mlp_in")(pooled), approximate=False)
        return nn.Dense(self.max_len + 1, name="mlp_out")(h).astype(jnp.float32)


def position_code(length: int, positions: int) -> jax.Array:
    """[L, P + 1]: 1, then sin/cos of position * 10000^(-2k/P) (P even)."""
    if positions % 2:
        raise ValueError(f"model.length_positions={positions}: expected an even number")
    code = sinusoidal_positions(length, positions) * jnp.sqrt(jnp.float32(positions))
    return jnp.concatenate([jnp.ones((length, 1), jnp.float32), code], axis=-1)


def length_nll(logits: jax.Array, lengths: jax.Array) -> jax.Array:
    """-log p(L | context) in nats per sequence, [B]; logits [B, max_len + 1], lengths [B]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, lengths[:, None].astype(jnp.int32), axis=-1)[:, 0]


def sample_lengths(key: jax.Array, logits: jax.Array, min_len: int = 1) -> jax.Array:
    """Draw L ~ p(L | context) restricted to L >= min_len, [B] int32."""
    allowed = jnp.arange(logits.shape[-1]) >= min_len
    return jax.random.categorical(key, jnp.where(allowed, logits, -jnp.inf)).astype(jnp.int32)
