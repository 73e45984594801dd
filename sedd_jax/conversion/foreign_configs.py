"""The run configs of the torch systems this project imports, mapped onto its config keys.

upstream SEDD keeps its Hydra config in `<run>/.hydra/config.yaml` beside the checkpoint
(`upstream_config_path`); the reference system pickles its `Config` into the checkpoint.
`from_upstream` / `from_reference` map every field that changes the math, record what
they ignore and why, and refuse (naming the file and key) a field they cannot map; the
`Settings` they return are applied by `run_settings.resolve`.
"""

from __future__ import annotations

import os

from sedd_jax.conversion.run_settings import ConversionError, Settings
from sedd_jax.diffusion.sampling import PREDICTORS


def upstream_config_path(checkpoint_path: str) -> str:
    """`<run>/.hydra/config.yaml` for `<run>/<checkpoints dir>/<file>.pth`."""
    run = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_path)))
    return os.path.join(run, ".hydra", "config.yaml")


def read_yaml(path: str) -> dict:
    import yaml

    with open(path) as f:
        try:
            values = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise ConversionError(
                f"{path}: not valid YAML ({' '.join(str(error).split())})"
            ) from None
    if not isinstance(values, dict):
        raise ConversionError(f"{path}: not a YAML mapping")
    return values


def flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------- upstream SEDD

# their key -> our key (graph_lib.get_graph, noise_lib.get_noise, model/transformer.SEDD,
# sampling.get_pc_sampler: every key upstream's math reads)
_UPSTREAM_MAPPED = {
    "tokens": "data.vocab_size",
    "graph.type": "graph.type",
    "noise.type": "noise.type",
    "noise.sigma_min": "noise.sigma_min",
    "noise.sigma_max": "noise.sigma_max",
    "model.hidden_size": "model.hidden",
    "model.n_blocks": "model.n_blocks",
    "model.n_heads": "model.n_heads",
    "model.cond_dim": "model.cond_dim",
    "model.dropout": "model.dropout",
    "model.scale_by_sigma": "model.scale_by_sigma",
    "model.length": "data.max_len",
    "sampling.predictor": "sampling.predictor",
    "sampling.steps": "sampling.steps",
    "sampling.noise_removal": "sampling.denoise",
}
_UPSTREAM_CHOICES = {
    "graph.type": ("absorb", "uniform"),
    "noise.type": ("geometric", "loglinear"),
    "model.type": ("ddit",),
    "sampling.predictor": tuple(PREDICTORS),
}
_UPSTREAM_INERT = {
    "model.name": "a label",
    "model.type": "the only model upstream has",
    "graph.file": "not read by upstream's code",
    "graph.report_all": "not read by upstream's code",
}
# whole sections that only drive training, data and logging (or Hydra itself)
_UPSTREAM_TRAINING = ("ngpus", "training", "data", "eval", "optim", "work_dir", "wandb_name")
_UPSTREAM_TRAINING += ("load_dir", "hydra", "defaults")
UPSTREAM_LOGLINEAR_EPS = 1e-3  # noise_lib.LogLinearNoise(): fixed, the config is not read


def from_upstream(values: dict, where: str) -> Settings:
    """Map an upstream `.hydra/config.yaml`; refuse any key upstream's code does not define
    (such a run was made by other code, whose math is unknown)."""
    settings = Settings(origin=where)
    unknown = []
    for key, value in flatten(values).items():
        top = key.split(".")[0]
        if key in _UPSTREAM_CHOICES and value not in _UPSTREAM_CHOICES[key]:
            raise ConversionError(
                f"{where}: {key}={value!r} cannot be imported (upstream SEDD defines "
                f"{', '.join(_UPSTREAM_CHOICES[key])})"
            )
        if key in _UPSTREAM_MAPPED:
            settings.set(_UPSTREAM_MAPPED[key], value, f"{where}: {key}")
        elif key in _UPSTREAM_INERT:
            settings.ignored[key] = _UPSTREAM_INERT[key]
        elif top in _UPSTREAM_TRAINING:
            settings.ignored[key] = "training / data / logging only"
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"{where}: cannot map {', '.join(unknown)} (not a key of upstream SEDD's config: "
            "the run's math may depend on it); remove it if it changes nothing"
        )
    if settings.values.get("noise.type") == "loglinear":
        for key in ("noise.sigma_min", "noise.sigma_max"):
            if key in settings.values:
                del settings.values[key], settings.sources[key]
                settings.ignored[key] = "upstream's loglinear noise does not read it"
        settings.set("noise.eps", UPSTREAM_LOGLINEAR_EPS, "upstream noise_lib.LogLinearNoise")
    settings.set("model.variant", "sedd", "upstream SEDD")
    return settings


def finish_upstream(settings: Settings) -> None:
    """After the flags: what upstream's code fixes whatever the config says (loglinear's
    eps), and what it cannot run (a uniform graph with the sigma shift: its model asserts
    an absorbing graph, so such a run was not made by upstream's code)."""
    if settings.values.get("noise.type") == "loglinear" and "noise.eps" not in settings.values:
        settings.set("noise.eps", UPSTREAM_LOGLINEAR_EPS, "upstream noise_lib.LogLinearNoise")
    if settings.values.get("graph.type") == "uniform" and settings.values.get(
        "model.scale_by_sigma"
    ):
        raise ConversionError(
            f"{settings.sources['model.scale_by_sigma']} is true with graph.type uniform, "
            "which upstream's model refuses (it asserts an absorbing graph); pass "
            "--scale_by_sigma=false to import it without the shift"
        )


# ------------------------------------------------------------------- reference system

# our key -> their keys, the first present wins (transformer_v100.SEDD.__init__)
_REFERENCE_FIRST = {
    "data.vocab_size": ("tokens", "data.vocab_size_protein", "model.vocab_size"),
    "model.hidden": ("model.dim", "model.hidden_size"),
    "model.n_blocks": ("model.n_layers", "model.n_blocks_prot"),
    "model.n_heads": ("model.n_heads",),
    "model.cond_dim": ("model.cond_dim",),
    "model.scale_by_sigma": ("model.scale_by_sigma",),
    "graph.type": ("graph.type",),
    "noise.type": ("noise.type",),
    "sampling.predictor": ("sampling.predictor",),
    "sampling.steps": ("sampling.steps",),
    "sampling.denoise": ("sampling.noise_removal",),
}
_REFERENCE_NOISE_FIELDS = {
    "loglinear": ("eps",),
    "geometric": ("sigma_min", "sigma_max"),
    "cosine": ("sigma_min", "sigma_max"),
}
_REFERENCE_INERT = {  # keys of the math sections that transformer_v100 does not read
    "model.dropout": "transformer_v100 hard-codes dropout 0.1",
    "model.n_blocks": "transformer_v100 reads n_layers / n_blocks_prot",
    **{
        f"model.{k}": "not read by transformer_v100"
        for k in "name type device length esm_dim molformer_dim n_blocks_lig".split()
    },
    "graph.file": "not read by the reference's code",
    "graph.report_all": "not read by the reference's code",
}
_REFERENCE_MATH_SECTIONS = ("model", "graph", "noise")


def from_reference(values: dict, where: str) -> Settings:
    """Map a reference-system config with transformer_v100's resolution rules. Sections
    other than model / graph / noise / sampling and the vocabulary keys are never read by
    the reference's model or noise, and are ignored; inside model / graph / noise an
    unknown key is refused."""
    settings = Settings(origin=where)
    flat = flatten(values)
    used = set()
    for ours, theirs in _REFERENCE_FIRST.items():
        present = [k for k in theirs if flat.get(k) is not None]
        if present:
            settings.set(ours, flat[present[0]], f"{where}: {present[0]}")
        used.update(theirs)
        for shadowed in present[1:]:
            settings.ignored[shadowed] = f"{present[0]} wins (transformer_v100)"
    noise_type = flat.get("noise.type")
    if noise_type is not None and noise_type not in _REFERENCE_NOISE_FIELDS:
        raise ConversionError(f"{where}: noise.type={noise_type!r} cannot be imported")
    for field in ("eps", "sigma_min", "sigma_max"):
        key = f"noise.{field}"
        used.add(key)
        if key in flat and field in _REFERENCE_NOISE_FIELDS.get(noise_type, ()):
            settings.set(key, flat[key], f"{where}: {key}")
        elif key in flat:
            settings.ignored[key] = f"not read by the {noise_type} schedule"
    unknown = []
    for key in flat:
        if key in used or key in settings.ignored:
            continue
        if key in _REFERENCE_INERT:
            settings.ignored[key] = _REFERENCE_INERT[key]
        elif key.split(".")[0] in _REFERENCE_MATH_SECTIONS:
            unknown.append(key)
        else:
            settings.ignored[key] = "not read by the reference's model or noise"
    if unknown:
        raise ConversionError(
            f"{where}: cannot map {', '.join(unknown)} (not read by the reference's "
            "transformer_v100 or noise_lib: the run's math may depend on it)"
        )
    if settings.values.get("graph.type", "absorb") != "absorb":
        raise ConversionError(
            f"{where}: graph.type={settings.values['graph.type']!r}: the reference trainers "
            "train absorbing graphs only (its uniform graph is unusable there, defect B11)"
        )
    settings.set("graph.type", "absorb", settings.sources.get("graph.type", "v100 default"))
    if "model.scale_by_sigma" not in settings.values:
        settings.set("model.scale_by_sigma", False, "transformer_v100 default")
    settings.set("model.variant", "protlig", "reference transformer_v100")
    settings.set("model.dropout", 0.1, "hard-coded in transformer_v100")
    return settings
