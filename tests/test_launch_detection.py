"""A multi-process launch that sedd cannot connect is an error naming what to set, not N
independent copies training into one workdir; `jax.distributed` is never started here."""

import os
import subprocess
import sys

import pytest

from sedd_jax.defaults import base_config
from sedd_jax.training import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "PMI_RANK",
    "PMI_SIZE",
    "PBS_NODEFILE",
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "WORLD_SIZE",
)


def arguments(monkeypatch, env: dict, **overrides):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed.jax.distributed, "initialize", _never_called)
    c = base_config().distributed
    for key, value in overrides.items():
        c[key] = value
    return distributed.initialize_arguments(c)


def _never_called(*args, **kwargs):
    raise AssertionError("jax.distributed.initialize must not run")


@pytest.mark.parametrize(
    "env",
    [
        {"OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "1"},  # Open MPI 5 (no orte URI)
        {"PMI_SIZE": "2"},  # mpirun / Hydra without PMI_RANK
        {"MV2_COMM_WORLD_SIZE": "8"},
        {"WORLD_SIZE": "2"},  # torchrun
    ],
    ids=["openmpi5", "pmi", "mvapich", "torchrun"],
)
def test_undetected_multi_process_launch_is_an_error_naming_the_settings(monkeypatch, env):
    with pytest.raises(distributed.LaunchError) as error:
        arguments(monkeypatch, env)
    message = str(error.value)
    assert "\n" not in message
    name = next(k for k in env if k != "PMIX_RANK")
    assert message.startswith(f"{name}={env[name]} says this is one of several processes")
    for key in ("coordinator_address", "num_processes", "process_id", "initialize=never"):
        assert f"--config.distributed.{key}" in message


def test_single_process_values_and_explicit_settings_start_nothing_or_connect(monkeypatch):
    assert arguments(monkeypatch, {"OMPI_COMM_WORLD_SIZE": "1", "WORLD_SIZE": "1"}) is None
    assert arguments(monkeypatch, {"WORLD_SIZE": "2"}, initialize="never") is None
    # a batch script's own process under sbatch --ntasks=4 (no srun step): one process
    assert arguments(monkeypatch, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) is None
    explicit = arguments(
        monkeypatch,
        {"OMPI_COMM_WORLD_SIZE": "2"},
        coordinator_address="10.0.0.1:1234",
        num_processes=2,
        process_id=1,
    )
    assert explicit == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}


def test_the_cli_reports_an_undetected_launch_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sedd_jax.train",
            "--config=configs/demo.py",
            f"--workdir={tmp_path}",
            "--config.allocator=system",
        ],
        cwd=REPO,
        env={**env, "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: OMPI_COMM_WORLD_SIZE=2 says this is one of several")
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "metrics.jsonl")
