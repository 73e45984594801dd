"""The C allocator of a CPU training process (`config.allocator`), chosen at process start.

XLA:CPU takes each step's temporary buffers (about 3 GB at the stable size) from the C
allocator and frees them when the step ends. glibc serves blocks above its mmap threshold
with fresh mappings and unmaps a per-thread arena heap whenever it empties, so the kernel
zero-fills ~0.8 M pages again every step, and an op writing a large fresh buffer runs at a
quarter of the bandwidth of one writing reused memory (docs/benchmarks.md, "allocator").
Both settings below keep freed memory mapped for the next step:

* `tcmalloc`: `libtcmalloc_minimal.so.4` via LD_PRELOAD (Debian/Ubuntu package
  `libtcmalloc-minimal4`);
* `glibc`: glibc itself with one arena, no mmap and no trimming (GLIBC_TUNABLES); the
  resident set stays at its peak.

`auto` (the default) takes tcmalloc if it is installed, else glibc, on Linux CPU runs only
(`device=cpu`, or `auto` on a host without /dev/nvidiactl or /dev/kfd), and leaves alone a
process whose LD_PRELOAD or GLIBC_TUNABLES the user set. `system` changes nothing;
`SEDD_ALLOCATOR=system` in the environment does the same for every command.

Neither can be switched on inside a running process (mallopt comes too late: XLA's
threads already have their arenas), so `restart_if_needed` re-executes the same command
line with the variables added, once (`SEDD_ALLOCATOR` marks the restarted process). exec
keeps the PID, the open files and the signal targets of schedulers (SLURM, PBS).
"""

from __future__ import annotations

import os
import sys

CHOICES = ("auto", "tcmalloc", "glibc", "system")
MARK = "SEDD_ALLOCATOR"
TCMALLOC = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
GLIBC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=" + str(2**40)
)
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd")


def find_tcmalloc(dirs=LIBRARY_DIRS) -> str | None:
    for directory in dirs:
        for name in TCMALLOC:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return path
    return None


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def environment(
    choice: str,
    device: str,
    environ,
    *,
    platform: str = sys.platform,
    tcmalloc: str | None = None,
    gpu_host: bool | None = None,
) -> dict | None:
    """The variables to add to `environ` for `choice`, or None to run as is.

    tcmalloc / gpu_host default to what this host has (`find_tcmalloc`, GPU device nodes).
    """
    if choice not in CHOICES:
        raise ValueError(f"config.allocator={choice!r}; choose one of {list(CHOICES)}")
    if choice == "system" or MARK in environ or not platform.startswith("linux"):
        return None
    if tcmalloc is None:
        tcmalloc = find_tcmalloc()
    if choice == "auto":
        if gpu_host is None:
            gpu_host = any(os.path.exists(p) for p in GPU_DEVICE_NODES)
        if device not in ("cpu", "auto") or (device == "auto" and gpu_host):
            return None
        if environ.get("LD_PRELOAD") or environ.get("GLIBC_TUNABLES"):
            return None  # the user chose
    if choice == "tcmalloc" and not tcmalloc:
        raise ValueError(
            f"config.allocator='tcmalloc' but none of {list(TCMALLOC)} is in {list(LIBRARY_DIRS)}"
            " (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)"
        )
    if choice in ("auto", "tcmalloc") and tcmalloc:
        preload = " ".join(p for p in (environ.get("LD_PRELOAD", ""), tcmalloc) if p)
        return {"LD_PRELOAD": preload, MARK: "tcmalloc"}
    if not _is_glibc():
        return None
    tunables = ":".join(t for t in (environ.get("GLIBC_TUNABLES", ""), GLIBC_TUNABLES) if t)
    return {"GLIBC_TUNABLES": tunables, MARK: "glibc"}


def interactive() -> bool:
    """An interactive interpreter or a Jupyter kernel: never re-executed."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules


def restart_if_needed(choice: str, device: str) -> None:
    """Re-execute this process's command line under `choice`'s allocator, if it changes
    anything; returns only when nothing is to be done (then `running()` says what runs).
    For command-line entry points; an interactive session is left as it is."""
    extra = environment(choice, device, os.environ)
    if extra is None or interactive():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **extra})


def running() -> str:
    """The allocator this process was restarted with (`tcmalloc` / `glibc`), else `system`."""
    return os.environ.get(MARK, "system")
