"""Mean (MDLM/MD4) and score (SEDD) parametrisations of an absorbing-graph network (twin
of sedd_jax/diffusion/parametrisation.py): log s_y = log p_y - log(expm1(sigma_bar))."""

from __future__ import annotations

import torch

PARAMETRISATIONS = ("score", "mean")


def _sigma(sigma, ndim: int) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    return sigma.reshape(tuple(sigma.shape) + (1,) * (ndim - sigma.ndim))


def mean_log_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log p(x0 = y | x_t) [B, L, V]: log-softmax over non-mask ids, -inf at the mask id."""
    is_mask = torch.arange(logits.shape[-1], device=logits.device) == mask_id
    return torch.log_softmax(torch.where(is_mask, -torch.inf, logits.float()), dim=-1)


def mean_to_log_score(logits, sigma, x_t, mask_id: int) -> torch.Tensor:
    """SEDD log-scores [B, L, V] from mean logits: 0 at the mask id and at unmasked rows."""
    log_p = mean_log_probs(logits, mask_id)
    log_ratio = -torch.log(torch.clamp(torch.expm1(_sigma(sigma, logits.ndim)), min=1e-30))
    is_mask_col = torch.arange(logits.shape[-1], device=logits.device) == mask_id
    scores = torch.where(is_mask_col, 0.0, log_p + log_ratio)
    return torch.where((x_t == mask_id)[..., None], scores, 0.0)


def as_log_score_fn(output_fn, parametrisation: str, mask_id: int):
    """fn(x_t, sigma) -> log-scores from the network's outputs, either parametrisation."""
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation={parametrisation!r}: expected one of {PARAMETRISATIONS}")
    if parametrisation == "score":
        return output_fn
    return lambda x, sigma: mean_to_log_score(output_fn(x, sigma), sigma, x, mask_id)


def as_dual_log_score_fn(output_fn, parametrisation: str, mask_ids):
    """The pair network's outputs (protein | None, ligand | None) as log-scores, each track
    mapped with its own mask id (`mask_ids` = (protein, ligand)) when mean-parametrised."""
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation={parametrisation!r}: expected one of {PARAMETRISATIONS}")
    if parametrisation == "score":
        return output_fn

    def score_fn(protein, ligand, sigma, protein_valid, ligand_valid, mode):
        outs = output_fn(protein, ligand, sigma, protein_valid, ligand_valid, mode)
        return tuple(
            None if out is None else mean_to_log_score(out, sigma, x, mask_id)
            for out, x, mask_id in zip(outs, (protein, ligand), mask_ids, strict=True)
        )

    return score_fn
