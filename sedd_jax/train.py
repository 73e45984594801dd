"""Train SEDD: `python -m sedd_jax.train --config=configs/demo.py [--workdir=runs/demo]`.

Override any config value on the command line, e.g. `--config.optim.lr=1e-4`; unknown
keys are errors. Running again with the same workdir resumes from its newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from sedd_jax import allocator
from sedd_jax.common.optim_options import check_optimizer
from sedd_jax.common.preemption import SIGNALS

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    config = _CONFIG.value
    if config is None:
        sys.exit("--config is required, e.g. --config=configs/demo.py")
    try:  # returns here only once the allocator is in place (or left alone)
        allocator.restart_if_needed(config.allocator, config.device)
    except ValueError as error:
        sys.exit(f"error: {error}")
    logging.info("C allocator: %s", allocator.running())
    train_and_evaluate, errors = _backend(config)
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    workdir = _WORKDIR.value or os.path.join(
        "runs", os.path.splitext(os.path.basename(config_file))[0]
    )
    try:
        summary = train_and_evaluate(config, workdir)
    except errors as error:
        sys.exit(f"error: {error}")
    # everything is saved: a SIGTERM / SIGUSR1 while the process winds down (the runtime's
    # teardown takes seconds) is ignored, so the run still exits 0. SIG_IGN, not a Python
    # handler: interpreter finalisation resets Python handlers to the default action, and
    # a SIGUSR1 in the last moments then killed a finished run (exit -10)
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    print(f"finished: {summary}")
    print(f"outputs in {os.path.abspath(workdir)}")


def _backend(config):
    """The training function of `config.backend`, and the errors it reports to the user."""
    from sedd_jax.data.prepare import USER_ERRORS  # bad data: one line, no traceback

    try:  # before any import or data preparation
        check_optimizer(config.optim.optimizer)
    except ValueError as error:
        sys.exit(str(error))
    if config.backend == "torch":
        from sedd_jax.common.errors import CheckpointMismatchError, NonFiniteLossError
        from sedd_torch.training.loop import train_and_evaluate

        return train_and_evaluate, (NonFiniteLossError, CheckpointMismatchError, *USER_ERRORS)
    if config.backend != "jax":
        sys.exit(f"config.backend={config.backend!r}; choose 'jax' or 'torch'")
    if config.device not in JAX_PLATFORMS:
        sys.exit(
            f"config.device={config.device!r} with the jax backend; choose one of "
            f"{sorted(JAX_PLATFORMS)} (mps: use --config.backend=torch)"
        )
    if JAX_PLATFORMS[config.device]:
        import jax

        jax.config.update("jax_platforms", JAX_PLATFORMS[config.device])
    from sedd_jax.training import distributed

    try:
        distributed.initialize(config)  # before any JAX computation
    except (distributed.LaunchError, ValueError) as error:
        sys.exit(f"error: {error}")
    from sedd_jax.training.checkpoint import CheckpointMismatchError
    from sedd_jax.training.loop import NonFiniteLossError, train_and_evaluate

    return train_and_evaluate, (NonFiniteLossError, CheckpointMismatchError, *USER_ERRORS)


JAX_PLATFORMS = {"auto": None, "cpu": "cpu", "cuda": "cuda"}


if __name__ == "__main__":
    app.run(main)
