"""Analytic scores for i.i.d. tokens (twin of sedd_jax/diffusion/oracles.py): the "best
position-independent predictor" baseline. For token marginals p_t = p exp(sigma Q), the
log-score of position i is log p_t(y) - log p_t(x_i)."""

from __future__ import annotations

import math

import torch

from sedd_torch.diffusion.graphs import esigm1, expand_sigma, one_hot


def _absorbing_unigram(log_p, graph):
    """Masked positions: log p(y) - log(e^sigma - 1) (mask column 0); real tokens: 0 at
    themselves and -inf elsewhere."""

    def fn(x, sigma):
        sigma = expand_sigma(sigma, x.ndim + 1)
        row = torch.cat([log_p, torch.zeros(1, device=log_p.device)])[None, None, :]
        masked_row = row - torch.log(esigm1(sigma))
        is_mask = torch.arange(graph.dim, device=x.device) == graph.mask_id
        masked_row = torch.where(is_mask, 0.0, masked_row)
        real_row = torch.where(one_hot(x, graph.dim).bool(), 0.0, -math.inf)
        return torch.where((x == graph.mask_id)[..., None], masked_row, real_row)

    return fn


def _uniform_unigram(log_p, graph):
    """log p_t(y) - log p_t(x) with p_t = e^-sigma p + (1 - e^-sigma) / n."""

    def fn(x, sigma):
        sigma = expand_sigma(sigma, x.ndim + 1)
        log_pt = torch.logaddexp(-sigma + log_p, torch.log(-torch.expm1(-sigma) / graph.n))
        log_pt = torch.broadcast_to(log_pt, tuple(x.shape) + (graph.dim,))
        return log_pt - torch.gather(log_pt, -1, x[..., None].long())

    return fn


def unigram_log_score_fn(log_p, graph):
    """fn(x [B, L], sigma [B]) -> [B, L, V]: exact log-scores for i.i.d. tokens with log p [n]."""
    log_p = torch.as_tensor(log_p, dtype=torch.float32)
    return (_absorbing_unigram if graph.absorb else _uniform_unigram)(log_p, graph)
