"""Orbax checkpoints of the whole train state, plus a JSON of run metadata.

Layout: `<workdir>/checkpoints/<step>/{state, meta}`. `state` is the TrainState (params,
EMA, optimizer, step, PRNG); `meta` holds the config and tokenizer vocabularies so that a
checkpoint can be sampled or converted without the original files. Saves are
asynchronous and a declined save raises; `restore_latest` falls back to an older step when
the newest is unreadable and moves the unreadable steps aside.

This module is orbax only: reading a finished run (its meta, its weights, a twin's `.pt`)
is `sedd_jax.runs.open_run`'s, on top of `sedd_jax.conversion.orbax_io`.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sedd_jax.common.errors import (  # noqa: F401  (re-exported)
    CheckpointMismatchError,
    checkpoint_mismatch,
)

log = logging.getLogger(__name__)


def make_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=async_save,
    )
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


class CheckpointNotSavedError(RuntimeError):
    """orbax declined to write a step (e.g. one at or past it is already on disk)."""


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict, force: bool = False):
    """Save the state (global arrays, `parallel.Wrapper.host_state`) and metadata at `step`.

    Every process calls this; orbax writes each array shard once and coordinates the
    processes. A save that orbax declines raises: a run must never report a checkpoint
    that is not there.
    """
    saved = manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=force,
    )
    if not saved:
        raise CheckpointNotSavedError(
            f"orbax did not save step {step} in {manager.directory} (steps there: "
            f"{manager.all_steps()}); move the steps >= {step} out of that directory, or "
            f"resume in a new --workdir"
        )
    return saved


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


UNREADABLE = "checkpoints.unreadable"  # beside checkpoints/, outside orbax's view


def restore_latest(manager: ocp.CheckpointManager, abstract_state, shardings=None):
    """Newest readable checkpoint as (state, meta), or None when there is none.

    Steps are tried newest first, the same steps on every process (process 0's list), and
    a step counts as read only when every process read it, so all processes resume from
    the same step. Steps newer than the one restored are unreadable: they are moved to
    `<workdir>/checkpoints.unreadable/<step>-<UTC time>` (logged), and the manager is
    reloaded, so later saves of those steps are written. When checkpoints exist but none
    can be restored (e.g. the config changed the model's shapes), nothing is moved and
    this raises rather than silently starting over in a directory that holds a run.
    """
    errors = {}
    for step in _agreed_steps(manager):
        try:
            restored = restore(manager, step, abstract_state, shardings)
        except Exception as error:  # orbax raises many types for damaged files
            restored, errors[step] = None, str(error)
        if _all_processes(restored is not None):
            _set_aside(manager, sorted(errors))
            return restored
        errors.setdefault(step, "another process could not read it")
        log.warning("checkpoint step %d unreadable (%s); trying an older one", step, errors[step])
    if errors:
        raise checkpoint_mismatch(manager.directory, errors[max(errors)])
    return None


def _agreed_steps(manager) -> list[int]:
    """The saved steps, newest first, as process 0 lists them (a collective)."""
    steps = sorted(manager.all_steps(), reverse=True)
    if jax.process_count() == 1:
        return steps
    from jax.experimental import multihost_utils

    count = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
    if count == 0:
        return []
    mine = np.asarray(steps if len(steps) == count else [0] * count, np.int32)
    return [int(s) for s in multihost_utils.broadcast_one_to_all(mine)]


def _all_processes(ok: bool) -> bool:
    """True on every process when `ok` is true on all of them (a collective)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok], np.int32))))


def _set_aside(manager, steps: list[int]):
    """Move unreadable `steps` out of orbax's directory (process 0), then reload."""
    if not steps:
        return
    if jax.process_index() == 0:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = epath.Path(manager.directory).parent / UNREADABLE
        aside.mkdir(parents=True, exist_ok=True)
        for step in steps:
            target = aside / f"{step}-{stamp}"
            (epath.Path(manager.directory) / str(step)).rename(target)
            log.warning("checkpoint step %d is unreadable: moved to %s", step, target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("sedd: unreadable checkpoints moved")
    manager.reload()


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
