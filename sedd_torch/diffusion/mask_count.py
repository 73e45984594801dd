"""The masked-diffusion ELBO estimated over the number of masked tokens (twin of
sedd_jax/diffusion/mask_count.py, where the math is derived).

k = 1 + floor(u n) of a row's n scored tokens are masked, the k of smallest i.i.d.
uniform score, and the network sees sigma = -log(1 - m), m the k-th smallest score
(~ Beta(k, n - k + 1)); each masked token's cross-entropy weighs n / k. Draws come from
`rand` in sedd_jax's key order: u (drawn even when given), then the scores [B, L].
"""

from __future__ import annotations

import torch

from sedd_torch.diffusion.losses import TokenLosses, masked_ce_terms


def mask_counts(u, n):
    """k = 1 + floor(u * n) in 1..n for u [B] in [0, 1) and n [B] valid tokens: [B] long."""
    k = 1 + torch.floor(u.float() * n.float()).long()
    return torch.minimum(torch.clamp_min(k, 1), torch.clamp_min(n.long(), 1))


def counted_masks(scores, valid, k):
    """(masked [B, L] bool, m [B]): the k valid positions of smallest score and the k-th
    smallest valid score (a stable sort, as jnp.argsort)."""
    scores = torch.where(valid, scores, 2.0)
    order = torch.argsort(scores, dim=-1, stable=True)
    rank = torch.argsort(order, dim=-1, stable=True)
    kth = torch.gather(scores, -1, torch.gather(order, -1, (k - 1)[:, None]))
    return valid & (rank < k[:, None]), kth[:, 0]


def counted_corruption(rand, x0, valid, u, noise, sampling_eps: float, mask_id: int):
    """(sigma [B], dsigma' [B], x_t [B, L]): k of each row's valid tokens masked, sigma from
    the k-th smallest score clipped to the schedule's range, dsigma' = (n / k) expm1(sigma)
    (so `losses.masked_ce_terms` weighs by n / k). The scores are `rand(x0.shape)`."""
    n = valid.sum(dim=-1)
    k = mask_counts(u, n)
    masked, m = counted_masks(rand(tuple(x0.shape)).to(x0.device), valid, k)
    ones = torch.ones((), dtype=torch.float32, device=x0.device)
    lo, hi = noise(sampling_eps * ones)[0], noise(ones)[0]
    sigma = torch.clamp(-torch.log1p(-torch.clamp_max(m, 1.0 - 1e-7)), lo, hi)
    x_t = torch.where(masked, mask_id, x0)
    weight = torch.clamp_min(n, 1).float() / k.float()
    return sigma, weight * torch.expm1(sigma), x_t


def masked_ce_count_loss(
    logits_fn, graph, noise, x0, valid, rand, sampling_eps=1e-3, *, u=None
) -> TokenLosses:
    """One draw of the masked-count estimate: [B, L] terms and `t` = u [B]."""
    if not graph.absorb:
        raise ValueError("training.time_sampling=mask_count needs the absorbing graph")
    drawn = rand((x0.shape[0],)).to(x0.device)
    u = drawn if u is None else torch.as_tensor(u, device=x0.device)
    sigma, dsigma, x_t = counted_corruption(rand, x0, valid, u, noise, sampling_eps, graph.mask_id)
    terms = masked_ce_terms(logits_fn(x_t, sigma), graph, sigma, dsigma, x_t, x0, valid)
    return TokenLosses(terms, u)


def counted_pair_corruption(rand, batch, p_scored, l_scored, u, noise, sampling_eps, graphs):
    """The k masked tokens drawn from both tracks' scored positions together (one score
    draw over the concatenated pair), each track written with its own mask id:
    (sigma, dsigma', protein_t, ligand_t)."""
    split = batch["protein"].shape[1]
    x0 = torch.cat([batch["protein"], batch["ligand"]], dim=1)
    scored = torch.cat([p_scored, l_scored], dim=1)
    sigma, dsigma, x_t = counted_corruption(rand, x0, scored, u, noise, sampling_eps, -1)
    protein = torch.where(x_t[:, :split] == -1, graphs.protein.mask_id, x_t[:, :split])
    ligand = torch.where(x_t[:, split:] == -1, graphs.ligand.mask_id, x_t[:, split:])
    return sigma, dsigma, protein, ligand
