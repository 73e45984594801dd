"""A run, from its config or from what it left on disk.

`build_components(config, tokenizers)` is the one mapping from a config to the graph(s),
the noise schedule and the network: the training tasks, `open_run`, the command-line
tools and the benchmarks ask it. `open_run(path)` turns a run back into its parts:

    run = open_run("runs/demo")            # orbax checkpoints/, or the twin's torch_checkpoints/
    run = open_run("exported.safetensors")  # a torch file, converted on the fly
    run.config, run.meta, run.step, run.kind ("single" | "pair")
    run.tokenizers.track / .protein / .ligand
    run.components.graph (PairGraphs for pairs), .noise, .model
    run.params("ema" | "params")
    run.data()                              # TrackData: the trainer's shards and split

`run.data()` reads the shards the trainer read (`track_data.run_data`), so evaluation,
sample reports and the twin see the same validation split as training, whatever the
run's seed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from ml_collections import ConfigDict

from sedd_jax.common import torch_layout
from sedd_jax.common.tasks import PairGraphs
from sedd_jax.data.protein import ProteinTokenizer
from sedd_jax.data.selfies import ligand_tokenizer_from_dict
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.track_data import TrackData, run_data
from sedd_jax.diffusion.graphs import get_graph
from sedd_jax.diffusion.noise import get_noise
from sedd_jax.models.dual import build_dual_model
from sedd_jax.models.sedd import build_model

KINDS = {"single": "single", "dual": "pair"}  # config.model.kind -> Run.kind
WEIGHTS = ("ema", "params")
TORCH_SUFFIXES = (".pt", ".pth", ".safetensors")


def run_kind(config) -> str:
    """ "single" or "pair" for `config.model.kind` ("single" | "dual")."""
    kind = config.model.get("kind", "single")
    if kind not in KINDS:
        raise ValueError(f"model.kind={kind!r}; choose one of {sorted(KINDS)}")
    return KINDS[kind]


@dataclasses.dataclass(frozen=True)
class Tokenizers:
    """The vocabularies of a run: `track` is what a single-track model reads (proteins
    or ligands); pair runs have `protein` and `ligand` and no `track`."""

    protein: ProteinTokenizer | None = None
    ligand: SmilesTokenizer | None = None
    track: ProteinTokenizer | SmilesTokenizer | None = None

    @classmethod
    def of_track(cls, tokenizer) -> Tokenizers:
        if isinstance(tokenizer, SmilesTokenizer):
            return cls(ligand=tokenizer, track=tokenizer)
        return cls(protein=tokenizer, track=tokenizer)

    @classmethod
    def from_data(cls, data: TrackData) -> Tokenizers:
        """The tokenizers of the shards a run trains on."""
        if "tokens" in data.tokenizers:
            return cls.of_track(data.tokenizers["tokens"])
        return cls(protein=data.protein_tokenizer, ligand=data.ligand_tokenizer)

    @classmethod
    def from_meta(cls, config, meta: dict | None, source: str = "<meta>") -> Tokenizers:
        """The tokenizers a checkpoint's meta saved (a ligand tokenizer makes a single-track
        run a ligand model); without meta, proteins of `data.vocab_size`."""
        meta = meta or {}
        ligand = None
        if "ligand_tokenizer" in meta:
            ligand = ligand_tokenizer_from_dict(meta["ligand_tokenizer"], source=source)
        pair = run_kind(config) == "pair"
        if ligand is not None and not pair:  # a ligand model (its meta's vocab size is the SMILES')
            return cls.of_track(ligand)
        protein = ProteinTokenizer(meta.get("protein_vocab_size", config.data.vocab_size))
        if not pair:
            return cls.of_track(protein)
        if ligand is None:
            raise ValueError(f"{source}: a pair run's meta needs 'ligand_tokenizer'")
        return cls(protein=protein, ligand=ligand)


@dataclasses.dataclass(frozen=True)
class Components:
    """What the math of a run is made of: the graph (PairGraphs for pairs), the noise
    schedule and the (unbound) flax network."""

    graph: Any
    noise: Any
    model: Any


def build_components(config, tokenizers: Tokenizers) -> Components:
    """The graph(s) over the tokenizers' vocabularies, `config.noise` and the network of
    `config.model` (`SEDD` for one track, `DualTrackSEDD` for pairs)."""
    noise = get_noise(config.noise)
    if run_kind(config) == "pair":
        graphs = PairGraphs(
            get_graph(config.graph, tokenizers.protein.vocab_size),
            get_graph(config.graph, tokenizers.ligand.vocab_size),
        )
        model = build_dual_model(
            config.model,
            graphs.protein.dim,
            graphs.ligand.dim,
            graphs.protein.absorb,
            (config.data.max_protein_len, config.data.max_ligand_len),
        )
        return Components(graphs, noise, model)
    graph = get_graph(config.graph, tokenizers.track.vocab_size)
    return Components(graph, noise, build_model(config.model, graph.dim, graph.absorb))


class Run:
    """A trained run: its config, meta, tokenizers, components, weights and data."""

    def __init__(self, source: str, step: int, meta: dict, weights):
        self.source, self.step, self.meta = source, step, meta
        self.config = ConfigDict(meta["config"])
        self.kind = run_kind(self.config)
        self.tokenizers = Tokenizers.from_meta(self.config, meta, source)
        self._weights = weights  # () -> {"params": tree, "ema_params": tree}
        self._data: dict[int, TrackData] = {}

    @functools.cached_property
    def components(self) -> Components:
        return build_components(self.config, self.tokenizers)

    @functools.cached_property
    def _trees(self) -> dict:
        return self._weights()

    def params(self, weights: str = "ema"):
        """The network's parameters: the EMA (`"ema"`) or the raw ones (`"params"`)."""
        if weights not in WEIGHTS:
            raise ValueError(f"weights={weights!r}; choose one of {WEIGHTS}")
        return self._trees["ema_params" if weights == "ema" else "params"]

    def data(self, max_val_rows: int = 0) -> TrackData:
        """The trainer's shards, split and validation rows (the first `max_val_rows`, all
        when 0); read on the first call."""
        if max_val_rows not in self._data:
            self._data[max_val_rows] = run_data(self.config, max_val_rows)
        return self._data[max_val_rows]


def _from_torch_file(path: str, step: int | None = None) -> Run:
    from sedd_jax import conversion  # torch, only for torch files

    weights = conversion.import_torch_weights(path, "both")
    if step is not None and weights.step != step:
        raise FileNotFoundError(f"{path} holds step {weights.step}, not {step}")
    trees = {"params": weights.params, "ema_params": weights.ema_params}
    meta = dict(weights.meta, config=weights.config.to_dict())
    return Run(path, weights.step, meta, lambda: trees)


def open_run(path: str, step: int | None = None) -> Run:
    """The run at `path` (`step`: the newest when None).

    `path` is a workdir with orbax `checkpoints/` (they win), or one with only the
    twin's `torch_checkpoints/` (its `.pt` converted on the fly), or a `.pt` / `.pth` /
    `.safetensors` file.
    """
    from sedd_jax import conversion  # conversion's import path uses build_components
    from sedd_jax.training import checkpoint

    if os.path.isfile(path):
        if not path.endswith(TORCH_SUFFIXES):
            raise ValueError(f"{path}: not a run directory nor a {'/'.join(TORCH_SUFFIXES)} file")
        return _from_torch_file(path, step)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no run at {path}")
    if not conversion.has_orbax(path) and torch_layout.all_steps(path):
        steps = torch_layout.all_steps(path)
        file = torch_layout.checkpoint_path(path, steps[-1] if step is None else step)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no twin checkpoint {file} (steps there: {steps})")
        run = _from_torch_file(file)
        run.source = path
        return run
    step, meta = conversion.read_meta(path, step)

    def weights():
        state = checkpoint.restore_raw_state(path, step)
        return {k: state[k] for k in ("params", "ema_params")}

    return Run(path, step, meta, weights)
