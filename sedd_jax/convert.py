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

On import the run's settings (graph, tokens, noise, scale_by_sigma, sizes) come from its
own config: upstream's `<run>/.hydra/config.yaml`, the reference's pickled Config, or
--run_config. Where there is none, the graph is ambiguous from the shapes and the import
is refused until --graph, --noise (+ --noise_eps or --sigma_min/--sigma_max) and, for an
absorbing graph, --scale_by_sigma are given; flags win over a config. Files are read with
torch.load(weights_only=True) and an allow-list; --trust_pickle allows a full unpickle.
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
_GRAPH = flags.DEFINE_enum("graph", None, ["absorb", "uniform"], "import: the run's graph")
_TOKENS = flags.DEFINE_integer("tokens", None, "import: tokens without the mask (a check)")
_NOISE = flags.DEFINE_enum(
    "noise", None, ["loglinear", "geometric", "cosine"], "import: the run's noise schedule"
)
_NOISE_EPS = flags.DEFINE_float("noise_eps", None, "import: loglinear eps")
_SIGMA_MIN = flags.DEFINE_float("sigma_min", None, "import: geometric / cosine sigma_min")
_SIGMA_MAX = flags.DEFINE_float("sigma_max", None, "import: geometric / cosine sigma_max")
_SCALE = flags.DEFINE_enum(
    "scale_by_sigma", None, ["true", "false"], "import: the run's model.scale_by_sigma"
)
_RUN_CONFIG = flags.DEFINE_string(
    "run_config", None, "import: the run's YAML (default: <run>/.hydra/config.yaml)"
)
_TRUST = flags.DEFINE_bool(
    "trust_pickle", False, "import: allow a full unpickle (runs code from the file)"
)


def import_options():
    from sedd_jax.conversion.run_settings import ImportOptions

    return ImportOptions(
        graph=_GRAPH.value,
        tokens=_TOKENS.value,
        noise=_NOISE.value,
        noise_eps=_NOISE_EPS.value,
        sigma_min=_SIGMA_MIN.value,
        sigma_max=_SIGMA_MAX.value,
        scale_by_sigma=None if _SCALE.value is None else _SCALE.value == "true",
        run_config=_RUN_CONFIG.value,
        trust_pickle=_TRUST.value,
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
            print(f"wrote {conversion.export_torch(src, dst, _WEIGHTS.value, _STEP.value)}")
            return
        if os.path.exists(os.path.join(dst, "checkpoints")):
            sys.exit(f"error: {dst} already holds checkpoints; choose a new workdir")
        weights = conversion.import_torch_weights(src, _WEIGHTS.value, import_options())
        path = conversion.write_orbax(dst, weights)
    except (conversion.ConversionError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(conversion.describe_import(weights.meta))
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
