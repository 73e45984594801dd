"""Forward-process graphs (token-wise rate matrices Q) of SEDD, as pure jnp functions.

Shapes: tokens x [B, L] int32; per-sequence noise sigma [B] (a scalar also works); scores
[B, L, V] where V = `graph.dim`. Every function expands sigma against the token axis
itself, so callers always pass sigma as [B] (the reference's double-unsqueeze defect B1
cannot arise).

Absorbing graph (`dim = n + 1`, mask id `m = n`):
    Q(i, j) = 1[j = m] - 1[j = i]   (every token jumps to the mask at rate 1),
    P(x_t = m | x_0) = 1 - exp(-sigma_bar).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sedd_jax.diffusion.catsample import categorical_from_uniform


def expand_sigma(sigma: jax.Array, ndim: int) -> jax.Array:
    """Append singleton axes to sigma [B] (or []) until it has `ndim` axes."""
    sigma = jnp.asarray(sigma)
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def esigm1(sigma: jax.Array) -> jax.Array:
    """exp(sigma) - 1, through expm1 where sigma < 0.5 (accuracy at small noise)."""
    return jnp.where(sigma < 0.5, jnp.expm1(sigma), jnp.exp(sigma) - 1.0)


def reverse_rate_from(transp_rate: jax.Array, x: jax.Array, score: jax.Array) -> jax.Array:
    """R(x, y) = Q^T(x, y) s_y for y != x, and R(x, x) = -sum_{y != x} R(x, y). [B, L, V]."""
    onehot = jax.nn.one_hot(x, score.shape[-1], dtype=score.dtype)
    rate = transp_rate * score * (1.0 - onehot)
    return rate - onehot * rate.sum(axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Absorbing:
    """Absorbing ("mask") graph over n real tokens plus the mask id n."""

    n: int

    @property
    def dim(self) -> int:
        return self.n + 1

    @property
    def mask_id(self) -> int:
        return self.n

    @property
    def absorb(self) -> bool:
        return True

    def transp_rate(self, x: jax.Array) -> jax.Array:
        """Row x of Q^T: -1 at x, and ones (0 at m) when x is the mask. [B, L] -> [B, L, V]."""
        onehot = jax.nn.one_hot(x, self.dim)
        return -onehot + (x == self.mask_id)[..., None].astype(onehot.dtype)

    def reverse_rate(self, x: jax.Array, score: jax.Array) -> jax.Array:
        return reverse_rate_from(self.transp_rate(x).astype(score.dtype), x, score)

    def transp_transition(self, x: jax.Array, sigma: jax.Array) -> jax.Array:
        """Row x of exp(sigma Q)^T: e^-sigma 1[y=x] + 1[x=m](1 - e^-sigma). [B, L, V]."""
        sigma = expand_sigma(sigma, x.ndim + 1)
        onehot = jax.nn.one_hot(x, self.dim)
        masked = (x == self.mask_id)[..., None]
        return jnp.exp(-sigma) * onehot + jnp.where(masked, -jnp.expm1(-sigma), 0.0)

    def sample_transition(
        self, key: jax.Array, x0: jax.Array, sigma: jax.Array, valid: jax.Array | None = None
    ) -> jax.Array:
        """Corrupt x0 [B, L]: each valid token becomes the mask w.p. 1 - exp(-sigma_b)."""
        sigma = expand_sigma(sigma, x0.ndim)
        move = jax.random.uniform(key, x0.shape) < -jnp.expm1(-sigma)
        if valid is not None:
            move = move & valid
        return jnp.where(move, self.mask_id, x0)

    def sample_limit(self, shape: tuple[int, ...]) -> jax.Array:
        """The t = 1 distribution: every token is the mask."""
        return jnp.full(shape, self.mask_id, dtype=jnp.int32)

    def staggered_score(self, score: jax.Array, dsigma: jax.Array) -> jax.Array:
        """exp(dsigma Q) applied to the score: s e^dsigma, plus (1 - e^dsigma) sum(s) at m."""
        dsigma = expand_sigma(dsigma, score.ndim)
        extra = -jnp.expm1(dsigma) * score.sum(axis=-1, keepdims=True)
        is_mask = jnp.arange(self.dim) == self.mask_id
        return score * jnp.exp(dsigma) + jnp.where(is_mask, extra, 0.0)

    def score_entropy(
        self, log_score: jax.Array, sigma: jax.Array, x: jax.Array, x0: jax.Array
    ) -> jax.Array:
        """Closed-form score entropy per position [B, L]; zero where x is not the mask.

        With r = 1 / (e^sigma - 1) the true ratio p_t(x0) / p_t(m):
            l = sum_{y != m} exp(s_y) - r s_{x0} + r (log r - 1)  >= 0,
        with equality iff s_{x0} = log r and s_y = -inf for the other y.
        """
        sigma = expand_sigma(sigma, x.ndim)
        masked = x == self.mask_id
        ratio = 1.0 / esigm1(sigma)
        s_x0 = jnp.take_along_axis(log_score, x0[..., None], axis=-1)[..., 0]
        positive = jnp.exp(log_score[..., :-1]).sum(axis=-1)
        negative = ratio * s_x0
        const = ratio * (jnp.log(ratio) - 1.0)
        return jnp.where(masked, positive - negative + const, 0.0)

    def sample_rate(self, x: jax.Array, rate: jax.Array, u: jax.Array) -> jax.Array:
        """One tau-leaping jump: draw from onehot(x) + rate with uniforms u [B, L, V]."""
        probs = jax.nn.one_hot(x, self.dim, dtype=rate.dtype) + rate
        return categorical_from_uniform(probs, u)


GRAPHS = {"absorb": Absorbing}


def get_graph(config, num_tokens: int):
    """Build the graph named by `graph.type` over `num_tokens` tokenizer ids."""
    if config.type not in GRAPHS:
        raise ValueError(f"graph.type={config.type!r}; choose one of {sorted(GRAPHS)}")
    return GRAPHS[config.type](num_tokens)
