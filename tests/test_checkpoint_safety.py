"""Checkpoint safety with real orbax on CPU: an unreadable newest step is moved aside so
that later saves of its step land; a save orbax declines raises; every process resumes
from the same step; a torch-twin run refuses a checkpoint of another config."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sedd_jax.training import checkpoint
from sedd_jax.training.state import create_train_state
from tests.helpers import TWIN_RUN, apply_overrides

UNREADABLE = "checkpoints.unreadable"


def tiny_state(step: int = 0, value: float = 0.0):
    tx = optax.adam(1e-3)
    state = create_train_state(lambda key: {"w": jnp.zeros((4, 3))}, tx, jax.random.key(0))
    params = {"w": jnp.full((4, 3), value, jnp.float32)}
    return state.replace(step=jnp.int32(step), params=params, ema_params=params)


def save_steps(workdir, steps):
    manager = checkpoint.make_manager(workdir, keep=100, async_save=False)
    for step in steps:
        checkpoint.save(manager, step, tiny_state(step, float(step)), {"step": step})
    manager.wait_until_finished()
    manager.close()


def damage(workdir, step):
    """Overwrite every file of the step's state item with garbage (a torn or bit-rotten write)."""
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "state")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")


def resume(workdir):
    manager = checkpoint.make_manager(workdir, keep=100, async_save=False)
    restored = checkpoint.restore_latest(manager, tiny_state())
    return manager, restored


def test_unreadable_newest_step_is_moved_aside_and_later_saves_of_its_step_land(tmp_path):
    workdir = str(tmp_path)
    save_steps(workdir, [100, 200])
    damage(workdir, 200)

    manager, (state, meta) = resume(workdir)
    assert int(state.step) == 100 and meta == {"step": 100}
    assert float(state.params["w"][0, 0]) == 100.0
    for step in (150, 200):  # the resumed run saves past the fallback and at the damaged step
        assert checkpoint.save(manager, step, tiny_state(step, step + 0.5), {"step": step})
    manager.wait_until_finished()
    manager.close()

    manager, (state, meta) = resume(workdir)
    assert int(state.step) == 200 and meta == {"step": 200}
    assert float(state.params["w"][0, 0]) == 200.5
    assert manager.all_steps() == [100, 150, 200]
    aside = os.listdir(tmp_path / UNREADABLE)  # the damaged files are kept, out of the way
    assert len(aside) == 1 and aside[0].startswith("200-")


def test_a_save_orbax_declines_raises_instead_of_returning_false(tmp_path):
    workdir = str(tmp_path)
    save_steps(workdir, [200])
    manager = checkpoint.make_manager(workdir, keep=100, async_save=False)
    with pytest.raises(RuntimeError, match="did not save step 150"):
        checkpoint.save(manager, 150, tiny_state(150), {})
    assert manager.all_steps() == [200]


def test_a_step_another_process_cannot_read_is_skipped_by_all(tmp_path, monkeypatch):
    """Process agreement: step 200 reads here but not on another process, so every
    process resumes from 100 and 200 is moved aside."""
    workdir = str(tmp_path)
    save_steps(workdir, [100, 200])
    answers = iter([False, True])  # the all-gathered "every process read it"
    monkeypatch.setattr(checkpoint, "_all_processes", lambda ok: ok and next(answers))
    manager, (state, _) = resume(workdir)
    assert int(state.step) == 100
    assert manager.all_steps() == [100]
    assert os.listdir(tmp_path / UNREADABLE)[0].startswith("200-")


def test_checkpoints_of_another_config_raise_and_nothing_is_moved(tmp_path):
    workdir = str(tmp_path)
    save_steps(workdir, [100, 200])
    manager = checkpoint.make_manager(workdir, keep=100, async_save=False)
    other = tiny_state().replace(params={"w": jnp.zeros((5, 3))})
    with pytest.raises(checkpoint.CheckpointMismatchError, match="new --workdir"):
        checkpoint.restore_latest(manager, other)
    assert manager.all_steps() == [100, 200]
    assert not (tmp_path / UNREADABLE).exists()
    np.testing.assert_equal(len(os.listdir(tmp_path / "checkpoints")), 2)


def twin_config(**overrides):
    from sedd_jax.defaults import base_config

    return apply_overrides(base_config(), TWIN_RUN | overrides)


def test_twin_refuses_a_checkpoint_of_another_config_as_jax_does(tmp_path):
    from sedd_torch.training.loop import train_and_evaluate

    workdir = str(tmp_path)
    train_and_evaluate(twin_config(), workdir)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    assert '"train/loss"' in metrics
    with pytest.raises(checkpoint.CheckpointMismatchError, match="new --workdir") as error:
        train_and_evaluate(twin_config(**{"model.hidden": 48}), workdir)
    assert str(error.value).startswith(f"{tmp_path / 'torch_checkpoints'} holds checkpoints")
    assert (tmp_path / "metrics.jsonl").read_text() == metrics  # not rewound, not emptied
    assert not (tmp_path / "metrics.rewound.jsonl").exists()
    assert os.listdir(tmp_path / "torch_checkpoints") == ["checkpoint_step_2.pt"]


def test_twin_falls_back_past_a_damaged_newest_file_and_moves_it_aside(tmp_path):
    from sedd_torch.training.loop import train_and_evaluate

    workdir = str(tmp_path)
    first = twin_config(**{"training.checkpoint_every": 1, "training.stop_after_steps": 2})
    first.training.n_steps = 3
    train_and_evaluate(first, workdir)
    (tmp_path / "torch_checkpoints" / "checkpoint_step_2.pt").write_bytes(b"\x00garbage")
    resumed = twin_config(**{"training.checkpoint_every": 1})
    resumed.training.n_steps = 3
    assert train_and_evaluate(resumed, workdir)["step"] == 3
    aside = os.listdir(tmp_path / "torch_checkpoints.unreadable")
    assert len(aside) == 1 and aside[0].startswith("2-")
    names = sorted(os.listdir(tmp_path / "torch_checkpoints"))
    assert names == [f"checkpoint_step_{s}.pt" for s in (1, 2, 3)]
