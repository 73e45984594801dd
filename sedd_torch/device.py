"""Device and compute-dtype choice for the twin: `auto | cpu | cuda | mps`.

`auto` takes CUDA, then Apple's MPS, then the CPU. An explicitly requested device that is
not available is an error (the reference silently fell back to the CPU).

Dtypes, per device (what the twin does, and what is safe):
  * parameters, optimizer state, EMA, LayerNorm, softmax, the loss and the sampler's
    arithmetic are float32 everywhere, as in sedd_jax;
  * CUDA: `model.dtype = "bfloat16"` runs the dense layers and attention under
    `torch.autocast(bfloat16)` (the JAX model's compute dtype); LayerNorm, adaLN and the
    time embedding stay float32;
  * MPS and CPU: float32 only. MPS has no float64 at all, so the twin never creates
    float64 tensors (random draws are float32, made on a CPU generator and moved); a
    `model.dtype` other than float32 falls back to float32 there with a warning;
  * float16 compute would need dynamic loss scaling, which the twin does not implement:
    it falls back to float32 on every device.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _available(name: str) -> bool:
    return {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps_available()}[name]


def resolve_device(name: str = "auto") -> torch.device:
    """The torch.device for `name` (see the module docstring)."""
    if name not in DEVICES:
        raise ValueError(f"device={name!r}; choose one of {DEVICES}")
    if name == "auto":
        name = next(n for n in ("cuda", "mps", "cpu") if _available(n))
    elif not _available(name):
        raise ValueError(f"device={name!r} is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(name)


@functools.lru_cache
def autocast_dtype(device_type: str, dtype: str) -> torch.dtype | None:
    """The autocast dtype for `model.dtype` on a device type, or None for plain float32.

    Warns once per (device type, dtype) that falls back to float32.
    """
    if dtype == "float32":
        return None
    if dtype == "bfloat16" and device_type == "cuda":
        return torch.bfloat16
    log.warning(
        "model.dtype=%r is not supported by the torch twin on %s; computing in float32",
        dtype,
        device_type,
    )
    return None
