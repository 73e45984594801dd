"""Test-session setup shared by tests/ and parity_tests/.

XLA compilations are cached on disk for the session, so end-to-end tests that build the
same train step several times (kill-and-resume) compile it once.
"""

import os
import tempfile

import jax

_CACHE = os.environ.get("SEDD_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="sedd-xla-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
