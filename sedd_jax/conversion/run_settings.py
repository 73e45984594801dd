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

`conversion.foreign_configs` maps those configs onto this project's config keys
(`Settings`); `with_flags` lets the flags win; `resolve` then applies the settings to the
config read off the tensors and refuses, with the flags to pass, whatever is still unknown.
"""

from __future__ import annotations

import dataclasses

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
