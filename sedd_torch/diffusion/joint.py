"""Joint protein–ligand diffusion (twin of sedd_jax/diffusion/joint.py).

The task tables and the mixture (`TASK_ROLES`, `TASKS`, `TaskMixture`, `PairGraphs`,
`JointLoss`) are sedd_jax's; this file translates the tensor code: task roles and the
two-track loss (the sampler: `diffusion/joint_sampling.py`). Draws come from `rand`
in sedd_jax's key order (protein corruption, then ligand), or as explicit uniforms for
parity runs.

A `DualScoreFn(protein_t, ligand_t, sigma [B], protein_valid, ligand_valid, mode) ->
(protein log-scores | None, ligand log-scores | None)` stands for the network; the twin's
`DualTrackSEDD.forward` has that signature. A length fn `(context, context_valid, task)
-> logits [B, max_len + 1]` (`DualTrackSEDD.length_logits`) adds the conditional tasks'
length terms -log p(L_gen | context) to the generated track's sum, as sedd_jax.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sedd_jax.common.tasks import (  # noqa: F401  (re-exported)
    CONDITIONAL_TRACKS,
    TASK_ROLES,
    TASKS,
    JointLoss,
    PairGraphs,
    Roles,
    TaskMixture,
)
from sedd_torch.diffusion.curriculum import sigma_multiplier
from sedd_torch.diffusion.losses import TERMS, loss_times
from sedd_torch.diffusion.mask_count import counted_pair_corruption
from sedd_torch.models.length import length_nll


def draw_tasks(rand, mixture: TaskMixture, batch: int) -> torch.Tensor:
    """Task ids [B] long, i.i.d. from the mixture (inverse CDF of one uniform each)."""
    cdf = torch.cumsum(torch.tensor(mixture.probs, dtype=torch.float32), 0)
    ids = torch.searchsorted(cdf, rand((batch,)).cpu(), right=True)
    return torch.clamp_max(ids, len(TASKS) - 1)


def task_roles(task_ids: torch.Tensor) -> Roles:
    """Roles of each pair from its task id [B]."""
    table = torch.tensor(list(TASK_ROLES.values()), dtype=torch.bool, device=task_ids.device)
    return Roles(*table[task_ids.long()].T)


def joint_per_token_loss(
    score_fn,
    graphs,
    noise,
    batch,
    t,
    task_ids,
    rand=None,
    mode="joint",
    *,
    sigma_scale=1.0,
    loss_type="score_entropy",
    count_u=None,
    sampling_eps=1e-3,
):
    """dsigma'(t_b) * score entropy per token, for given times t [B] and tasks [B]
    (`loss_type="masked_ce"`: mean logits and MDLM's term, `losses.masked_ce_terms`).
    Given `count_u` [B], the masked-count corruption of both tracks together instead
    (`mask_count.counted_pair_corruption`; `t` unused).

    Returns (protein_loss [B, Lp], ligand_loss [B, Ll], protein_scored, ligand_scored).
    """
    roles = task_roles(task_ids)
    p_valid, l_valid = batch["protein_valid"], batch["ligand_valid"]
    p_scored = p_valid & roles.protein_generated[:, None]
    l_scored = l_valid & roles.ligand_generated[:, None]
    if count_u is not None:
        sigma, dsigma, p_t, l_t = counted_pair_corruption(
            rand, batch, p_scored, l_scored, count_u, noise, sampling_eps, graphs
        )
    else:
        sigma, dsigma = noise(t)
        sigma_scale = torch.as_tensor(sigma_scale, dtype=torch.float32, device=sigma.device)
        sigma, dsigma = sigma_scale * sigma, sigma_scale * dsigma
        p_t = graphs.protein.sample_transition(rand, batch["protein"], sigma, p_scored)
        l_t = graphs.ligand.sample_transition(rand, batch["ligand"], sigma, l_scored)
    p_seen = p_valid & roles.protein_visible[:, None]
    l_seen = l_valid & roles.ligand_visible[:, None]
    p_score, l_score = score_fn(p_t, l_t, sigma, p_seen, l_seen, mode)
    terms = TERMS[loss_type]

    def track_loss(graph, score, x_t, x0, scored):
        if score is None:
            return torch.zeros(x0.shape, dtype=torch.float32, device=x0.device)
        return terms(score, graph, sigma, dsigma, x_t, x0, scored)

    p_loss = track_loss(graphs.protein, p_score, p_t, batch["protein"], p_scored)
    l_loss = track_loss(graphs.ligand, l_score, l_t, batch["ligand"], l_scored)
    return p_loss, l_loss, p_scored, l_scored


def conditional_length_nll(length_fn, batch, task_ids) -> dict:
    """{generated track: -log p(L | clean context) [B]} on the rows of its conditional
    task with L >= 1, 0 elsewhere (sedd_jax's `conditional_length_nll`)."""
    out = {}
    for task, (context, generated) in CONDITIONAL_TRACKS.items():
        lengths = batch[f"{generated}_valid"].sum(-1)
        nll = length_nll(length_fn(batch[context], batch[f"{context}_valid"], task), lengths)
        rows = (task_ids == TASKS.index(task)) & (lengths > 0)
        out[generated] = torch.where(rows, nll, 0.0)
    return out


class PairLosses(NamedTuple):
    """One draw of the pair loss (sedd_jax's `PairLosses`): per-token losses of each
    track, the scored tokens, per pair its time and task, and with a length fn each
    track's length term [B]."""

    protein: torch.Tensor  # [B, Lp]
    ligand: torch.Tensor  # [B, Ll]
    protein_scored: torch.Tensor  # [B, Lp] bool
    ligand_scored: torch.Tensor  # [B, Ll] bool
    t: torch.Tensor  # [B]
    task_ids: torch.Tensor  # [B]
    protein_length: torch.Tensor | None = None  # [B] -log p(L_protein | ligand)
    ligand_length: torch.Tensor | None = None  # [B] -log p(L_ligand | protein)

    def sums(self) -> JointLoss:
        """Per-track sums (length terms included) and token counts."""
        protein_sum, ligand_sum = self.protein.sum(), self.ligand.sum()
        if self.protein_length is not None:
            protein_sum = protein_sum + self.protein_length.sum()
            ligand_sum = ligand_sum + self.ligand_length.sum()
        return JointLoss(
            protein_sum,
            self.protein_scored.sum().float(),
            ligand_sum,
            self.ligand_scored.sum().float(),
        )

    def length_sums(self) -> dict:
        """{"length_<track>_sum", "length_<track>_rows"} floats (empty without heads)."""
        if self.protein_length is None:
            return {}
        out = {}
        for task, (_, track) in CONDITIONAL_TRACKS.items():
            scored = getattr(self, f"{track}_scored").any(-1)
            rows = (self.task_ids == TASKS.index(task)) & scored
            out[f"length_{track}_sum"] = float(getattr(self, f"{track}_length").detach().sum())
            out[f"length_{track}_rows"] = float(rows.sum())
        return out


def joint_score_entropy_loss(
    score_fn,
    graphs,
    noise,
    batch,
    rand,
    tasks,
    sampling_eps=1e-3,
    *,
    mode=None,
    step=0,
    curriculum=None,
    length_fn=None,
    t=None,
    loss_type="score_entropy",
    count_u=None,
) -> PairLosses:
    """The pair loss of training and evaluation: one time and one task per pair.

    `tasks`: a `TaskMixture` (drawn per pair) or task ids [B]. Draws in sedd_jax's key
    order: the tasks (mixture only), the (curriculum) times, the protein corruption, the
    ligand corruption. `mode`: the network mode (default: the mixture's, or `joint`).
    `length_fn`: the conditional tasks' length terms (no draw). Given times `t` [B]
    replace the drawn ones (drawn all the same: the draw order stays sedd_jax's).
    `loss_type`: "score_entropy" or "masked_ce". Given `count_u` [B], the masked-count
    estimate (times drawn all the same; `t` reports u).
    """
    device = batch["protein"].device
    size = batch["protein"].shape[0]
    if isinstance(tasks, TaskMixture):
        task_ids = draw_tasks(rand, tasks, size).to(device)
        mode = mode or tasks.mode
    else:
        task_ids = torch.as_tensor(tasks, device=device)
        mode = mode or "joint"
    drawn = loss_times(rand, size, sampling_eps, step, curriculum).to(device)
    t = drawn if t is None else torch.as_tensor(t, device=device)
    t = t if count_u is None else torch.as_tensor(count_u, device=device)
    p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
        score_fn,
        graphs,
        noise,
        batch,
        t,
        task_ids,
        rand,
        mode,
        sigma_scale=sigma_multiplier(step, curriculum),
        loss_type=loss_type,
        count_u=count_u,
        sampling_eps=sampling_eps,
    )
    out = PairLosses(p_loss, l_loss, p_scored, l_scored, t, task_ids)
    if length_fn is None:
        return out
    lengths = conditional_length_nll(length_fn, batch, task_ids)
    return out._replace(protein_length=lengths["protein"], ligand_length=lengths["ligand"])
