"""Forward-process graphs of SEDD (twin of sedd_jax/diffusion/graphs.py).

Shapes: tokens x [B, L] long; per-sequence noise sigma [B] (a scalar also works); scores
[B, L, V] where V = `graph.dim`. Random draws come in as explicit uniforms, so that a
draw made by sedd_jax can be replayed here.

Absorbing graph (`dim = n + 1`, mask id `m = n`):
    Q(i, j) = 1[j = m] - 1[j = i],   P(x_t = m | x_0) = 1 - exp(-sigma_bar).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from sedd_torch.diffusion.catsample import categorical_from_uniform


def expand_sigma(sigma, ndim: int) -> torch.Tensor:
    """Append singleton axes to sigma [B] (or []) until it has `ndim` axes."""
    sigma = torch.as_tensor(sigma)
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def esigm1(sigma: torch.Tensor) -> torch.Tensor:
    """exp(sigma) - 1, through expm1 where sigma < 0.5 (accuracy at small noise)."""
    return torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1.0)


def one_hot(x: torch.Tensor, dim: int, dtype=torch.float32) -> torch.Tensor:
    return F.one_hot(x.long(), dim).to(dtype)


def reverse_rate_from(transp_rate, x, score):
    """R(x, y) = Q^T(x, y) s_y for y != x, and R(x, x) = -sum_{y != x} R(x, y). [B, L, V]."""
    onehot = one_hot(x, score.shape[-1], score.dtype)
    rate = transp_rate * score * (1.0 - onehot)
    return rate - onehot * rate.sum(dim=-1, keepdim=True)


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

    def transp_rate(self, x):
        """Row x of Q^T: -1 at x, and ones (0 at m) when x is the mask. [B, L] -> [B, L, V]."""
        return -one_hot(x, self.dim) + (x == self.mask_id)[..., None].float()

    def reverse_rate(self, x, score):
        return reverse_rate_from(self.transp_rate(x).to(score.dtype), x, score)

    def transp_transition(self, x, sigma):
        """Row x of exp(sigma Q)^T: e^-sigma 1[y=x] + 1[x=m](1 - e^-sigma). [B, L, V]."""
        sigma = expand_sigma(sigma, x.ndim + 1)
        masked = (x == self.mask_id)[..., None]
        stay = torch.exp(-sigma) * one_hot(x, self.dim)
        return stay + torch.where(masked, -torch.expm1(-sigma), 0.0)

    def sample_transition(self, u, x0, sigma, valid=None):
        """Corrupt x0 [B, L] with uniforms u [B, L] (in place of the JAX key): each valid
        token becomes the mask where u < 1 - exp(-sigma_b)."""
        sigma = expand_sigma(sigma, x0.ndim)
        move = u < -torch.expm1(-sigma)
        if valid is not None:
            move = move & valid
        return torch.where(move, self.mask_id, x0)

    def sample_limit(self, shape, device=None):
        """The t = 1 distribution: every token is the mask."""
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def staggered_score(self, score, dsigma):
        """exp(dsigma Q) applied to the score: s e^dsigma, plus (1 - e^dsigma) sum(s) at m."""
        dsigma = expand_sigma(dsigma, score.ndim)
        extra = -torch.expm1(dsigma) * score.sum(dim=-1, keepdim=True)
        is_mask = torch.arange(self.dim, device=score.device) == self.mask_id
        return score * torch.exp(dsigma) + torch.where(is_mask, extra, 0.0)

    def score_entropy(self, log_score, sigma, x, x0):
        """Closed-form score entropy per position [B, L]; zero where x is not the mask.

        With r = 1 / (e^sigma - 1):  l = sum_{y != m} exp(s_y) - r s_{x0} + r (log r - 1).
        """
        sigma = expand_sigma(sigma, x.ndim)
        masked = x == self.mask_id
        ratio = 1.0 / esigm1(sigma)
        s_x0 = torch.gather(log_score, -1, x0[..., None].long())[..., 0]
        positive = torch.exp(log_score[..., :-1]).sum(dim=-1)
        negative = ratio * s_x0
        const = ratio * (torch.log(ratio) - 1.0)
        return torch.where(masked, positive - negative + const, 0.0)

    def sample_rate(self, x, rate, u):
        """One tau-leaping jump: draw from onehot(x) + rate with uniforms u [B, L, V]."""
        return categorical_from_uniform(one_hot(x, self.dim, rate.dtype) + rate, u)


GRAPHS = {"absorb": Absorbing}


def get_graph(config, num_tokens: int):
    """Build the graph named by `graph.type` over `num_tokens` tokenizer ids."""
    if config.type not in GRAPHS:
        raise ValueError(f"graph.type={config.type!r}; choose one of {sorted(GRAPHS)}")
    return GRAPHS[config.type](num_tokens)
