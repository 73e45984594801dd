"""Test-session setup shared by tests/ and parity_tests/.

XLA compilations are cached on disk for the session, so end-to-end tests that build the
same train step several times (kill-and-resume) compile it once.
"""

import os
import tempfile

import jax
import pytest

_CACHE = os.environ.get("SEDD_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="sedd-xla-cache-")
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
