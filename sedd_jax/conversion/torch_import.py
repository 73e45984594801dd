"""A torch checkpoint file -> flax Weights: shapes checked against the run's config.

Torch files are read by `torch_files` (this project's exports, the reference system's
and upstream SEDD's training checkpoints, bare state_dicts), with the run's graph, tokens
and noise from its own config or from flags (`run_settings`, never guessed); every
tensor's shape is then checked against the config, and an error names the key. An import
records what it read, and from where, in meta["converted_from"].
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from sedd_jax.conversion.names import torch_to_flax
from sedd_jax.conversion.orbax_io import Weights, write_orbax
from sedd_jax.conversion.run_settings import ConversionError, ImportOptions
from sedd_jax.conversion.torch_files import TorchCheckpoint, read_torch_checkpoint
from sedd_jax.diffusion.graphs import get_graph
from sedd_jax.diffusion.noise import get_noise
from sedd_jax.runs import Tokenizers, build_components

WEIGHTS = ("both", "ema", "params")


def is_dual(config) -> bool:
    return config.model.get("kind", "single") == "dual"


def model_for(config, meta: dict | None = None):
    """The flax model that `config` describes with the vocabularies of the run's `meta`
    (a dual-track model needs its ligand tokenizer; without meta, a single-track model
    reads `data.vocab_size` proteins)."""
    if is_dual(config) and "ligand_tokenizer" not in (meta or {}):
        raise ConversionError("a dual-track checkpoint needs meta['ligand_tokenizer']")
    return build_components(config, Tokenizers.from_meta(config, meta)).model


def abstract_params(config, meta: dict | None = None):
    """Shapes and dtypes of the parameters of `config`'s model (nothing is allocated)."""
    model = model_for(config, meta)
    x, sigma = jnp.zeros((1, 8), jnp.int32), jnp.ones((1,))
    if is_dual(config):
        init = functools.partial(model.init, mode="joint")
        return jax.eval_shape(lambda: init(jax.random.key(0), x, x, sigma)["params"])
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, sigma)["params"])


def select_weights(raw, ema, weights: str, source: str):
    """(params, ema_params) for `weights` in both | ema | params."""
    if weights not in WEIGHTS:
        raise ConversionError(f"weights={weights!r}; choose one of {WEIGHTS}")
    if weights == "ema" and ema is None:
        raise ConversionError(f"{source} has no EMA weights; use weights='params'")
    if weights == "params" or ema is None:
        return raw, raw
    if weights == "ema":
        return ema, ema
    return raw, ema


def torch_checkpoint_to_weights(ckpt: TorchCheckpoint, weights: str = "both", source="") -> Weights:
    """Check a torch checkpoint against its config and turn it into flax parameters; the
    meta's `converted_from` records what was imported and where each setting came from."""
    config = ckpt.config
    if is_dual(config) and "length_head" not in config.model:
        config.model.length_head = False  # saved before the length heads: none to import
    expected = abstract_params(config, ckpt.meta)
    variant = config.model.variant
    head_dim = config.model.hidden // config.model.n_heads
    raw = torch_to_flax(ckpt.params, expected, variant, head_dim)
    ema = torch_to_flax(ckpt.ema, expected, variant, head_dim) if ckpt.ema else None
    params, ema_params = select_weights(raw, ema, weights, source or ckpt.layout)
    meta = dict(ckpt.meta)
    meta.setdefault("protein_vocab_size", config.data.vocab_size)
    meta["converted_from"] = {
        "layout": ckpt.layout,
        "source": source,
        "weights": weights if ema is not None else "params (the file has no EMA)",
        "step": ckpt.step,
        **imported_settings(config),
        **ckpt.provenance,
    }
    return Weights(params, ema_params, ckpt.step, config, meta)


def imported_settings(config) -> dict:
    """The settings that change the math, as they take effect (a uniform graph is never
    shifted by sigma, whatever `model.scale_by_sigma` says)."""
    graph = get_graph(config.graph, config.data.vocab_size)
    noise = get_noise(config.noise)
    return {
        "graph": config.graph.type,
        "tokens": config.data.vocab_size,
        "vocab_size": graph.dim,
        "noise": {"type": config.noise.type, **dataclasses.asdict(noise)},
        "variant": config.model.variant,
        "scale_by_sigma": bool(config.model.scale_by_sigma and graph.absorb),
    }


def describe_import(meta: dict) -> str:
    """A few lines saying what was imported and from where (the CLI prints them)."""
    info = meta["converted_from"]
    noise = ", ".join(f"{k}={v}" for k, v in info["noise"].items() if k != "type")
    origin = info.get("config_from", "?")
    lines = [
        f"imported {info['source'] or info['layout']} ({info['layout']} layout, "
        f"read {info.get('loaded_with', '?')}), step {info['step']}, weights {info['weights']}",
        f"  graph {info['graph']}, {info['tokens']} tokens (V = {info['vocab_size']}); "
        f"noise {info['noise']['type']} ({noise}); variant {info['variant']}; "
        f"scale_by_sigma {str(info['scale_by_sigma']).lower()}",
        f"  settings from {origin}:",
    ]
    for key, source in info.get("sources", {}).items():
        lines.append(f"    {key} <- {source.removeprefix(f'{origin}: ')}")
    by_reason = {}
    for key, reason in info.get("ignored", {}).items():
        by_reason.setdefault(reason, []).append(key)
    for reason, keys in sorted(by_reason.items()):
        lines.append(f"  ignored ({reason}): {', '.join(_collapse(keys))}")
    return "\n".join(lines)


def _collapse(keys: list[str]) -> list[str]:
    """`optim.lr, optim.eps, ...` -> `optim.*` where a section has more than two keys."""
    sections = {}
    for key in keys:
        sections.setdefault(key.split(".")[0], []).append(key)
    out = [f"{s}.*" if len(ks) > 2 else k for s, ks in sections.items() for k in ks[:1]]
    out += [k for ks in sections.values() if len(ks) <= 2 for k in ks[1:]]
    return sorted(out)


def import_torch_weights(
    source: str, weights: str = "both", options: ImportOptions | None = None
) -> Weights:
    """A torch checkpoint file -> Weights (config resolved, shapes checked)."""
    return torch_checkpoint_to_weights(read_torch_checkpoint(source, options), weights, source)


def import_torch(
    source: str, workdir: str, weights: str = "both", options: ImportOptions | None = None
) -> str:
    """A torch checkpoint file -> a new orbax workdir the JAX sampler and trainer load.

    weights: `both` keeps raw weights as params and the EMA as ema_params; `ema` / `params`
    puts that one set in both slots (the sampler uses ema_params). options: the run's
    settings where its file does not carry them (see `conversion.run_settings`).
    """
    return write_orbax(workdir, import_torch_weights(source, weights, options))
