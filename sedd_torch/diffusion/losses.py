"""The dsigma-weighted denoising score-entropy loss (twin of sedd_jax/diffusion/losses.py).

A `log_score_fn(x_t [B, L], sigma [B]) -> log-scores [B, L, V]` stands for the network.
Where sedd_jax takes a PRNG key this takes a torch.Generator, or (for parity) the
uniforms themselves.
"""

from __future__ import annotations

import torch

from sedd_torch.diffusion.catsample import uniform


def sample_times(generator: torch.Generator, batch: int, sampling_eps=1e-3, device=None):
    """t ~ U[eps, 1] per sequence: [B]."""
    return (1.0 - sampling_eps) * uniform(generator, (batch,), device) + sampling_eps


def per_token_loss(log_score_fn, graph, noise, x0, valid, t, u):
    """dsigma(t_b) * score_entropy at every position, zero at pads: [B, L].

    u [B, L] are the corruption uniforms (sedd_jax draws them from its key). The sigma
    that corrupts x0 conditions the network and sets the target ratio.
    """
    sigma, dsigma = noise(t)
    x_t = graph.sample_transition(u, x0, sigma, valid)
    log_score = log_score_fn(x_t, sigma)
    entropy = graph.score_entropy(log_score.float(), sigma, x_t, x0)
    return dsigma[:, None] * entropy * valid


def score_entropy_loss(log_score_fn, graph, noise, x0, valid, generator, sampling_eps=1e-3):
    """(sum of the weighted score entropy over valid tokens [], number of valid tokens []),
    for one fresh t per sequence; loss = loss_sum / num_valid."""
    t = sample_times(generator, x0.shape[0], sampling_eps, x0.device)
    u = uniform(generator, x0.shape, x0.device)
    losses = per_token_loss(log_score_fn, graph, noise, x0, valid, t, u)
    return losses.sum(), valid.sum().float()
