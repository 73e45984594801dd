"""The training loop compiles its step once per batch shape: no recompilation after that.

Counted with `jax.monitoring`'s backend-compile events, never timed.
"""

import jax
import numpy as np
import pytest

from sedd_jax.training import loop
from tests.helpers import LEARNS, tiny_config

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileLog:
    """Backend compilations so far, and the count and batch shape at each train step."""

    def __init__(self):
        self.count = 0
        self.steps = []  # (compilations before the step, batch shape)
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        del duration, kwargs
        if event == COMPILE_EVENT:
            self.count += 1

    def wrap(self, make_parallel):
        def make(*args, **kwargs):
            wrapper = make_parallel(*args, **kwargs)
            step = wrapper.step

            def counted(state, batch):
                self.steps.append((self.count, np.shape(batch["tokens"])))
                out = step(state, batch)
                jax.block_until_ready(out)
                return out

            wrapper.step = counted
            return wrapper

        return make


def run_counted(monkeypatch, tmp_path, **overrides) -> CompileLog:
    log = CompileLog()
    monkeypatch.setattr(loop, "make_parallel", log.wrap(loop.make_parallel))
    config = tiny_config("base", **(LEARNS | overrides))
    loop.train_and_evaluate(config, str(tmp_path))
    log.steps.append((log.count, None))  # after the last step (and the final hooks)
    return log


def compiles_after_first_step(log: CompileLog) -> int:
    """Compilations between the start of step 2 and the start of the final hooks' work."""
    before_second = log.steps[1][0]
    before_last = log.steps[-2][0]
    return before_last - before_second


@pytest.mark.slow
def test_no_recompilation_after_the_first_step_with_variable_length_proteins(monkeypatch, tmp_path):
    # the demo proteins vary in length; rows are padded to max_len with a validity mask,
    # logged every 5 steps (host sync + device_get), checkpointed every 10
    log = run_counted(
        monkeypatch,
        tmp_path,
        **{
            "training.n_steps": 24,
            "training.log_every": 5,
            "training.checkpoint_every": 10,
            "training.batch_size": 8,
        },
    )
    assert len(log.steps) == 25
    assert {shape for _, shape in log.steps[:-1]} == {(8, 32)}
    assert log.steps[1][0] > log.steps[0][0]  # the first step compiled
    assert compiles_after_first_step(log) == 0
