"""The naming rule between flax parameters and torch state_dict names.

  * a Dense `a/b/kernel` [in, out] is torch `a.b.weight` [out, in] (transposed); `bias`
    and LayerNorm `weight` keep their names;
  * a numbered module `blocks_3` is `blocks.3` (likewise `sigma_map/mlp_0` ->
    `sigma_map.mlp.0`, `blocks_protein_1` -> `blocks_protein.1`);
  * an embedding table `vocab_embed` [V, d] is `vocab_embed.weight` (reference naming) or
    `vocab_embed.embedding` (upstream SEDD naming, variant `sedd`); a flax `nn.Embed`
    inside a module (the length heads' `length_ligand/embed/embedding`) is a torch
    `nn.Embedding`: `length_ligand.embed.weight`;
  * with upstream naming, `mlp/fc1`, `mlp/fc2` and the output layer's `norm` are
    `mlp.0`, `mlp.2` and `norm_final`.
Torch tensors are ordered as the PyTorch models register them, so an EMA's
`shadow_params` list lines up with `model.parameters()`. The rotary buffer
`rotary_emb.inv_freq` [Dh / 2] has no flax counterpart: it is written on export and, on
import, only checked against the config's head size.
"""

from __future__ import annotations

import re

import numpy as np
from flax import traverse_util

from sedd_jax.conversion.run_settings import ConversionError
from sedd_jax.conversion.torch_files import ROTARY_BUFFER, strip_wrappers

_UPSTREAM_RENAMES = {"fc1": "0", "fc2": "2", "norm": "norm_final"}
# Registration order of the PyTorch modules (reference and upstream SEDD, the twin).
_REGISTRATION_ORDER = (
    "vocab_embed protein_embed ligand_embed sigma_map rotary_emb blocks blocks_protein "
    "blocks_ligand cross_protein cross_ligand output_layer protein_output ligand_output "
    "length_ligand length_protein embed mlp_in mlp_out "
    "norm1 norm_q norm_kv attn_qkv attn_q attn_kv attn_out norm2 mlp norm norm_final linear "
    "adaLN_modulation fc1 fc2 weight embedding bias inv_freq"
).split()
_RANK = {name: i for i, name in enumerate(_REGISTRATION_ORDER)}


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
    return f"{modules}.{'weight' if leaf in ('kernel', 'embedding') else leaf}", leaf == "kernel"


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


def with_rotary_buffer(tensors: dict, head_dim: int) -> dict:
    """Add the rotary buffer and put the names in registration order."""
    tensors = dict(tensors, **{ROTARY_BUFFER: rotary_inv_freq(head_dim)})
    return dict(sorted(tensors.items(), key=lambda item: registration_key(item[0])))
