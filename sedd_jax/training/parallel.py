"""Wrappers of the one per-device train step: `parallel.mode` = pmap | shard_map | jit.

Every wrapper has the same small interface, so the loop never branches on the mode:

    wrapper = make_parallel(config.parallel, step_fn, accum, state)
    dstate = wrapper.put_state(state)            # any TrainState -> the mode's layout
    batch = wrapper.shard_batch(host_batch)      # this host's numpy rows -> device arrays
    dstate, metrics = wrapper.step(dstate, batch)    # state donated; metrics are scalars
    wrapper.host_state(dstate)                   # global arrays in `state_shardings`
    wrapper.state_shardings                      # where a checkpoint is restored to

`step_fn(state, batch, axis_name=...)` is `step.train_step` with everything but the
state, the batch and the axis bound.

* `pmap`: `jax.pmap` over this host's devices (over all hosts' devices in a multi-host
  run); the state is replicated with a leading device axis, the host rows are split
  [devices, rows / devices, ...]; `lax.pmean` over `data` inside the step.
* `shard_map`: `jax.shard_map` under `jax.jit` on a `Mesh(devices, ('data',))`: the
  state replicated, the global batch sharded over `data`; the same pmean.
* `jit`: plain `jax.jit` with `NamedSharding`s on a `Mesh` of shape (data, fsdp); the
  step runs with no axis name and the compiler inserts the collectives. With
  `parallel.fsdp = k > 1` params, EMA and optimizer state are sharded over `fsdp`
  (ZeRO-3): each leaf with at least `FSDP_MIN_SIZE` elements is split along its
  largest dimension divisible by k, smaller leaves are replicated. The batch is sharded
  over both axes.

In shard_map and jit modes each host builds the global batch from its rows with
`jax.make_array_from_process_local_data`; the mesh orders devices by (process, id), so
host p's devices hold rows [p B / P, (p + 1) B / P), exactly the rows its loader reads.
`host_state` is the state as global arrays (replicated, or fsdp-sharded): orbax saves
the logical arrays, so a checkpoint restores onto any other mode or topology.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sedd_jax.training.step import AXIS, micro_batches

FSDP_AXIS = "fsdp"
FSDP_MIN_SIZE = 2**10  # leaves with fewer elements stay replicated


def global_devices() -> list:
    """All devices of the run, ordered by (process, id): hosts own contiguous slices."""
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def global_batch_size(config) -> int:
    """Rows per optimizer step: `parallel.batch_per_device` x all devices when set, else
    `training.batch_size`."""
    per_device = config.parallel.batch_per_device
    return per_device * jax.device_count() if per_device else config.training.batch_size


def check_batch(rows: int, devices: int, accum: int, where: str):
    if rows % (devices * accum):
        raise ValueError(
            f"{where}: {rows} rows must be divisible by devices x training.accum = "
            f"{devices} x {accum} (set training.batch_size or parallel.batch_per_device)"
        )


def _global_array(x, sharding: NamedSharding) -> jax.Array:
    """x (numpy, a local array or a global one) as a global array laid out by `sharding`."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.jit(lambda a: a, out_shardings=sharding)(x)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def local_copy(tree):
    """The tree on this process's first device (for evaluation and sampling).

    Replicated arrays give their local copy; sharded ones are gathered (a collective:
    every process must call it).
    """

    def local(x):
        if not isinstance(x, jax.Array):
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        full = multihost_utils.process_allgather(x, tiled=True)
        return jax.device_put(full, jax.local_devices()[0])

    return jax.tree_util.tree_map(local, tree)


class PmapStep:
    """`jax.pmap` over this process's devices; the state carries a leading device axis."""

    def __init__(self, parallel_config, step_fn, accum: int, state):
        del parallel_config
        self.accum = accum
        self.local_devices = jax.local_devices()
        local_mesh = Mesh(np.array(self.local_devices), (AXIS,))
        self._stacked = NamedSharding(local_mesh, PartitionSpec(AXIS))
        self._replicated = NamedSharding(Mesh(np.array(global_devices()), (AXIS,)), PartitionSpec())
        self.state_shardings = jax.tree_util.tree_map(lambda _: self._replicated, state)
        self._step = jax.pmap(
            lambda s, b: step_fn(s, micro_batches(b, accum), axis_name=AXIS),
            axis_name=AXIS,
            donate_argnums=(0,),
        )

    def put_state(self, state):
        n = len(self.local_devices)

        def put(x):
            host = np.asarray(local_copy(x))
            return jax.device_put(np.stack([host] * n), self._stacked)

        return jax.tree_util.tree_map(put, state)

    def shard_batch(self, host_batch: dict) -> dict:
        n = len(self.local_devices)

        def put(a):
            check_batch(a.shape[0], n, self.accum, "pmap: this host's batch")
            return jax.device_put(a.reshape(n, a.shape[0] // n, *a.shape[1:]), self._stacked)

        return {k: put(v) for k, v in host_batch.items()}

    def step(self, state, batch):
        state, metrics = self._step(state, batch)
        return state, {k: v[0] for k, v in metrics.items()}

    def lower(self, state, batch):
        """The step lowered for these arguments (`.compile()`, `.as_text()`, cost analysis)."""
        return self._step.lower(state, batch)

    def host_state(self, state):
        def to_global(x):
            shards = [s.data.reshape(x.shape[1:]) for s in x.addressable_shards]
            return jax.make_array_from_single_device_arrays(x.shape[1:], self._replicated, shards)

        return jax.tree_util.tree_map(to_global, state)


class _MeshStep:
    """shard_map and jit: global arrays on a mesh, the batch built per host."""

    batch_spec: PartitionSpec

    def put_state(self, state):
        return jax.tree_util.tree_map(_global_array, state, self.state_shardings)

    def shard_batch(self, host_batch: dict) -> dict:
        sharding = NamedSharding(self.mesh, self.batch_spec)
        hosts = jax.process_count()

        def put(a):
            rows = a.shape[0] * hosts
            check_batch(rows, self.mesh.size, self.accum, f"{self.name}: the global batch")
            return jax.make_array_from_process_local_data(sharding, a, (rows, *a.shape[1:]))

        return {k: put(v) for k, v in host_batch.items()}

    def step(self, state, batch):
        return self._step(state, batch)

    def lower(self, state, batch):
        """The step lowered for these arguments (`.compile()`, `.as_text()`, cost analysis)."""
        return self._step.lower(state, batch)

    def host_state(self, state):
        return state


class ShardMapStep(_MeshStep):
    """`jax.shard_map` under `jax.jit`: replicated state, batch sharded over `data`."""

    name = "shard_map"
    batch_spec = PartitionSpec(AXIS)

    def __init__(self, parallel_config, step_fn, accum: int, state):
        del parallel_config
        self.accum = accum
        self.mesh = Mesh(np.array(global_devices()), (AXIS,))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.state_shardings = jax.tree_util.tree_map(lambda _: replicated, state)
        mapped = jax.shard_map(
            lambda s, b: step_fn(s, micro_batches(b, accum), axis_name=AXIS),
            mesh=self.mesh,
            in_specs=(PartitionSpec(), self.batch_spec),
            out_specs=(PartitionSpec(), PartitionSpec()),
            check_vma=False,  # the scan's carry starts replicated and sums per-device grads
        )
        self._step = jax.jit(mapped, donate_argnums=(0,))


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """Shard the largest dimension divisible by `fsdp` over `fsdp`; small leaves replicate."""
    if fsdp == 1 or math.prod(shape) < FSDP_MIN_SIZE:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return PartitionSpec(*(FSDP_AXIS if d == dim else None for d in range(len(shape))))
    return PartitionSpec()


class JitStep(_MeshStep):
    """Plain `jax.jit` with NamedShardings on a (data, fsdp) mesh; no pmean in the step."""

    name = "jit"
    batch_spec = PartitionSpec((AXIS, FSDP_AXIS))

    def __init__(self, parallel_config, step_fn, accum: int, state):
        fsdp = int(parallel_config.fsdp)
        devices = global_devices()
        if fsdp < 1 or len(devices) % fsdp:
            raise ValueError(f"parallel.fsdp={fsdp} must divide the {len(devices)} devices")
        self.accum = accum
        self.mesh = Mesh(np.array(devices).reshape(-1, fsdp), (AXIS, FSDP_AXIS))
        self.state_shardings = jax.tree_util.tree_map(
            lambda x: NamedSharding(self.mesh, fsdp_spec(np.shape(x), fsdp)), state
        )
        micro_sharding = NamedSharding(self.mesh, PartitionSpec(None, (AXIS, FSDP_AXIS)))

        def run(s, b):
            micro = jax.lax.with_sharding_constraint(micro_batches(b, accum), micro_sharding)
            return step_fn(s, micro, axis_name=None)

        self._step = jax.jit(
            run,
            in_shardings=(self.state_shardings, NamedSharding(self.mesh, self.batch_spec)),
            out_shardings=(self.state_shardings, NamedSharding(self.mesh, PartitionSpec())),
            donate_argnums=(0,),
        )


MODES = {"pmap": PmapStep, "shard_map": ShardMapStep, "jit": JitStep}


def make_parallel(parallel_config, step_fn, accum: int, state):
    """The wrapper of `parallel.mode` for `step_fn(state, batch, axis_name=)`; `state` gives
    the structure and shapes (arrays or `jax.ShapeDtypeStruct`s)."""
    mode = parallel_config.mode
    if mode not in MODES:
        raise ValueError(f"parallel.mode={mode!r}; choose one of {sorted(MODES)}")
    if parallel_config.fsdp != 1 and mode != "jit":
        raise ValueError(f"parallel.fsdp={parallel_config.fsdp} needs parallel.mode='jit'")
    return MODES[mode](parallel_config, step_fn, accum, state)
