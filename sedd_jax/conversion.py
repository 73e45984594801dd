"""Checkpoint conversion between orbax (sedd_jax) and PyTorch (`.pt`, `.safetensors`).

Names. One rule maps every flax parameter to its torch state_dict name:
  * a Dense `a/b/kernel` [in, out] is torch `a.b.weight` [out, in] (transposed); `bias`
    and LayerNorm `weight` keep their names;
  * a numbered module `blocks_3` is `blocks.3` (likewise `sigma_map/mlp_0` ->
    `sigma_map.mlp.0`, `blocks_protein_1` -> `blocks_protein.1`);
  * an embedding table `vocab_embed` [V, d] is `vocab_embed.weight` (reference naming) or
    `vocab_embed.embedding` (upstream SEDD naming, variant `sedd`);
  * with upstream naming, `mlp/fc1`, `mlp/fc2` and the output layer's `norm` are
    `mlp.0`, `mlp.2` and `norm_final`.
Torch tensors are ordered as the PyTorch models register them, so an EMA's
`shadow_params` list lines up with `model.parameters()`. The rotary buffer
`rotary_emb.inv_freq` [Dh / 2] has no flax counterpart: it is written on export and, on
import, only checked against the config's head size.

Torch files are read by `sedd_jax.torch_checkpoints` (this project's exports, the
reference system's and upstream SEDD's training checkpoints, bare state_dicts), with the
run's graph, tokens and noise from its own config or from flags (`sedd_jax.run_configs`,
never guessed); every tensor's shape is then checked against the config, and an error
names the key. An import records what it read, and from where, in meta["converted_from"].

numpy is the interchange format; torch and safetensors are imported only when a torch
file is read or written.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from sedd_jax.data.selfies import ligand_tokenizer_from_dict
from sedd_jax.diffusion.graphs import get_graph
from sedd_jax.diffusion.noise import get_noise
from sedd_jax.models.dual import build_dual_model
from sedd_jax.models.sedd import build_model
from sedd_jax.torch_checkpoints import (  # noqa: F401  (re-exported: the library's API)
    ROTARY_BUFFER,
    ConversionError,
    ImportOptions,
    TorchCheckpoint,
    config_from_dict,
    infer_config,
    read_torch_checkpoint,
    strip_wrappers,
)
from sedd_jax.training import checkpoint
from sedd_jax.training.optim import make_optimizer
from sedd_jax.training.state import TrainState

WEIGHTS = ("both", "ema", "params")
_UPSTREAM_RENAMES = {"fc1": "0", "fc2": "2", "norm": "norm_final"}
# Registration order of the PyTorch modules (reference and upstream SEDD, the twin).
_REGISTRATION_ORDER = (
    "vocab_embed protein_embed ligand_embed sigma_map rotary_emb blocks blocks_protein "
    "blocks_ligand cross_protein cross_ligand output_layer protein_output ligand_output "
    "norm1 norm_q norm_kv attn_qkv attn_q attn_kv attn_out norm2 mlp norm norm_final linear "
    "adaLN_modulation fc1 fc2 weight embedding bias inv_freq"
).split()
_RANK = {name: i for i, name in enumerate(_REGISTRATION_ORDER)}


# ----------------------------------------------------------------------------- names


def upstream_names(variant: str) -> bool:
    """Whether the torch model of `variant` uses upstream SEDD's parameter names."""
    return variant == "sedd"


def _torch_module(name: str, upstream: bool) -> str:
    if match := re.fullmatch(r"(.+)_(\d+)", name):
        return f"{match.group(1)}.{match.group(2)}"
    return _UPSTREAM_RENAMES.get(name, name) if upstream else name


def torch_name(path: tuple[str, ...], upstream: bool) -> tuple[str, bool]:
    """flax path -> (torch name, whether the array is transposed)."""
    if len(path) == 1:  # an embedding table
        return f"{path[0]}.{'embedding' if upstream else 'weight'}", False
    modules = ".".join(_torch_module(p, upstream) for p in path[:-1])
    leaf = path[-1]
    return f"{modules}.{'weight' if leaf == 'kernel' else leaf}", leaf == "kernel"


def registration_key(name: str):
    """Sort key that puts torch names in the PyTorch models' registration order."""
    parts = name.split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, _RANK.get(p, len(_RANK))) for p in parts)


def name_map(params, upstream: bool) -> dict[str, tuple[tuple[str, ...], bool]]:
    """{torch name: (flax path, transposed)} in registration order, for a params tree
    (arrays or ShapeDtypeStructs)."""
    entries = {}
    for path in traverse_util.flatten_dict(_unfreeze(params)):
        name, transposed = torch_name(path, upstream)
        entries[name] = (path, transposed)
    return dict(sorted(entries.items(), key=lambda item: registration_key(item[0])))


def _unfreeze(tree):
    return {k: _unfreeze(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def flax_to_torch(params, variant: str) -> dict[str, np.ndarray]:
    """Flax params -> {torch name: float32 array} in registration order (no buffers)."""
    flat = traverse_util.flatten_dict(_unfreeze(params))
    out = {}
    for name, (path, transposed) in name_map(params, upstream_names(variant)).items():
        array = np.asarray(flat[path])
        out[name] = np.array(array.T if transposed else array, order="C")
    return out


def torch_to_flax(state_dict: dict, expected, variant: str, head_dim: int | None = None):
    """{torch name: array} -> flax params shaped like `expected` (a tree of shapes).

    Raises ConversionError naming every missing, unexpected or mis-shaped key. Buffers
    (`*.inv_freq`) are not parameters; their length must be head_dim / 2.
    """
    state_dict = strip_wrappers(state_dict)
    problems, flat = [], {}
    shapes = traverse_util.flatten_dict(_unfreeze(expected))
    names = name_map(expected, upstream_names(variant))
    for name, (path, transposed) in names.items():
        want = tuple(shapes[path].shape)
        if name not in state_dict:
            shape = _torch_shape(want, transposed)
            problems.append(f"missing key {name!r} (expected shape {shape})")
            continue
        array = state_dict[name]
        got = tuple(array.shape[::-1] if transposed else array.shape)
        if got != want:
            problems.append(
                f"key {name!r}: shape {tuple(array.shape)} in the checkpoint, "
                f"{_torch_shape(want, transposed)} expected by the config"
            )
            continue
        flat[path] = np.ascontiguousarray(array.T if transposed else array, dtype=np.float32)
    for name, array in state_dict.items():
        if name in names:
            continue
        if name.endswith("inv_freq"):
            if head_dim is not None and tuple(array.shape) != (head_dim // 2,):
                problems.append(
                    f"key {name!r}: shape {tuple(array.shape)}, but hidden / n_heads = "
                    f"{head_dim} in the config needs ({head_dim // 2},) (check model.n_heads)"
                )
        else:
            problems.append(f"unexpected key {name!r} with shape {tuple(array.shape)}")
    if problems:
        raise ConversionError(
            "checkpoint does not match the config (variant "
            f"{variant!r}):\n  " + "\n  ".join(problems)
        )
    return traverse_util.unflatten_dict(flat)


def _torch_shape(flax_shape, transposed):
    return tuple(flax_shape[::-1]) if transposed else tuple(flax_shape)


def rotary_inv_freq(head_dim: int) -> np.ndarray:
    """The rotary buffer, computed exactly as the PyTorch models compute it."""
    import torch

    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    return (1.0 / (10000.0**exponent)).numpy()


def is_dual(config) -> bool:
    return config.model.get("kind", "single") == "dual"


def model_for(config, meta: dict | None = None):
    """The flax model that `config` describes; a dual-track model also needs the run's
    `meta` (the ligand tokenizer fixes the ligand vocabulary)."""
    if not is_dual(config):
        graph = get_graph(config.graph, config.data.vocab_size)
        return build_model(config.model, graph.dim, graph.absorb)
    meta = meta or {}
    if "ligand_tokenizer" not in meta:
        raise ConversionError("a dual-track checkpoint needs meta['ligand_tokenizer']")
    protein = get_graph(config.graph, meta.get("protein_vocab_size", config.data.vocab_size))
    ligand_vocab = ligand_tokenizer_from_dict(meta["ligand_tokenizer"]).vocab_size
    ligand = get_graph(config.graph, ligand_vocab)
    return build_dual_model(config.model, protein.dim, ligand.dim, protein.absorb)


def abstract_params(config, meta: dict | None = None):
    """Shapes and dtypes of the parameters of `config`'s model (nothing is allocated)."""
    model = model_for(config, meta)
    x, sigma = jnp.zeros((1, 8), jnp.int32), jnp.ones((1,))
    if is_dual(config):
        init = functools.partial(model.init, mode="joint")
        return jax.eval_shape(lambda: init(jax.random.key(0), x, x, sigma)["params"])
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, sigma)["params"])


# ------------------------------------------------------------------------------ orbax


@dataclasses.dataclass
class Weights:
    """Flax parameters of a checkpoint and where they came from."""

    params: dict
    ema_params: dict
    step: int
    config: ml_collections.ConfigDict
    meta: dict


def read_orbax(workdir: str, step: int | None = None) -> Weights:
    """params and EMA of `<workdir>/checkpoints/<step>` (the newest when step is None); of
    a torch-backend run's `torch_checkpoints/*.pt` when the workdir has no orbax one."""
    if (twin := checkpoint.twin_weights(workdir, step)) is not None:
        return twin
    step, meta = checkpoint.read_meta(workdir, step)
    state = checkpoint.restore_raw_state(workdir, step)
    to_numpy = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
    config = config_from_dict(meta["config"])
    return Weights(to_numpy(state["params"]), to_numpy(state["ema_params"]), step, config, meta)


def train_state(config, params, ema_params, step: int) -> TrainState:
    """A TrainState the JAX loop resumes from: these weights, a fresh optimizer state, and
    the PRNG that `create_train_state` derives from `config.seed`."""
    tx = make_optimizer(config.optim, config.training.n_steps)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    _, state_key = jax.random.split(jax.random.key(config.seed))
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.asarray, ema_params),
        opt_state=tx.init(params),
        rng=jax.random.key_data(state_key),
    )


def write_orbax(workdir: str, weights: Weights) -> str:
    """Save `weights` as `<workdir>/checkpoints/<step>/{state, meta}`."""
    state = train_state(weights.config, weights.params, weights.ema_params, weights.step)
    meta = dict(weights.meta, config=weights.config.to_dict())
    manager = checkpoint.make_manager(workdir, keep=1_000_000, async_save=False)
    checkpoint.save(manager, weights.step, state, meta, force=True)
    manager.wait_until_finished()
    manager.close()
    return str(manager.directory)


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
    settings where its file does not carry them (see `sedd_jax.run_configs`).
    """
    return write_orbax(workdir, import_torch_weights(source, weights, options))


def with_rotary_buffer(tensors: dict, head_dim: int) -> dict:
    """Add the rotary buffer and put the names in registration order."""
    tensors = dict(tensors, **{ROTARY_BUFFER: rotary_inv_freq(head_dim)})
    return dict(sorted(tensors.items(), key=lambda item: registration_key(item[0])))


def torch_tensors(weights: Weights, which: str) -> tuple[dict, dict | None]:
    """(state_dict arrays with buffer, EMA arrays or None) per `which` in both|ema|params."""
    variant = weights.config.model.variant
    head_dim = weights.config.model.hidden // weights.config.model.n_heads
    raw = flax_to_torch(weights.params, variant)
    ema = flax_to_torch(weights.ema_params, variant)
    if which not in WEIGHTS:
        raise ConversionError(f"weights={which!r}; choose one of {WEIGHTS}")
    if which == "both":
        return with_rotary_buffer(raw, head_dim), ema
    return with_rotary_buffer(ema if which == "ema" else raw, head_dim), None


def export_pt(weights: Weights, path: str, which: str = "both") -> str:
    """Write the reference layout: model_state_dict, ema_state_dict.shadow_params (in
    parameter order), step, config, meta."""
    import torch

    state_dict, ema = torch_tensors(weights, which)
    payload = {
        "step": weights.step,
        "model_state_dict": {k: torch.from_numpy(v) for k, v in state_dict.items()},
        "config": weights.config.to_dict(),
        "meta": weights.meta,
    }
    if ema is not None:
        payload["ema_state_dict"] = {
            "decay": weights.config.training.ema,
            "num_updates": weights.step,
            "shadow_params": [torch.from_numpy(v) for v in ema.values()],
        }
    torch.save(payload, path)
    return path


def export_safetensors(weights: Weights, path: str, which: str = "both") -> str:
    """Write tensors by torch name (EMA as `ema.<name>` with which=both); config, meta and
    step go into the header's metadata."""
    from safetensors.numpy import save_file

    state_dict, ema = torch_tensors(weights, which)
    tensors = dict(state_dict)
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    metadata = {
        "format": "sedd",
        "weights": which,
        "step": str(weights.step),
        "config": json.dumps(weights.config.to_dict()),
        "meta": json.dumps(weights.meta),
    }
    save_file(tensors, path, metadata=metadata)
    return path


EXPORTERS = {".pt": export_pt, ".pth": export_pt, ".safetensors": export_safetensors}


def export_torch(workdir: str, path: str, which: str = "both", step: int | None = None) -> str:
    """An orbax workdir's checkpoint -> `.pt`/`.pth` or `.safetensors` by extension."""
    suffix = next((s for s in EXPORTERS if path.endswith(s)), None)
    if suffix is None:
        raise ConversionError(f"{path}: the extension must be one of {sorted(EXPORTERS)}")
    return EXPORTERS[suffix](read_orbax(workdir, step), path, which)
