"""The training process's C allocator (`sedd_jax/allocator.py`): the policy, a real
re-exec, and what it is for: a freed large buffer comes back without fresh page faults."""

from __future__ import annotations

import os
import sys

import pytest

from sedd_jax import allocator
from tests.helpers import run_cli

LINUX = sys.platform.startswith("linux")
LIB = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

# malloc, touch and free 256 MiB, then malloc and touch it again; print the minor page
# faults of the second touch and the allocator this process runs with (through libc's
# malloc, as XLA's buffers; numpy would add its own huge-page advice)
FAULTS = """
import ctypes, resource, sys
from sedd_jax import allocator
allocator.restart_if_needed(sys.argv[1], "cpu")
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 2**28
p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(size); ctypes.memset(p, 1, size)
print(allocator.running(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_policy():
    env = {}
    kw = dict(platform="linux", tcmalloc=LIB, gpu_host=False)
    assert allocator.environment("auto", "cpu", env, **kw) == {
        "LD_PRELOAD": LIB,
        allocator.MARK: "tcmalloc",
    }
    glibc = allocator.environment("auto", "auto", env, **{**kw, "tcmalloc": ""})
    if allocator._is_glibc():
        assert glibc[allocator.MARK] == "glibc"
        assert "glibc.malloc.arena_max=1" in glibc["GLIBC_TUNABLES"]
    # GPU runs, other platforms, the user's own choice, an already restarted process
    assert allocator.environment("auto", "cuda", env, **kw) is None
    assert allocator.environment("auto", "auto", env, **{**kw, "gpu_host": True}) is None
    assert allocator.environment("auto", "cpu", env, **{**kw, "platform": "darwin"}) is None
    assert allocator.environment("auto", "cpu", {"LD_PRELOAD": "x.so"}, **kw) is None
    assert allocator.environment("auto", "cpu", {allocator.MARK: "glibc"}, **kw) is None
    assert allocator.environment("system", "cpu", env, **kw) is None
    # asked for explicitly: applied even on a GPU host, appended to the user's variables
    forced = allocator.environment("tcmalloc", "cuda", {"LD_PRELOAD": "x.so"}, **kw)
    assert forced["LD_PRELOAD"] == f"x.so {LIB}"
    forced = allocator.environment("glibc", "cpu", {"GLIBC_TUNABLES": "a=1"}, **kw)
    if allocator._is_glibc():
        assert forced["GLIBC_TUNABLES"].startswith("a=1:glibc.malloc.arena_max=1")
    with pytest.raises(ValueError, match="config.allocator='jemalloc'"):
        allocator.environment("jemalloc", "cpu", env, **kw)
    with pytest.raises(ValueError, match="libtcmalloc-minimal4"):
        allocator.environment("tcmalloc", "cpu", env, **{**kw, "tcmalloc": ""})


def _plain_env() -> dict:
    """This environment without any allocator setting (as a fresh shell)."""
    drop = ("LD_PRELOAD", "GLIBC_TUNABLES", allocator.MARK)
    return {k: v for k, v in os.environ.items() if k not in drop}


def _faults(choice: str) -> tuple[str, int]:
    env = _plain_env()
    out = run_cli("-c", FAULTS, choice, base_env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.slow
@pytest.mark.skipif(not (LINUX and allocator._is_glibc()), reason="glibc tunables: Linux glibc")
def test_restart_keeps_freed_memory_mapped():
    name, system = _faults("system")
    assert name == "system"
    assert system > 50_000  # 256 MiB = 65,536 pages, each faulted in again
    name, glibc = _faults("glibc")
    assert name == "glibc"  # the re-executed process carries the mark
    assert glibc < 1_000
    if allocator.find_tcmalloc():
        name, tcmalloc = _faults("tcmalloc")
        assert name == "tcmalloc"
        assert tcmalloc < 1_000


@pytest.mark.slow
def test_interactive_sessions_are_not_restarted():
    """`python -i` (as a notebook kernel): the call returns, the process is not replaced."""
    env = _plain_env()
    code = "from sedd_jax import allocator; allocator.restart_if_needed('glibc', 'cpu')\n"
    code += "print('still here', allocator.running())\n"
    out = run_cli("-i", "-q", stdin=code, base_env=env, check=False)
    assert "still here system" in out.stdout, out.stderr


def _train_cli(tmp_path, *args):
    """`python -m sedd_jax.train` on a config that stops at its (missing) data, after the
    allocator step."""
    env = _plain_env()
    args = [f"--workdir={tmp_path}", f"--config.data.path={tmp_path}/none", *args]
    return run_cli(
        "sedd_jax.train",
        "--config=configs/stable.py",
        *args,
        base_env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(not (LINUX and allocator._is_glibc()), reason="glibc tunables: Linux glibc")
def test_train_cli_restarts_under_the_allocator(tmp_path):
    expected = "tcmalloc" if allocator.find_tcmalloc() else "glibc"
    auto = _train_cli(tmp_path, "--config.device=cpu")
    assert f"C allocator: {expected}" in auto.stderr
    assert auto.stderr.strip().splitlines()[-1].startswith("error: data.source='shards'")
    off = _train_cli(tmp_path, "--config.device=cpu", "--config.allocator=system")
    assert "C allocator: system" in off.stderr
    bad = _train_cli(tmp_path, "--config.allocator=jemalloc")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: config.allocator='jemalloc'")
