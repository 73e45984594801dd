"""Single-track SEDD: a DDiT that maps (x_t [B, L], sigma_bar [B]) to log-scores [B, L, V].

Two variants, chosen by `variant`:
  * `protlig`: the reference `transformer_v100.SEDD` exactly: no SiLU on the condition,
    exact (erf) GELU, output linear without bias and with the default (non-zero) init,
    embedding N(0, 1).
  * `sedd`: upstream louaaron SEDD: SiLU on the condition, tanh GELU, zero-initialised
    output linear with bias, embedding U(+-1/sqrt(d)).

With `scale_by_sigma` (absorbing graph only) the log-scores are shifted by
-log(e^sigma - 1) - log(V - 1), so that a fresh network predicts near-uniform ratios of
the right magnitude. The log-score at the current token is always set to 0.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from sedd_jax.common.model_options import shared_fields as common_fields
from sedd_jax.diffusion.graphs import esigm1
from sedd_jax.models.layers import (
    DDiTBlock,
    OutputLayer,
    TimestepEmbedder,
    remat_block,
    rotary_cos_sin,
    torch_uniform,
)


@dataclasses.dataclass(frozen=True)
class Variant:
    silu_condition: bool
    approximate_gelu: bool
    output_bias: bool
    output_zero_init: bool
    embedding_init: str  # "normal" (torch nn.Embedding) or "uniform" (kaiming, a=sqrt 5)


VARIANTS = {
    "protlig": Variant(False, False, False, False, "normal"),
    "sedd": Variant(True, True, True, True, "uniform"),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def embedding_init(kind: str, hidden: int):
    if kind == "normal":
        return nn.initializers.normal(stddev=1.0)
    return torch_uniform(hidden)


def finish_log_score(logits, x, sigma, vocab_size: int, scale_by_sigma: bool):
    """scale_by_sigma shift -log(e^sigma - 1) - log(V - 1), then 0 at the current token."""
    if scale_by_sigma:
        floor = jnp.finfo(jnp.float32).tiny
        shift = jnp.log(jnp.maximum(esigm1(sigma), floor)) + math.log(vocab_size - 1)
        logits = logits - shift[:, None, None]
    return jnp.where(jax.nn.one_hot(x, vocab_size, dtype=bool), 0.0, logits)


class SEDD(nn.Module):
    """The DDiT score network. Config fields mirror `config.model`."""

    vocab_size: int  # V, absorbing id included
    hidden: int = 768
    n_blocks: int = 8
    n_heads: int = 12
    cond_dim: int = 256
    mlp_ratio: int = 4
    dropout: float = 0.1
    variant: str = "protlig"
    scale_by_sigma: bool = True
    absorb: bool = True
    dtype: str = "float32"
    remat: str = "none"  # none | block: recompute each block in the backward pass
    attention: str = "auto"  # auto | xla | cudnn (`layers.resolve_attention`)
    time_conditioning: bool = True  # False: sigma-free network (absorbing graph; RADD)

    @nn.compact
    def __call__(self, x, sigma, valid=None, deterministic: bool = True, example_ids=None):
        """x [B, L] int, sigma [B] float, valid [B, L] bool or None -> log-scores [B, L, V].

        example_ids [B] int (optional) key each row's dropout masks (`layers.Dropout`).
        """
        variant = VARIANTS[self.variant]
        table = self.param(
            "vocab_embed",
            embedding_init(variant.embedding_init, self.hidden),
            (self.vocab_size, self.hidden),
            jnp.float32,
        )
        h = jnp.take(table, x, axis=0)
        c = condition(self, sigma)
        rotary = rotary_cos_sin(x.shape[1], self.hidden // self.n_heads)
        for i in range(self.n_blocks):
            h = ddit_block(self, f"blocks_{i}")(h, c, rotary, valid, deterministic, example_ids)
        return score_head(self, "output_layer", self.vocab_size, h, c, x, sigma)


def network_sigma(sigma, model):
    """The sigma the network's condition embedding sees: sigma, or 0 for a sigma-free
    network (same parameters; the known sigma factor stays in `finish_log_score`)."""
    return sigma if model.time_conditioning else jnp.zeros_like(sigma)


def condition(model, sigma):
    """The condition c [B, cond_dim] of a SEDD-family `model` (inside its compact call):
    `sigma_map` of `network_sigma`, through SiLU in the `sedd` variant."""
    c = TimestepEmbedder(model.cond_dim, name="sigma_map")(network_sigma(sigma, model))
    return nn.silu(c) if VARIANTS[model.variant].silu_condition else c


def ddit_block(model, name: str):
    """The DDiT block `name` of a SEDD-family `model` (its hidden, n_heads, mlp_ratio,
    dropout, variant, dtype, remat and attention fields), to call on (h, c, rotary, valid,
    deterministic, example_ids)."""
    return remat_block(DDiTBlock, model.remat)(
        model.hidden,
        model.n_heads,
        model.mlp_ratio,
        model.dropout,
        VARIANTS[model.variant].approximate_gelu,
        DTYPES[model.dtype],
        model.attention,
        name=name,
    )


def score_head(model, name: str, vocab_size: int, h, c, x, sigma):
    """Log-scores [B, L, V] of a SEDD-family `model`'s output layer `name` on the last
    hidden state h [B, L, d] at tokens x [B, L] (`finish_log_score`)."""
    variant = VARIANTS[model.variant]
    logits = OutputLayer(
        vocab_size,
        variant.output_bias,
        variant.output_zero_init,
        DTYPES[model.dtype],
        name=name,
    )(h, c)
    return finish_log_score(logits, x, sigma, vocab_size, model.scale_by_sigma and model.absorb)


def count_parameters(params) -> int:
    return sum(p.size for p in jax.tree_util.tree_leaves(params))


def expected_parameter_count(
    vocab_size, hidden, n_blocks, cond_dim, mlp_ratio=4, variant="protlig"
):
    """Closed form (reference §1.1.6) for the protlig variant; `sedd` adds the output bias."""
    d, c, v = hidden, cond_dim, vocab_size
    per_block = (4 + 2 * mlp_ratio) * d * d + 6 * c * d + (mlp_ratio + 1 + 6 + 2) * d
    total = 2 * v * d + (256 * c + c * c + 2 * c) + n_blocks * per_block + 2 * c * d + 3 * d
    return total + (v if VARIANTS[variant].output_bias else 0)


def shared_fields(model_config, absorb: bool) -> dict:
    """`common.model_options.shared_fields` and the JAX compute options (remat, attention)
    that SEDD and DualTrackSEDD both take."""
    return common_fields(model_config, absorb) | {
        "remat": model_config.get("remat", "none"),
        "attention": model_config.get("attention", "auto"),
    }


def build_model(model_config, vocab_size: int, absorb: bool) -> SEDD:
    """SEDD from `config.model` (every field consumed) and the graph's V."""
    fields = shared_fields(model_config, absorb)
    return SEDD(vocab_size=vocab_size, n_blocks=model_config.n_blocks, **fields)
