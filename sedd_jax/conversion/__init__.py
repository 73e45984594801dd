"""Checkpoint conversion between orbax (sedd_jax) and PyTorch (`.pt`, `.safetensors`).

  names.py         the naming rule flax path <-> torch state_dict name
  torch_files.py   reading torch files (this project's, the reference's, upstream SEDD's)
  foreign_configs.py  upstream SEDD's / the reference's run config -> this project's keys
  run_settings.py  those settings and the flags applied to the config read off the tensors
  torch_import.py  a torch file -> flax Weights, shapes checked against the config
  orbax_io.py      Weights in and out of orbax workdirs
  export.py        Weights -> `.pt` / `.safetensors`

`python -m sedd_jax.convert` is the command line; `sedd_jax.runs.open_run` reads a run
of any of these forms. The names below are the package's API.
"""

from sedd_jax.conversion.export import (
    EXPORTERS,
    export_pt,
    export_safetensors,
    export_torch,
    read_weights,
    torch_tensors,
)
from sedd_jax.conversion.names import (
    flax_to_torch,
    name_map,
    registration_key,
    rotary_inv_freq,
    torch_name,
    torch_to_flax,
    upstream_names,
    with_rotary_buffer,
)
from sedd_jax.conversion.orbax_io import (
    Weights,
    has_orbax,
    read_meta,
    read_orbax,
    train_state,
    write_orbax,
)
from sedd_jax.conversion.run_settings import ConversionError, ImportOptions
from sedd_jax.conversion.torch_files import (
    ROTARY_BUFFER,
    TorchCheckpoint,
    config_from_dict,
    infer_config,
    read_torch_checkpoint,
    strip_wrappers,
)
from sedd_jax.conversion.torch_import import (
    WEIGHTS,
    abstract_params,
    describe_import,
    import_torch,
    import_torch_weights,
    imported_settings,
    is_dual,
    model_for,
    select_weights,
    torch_checkpoint_to_weights,
)

__all__ = [
    "EXPORTERS",
    "ROTARY_BUFFER",
    "WEIGHTS",
    "ConversionError",
    "ImportOptions",
    "TorchCheckpoint",
    "Weights",
    "abstract_params",
    "config_from_dict",
    "describe_import",
    "export_pt",
    "export_safetensors",
    "export_torch",
    "flax_to_torch",
    "has_orbax",
    "import_torch",
    "import_torch_weights",
    "imported_settings",
    "infer_config",
    "is_dual",
    "model_for",
    "name_map",
    "read_meta",
    "read_orbax",
    "read_torch_checkpoint",
    "read_weights",
    "registration_key",
    "rotary_inv_freq",
    "select_weights",
    "strip_wrappers",
    "torch_checkpoint_to_weights",
    "torch_name",
    "torch_tensors",
    "torch_to_flax",
    "train_state",
    "upstream_names",
    "with_rotary_buffer",
    "write_orbax",
]
