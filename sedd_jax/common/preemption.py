"""The signal flag of one process: SIGTERM / SIGUSR1 -> save at the next step boundary.

A handler only records the signal; a loop asks `should_stop(step)` at each step boundary
and, once it says yes, saves and leaves. This is the whole story for one process (the
torch twin). `sedd_jax.training.preemption.Preemption` adds the multi-host agreement.

Importing this module installs nothing; `install()` does, and `uninstall()` restores the
previous handlers.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class SignalFlag:
    """Records SIGTERM / SIGUSR1; `should_stop` is true from the first signal on."""

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None  # the last signal this process got
        self.stopping = False  # stop at this boundary
        self._previous: dict = {}

    def install(self):
        """Route the signals to this object (main thread only; elsewhere a no-op)."""
        for signum in self.signals:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals cannot be handled here
                break
        return self

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()

    def _handle(self, signum, frame):
        del frame
        self.received = signum

    @property
    def signal_name(self) -> str:
        if self.received is not None:
            return signal.Signals(self.received).name
        return "another process's signal" if self.stopping else "none"

    def no_late_signal(self, logger, step: int) -> bool:
        """After the last step (its checkpoint on disk): True when no signal has come, else
        a `samples_skipped` event at `step` in the run's log and False, so that what is
        left to do after training is skipped and the run still exits 0."""
        if self.received is None:
            return True
        logger.event(step, "samples_skipped", signal=self.signal_name)
        log.warning("%s after the last checkpoint: samples skipped", self.signal_name)
        return False

    def should_stop(self, step: int) -> bool:
        """Whether to save and stop after `step`. Once true it stays true."""
        del step
        self.stopping = self.stopping or self.received is not None
        return self.stopping
