"""A multi-process launch that sedd cannot connect is an error naming what to set, not N
independent copies training into one workdir; `jax.distributed` is never started here."""

import os

import pytest

from sedd_jax.training import distributed
from tests.helpers import LAUNCH_VARIABLES, launch_arguments, run_cli


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
        launch_arguments(monkeypatch, env)
    message = str(error.value)
    assert "\n" not in message
    name = next(k for k in env if k != "PMIX_RANK")
    assert message.startswith(f"{name}={env[name]} says this is one of several processes")
    for key in ("coordinator_address", "num_processes", "process_id", "initialize=never"):
        assert f"--config.distributed.{key}" in message


def test_single_process_values_and_explicit_settings_start_nothing_or_connect(monkeypatch):
    assert launch_arguments(monkeypatch, {"OMPI_COMM_WORLD_SIZE": "1", "WORLD_SIZE": "1"}) is None
    assert launch_arguments(monkeypatch, {"WORLD_SIZE": "2"}, initialize="never") is None
    # a batch script's own process under sbatch --ntasks=4 (no srun step): one process
    assert launch_arguments(monkeypatch, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) is None
    explicit = launch_arguments(
        monkeypatch,
        {"OMPI_COMM_WORLD_SIZE": "2"},
        coordinator_address="10.0.0.1:1234",
        num_processes=2,
        process_id=1,
    )
    assert explicit == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}


def test_the_cli_reports_an_undetected_launch_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    result = run_cli(
        "sedd_jax.train",
        "--config=configs/demo.py",
        f"--workdir={tmp_path}",
        "--config.allocator=system",
        base_env=env,
        env={"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: OMPI_COMM_WORLD_SIZE=2 says this is one of several")
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "metrics.jsonl")
