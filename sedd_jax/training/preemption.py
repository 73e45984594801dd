"""Preemption: SIGTERM or SIGUSR1 -> save at the next step boundary and exit 0, on every host.

Cluster schedulers warn a job before they kill it: SLURM sends SIGUSR1 when asked to
(`--signal=USR1@120`: 120 s before the time limit) and SIGTERM on preemption or at the
limit (then SIGKILL after `KillWait`); PBS sends SIGTERM. A handler only records the
signal; the training loop asks `should_stop(step)` at each step boundary, and when it says
yes the loop saves a checkpoint at that step and leaves with exit status 0.

In a multi-process run the checkpoint save is a collective, so every host must stop at
the same step even though a signal reaches the hosts at different times (or only one of
them). At every `check_every`-th step boundary, and only there, each process contributes
its flag to an all-gather (`jax.experimental.multihost_utils.process_allgather`); all
processes then hold the same answer (stop when any process was signalled) and stop at the
same step. `check_every` is a config value, so it is the same on every host. The cost
of one agreement is one tiny collective plus a host-device sync: the host waits for the
step it has dispatched to finish before it goes on (docs/scaling.md gives the measured
cost). With one process the flag is read directly at every step, at no cost.

The signal handling itself (one process) is `sedd_jax.common.preemption.SignalFlag`,
numpy-free and shared with the torch twin; this module adds the agreement. Importing it
installs nothing; `install()` does, and `uninstall()` restores the previous handlers.
"""

from __future__ import annotations

import jax
import numpy as np

from sedd_jax.common.preemption import SIGNALS, SignalFlag  # noqa: F401  (re-exported)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on at least one (a collective).

    Every process must call it at the same point of the program; with one process it
    returns `flag` and communicates nothing.
    """
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
    return bool(np.any(flags))


class Preemption(SignalFlag):
    """Records SIGTERM / SIGUSR1 and tells the loop, consistently across hosts, when to stop."""

    def __init__(self, check_every: int = 1, signals=SIGNALS):
        if check_every < 1:
            raise ValueError(f"training.preemption_check_every={check_every}; must be >= 1")
        super().__init__(signals)
        self.check_every = check_every

    def should_stop(self, step: int) -> bool:
        """Whether to save and stop after `step`; the same answer on every process.

        Call it at every step boundary on every process (it is a collective at every
        `check_every`-th step when there are several processes). Once true it stays true.
        """
        if not self.stopping:
            if jax.process_count() == 1:
                self.stopping = self.received is not None
            elif step % self.check_every == 0:
                self.stopping = any_process(self.received is not None)
        return self.stopping
