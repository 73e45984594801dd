"""The config side of scale-out: fsdp sharding rule, global batch, mode registry, and
which environments start jax.distributed."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from sedd_jax.defaults import base_config
from sedd_jax.training.parallel import fsdp_spec, global_batch_size, make_parallel
from tests.helpers import launch_arguments


def test_fsdp_shards_the_largest_divisible_dimension_and_replicates_small_leaves():
    assert fsdp_spec((768, 2304), 4) == P(None, "fsdp")
    assert fsdp_spec((2304, 768), 4) == P("fsdp", None)
    assert fsdp_spec((37, 768), 4) == P(None, "fsdp")  # 37 does not divide
    assert fsdp_spec((37, 771), 4) == P()  # nothing divides: replicated
    assert fsdp_spec((768,), 4) == P()  # under FSDP_MIN_SIZE elements
    assert fsdp_spec((), 4) == P()
    assert fsdp_spec((768, 2304), 1) == P()


def test_global_batch_is_per_device_times_all_devices_when_set():
    c = base_config()
    c.training.batch_size = 48
    assert global_batch_size(c) == 48
    c.parallel.batch_per_device = 6
    assert global_batch_size(c) == 6 * jax.device_count()


def test_unknown_mode_and_fsdp_outside_jit_are_errors():
    c = base_config().parallel
    c.mode = "dp"
    with pytest.raises(ValueError, match="parallel.mode='dp'"):
        make_parallel(c, None, 1, {})
    c.mode, c.fsdp = "pmap", 2
    with pytest.raises(ValueError, match="needs parallel.mode='jit'"):
        make_parallel(c, None, 1, {})


def test_distributed_starts_from_flags_slurm_open_mpi_and_pbs_only(monkeypatch, tmp_path):
    assert launch_arguments(monkeypatch, {}) is None  # one process: nothing to start
    explicit = launch_arguments(
        monkeypatch, {}, coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3
    )
    assert explicit == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
    }
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "8"}
    assert launch_arguments(monkeypatch, slurm) == {}  # JAX's own SLURM detection
    assert launch_arguments(monkeypatch, dict(slurm, SLURM_NTASKS="1")) is None
    assert launch_arguments(monkeypatch, slurm, initialize="never") is None
    ompi = {"OMPI_MCA_orte_hnp_uri": "1.2.3.4;tcp://1.2.3.4:5", "OMPI_COMM_WORLD_SIZE": "2"}
    assert launch_arguments(monkeypatch, ompi) == {}
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3005c0s7b0n0\nx3005c0s7b1n0\n")
    pbs = {"PMI_RANK": "5", "PMI_SIZE": "8", "PBS_NODEFILE": str(nodefile)}
    assert launch_arguments(monkeypatch, pbs, port=4321) == {
        "coordinator_address": "x3005c0s7b0n0:4321",
        "num_processes": 8,
        "process_id": 5,
    }
    with pytest.raises(ValueError, match="process_id"):
        launch_arguments(monkeypatch, {}, coordinator_address="h:1", num_processes=2, process_id=2)
