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
from sedd_torch.diffusion.losses import LOSSES, antithetic_times


def time_override(time_sampling: str, global_batch: int, sampling_eps: float, curriculum):
    """fn(batch, rand, step) -> times [b] or None (None: the loss draws its own).
    Antithetic: the step's offset u0 is drawn from `rand` by its first micro-batch, before
    the loss's draws, and kept for the step's other micro-batches (sedd_jax takes it from
    the step's dropout key, shared by every micro-batch); the times are
    `losses.antithetic_times` of the rows' `example_id`."""
    if check_time_sampling(time_sampling, curriculum) == "uniform":
        return lambda batch, rand, step: None
    offset = {}

    def times(batch, rand, step):
        if offset.get("step") != int(step):
            offset.update(step=int(step), u0=rand((1,))[0])
        return antithetic_times(offset["u0"], batch["example_id"], global_batch, sampling_eps)

    return times


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
