"""float16 with dynamic loss scaling and bfloat16 train the demo below its unigram
baseline; an overflow is skipped (scale halved, step counted) and training goes on; a run
that stays non-finite stops with the last good checkpoint kept."""

import jax
import jax.numpy as jnp
import pytest

from sedd_jax.common.metrics_log import read_metrics
from sedd_jax.training.checkpoint import make_manager
from sedd_jax.training.loop import NonFiniteLossError, train_and_evaluate
from sedd_jax.training.loss_scale import LossScaler
from tests.helpers import LEARNS, tiny_config


def demo_config(dtype: str, **overrides):
    """The learning run of test_train_e2e, half as long, in `dtype`."""
    short = {
        "model.dtype": dtype,
        "training.n_steps": 150,
        "training.log_every": 25,
        "eval.time_samples": 4,
        "eval.max_batches": 4,
        "sampling.steps": 4,
        "sampling.num_samples": 1,
    }
    return tiny_config("base", **(LEARNS | short | overrides))


def test_loss_scaler_halves_on_overflow_grows_after_interval_and_gives_up():
    scaler = LossScaler(True, initial=8.0, growth_interval=2, max_consecutive_skips=2)
    ls = scaler.init()
    ls = scaler.update(ls, jnp.bool_(False))
    assert (float(ls.scale), int(ls.skipped), bool(scaler.stop(ls, False))) == (4.0, 1, False)
    ls = scaler.update(ls, jnp.bool_(True))
    assert (float(ls.scale), int(ls.good_steps)) == (4.0, 1)
    ls = scaler.update(ls, jnp.bool_(True))
    assert (float(ls.scale), int(ls.good_steps)) == (8.0, 0)  # grown after 2 good steps
    ls = scaler.update(scaler.update(ls, jnp.bool_(False)), jnp.bool_(False))
    assert (float(ls.scale), int(ls.skipped), int(ls.consecutive_skips)) == (2.0, 3, 2)
    assert bool(scaler.stop(ls, False))  # 2 in a row: give up
    fixed = LossScaler()
    assert float(fixed.init().scale) == 1.0
    assert bool(fixed.stop(fixed.init(), jnp.bool_(False)))  # bf16 / fp32: first one stops


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_trains_the_demo_below_the_unigram_baseline(tmp_path, dtype):
    summary = train_and_evaluate(demo_config(dtype), str(tmp_path))
    rows = read_metrics(str(tmp_path))
    unigram = [r["val/loss_unigram"] for r in rows if "val/loss_unigram" in r][-1]
    train = [r for r in rows if "train/loss" in r]
    print(f"{dtype}: final val loss (EMA) {summary['loss_ema']:.4f}, unigram {unigram:.4f}")
    assert summary["loss_ema"] < unigram - 0.02
    if dtype == "float16":  # the default scale never overflows on the demo
        assert [r["train/skipped_steps"] for r in train] == [0.0] * 6
        assert train[-1]["train/loss_scale"] == 2.0**15
    else:
        assert "train/loss_scale" not in train[-1]


@pytest.mark.slow
def test_float16_overflow_is_skipped_the_scale_halved_and_training_goes_on(tmp_path):
    # a loss scale of 2^20 overflows float16 gradients on the first steps
    config = demo_config(
        "float16",
        **{"training.n_steps": 12, "training.log_every": 1, "training.loss_scale.initial": 2**20},
    )
    summary = train_and_evaluate(config, str(tmp_path))
    train = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    scales = [r["train/loss_scale"] for r in train]
    skipped = [r["train/skipped_steps"] for r in train]
    print("loss scale per step", scales, "skipped", skipped)
    assert summary["step"] == 12
    assert (scales[0], skipped[0]) == (2.0**19, 1.0)  # step 1 skipped, scale halved
    assert skipped[-1] < 12 and scales[-1] < 2.0**20  # skipped, lowered, then applied
    assert skipped[-1] == sum(b < a for a, b in zip([2.0**20] + scales, scales, strict=False))


@pytest.mark.slow
def test_float16_run_that_stays_non_finite_stops_and_keeps_the_last_checkpoint(tmp_path):
    config = demo_config(
        "float16",
        **{
            "training.n_steps": 8,
            "training.log_every": 2,
            "training.checkpoint_every": 2,
            "training.loss_scale.initial": 2.0**100,  # overflows for many halvings
            "training.loss_scale.max_consecutive_skips": 3,
        },
    )
    with pytest.raises(NonFiniteLossError, match="float16: too many skipped steps") as error:
        train_and_evaluate(config, str(tmp_path))
    assert "before step 4" in str(error.value)
    assert make_manager(str(tmp_path), keep=10, async_save=False).all_steps() == [2]


def test_checkpoint_from_before_loss_scaling_restores_with_a_fresh_scale(tmp_path):
    import dataclasses

    import optax

    from sedd_jax.training import checkpoint
    from sedd_jax.training.state import create_train_state

    scaler = LossScaler(True, initial=64.0)
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    tx = optax.adam(1e-3)
    state = create_train_state(lambda k: params, tx, jax.random.key(0), scaler)
    old = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    del old["loss_scale"]  # the TrainState of earlier rounds
    old["params"] = {"w": params["w"] + 1.0}
    manager = checkpoint.make_manager(str(tmp_path), 3, async_save=False)
    checkpoint.save(manager, 5, old, {"note": "old"})
    restored, meta = checkpoint.restore_latest(manager, state)
    assert meta == {"note": "old"}
    assert float(restored.params["w"][1, 2]) == 6.0
    assert float(restored.loss_scale.scale) == 64.0
