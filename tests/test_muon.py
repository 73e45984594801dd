"""`optim.optimizer = muon` in the training CLI: a run resumed from a mid-run checkpoint
(Muon's momentum beside AdamW's moments, with optax's masked state nodes, through orbax)
ends bit-identical to the uninterrupted run, and the Muon leaves are the blocks' kernels.
The update itself is checked against the twin in parity_tests/test_step_parity.py and in
every parallel mode in tests/test_multi_device.py."""

import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sedd_jax.training.checkpoint import make_manager
from tests.helpers import SMALL_RUN, cli_overrides, run_cli, tail

N_STEPS, EVERY = 8, 4
FLAGS = [
    "--config=configs/demo.py",
    *cli_overrides(
        SMALL_RUN
        | {
            "optim.optimizer": "muon",
            "optim.warmup": 1,
            "optim.lr": 1e-2,
            "training.n_steps": N_STEPS,
            "training.checkpoint_every": EVERY,
            "training.keep_checkpoints": 10,
            "training.eval_every": 100_000,
        }
    ),
]


def saved_state(workdir, step: int = N_STEPS) -> dict:
    manager = make_manager(workdir, keep=10, async_save=False)
    assert manager.all_steps() == [EVERY, N_STEPS]
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return {"/".join(map(str, k)): v for k, v in ocp.tree.to_flat_dict(restored.state).items()}


@pytest.mark.slow
def test_a_muon_run_resumed_from_its_checkpoint_ends_bit_identical(tmp_path):
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    run_cli("sedd_jax.train", f"--workdir={whole}", *FLAGS)
    shutil.copytree(whole, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", str(N_STEPS)))
    run_cli("sedd_jax.train", f"--workdir={resumed}", *FLAGS)  # from step EVERY
    a, b = saved_state(whole), saved_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
    # Muon holds a momentum per block kernel (adaLN, qkv, out, fc1, fc2 of each block);
    # AdamW the moments of every other leaf, never of a block kernel
    muon = [n for n in a if "/muon/" in n and n.endswith("/kernel")]
    adam = [n for n in a if "/adam/" in n and "/mu/" in n]
    assert len(muon) == 5 * SMALL_RUN["model.n_blocks"], muon
    assert not [n for n in adam if "/blocks_" in n and n.endswith("/kernel")], adam
    assert any(n.endswith("/vocab_embed") for n in adam)
    # the resumed steps moved Muon's momentum
    middle = saved_state(whole, EVERY)
    assert all(np.abs(np.asarray(a[n]) - np.asarray(middle[n])).max() > 0 for n in muon)


def test_an_unknown_optimizer_is_a_one_line_error_before_training(tmp_path):
    result = run_cli(
        "sedd_jax.train",
        f"--workdir={tmp_path}",
        "--config=configs/demo.py",
        "--config.optim.optimizer=lion",
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, tail(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last == "config.optim.optimizer='lion'; choose one of ('adamw', 'muon')", last
    assert not os.listdir(tmp_path)  # nothing prepared or written
