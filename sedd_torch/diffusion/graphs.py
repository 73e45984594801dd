"""Forward-process graphs of SEDD (twin of sedd_jax/diffusion/graphs.py).

Shapes: tokens x [B, L] long; per-sequence noise sigma [B] (a scalar also works); scores
[B, L, V] where V = `graph.dim`. Draws come from `rand` (see `catsample`) in the order
sedd_jax splits its key.

Absorbing graph (`dim = n + 1`, mask id `m = n`):
    Q(i, j) = 1[j = m] - 1[j = i],   P(x_t = m | x_0) = 1 - exp(-sigma_bar).
Uniform graph (`dim = n`, no mask):
    Q(i, j) = 1/n - 1[j = i],        exp(sigma Q) = e^-sigma I + (1 - e^-sigma) / n.
"""

from __future__ import annotations

import dataclasses
import math

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


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [..., V] at index [...] -> [...]."""
    return torch.gather(values, -1, index[..., None].long())[..., 0]


def reverse_rate_from(transp_rate, x, score):
    """R(x, y) = Q^T(x, y) s_y for y != x, and R(x, x) = -sum_{y != x} R(x, y). [B, L, V]."""
    onehot = one_hot(x, score.shape[-1], score.dtype)
    rate = transp_rate * score * (1.0 - onehot)
    return rate - onehot * rate.sum(dim=-1, keepdim=True)


def sample_rate_from(dim: int, x, rate, u):
    """Draw from onehot(x) + rate [B, L, V] (tau-leaping) with uniforms u [B, L, V]."""
    return categorical_from_uniform(one_hot(x, dim, rate.dtype) + rate, u)


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

    def sample_transition(self, rand, x0, sigma, valid=None):
        """Corrupt x0 [B, L]: each valid token becomes the mask w.p. 1 - exp(-sigma_b)."""
        sigma = expand_sigma(sigma, x0.ndim)
        move = rand(x0.shape) < -torch.expm1(-sigma)
        if valid is not None:
            move = move & valid
        return torch.where(move, self.mask_id, x0)

    def sample_limit(self, rand, shape, device=None):
        """The sampler's start state: every token is the mask (`rand` is unused)."""
        del rand
        return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)

    def prior_kl(self, sigma):
        """KL(p_{1|0}(. | x0) || p_base) per token at sigma = sigma_bar(1): e^-sigma log n."""
        return torch.exp(-torch.as_tensor(sigma, dtype=torch.float32)) * math.log(self.n)

    def staggered_score(self, score, dsigma):
        """exp(-dsigma Q)^T applied to the score: s e^dsigma, plus (1 - e^dsigma) sum(s) at m."""
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
        log_score = torch.where(masked[..., None], log_score, 0.0)  # before exp: no 0 * inf
        ratio = 1.0 / esigm1(sigma)
        positive = torch.exp(log_score[..., :-1]).sum(dim=-1)
        negative = ratio * take(log_score, x0)
        const = ratio * (torch.log(ratio) - 1.0)
        return torch.where(masked, positive - negative + const, 0.0)

    def sample_rate(self, x, rate, u):
        """One tau-leaping jump: draw from onehot(x) + rate with uniforms u [B, L, V]."""
        return sample_rate_from(self.dim, x, rate, u)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform graph over n tokens: at rate 1 a token is replaced by a uniform draw."""

    n: int

    @property
    def dim(self) -> int:
        return self.n

    @property
    def mask_id(self) -> None:
        return None

    @property
    def absorb(self) -> bool:
        return False

    def transp_rate(self, x):
        """Row x of Q^T (Q is symmetric): 1/n everywhere, minus 1 at x. [B, L] -> [B, L, V]."""
        return 1.0 / self.n - one_hot(x, self.dim)

    def reverse_rate(self, x, score):
        return reverse_rate_from(self.transp_rate(x).to(score.dtype), x, score)

    def transp_transition(self, x, sigma):
        """Row x of exp(sigma Q)^T: e^-sigma 1[y=x] + (1 - e^-sigma) / n. [B, L, V]."""
        sigma = expand_sigma(sigma, x.ndim + 1)
        return torch.exp(-sigma) * one_hot(x, self.dim) - torch.expm1(-sigma) / self.n

    def sample_transition(self, rand, x0, sigma, valid=None):
        """Corrupt x0 [B, L]: each valid token is redrawn uniformly w.p. 1 - exp(-sigma_b).

        Two draws, in sedd_jax's key-split order: the move, then the fresh token.
        """
        sigma = expand_sigma(sigma, x0.ndim)
        move = rand(x0.shape) < -torch.expm1(-sigma)
        if valid is not None:
            move = move & valid
        fresh = self.sample_limit(rand, x0.shape, x0.device)
        return torch.where(move, fresh, x0)

    def sample_limit(self, rand, shape, device=None):
        """The stationary distribution: i.i.d. uniform tokens."""
        u = rand(tuple(shape)).to(device)
        return torch.clamp_max(torch.floor(u * self.n), self.n - 1).long()

    def prior_kl(self, sigma):
        """KL(p_{1|0}(. | x0) || Uniform) per token at sigma = sigma_bar(1); a = e^-sigma:
        (a + (1 - a)/n) log(1 + (n - 1) a) + (n - 1)(1 - a)/n log(1 - a)."""
        a = torch.exp(-torch.as_tensor(sigma, dtype=torch.float32))
        stay = a + (1.0 - a) / self.n
        move = (1.0 - a) / self.n
        move_term = (self.n - 1) * move * torch.log(torch.clamp_min(1.0 - a, 1e-30))
        return stay * torch.log1p((self.n - 1) * a) + move_term

    def staggered_score(self, score, dsigma):
        """exp(-dsigma Q) applied to the score: s e^dsigma + (1 - e^dsigma) / n sum(s)."""
        dsigma = expand_sigma(dsigma, score.ndim)
        extra = -torch.expm1(dsigma) / self.n * score.sum(dim=-1, keepdim=True)
        return score * torch.exp(dsigma) + extra

    def score_entropy(self, log_score, sigma, x, x0):
        """Closed-form score entropy per position [B, L] (upstream SEDD's Uniform).

        True ratios r_y = p_t(y | x0) / p_t(x | x0), E = e^sigma - 1: for x = x0,
        r_y = E / (E + n); for x != x0, r_{x0} = 1 + n / E and r_y = 1 otherwise.
        """
        n = self.n
        sigma = expand_sigma(sigma, x.ndim)
        em1 = esigm1(sigma)
        stay_ratio = em1 / (em1 + n)
        s_x, s_x0 = take(log_score, x), take(log_score, x0)
        exp_score = torch.exp(log_score)
        positive = (exp_score.sum(dim=-1) - take(exp_score, x)) / n
        others = (log_score.sum(dim=-1) - s_x) / n
        same = x == x0
        negative = torch.where(same, stay_ratio * others, s_x0 / em1 + others)
        const = torch.where(
            same,
            (n - 1) / n * stay_ratio * (torch.log(stay_ratio) - 1.0),
            ((-torch.log(stay_ratio) - 1.0) / stay_ratio - (n - 2)) / n,
        )
        return positive - negative + const

    def sample_rate(self, x, rate, u):
        """One tau-leaping jump: draw from onehot(x) + rate with uniforms u [B, L, V]."""
        return sample_rate_from(self.dim, x, rate, u)


GRAPHS = {"absorb": Absorbing, "uniform": Uniform}


def get_graph(config, num_tokens: int):
    """Build the graph named by `graph.type` over `num_tokens` tokenizer ids."""
    if config.type not in GRAPHS:
        raise ValueError(f"graph.type={config.type!r}; choose one of {sorted(GRAPHS)}")
    return GRAPHS[config.type](num_tokens)
