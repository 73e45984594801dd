"""The settings of an imported run: read from the run's own config, or from flags, never
guessed.

A torch checkpoint's tensors fix the architecture but not the math around it: a uniform
graph over V tokens and an absorbing graph over V - 1 tokens + mask have the same shapes,
and nothing in the weights names the noise schedule or `scale_by_sigma`. Those come from:
  * upstream SEDD: `<run>/.hydra/config.yaml` beside `<run>/checkpoints/checkpoint_N.pth`
    or `<run>/checkpoints-meta/checkpoint.pth` (`upstream_config_path`);
  * the reference system: the `Config` pickled into its checkpoint (its YAML, loaded);
  * any layout: `--run_config=PATH` (a YAML of either kind), and the flags of
    `ImportOptions`, which win over a config and are recorded as such.

`from_upstream` / `from_reference` map every field that changes the math onto this
project's config keys, record what they ignore and why, and refuse (naming the file and
key) a field they cannot map. `resolve` then applies the settings to the config read off
the tensors and refuses, with the flags to pass, whatever is still unknown.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from sedd_jax.diffusion.sampling import PREDICTORS


class ConversionError(ValueError):
    """A checkpoint that does not match its config, a config that cannot be mapped, or a
    file of an unknown layout."""


FLAGS_HINT = (
    "pass --graph=absorb|uniform, --noise=loglinear|geometric|cosine (with --noise_eps, or "
    "--sigma_min and --sigma_max), --scale_by_sigma=true|false (absorbing graph) and "
    "optionally --tokens=N, or --run_config=PATH"
)


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    """What the user said on the command line; None: not said."""

    graph: str | None = None
    tokens: int | None = None
    noise: str | None = None
    noise_eps: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    scale_by_sigma: bool | None = None
    run_config: str | None = None  # a YAML to read instead of the one beside the checkpoint
    trust_pickle: bool = False

    def values(self) -> dict:
        """{our config key: value} for the flags given."""
        names = {
            "graph": "graph.type",
            "tokens": "data.vocab_size",
            "noise": "noise.type",
            "noise_eps": "noise.eps",
            "sigma_min": "noise.sigma_min",
            "sigma_max": "noise.sigma_max",
            "scale_by_sigma": "model.scale_by_sigma",
        }
        return {
            ours: getattr(self, flag)
            for flag, ours in names.items()
            if getattr(self, flag) is not None
        }


@dataclasses.dataclass
class Settings:
    """Config values of an imported run and where each came from."""

    values: dict = dataclasses.field(default_factory=dict)  # our dotted key -> value
    sources: dict = dataclasses.field(default_factory=dict)  # our dotted key -> origin
    ignored: dict = dataclasses.field(default_factory=dict)  # their key -> why
    origin: str = "none"  # the file (or checkpoint) the values were read from

    def set(self, key, value, source):
        self.values[key], self.sources[key] = value, source


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


# ---------------------------------------------------------------------------- resolve

_NOISE_NEEDS = {"loglinear": ("eps",), "geometric": ("sigma_min", "sigma_max")}
_NOISE_NEEDS["cosine"] = ("sigma_min", "sigma_max")
_A_GRAPH = {"absorb": "an absorbing", "uniform": "a uniform"}


def with_flags(settings: Settings, options: ImportOptions) -> Settings:
    """Flags win over the run's config; a --noise of another type drops its parameters."""
    flags = options.values()
    if "noise.type" in flags and flags["noise.type"] != settings.values.get("noise.type"):
        for key in [k for k in settings.values if k.startswith("noise.")]:
            del settings.values[key], settings.sources[key]
    if flags and settings.origin.startswith(("none", "no run config")):
        settings.origin = "flags" + ("" if settings.origin == "none" else f" ({settings.origin})")
    for key, value in flags.items():
        previous = settings.values.get(key)
        note = f" (the run's config: {previous!r})" if key in settings.values else ""
        settings.set(key, value, f"flag{note}")
    return settings


_TYPES = {
    **dict.fromkeys(("noise.eps", "noise.sigma_min", "noise.sigma_max", "model.dropout"), float),
    **dict.fromkeys(("data.vocab_size", "data.max_len", "sampling.steps"), int),
    **dict.fromkeys(("model.hidden", "model.n_blocks", "model.n_heads", "model.cond_dim"), int),
    **dict.fromkeys(("model.scale_by_sigma", "sampling.denoise"), bool),
}


def _coerce(key, value, source):
    """YAML reads `1e-4` as a string (YAML 1.1); numbers and booleans are checked here."""
    kind = _TYPES.get(key)
    if kind is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool or isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
        return number
    except (TypeError, ValueError):
        raise ConversionError(f"{source}: {value!r} is not a valid {kind.__name__}") from None


def resolve(config, vocab_rows: int, settings: Settings, where: str):
    """Apply `settings` to `config` (read off the tensors, `vocab_rows` rows in the
    embedding); refuse what is still unknown or contradicts the shapes."""
    for key, value in settings.values.items():
        settings.values[key] = _coerce(key, value, settings.sources[key])
    values = settings.values
    missing = [k for k in ("graph.type", "noise.type") if k not in values]
    noise_type = values.get("noise.type")
    if noise_type is not None and noise_type not in _NOISE_NEEDS:
        raise ConversionError(
            f"{where}: noise {noise_type!r}; choose one of {sorted(_NOISE_NEEDS)}"
        )
    missing += [
        f"noise.{f}" for f in _NOISE_NEEDS.get(noise_type, ()) if f"noise.{f}" not in values
    ]
    absorb = values.get("graph.type") == "absorb"
    if absorb and "model.scale_by_sigma" not in values:
        missing.append("model.scale_by_sigma")
    if values.get("sampling.predictor", "euler") not in PREDICTORS:
        raise ConversionError(
            f"{settings.sources['sampling.predictor']}: predictor "
            f"{values['sampling.predictor']!r}; this project has {sorted(PREDICTORS)}"
        )
    if values.get("graph.type") not in (None, "absorb", "uniform"):
        raise ConversionError(f"{where}: graph {values['graph.type']!r}; choose absorb or uniform")
    if missing:
        origin = settings.origin if settings.origin != "none" else "no run config found"
        why = ""
        if "graph.type" in missing:
            why = (
                f" (the tensors cannot tell a uniform graph over {vocab_rows} tokens from an "
                f"absorbing one over {vocab_rows - 1} + mask)"
            )
        raise ConversionError(
            f"{where}: {origin}; unknown: {', '.join(missing)}{why}: {FLAGS_HINT}"
        )
    unused = [
        k
        for k in values
        if k.startswith("noise.") and k[6:] not in ("type", *_NOISE_NEEDS[noise_type])
    ]
    if unused:
        raise ConversionError(
            f"{where}: {', '.join(unused)} ({', '.join(settings.sources[k] for k in unused)}) "
            f"is not a parameter of the {noise_type} schedule"
        )
    tokens = vocab_rows - 1 if absorb else vocab_rows
    if values.get("data.vocab_size", tokens) != tokens:
        raise ConversionError(
            f"{where}: tokens={values['data.vocab_size']} with "
            f"{_A_GRAPH[values['graph.type']]} graph needs "
            f"{values['data.vocab_size'] + absorb} embedding rows; the checkpoint has "
            f"{vocab_rows} ({settings.sources['data.vocab_size']})"
        )
    if not absorb and values.get("model.scale_by_sigma") is not False:
        settings.set("model.scale_by_sigma", False, "uniform graph: never shifted (upstream)")
    settings.values.setdefault("data.vocab_size", tokens)
    settings.sources.setdefault("data.vocab_size", "the embedding's rows")
    noise = {"type": noise_type}
    noise |= {f: values[f"noise.{f}"] for f in _NOISE_NEEDS[noise_type]}
    config.noise = ml_collections.ConfigDict(noise)
    for key, value in values.items():
        if not key.startswith("noise."):
            section, name = key.split(".")
            config[section][name] = value
    return config


def summary(settings: Settings) -> dict:
    """What the run's meta records about where its settings came from."""
    return {
        "config_from": settings.origin,
        "sources": dict(sorted(settings.sources.items())),
        "ignored": dict(sorted(settings.ignored.items())),
    }
