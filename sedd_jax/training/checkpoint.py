"""Orbax checkpoints of the whole train state, plus a JSON of run metadata.

Layout: `<workdir>/checkpoints/<step>/{state, meta}`. `state` is the TrainState (params,
EMA, optimizer, step, PRNG); `meta` holds the config and tokenizer vocabularies so that a
checkpoint can be sampled or converted without the original files. Saves are
asynchronous; `restore_latest` falls back to an older step when the newest is unreadable.

This module is orbax only: reading a finished run (its meta, its weights, a twin's `.pt`)
is `sedd_jax.runs.open_run`'s, on top of `sedd_jax.conversion.orbax_io`.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def make_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=async_save,
    )
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict, force: bool = False):
    """Save the state (global arrays, `parallel.Wrapper.host_state`) and metadata at `step`.

    Every process calls this; orbax writes each array shard once and coordinates the
    processes.
    """
    return manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=force,
    )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, shardings=None):
    """Restore (state, meta) at `step`, shaped and typed like `abstract_state`.

    `shardings` (a tree like the state, e.g. a parallel wrapper's `state_shardings`) lays
    the restored arrays out on the run's mesh, whatever mesh or number of hosts wrote
    them: checkpoints hold the logical (global) arrays. A checkpoint written before the
    TrainState had `loss_scale` restores the rest and keeps `abstract_state.loss_scale`
    (which must then hold values, as a fresh state does).
    """
    if shardings is None:
        target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    else:
        target = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            abstract_state,
            shardings,
        )
    try:
        restored = _restore_item(manager, step, target)
    except Exception:
        if not hasattr(target, "loss_scale"):
            raise
        try:
            legacy = {k: getattr(target, k) for k in LEGACY_FIELDS}
            restored = _restore_item(manager, step, legacy)
        except Exception:
            pass
        else:
            log.warning("step %d predates loss scaling: the loss scale starts afresh", step)
            return abstract_state.replace(**restored.state), restored.meta
        raise
    return restored.state, restored.meta


LEGACY_FIELDS = ("step", "params", "ema_params", "opt_state", "rng")  # before `loss_scale`


def _restore_item(manager, step, target):
    return manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        ),
    )


class CheckpointMismatchError(RuntimeError):
    """Checkpoints exist but none matches the state the config builds."""


def restore_latest(manager: ocp.CheckpointManager, abstract_state, shardings=None):
    """Newest readable checkpoint as (state, meta), or None when there is none.

    A corrupt newest step is reported and the previous one is tried. When checkpoints
    exist but none can be restored (e.g. the config changed the model's shapes), this
    raises rather than silently starting over in a directory that holds a run.
    """
    errors = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore(manager, step, abstract_state, shardings)
        except Exception as error:  # orbax raises many types for damaged files
            log.warning("checkpoint step %d unreadable (%s); trying an older one", step, error)
            errors.append(f"step {step}: {error}")
    if errors:
        raise CheckpointMismatchError(
            f"{manager.directory} holds checkpoints, but none matches this config's train "
            f"state (did the model or optimizer config change? use a new --workdir). "
            f"Newest error: {errors[0][:500]}"
        )
    return None


def restore_raw_state(workdir: str, step: int) -> dict:
    """The saved TrainState of `step` as a nested dict of arrays (no target needed).

    Arrays written on another topology (more devices or hosts) land on this process's
    first device.
    """
    manager = make_manager(workdir, keep=1_000_000, async_save=False)
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(fallback_sharding=here))
    )
    return restored.state
