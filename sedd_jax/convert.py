"""Convert checkpoints between orbax (sedd_jax) and PyTorch.

    # orbax workdir -> PyTorch (.pt in the reference layout, or .safetensors)
    python -m sedd_jax.convert --src=runs/demo --dst=demo.pt [--step=1200] [--weights=both]
    # PyTorch file -> a new orbax workdir (this project's .pt/.safetensors, the reference
    # system's training checkpoints, upstream SEDD's, or a bare state_dict)
    python -m sedd_jax.convert --src=checkpoint_step_500000.pth --dst=runs/imported \\
        --weights=ema

The direction follows --src: a directory is an orbax workdir, a file a torch checkpoint.
--weights: `both` keeps raw weights and EMA apart; `ema` / `params` keeps one set (on
import it fills both slots, so the JAX sampler, which uses the EMA slot, samples it).
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

_SRC = flags.DEFINE_string("src", None, "orbax workdir, or a .pt/.pth/.safetensors file")
_DST = flags.DEFINE_string("dst", None, ".pt/.pth/.safetensors file, or a new orbax workdir")
_WEIGHTS = flags.DEFINE_enum("weights", "both", ["both", "ema", "params"], "which weights")
_STEP = flags.DEFINE_integer("step", None, "orbax step to export (default: the newest)")
_SCALE = flags.DEFINE_enum(
    "scale_by_sigma",
    None,
    ["true", "false"],
    "for torch files whose config does not say (upstream SEDD, bare state_dicts; default "
    "true); overrides a reference checkpoint's config",
)


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    src, dst = _SRC.value, _DST.value
    if not src or not dst:
        sys.exit("--src and --dst are required (see --help)")
    if not os.path.exists(src):
        sys.exit(f"error: --src={src} does not exist")
    from sedd_jax import conversion

    try:
        if os.path.isdir(src):
            path = conversion.export_torch(src, dst, _WEIGHTS.value, _STEP.value)
        else:
            if os.path.exists(os.path.join(dst, "checkpoints")):
                sys.exit(f"error: {dst} already holds checkpoints; choose a new workdir")
            scale = None if _SCALE.value is None else _SCALE.value == "true"
            path = conversion.import_torch(src, dst, _WEIGHTS.value, scale)
    except (conversion.ConversionError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
