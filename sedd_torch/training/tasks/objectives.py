"""The training objectives of the two model families (twin of
sedd_jax/training/tasks/objectives.py), for `training/step.train_step`.

`objective(model, batch, rand, step) -> (loss_sum, count, aux)` of one micro-batch: the
sum of dsigma-weighted score entropies over scored tokens (a tensor with a gradient),
their number and auxiliary float sums; `step_metrics(aux, step)`. The loss is the
family's one loss function (`losses.score_entropy_loss`,
`joint.joint_score_entropy_loss`), with the curriculum at the step.
"""

from __future__ import annotations

from sedd_jax.common.curriculum import check_time_sampling
from sedd_jax.common.tasks import CONDITIONAL_TRACKS, TASKS
from sedd_torch.diffusion.curriculum import check_curriculum, progress
from sedd_torch.diffusion.joint import joint_score_entropy_loss
from sedd_torch.diffusion.losses import LOSSES, antithetic_times, stratified_u
from sedd_torch.diffusion.mask_count import masked_ce_count_loss


def time_override(time_sampling: str, global_batch: int, sampling_eps: float, curriculum):
    """fn(batch, rand, step) -> times [b] or None (None: the loss draws its own).
    Antithetic: the step's offset u0 is drawn from `rand` by its first micro-batch, before
    the loss's draws, and kept for the step's other micro-batches (sedd_jax takes it from
    the step's dropout key, shared by every micro-batch); the times are
    `losses.antithetic_times` of the rows' `example_id`."""
    if check_time_sampling(time_sampling, curriculum) != "antithetic":
        return lambda batch, rand, step: None
    offset = step_offset()

    def times(batch, rand, step):
        u0 = offset(rand, step)
        return antithetic_times(u0, batch["example_id"], global_batch, sampling_eps)

    return times


def step_offset():
    """fn(rand, step) -> u0: drawn from `rand` at a step's first call, kept for its other
    micro-batches."""
    offset = {}

    def u0(rand, step):
        if offset.get("step") != int(step):
            offset.update(step=int(step), u0=rand((1,))[0])
        return offset["u0"]

    return u0


def count_strata(time_sampling: str, loss_type: str, global_batch: int):
    """fn(batch, rand, step) -> u [b] for `time_sampling=mask_count` (sedd_jax's
    `count_strata`: (u0 + id / B) mod 1, u0 as the antithetic offset), else None."""
    if time_sampling != "mask_count":
        return None
    if loss_type != "masked_ce":
        raise ValueError("training.time_sampling=mask_count needs loss.type=masked_ce")
    offset = step_offset()

    def strata(batch, rand, step):
        return stratified_u(offset(rand, step), batch["example_id"], global_batch)

    return strata


def _count_loss(fn, graph, noise, x0, valid, rand, sampling_eps, *, step, curriculum, t):
    """`masked_ce_count_loss` called as a `LOSSES` entry, `t` carrying u."""
    del step, curriculum
    return masked_ce_count_loss(fn, graph, noise, x0, valid, rand, sampling_eps, u=t)


def single_track_objective(
    graph,
    noise,
    sampling_eps: float,
    curriculum=None,
    loss_type="score_entropy",
    time_sampling="uniform",
    global_batch: int = 1,
):
    """(objective, step_metrics) of the single-track loss (`losses.LOSSES[loss_type]`),
    times drawn per row ("uniform") or stratified over the global batch ("antithetic")."""
    curriculum = check_curriculum(curriculum)
    if loss_type == "masked_ce" and not graph.absorb:
        raise ValueError("loss.type=masked_ce needs graph.type=absorbing; uniform: score_entropy")
    loss_fn = LOSSES[loss_type]
    override = time_override(time_sampling, global_batch, sampling_eps, curriculum)
    strata = count_strata(time_sampling, loss_type, global_batch)
    if strata is not None:
        loss_fn, override = _count_loss, strata

    def objective(model, batch, rand, step):
        tokens, valid = batch["tokens"], batch["valid"]

        def log_score_fn(x, sigma):
            return model(x, sigma, valid)

        t = override(batch, rand, step)
        out = loss_fn(
            log_score_fn,
            graph,
            noise,
            tokens,
            valid,
            rand,
            sampling_eps,
            step=step,
            curriculum=curriculum,
            t=t,
        )
        aux = {"t_sum": float(out.t.sum()), "sequences": float(out.t.shape[0])}
        return out.losses.sum(), valid.sum().float(), aux

    def step_metrics(aux, step):
        return {
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": float(progress(step, curriculum)),
        }

    return objective, step_metrics


def length_fn_of(model):
    """The model's `length_logits`, or None without length heads."""
    return model.length_logits if getattr(model, "length_head", False) else None


def pair_track_objective(
    graphs,
    noise,
    mixture,
    sampling_eps: float,
    curriculum=None,
    length_head: bool = False,
    loss_type: str = "score_entropy",
    time_sampling: str = "uniform",
    global_batch: int = 1,
):
    """(objective, step_metrics) of the pair loss (`joint_score_entropy_loss`): per pair a
    task, then a (curriculum) time, then the protein and the ligand corruption, in that
    order of draws; the scaled sigma corrupts, conditions and weights both tracks. With
    the model's length heads the conditional rows' length terms join the track sums and
    `length_nll_<track>` (nats per pair) is reported for each direction trained.
    `loss_type`: "score_entropy" or "masked_ce" (mean logits; absorbing graphs);
    `time_sampling` as in `single_track_objective`."""
    curriculum = check_curriculum(curriculum)
    override = time_override(time_sampling, global_batch, sampling_eps, curriculum)
    strata = count_strata(time_sampling, loss_type, global_batch)
    trained = [
        track
        for task, (_, track) in CONDITIONAL_TRACKS.items()
        if length_head and mixture.probs[TASKS.index(task)] > 0
    ]

    def objective(model, batch, rand, step):
        t = override(batch, rand, step)
        out = joint_score_entropy_loss(
            model,
            graphs,
            noise,
            batch,
            rand,
            mixture,
            sampling_eps,
            step=step,
            curriculum=curriculum,
            length_fn=length_fn_of(model),
            t=t,
            loss_type=loss_type,
            count_u=None if strata is None else strata(batch, rand, step),
        )
        sums = out.sums()
        aux = {
            "protein_sum": float(sums.protein_sum.detach()),
            "protein_count": float(sums.protein_count),
            "ligand_sum": float(sums.ligand_sum.detach()),
            "ligand_count": float(sums.ligand_count),
            **out.length_sums(),
            "t_sum": float(out.t.sum()),
            "sequences": float(out.t.shape[0]),
        }
        return sums.total_sum, sums.total_count, aux

    def step_metrics(aux, step):
        return {
            "loss_protein": aux["protein_sum"] / max(aux["protein_count"], 1.0),
            "loss_ligand": aux["ligand_sum"] / max(aux["ligand_count"], 1.0),
            **{
                f"length_nll_{track}": aux[f"length_{track}_sum"]
                / max(aux[f"length_{track}_rows"], 1.0)
                for track in trained
            },
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": float(progress(step, curriculum)),
        }

    return objective, step_metrics
