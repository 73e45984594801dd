"""The training objectives of the two model families, for `training/step.train_step`.

`objective(params, batch, keys [b], step, dropout_key) -> (loss_sum, count, aux)` of one
micro-batch: the sum of dsigma-weighted score entropies over its scored tokens, their
number, and auxiliary sums (summed over micro-batches and averaged over devices like the
loss). `keys` holds one key per row and `batch["example_id"]` [b] keys the dropout masks,
so every draw follows the example, not the device. `step_metrics(aux, step)` turns the
summed aux into metrics. The loss itself is the family's one loss function
(`losses.score_entropy_loss`, `joint.joint_score_entropy_loss`); the curriculum
(`config.curriculum`, a pure function of the step) goes in with the step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sedd_jax.common.curriculum import check_time_sampling
from sedd_jax.common.tasks import CONDITIONAL_TRACKS, TASKS
from sedd_jax.diffusion.curriculum import check_curriculum, progress
from sedd_jax.diffusion.joint import joint_score_entropy_loss
from sedd_jax.diffusion.losses import LOSSES, antithetic_times, stratified_u
from sedd_jax.diffusion.mask_count import masked_ce_count_loss


def check_loss_type(loss_type: str, graph) -> str:
    """`loss.type`, validated: masked_ce is the absorbing graph's (uniform: score_entropy)."""
    if loss_type not in LOSSES:
        raise ValueError(f"loss.type={loss_type!r}: expected one of {sorted(LOSSES)}")
    if loss_type == "masked_ce" and not graph.absorb:
        raise ValueError("loss.type=masked_ce needs graph.type=absorbing; uniform: score_entropy")
    return loss_type


def time_override(time_sampling: str, global_batch: int, sampling_eps: float, curriculum):
    """fn(batch, dropout_key) -> times [b] or None (None: the loss draws its own; mask_count
    draws no time, see `count_strata`). The antithetic offset u0 comes from the step's
    dropout key, the same on every device."""
    if check_time_sampling(time_sampling, curriculum) != "antithetic":
        return lambda batch, dropout_key: None

    def times(batch, dropout_key):
        key = jax.random.fold_in(dropout_key, 1)
        return antithetic_times(key, batch["example_id"], global_batch, sampling_eps)

    return times


def count_strata(time_sampling: str, loss_type: str, global_batch: int):
    """fn(batch, dropout_key) -> u [b] for `time_sampling=mask_count`, else None: the
    masked-count estimate's u (`diffusion/mask_count.py`), stratified over the global batch
    like antithetic times (offset from the step's dropout key, one bin per example id)."""
    if time_sampling != "mask_count":
        return None
    if loss_type != "masked_ce":
        raise ValueError("training.time_sampling=mask_count needs loss.type=masked_ce")

    def strata(batch, dropout_key):
        key = jax.random.fold_in(dropout_key, 1)
        return stratified_u(key, batch["example_id"], global_batch)

    return strata


def _count_loss(fn, graph, noise, x0, valid, key, sampling_eps, *, step, curriculum, t):
    """`masked_ce_count_loss` called as a `LOSSES` entry, `t` carrying u (no curriculum)."""
    del step, curriculum
    return masked_ce_count_loss(fn, graph, noise, x0, valid, key, sampling_eps, u=t)


def _training_apply(model, params, batch, dropout_key, **bound):
    """`model.apply` bound to `params` in training mode, called as the network: dropout on,
    each row's masks keyed by `dropout_key` and its `batch["example_id"]`; `bound` fixes
    further keyword arguments (the single track's `valid`)."""
    return functools.partial(
        model.apply,
        {"params": params},
        deterministic=False,
        rngs={"dropout": dropout_key},
        example_ids=batch["example_id"],
        **bound,
    )


def single_track_objective(
    model,
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
    loss_fn = LOSSES[check_loss_type(loss_type, graph)]
    override = time_override(time_sampling, global_batch, sampling_eps, curriculum)
    strata = count_strata(time_sampling, loss_type, global_batch)
    if strata is not None:
        loss_fn, override = _count_loss, strata

    def objective(params, batch, key, step, dropout_key):
        tokens, valid = batch["tokens"], batch["valid"]

        out = loss_fn(
            _training_apply(model, params, batch, dropout_key, valid=valid),
            graph,
            noise,
            tokens,
            valid,
            key,
            sampling_eps,
            step=step,
            curriculum=curriculum,
            t=override(batch, dropout_key),
        )
        aux = {"t_sum": out.t.sum(), "sequences": jnp.float32(out.t.shape[0])}
        return out.losses.sum(), valid.sum().astype(jnp.float32), aux

    def step_metrics(aux, step):
        return {
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": progress(step, curriculum),
        }

    return objective, step_metrics


def length_fn_of(model, params):
    """The model's length heads bound to `params` (`joint.LengthFn`), or None for a model
    without them (`model.length_head` off, older checkpoints)."""
    if not getattr(model, "length_head", False):
        return None
    return functools.partial(model.apply, {"params": params}, method="length_logits")


def pair_track_objective(
    model,
    graphs,
    noise,
    mixture,
    sampling_eps: float,
    curriculum=None,
    loss_type="score_entropy",
    time_sampling="uniform",
    global_batch: int = 1,
):
    """(objective, step_metrics) of the pair loss (`joint_score_entropy_loss`): per pair a
    task from `mixture`, a (curriculum) time and the corruption of the generated tracks;
    per-track losses are reported beside the total. With the model's length heads the
    conditional rows' length terms are in the track sums (so `loss_ligand` is the full
    conditional bound per token) and `length_nll_<track>` reports -log p(L | context) in
    nats per conditional pair, for each direction the mixture trains. `loss_type` and
    `time_sampling` as in `single_track_objective` (masked_ce: both graphs absorbing)."""
    curriculum = check_curriculum(curriculum)
    for graph in graphs:
        check_loss_type(loss_type, graph)
    override = time_override(time_sampling, global_batch, sampling_eps, curriculum)
    strata = count_strata(time_sampling, loss_type, global_batch)
    trained = [
        track
        for task, (_, track) in CONDITIONAL_TRACKS.items()
        if getattr(model, "length_head", False) and mixture.probs[TASKS.index(task)] > 0
    ]

    def objective(params, batch, key, step, dropout_key):
        out = joint_score_entropy_loss(
            _training_apply(model, params, batch, dropout_key),
            graphs,
            noise,
            batch,
            key,
            mixture,
            sampling_eps,
            step=step,
            curriculum=curriculum,
            length_fn=length_fn_of(model, params),
            t=override(batch, dropout_key),
            loss_type=loss_type,
            count_u=None if strata is None else strata(batch, dropout_key),
        )
        sums = out.sums()
        aux = {
            **sums._asdict(),
            **out.length_sums(),
            "t_sum": out.t.sum(),
            "sequences": jnp.float32(out.t.shape[0]),
        }
        return sums.total_sum, sums.total_count, aux

    def step_metrics(aux, step):
        lengths = {
            f"length_nll_{track}": aux[f"length_{track}_sum"]
            / jnp.maximum(aux[f"length_{track}_rows"], 1.0)
            for track in trained
        }
        return {
            "loss_protein": aux["protein_sum"] / jnp.maximum(aux["protein_count"], 1.0),
            "loss_ligand": aux["ligand_sum"] / jnp.maximum(aux["ligand_count"], 1.0),
            **lengths,
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": progress(step, curriculum),
        }

    return objective, step_metrics
