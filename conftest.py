"""Test-session setup shared by tests/ and parity_tests/.

XLA compilations are cached on disk for the session (one directory for every pytest-xdist
worker), so end-to-end tests that build the
same train step several times (kill-and-resume) compile it once; command-line runs
(`tests.helpers.run_cli`) share the cache. `tiny_single_run` and `tiny_pair_run` are
finished runs trained once per session for the tests that only read a run.
"""

import dataclasses
import os
import pathlib
import tempfile

import jax
import ml_collections
import pytest

from tests.helpers import TINY_PAIR_RUN, TINY_SINGLE_RUN, tiny_config

# Tests are compile-bound (tiny models, many shapes): XLA's LLVM optimisations cost more than
# they save, about 40 % of the wall time of compile-heavy tests; so do the CPU backend's new
# fusion emitters (the tiny pair run of the session fixture: 25 s -> 16 s, its compilations
# 15 s -> 7 s; 200 steps of a 64-wide model run 8 % slower; AMD EPYC, 2 cores). Set before
# the backend starts; subprocesses inherit it (tests.helpers.cli_env), so runs compared bit
# for bit across processes compile alike. SEDD_TEST_XLA_OPT=1 keeps XLA's defaults.
_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false"
)
if os.environ.get("SEDD_TEST_XLA_OPT") != "1" and "optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

_CACHE = os.environ.get("SEDD_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="sedd-xla-cache-")
# pytest-xdist workers start after this file is imported by the controller: they inherit
# the variable and share one cache.
os.environ["SEDD_TEST_XLA_CACHE"] = _CACHE
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def missing_data():
    """handle(error): skip a test whose data set is not on this machine -- or fail it when
    SEDD_REQUIRE_DATA=1 (set by .ci/run, whose installs provide every data set)."""

    def handle(error):
        if os.environ.get("SEDD_REQUIRE_DATA") == "1":
            pytest.fail(f"SEDD_REQUIRE_DATA=1 but a data set is missing: {error}")
        pytest.skip(str(error))

    return handle


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """A trained run: its workdir, config and `train_and_evaluate` summary (sample files).
    Shared by the session: tests read it and write their outputs under their tmp_path."""

    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    summary: dict


def _train(tmp_path_factory, name: str, config) -> FinishedRun:
    from sedd_jax.training.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp(name)
    return FinishedRun(workdir, config, train_and_evaluate(config, str(workdir)))


@pytest.fixture(scope="session")
def tiny_single_run(tmp_path_factory):
    """The tiny protein model, 3 steps on the demo proteins (cropped to 32), 8 samples."""
    return _train(tmp_path_factory, "tiny_single_run", tiny_config("base", **TINY_SINGLE_RUN))


@pytest.fixture(scope="session")
def tiny_pair_run(tmp_path_factory, missing_data):
    """The tiny dual-track model, 3 steps on the demo pairs (proteins cropped to 32,
    ligands to 48 tokens), 8 samples per task; skipped without the demo pairs."""
    from sedd_jax.data.pairs import PairSourceNotFoundError, load_demo_pairs

    try:
        load_demo_pairs()
    except PairSourceNotFoundError as error:
        missing_data(error)
    return _train(tmp_path_factory, "tiny_pair_run", tiny_config("dual", **TINY_PAIR_RUN))


def pytest_collection_modifyitems(config, items):
    """Order for two pytest-xdist workers: each half of the collection (worksteal gives
    each worker one half, then idle workers steal from the tail of the other's queue)
    starts with half of the slow tests and ends with fast ones, so the long tests run
    first on both workers and the tail that is stolen or waited for is short."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    half = len(fast) // 2
    items[:] = slow[0::2] + fast[:half] + slow[1::2] + fast[half:]
