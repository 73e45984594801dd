"""Multi-host start-up: `jax.distributed.initialize()` before any JAX computation.

`initialize(config)` (called by `sedd_jax.train`) connects the processes of a run, from
`config.distributed` or from the launcher's environment:

* `distributed.coordinator_address = host:port` (with `num_processes`, `process_id`):
  explicit, e.g. `--config.distributed.coordinator_address=10.0.0.1:12355`;
* `distributed.initialize = auto` (default) and a multi-process launcher:
  - SLURM (`srun`: SLURM_JOB_ID, SLURM_NTASKS > 1 ...) and Open MPI (`mpirun`:
    OMPI_MCA_orte_hnp_uri) are JAX's own cluster detection: `jax.distributed.initialize()`;
  - PBS with MPICH / Cray PALS `mpiexec` (PMI_RANK, PMI_SIZE > 1; e.g. ALCF Polaris),
    which JAX does not detect: rank and size from PMI, the coordinator is the first
    host of $PBS_NODEFILE at `distributed.port`;
* a launcher JAX does not detect that says there are several processes (Open MPI 5's
  `OMPI_COMM_WORLD_SIZE` without `OMPI_MCA_orte_hnp_uri`, `PMI_SIZE` without `PMI_RANK`,
  MVAPICH, torchrun's `WORLD_SIZE`): `LaunchError` naming what to set, instead of N
  independent copies training into one workdir;
* otherwise (one process, or `initialize = never`) nothing happens.

CPU runs use gloo collectives across processes (`jax_cpu_collectives_implementation`);
GPUs use NCCL as usual. After this, `jax.process_count()` / `jax.process_index()` say
which share of every global batch this process reads.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

INIT_MODES = ("auto", "never")
# variables by which launchers tell a process how many processes the job has
WORLD_SIZE_VARIABLES = (
    "OMPI_COMM_WORLD_SIZE",  # Open MPI
    "PMI_SIZE",  # MPICH / Intel MPI / Cray PALS (PMI)
    "MV2_COMM_WORLD_SIZE",  # MVAPICH2
    "WORLD_SIZE",  # torchrun and other torch.distributed launchers
)  # not SLURM_NTASKS: a batch script's own single process has it too (srun is detected)


class LaunchError(RuntimeError):
    """Several processes were launched, but not in a way that connects them."""


def _env_count(name: str) -> int:
    try:
        return int(os.environ.get(name, "1"))
    except ValueError:
        return 1


def _jax_cluster() -> bool:
    """SLURM or Open MPI with more than one process (JAX detects and reads them itself)."""
    slurm = "SLURM_JOB_ID" in os.environ and "SLURM_STEP_NODELIST" in os.environ
    if slurm and _env_count("SLURM_NTASKS") > 1:
        return True
    return "OMPI_MCA_orte_hnp_uri" in os.environ and _env_count("OMPI_COMM_WORLD_SIZE") > 1


def _pbs_mpich(port: int) -> dict | None:
    """initialize() arguments from PBS + MPICH/PALS mpiexec, or None outside one."""
    if "PMI_RANK" not in os.environ or _env_count("PMI_SIZE") <= 1:
        return None
    nodefile = os.environ.get("PBS_NODEFILE")
    if not nodefile or not os.path.exists(nodefile):
        raise LaunchError(
            "mpiexec started several processes (PMI_SIZE > 1) but $PBS_NODEFILE is not set: "
            "pass --config.distributed.coordinator_address=host:port, num_processes and "
            "process_id"
        )
    with open(nodefile) as f:
        host = f.readline().strip()
    return {
        "coordinator_address": f"{host}:{port}",
        "num_processes": _env_count("PMI_SIZE"),
        "process_id": int(os.environ["PMI_RANK"]),
    }


def initialize_arguments(dc) -> dict | None:
    """The keyword arguments of `jax.distributed.initialize` for this run, or None."""
    if dc.initialize not in INIT_MODES:
        raise ValueError(f"distributed.initialize={dc.initialize!r}; choose one of {INIT_MODES}")
    if dc.coordinator_address:
        if dc.num_processes < 1 or not 0 <= dc.process_id < dc.num_processes:
            raise ValueError(
                f"distributed.coordinator_address is set: distributed.num_processes "
                f"({dc.num_processes}) must be >= 1 and distributed.process_id "
                f"({dc.process_id}) in [0, num_processes)"
            )
        return {
            "coordinator_address": dc.coordinator_address,
            "num_processes": int(dc.num_processes),
            "process_id": int(dc.process_id),
        }
    if dc.initialize == "never":
        return None
    if _jax_cluster():
        return {}
    arguments = _pbs_mpich(int(dc.port))
    if arguments is None and (world := _undetected_world()):
        raise LaunchError(
            f"{world} says this is one of several processes, but none of the launchers "
            f"sedd detects started it, so each process would train its own copy into one "
            f"workdir. Set --config.distributed.coordinator_address=<host of process "
            f"0>:<port>, --config.distributed.num_processes and "
            f"--config.distributed.process_id (or the variables JAX detects: "
            f"OMPI_MCA_orte_hnp_uri for Open MPI, SLURM_JOB_ID/SLURM_STEP_NODELIST/"
            f"SLURM_NTASKS/SLURM_PROCID/SLURM_LOCALID under srun, PMI_RANK/PMI_SIZE with "
            f"PBS_NODEFILE for mpiexec), or --config.distributed.initialize=never for "
            f"independent processes"
        )
    return arguments


def _undetected_world() -> str:
    """'NAME=value' of the first world-size variable above 1, or ''."""
    for name in WORLD_SIZE_VARIABLES:
        if _env_count(name) > 1:
            return f"{name}={os.environ[name]}"
    return ""


def initialize(config) -> bool:
    """Start JAX's distributed runtime when this run has several processes; True if so."""
    arguments = initialize_arguments(config.distributed)
    if arguments is None:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**arguments)
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
