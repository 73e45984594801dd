"""The cluster launchers parse, pass shellcheck (when installed), and requeue a run exactly
when its last metrics row says it was preempted (srun / scontrol replaced by recorders)."""

import os
import shutil
import subprocess

import pytest

from tests.helpers import REPO

SCRIPTS = [str(REPO / "scripts" / n) for n in ("launch_slurm.sh", "launch_pbs.sh")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_launcher_parses_and_is_shellcheck_clean(script):
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run(["shellcheck", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "last_row, requeued",
    [('{"step": 7, "event": "preempted"}', True), ('{"step": 10, "train/loss": 1.0}', False)],
)
def test_slurm_launcher_requeues_only_a_preempted_run(tmp_path, last_row, requeued):
    bin_dir, workdir = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    # srun "trains": it records its arguments and the env, and writes the last metrics row
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        f'echo "srun $* JAX_LOCAL_DEVICE_IDS=$JAX_LOCAL_DEVICE_IDS" >> {log}\n'
        f"mkdir -p {workdir}\n"
        f"echo '{last_row}' >> {workdir}/metrics.jsonl\n"
    )
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "scontrol $*" >> {log}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "4",
        "CONFIG": "configs/demo.py",
        "WORKDIR": str(workdir),
    }
    result = subprocess.run(
        ["bash", SCRIPTS[0], "--config.training.n_steps=10"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("srun ")
    assert "--config=configs/demo.py" in calls[0] and "--config.training.n_steps=10" in calls[0]
    assert calls[0].endswith("JAX_LOCAL_DEVICE_IDS=0,1,2,3")
    assert (calls[1:] == ["scontrol requeue 42"]) == requeued
    assert len(calls) == (2 if requeued else 1)
