"""Joint protein–ligand diffusion: tasks and the two-track loss (the sampler:
`diffusion/joint_sampling.py`).

A pair is (protein x0 [B, Lp], ligand x0 [B, Ll]) with validity masks; each track has its
own graph (vocabulary). One time t (one sigma_bar) per pair drives both tracks. A `task`
says, per pair, which tracks are generated (corrupted, scored, sampled) and which are
visible to the network:

    task                   generated          visible
    joint                  protein, ligand    protein, ligand
    ligand_given_protein   ligand             protein (clean), ligand
    protein_given_ligand   protein            protein, ligand (clean)
    protein_only           protein            protein
    ligand_only            ligand             ligand

A clean context track is never masked, gets no loss, and is clamped during sampling; an
invisible track is hidden from the network by an all-false validity row (cross-attention
to it is then exactly zero, see `models/dual.py`). A `TaskMixture` draws the task per
pair inside the jitted step: only masks change between tasks, never the program.

A `DualScoreFn(protein_t, ligand_t, sigma [B], protein_valid, ligand_valid, mode) ->
(protein log-scores | None, ligand log-scores | None)` stands for the network; `mode` is
a task name (`DualTrackSEDD` modes), `joint` serving any mixture. Bind parameters with
`functools.partial(model.apply, {"params": params})`. A `LengthFn(context [B, Lc],
context_valid [B, Lc], task) -> logits [B, max_len + 1]` stands for the length heads
(`functools.partial(model.apply, {"params": params}, method="length_logits")`).

Length term. Given the context, the generated track's length is part of what is
modelled: -log p(x_gen | ctx) = -log p(L_gen | ctx) - log p(x_gen | L_gen, ctx). With a
length fn, each `ligand_given_protein` pair adds -log p(L_ligand | clean protein) to the
ligand track's loss sum (`protein_given_ligand`: -log p(L_protein | ligand) to the
protein's), so the optimised sum is the full conditional bound in nats per sequence;
other tasks add nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sedd_jax.common.tasks import (  # noqa: F401  (re-exported: their old home)
    CONDITIONAL_TRACKS,
    TASK_ROLES,
    TASKS,
    JointLoss,
    PairGraphs,
    Roles,
    TaskMixture,
)
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.curriculum import sigma_multiplier
from sedd_jax.diffusion.losses import TERMS, loss_times
from sedd_jax.diffusion.mask_count import counted_pair_corruption
from sedd_jax.models.length import length_nll

DualScoreFn = Callable[..., tuple[jax.Array | None, jax.Array | None]]
LengthFn = Callable[[jax.Array, jax.Array, str], jax.Array]


def draw_tasks(key: jax.Array, mixture: TaskMixture, batch: int) -> jax.Array:
    """Task ids [B] int32 (indices into TASKS), i.i.d. from the mixture.

    `key` is one key or per-example keys [B] (`diffusion/keys.py`).
    """
    logits = jnp.log(jnp.asarray(mixture.probs, jnp.float32))

    def categorical(k, n):
        return jax.random.categorical(k, logits, shape=(n,)).astype(jnp.int32)

    return keys.draw(categorical, key, batch)


def task_roles(task_ids: jax.Array) -> Roles:
    """Roles of each pair from its task id [B]."""
    table = jnp.asarray(list(TASK_ROLES.values()), dtype=bool)  # [tasks, 4]
    return Roles(*table[task_ids].T)


def joint_per_token_loss(
    score_fn: DualScoreFn,
    graphs: PairGraphs,
    noise,
    batch: dict,
    t: jax.Array,
    task_ids: jax.Array,
    key: jax.Array,
    mode: str = "joint",
    *,
    sigma_scale: jax.Array | float = 1.0,
    loss_type: str = "score_entropy",
    count_u: jax.Array | None = None,
    sampling_eps: float = 1e-3,
):
    """dsigma'(t_b) * score entropy per token, for given times t [B] and tasks [B]
    (`loss_type="masked_ce"`: the network gives mean logits and each token's term is
    MDLM's masked cross-entropy, `losses.masked_ce_terms`; absorbing graphs only).

    batch: protein, protein_valid [B, Lp]; ligand, ligand_valid [B, Ll]. Generated tracks
    are corrupted with `protein_key, ligand_key = jax.random.split(key)` exactly as
    `graph.sample_transition` does for a single track (per-example keys [B] split and
    corrupt row by row, `diffusion/keys.py`); context tracks stay clean.
    `mode` is the network mode: `joint` serves any tasks; a single task's own mode
    skips the computation it does not need. sigma' = sigma_scale * sigma_bar(t) and
    dsigma' = sigma_scale * dsigma(t), as in `losses.per_token_loss` (curriculum).
    Given `count_u` [B] (masked_ce only; `t` is then unused), the masked-count estimate
    instead: k of a pair's scored tokens masked, `mask_count.counted_pair_corruption`.

    Returns (protein_loss [B, Lp], ligand_loss [B, Ll], protein_scored [B, Lp],
    ligand_scored [B, Ll]); *_scored are the valid tokens of generated tracks.
    """
    roles = task_roles(task_ids)
    p_valid, l_valid = batch["protein_valid"], batch["ligand_valid"]
    p_scored = p_valid & roles.protein_generated[:, None]
    l_scored = l_valid & roles.ligand_generated[:, None]
    if count_u is not None:
        sigma, dsigma, p_t, l_t = counted_pair_corruption(
            key, batch, p_scored, l_scored, count_u, noise, sampling_eps, graphs
        )
    else:
        protein_key, ligand_key = keys.split(key)
        sigma, dsigma = noise(t)
        sigma, dsigma = sigma_scale * sigma, sigma_scale * dsigma
        p_t = keys.rowwise(
            graphs.protein.sample_transition, protein_key, batch["protein"], sigma, p_scored
        )
        l_t = keys.rowwise(
            graphs.ligand.sample_transition, ligand_key, batch["ligand"], sigma, l_scored
        )
    p_seen = p_valid & roles.protein_visible[:, None]
    l_seen = l_valid & roles.ligand_visible[:, None]
    p_score, l_score = score_fn(p_t, l_t, sigma, p_seen, l_seen, mode)
    terms = TERMS[loss_type]

    def track_loss(graph, score, x_t, x0, scored):
        if score is None:
            return jnp.zeros(x0.shape, jnp.float32)
        return terms(score, graph, sigma, dsigma, x_t, x0, scored)

    p_loss = track_loss(graphs.protein, p_score, p_t, batch["protein"], p_scored)
    l_loss = track_loss(graphs.ligand, l_score, l_t, batch["ligand"], l_scored)
    return p_loss, l_loss, p_scored, l_scored


def conditional_length_nll(length_fn: LengthFn, batch: dict, task_ids: jax.Array) -> dict:
    """{generated track: -log p(L | clean context) [B]} on the rows of its conditional
    task (`CONDITIONAL_TRACKS`) with L >= 1 valid tokens (filler rows of a padded
    evaluation batch have none), 0 on every other row."""
    out = {}
    for task, (context, generated) in CONDITIONAL_TRACKS.items():
        lengths = batch[f"{generated}_valid"].sum(axis=-1)
        nll = length_nll(length_fn(batch[context], batch[f"{context}_valid"], task), lengths)
        out[generated] = jnp.where((task_ids == TASKS.index(task)) & (lengths > 0), nll, 0.0)
    return out


class PairLosses(NamedTuple):
    """One draw of the pair loss: per-token losses of each track (0 where not scored),
    the scored tokens (valid tokens of generated tracks), per pair its time and task, and
    with a length fn each track's length term [B] (0 off its conditional task)."""

    protein: jax.Array  # [B, Lp]
    ligand: jax.Array  # [B, Ll]
    protein_scored: jax.Array  # [B, Lp] bool
    ligand_scored: jax.Array  # [B, Ll] bool
    t: jax.Array  # [B]
    task_ids: jax.Array  # [B] int32
    protein_length: jax.Array | None = None  # [B] -log p(L_protein | ligand)
    ligand_length: jax.Array | None = None  # [B] -log p(L_ligand | protein)

    def sums(self) -> JointLoss:
        """Per-track sums (length terms included) and token counts, to average over
        micro-batches and devices."""
        protein_sum, ligand_sum = self.protein.sum(), self.ligand.sum()
        if self.protein_length is not None:
            protein_sum = protein_sum + self.protein_length.sum()
            ligand_sum = ligand_sum + self.ligand_length.sum()
        return JointLoss(
            protein_sum,
            self.protein_scored.sum().astype(jnp.float32),
            ligand_sum,
            self.ligand_scored.sum().astype(jnp.float32),
        )

    def length_sums(self) -> dict:
        """Length-term sums and the number of rows that carry them, per generated track:
        {"length_<track>_sum", "length_<track>_rows"} (empty without a length fn)."""
        if self.protein_length is None:
            return {}
        out = {}
        for task, (_, track) in CONDITIONAL_TRACKS.items():
            scored = getattr(self, f"{track}_scored").any(axis=-1)
            rows = (self.task_ids == TASKS.index(task)) & scored
            out[f"length_{track}_sum"] = getattr(self, f"{track}_length").sum()
            out[f"length_{track}_rows"] = rows.sum().astype(jnp.float32)
        return out


def joint_score_entropy_loss(
    score_fn: DualScoreFn,
    graphs: PairGraphs,
    noise,
    batch: dict,
    key: jax.Array,
    tasks: TaskMixture | jax.Array,
    sampling_eps: float = 1e-3,
    *,
    mode: str | None = None,
    step: jax.Array | int = 0,
    curriculum=None,
    length_fn: LengthFn | None = None,
    t: jax.Array | None = None,
    loss_type: str = "score_entropy",
    count_u: jax.Array | None = None,
) -> PairLosses:
    """The pair loss of training and evaluation: one time and one task per pair.

    `tasks` is a `TaskMixture` (each pair's task drawn from it) or task ids [B] (fixed,
    e.g. one task per evaluation). Keys (`key`: one key or per-example keys [B]): with a
    mixture `task_key, key = split(key)` and the tasks come from `task_key`; then
    `time_key, noise_key = split(key)` give the (curriculum) times and the corruption
    (`protein_key, ligand_key = split(noise_key)`, `joint_per_token_loss`). With
    `curriculum` at `step` the times are biased and sigma is scaled for both tracks, as
    in `losses.score_entropy_loss`. `mode`: the network mode (default: the mixture's, or
    `joint` for given ids). `length_fn` (runs with `model.length_head`): the conditional
    tasks' length terms (`conditional_length_nll`, no random draw). Given times `t` [B]
    (e.g. `losses.antithetic_times`) replace the drawn ones; the corruption key is the same
    either way. `loss_type`: "score_entropy" or "masked_ce" (mean logits, MDLM's term; see
    `joint_per_token_loss`). Given `count_u` [B] (masked_ce, no curriculum), the
    masked-count estimate of the same bound (`diffusion/mask_count.py`) and `t` reports
    u. The optimised loss is `sums().total_sum / sums().total_count`.
    """
    size = batch["protein"].shape[0]
    if isinstance(tasks, TaskMixture):
        task_key, key = keys.split(key)
        task_ids = draw_tasks(task_key, tasks, size)
        mode = mode or tasks.mode
    else:
        task_ids = jnp.asarray(tasks, jnp.int32)
        mode = mode or "joint"
    drawn, noise_key = loss_times(key, size, sampling_eps, step, curriculum)
    t = drawn if t is None else t
    t = t if count_u is None else count_u
    p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
        score_fn,
        graphs,
        noise,
        batch,
        t,
        task_ids,
        noise_key,
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
