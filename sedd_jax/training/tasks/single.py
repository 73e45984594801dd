"""`SingleTrack`: unconditional SEDD over one track (`config.model.kind = "single"`).

Proteins (or any FASTA) with `SEDD`, or SMILES when the data are SMILES (e.g.
`configs/ligand_moses.py`): SEDD over ids whatever they spell, the graph sized by the
tokenizer. The methods are those of the `Task` protocol (`protocol.py`).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp

from sedd_jax.common.evaluation import unigram_log_p_from_counts
from sedd_jax.common.noise import warn_schedule
from sedd_jax.common.sample_files import write_protein_samples, write_smiles_samples
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.track_data import max_val_rows, run_data
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.parametrisation import parametrisation_of
from sedd_jax.metrics.headline import prepare_reference
from sedd_jax.runs import Tokenizers, build_components
from sedd_jax.training.evaluation import (
    make_eval_step,
    make_oracle_eval_step,
    validation_loss,
)
from sedd_jax.training.generation import generate, make_sampler
from sedd_jax.training.ligand_samples import (
    SAMPLE_METRICS_SEED,
    ligand_metrics,
    log_sample_metrics,
    sample_metrics_num,
    selfies_of,
)
from sedd_jax.training.tasks.objectives import single_track_objective


class SingleTrack:
    """Unconditional SEDD over one track: proteins, or SMILES when the data are SMILES."""

    def __init__(self, config):
        self.config = config
        self.data = run_data(config, max_val_rows(config.eval))
        self.tokenizer = self.data.tokenizers["tokens"]
        self.lengths = self.data.lengths["tokens"]
        parts = build_components(config, Tokenizers.from_data(self.data))
        self.graph, self.noise, self.model = parts.graph, parts.noise, parts.model
        self.warnings: list[str] = []
        warn_schedule(self.graph, self.noise, self.warnings)
        self.objective, self.step_metrics = single_track_objective(
            self.model,
            self.graph,
            self.noise,
            config.training.sampling_eps,
            config.curriculum,
            config.loss.type,
            config.training.time_sampling,
            config.training.batch_size,
        )
        self.parametrisation = parametrisation_of(config)
        self.eval_step = make_eval_step(
            self.model,
            self.graph,
            self.noise,
            config.training.sampling_eps,
            self.parametrisation,
        )
        self.sample_metrics_num = sample_metrics_num(config, self.tokenizer, self.warnings)
        self._sampler = None

    def train_loader(self, batch_size: int, num_shards: int = 1, shard_index: int = 0):
        """This host's share of every global training batch (grain over the shards), pure in
        (seed, step)."""
        return self.data.loader(
            self.config.data, batch_size, self.config.seed, num_shards, shard_index
        )

    def init_params(self, key):
        length = self.config.data.max_len
        x = jnp.full((1, length), self.tokenizer.pad_id, jnp.int32)
        valid = jnp.ones((1, length), bool)
        init = jax.jit(lambda k: self.model.init(k, x, jnp.ones((1,)), valid)["params"])
        return init(key)

    def _val_loss(self, eval_step, params):
        ec = self.config.eval
        return validation_loss(
            eval_step,
            params,
            self.data.val,
            batch_size=ec.batch_size,
            time_samples=ec.time_samples,
            max_batches=ec.max_batches,
            pad_id=self.tokenizer.pad_id,
            seed=self.config.seed,
        )

    def evaluate(self, params) -> dict:
        metrics = {"loss": self._val_loss(self.eval_step, params)}
        if self.sample_metrics_num:
            smiles, _ = self._generate(params, self.sample_metrics_num, SAMPLE_METRICS_SEED)
            metrics.update(ligand_metrics(smiles, self._reference))
        return metrics

    @functools.cached_property
    def _reference(self):
        return prepare_reference("ligand", self.data.train_smiles)

    def _generate(self, params, num: int, seed_offset: int = 0):
        """`num` sampled sequences (strings) and, for SELFIES, their SELFIES (else None)."""
        sc = self.config.sampling
        if self._sampler is None:
            self._sampler = make_sampler(
                self.model, self.graph, self.noise, sc, self.parametrisation
            )
        tokens, valid = generate(
            self._sampler,
            params,
            self.graph,
            self.tokenizer,
            num=num,
            max_len=self.config.data.max_len,
            length=sc.length,
            length_dist=self.lengths,
            seed=self.config.seed + seed_offset,
        )
        return self.tokenizer.decode_batch(tokens, valid), selfies_of(self.tokenizer, tokens, valid)

    def baselines(self) -> dict:
        """The best position-independent predictor (training unigram) under the same loss."""
        oracle = make_oracle_eval_step(
            unigram_log_score_fn, self.graph, self.noise, self.config.training.sampling_eps
        )
        log_p = unigram_log_p_from_counts(self.data.unigram_counts("tokens", self.graph.n))
        return {"loss_unigram": self._val_loss(oracle, jnp.asarray(log_p))}

    def meta(self) -> dict:
        meta = {
            "config": self.config.to_dict(),
            "protein_vocab_size": self.tokenizer.vocab_size,
            "length_distribution": self.lengths.tolist(),
            "data_kind": self.data.shards.kind,
        }
        if isinstance(self.tokenizer, SmilesTokenizer):
            meta["ligand_tokenizer"] = self.tokenizer.to_dict()
        return meta

    def write_samples(self, params, workdir: str, step: int) -> dict:
        """samples.fasta (proteins), or samples.smi (SMILES, name[, SELFIES]) for ligands,
        whose ligand metrics also go to metrics.jsonl (`samples/ligand_only/ligand_*`)."""
        sequences, selfies = self._generate(params, self.config.sampling.num_samples)
        if not isinstance(self.tokenizer, SmilesTokenizer):
            path = os.path.join(workdir, "samples.fasta")
            write_protein_samples(path, sequences, step)
            return {"samples": path}
        path = os.path.join(workdir, "samples.smi")
        write_smiles_samples(path, sequences, selfies)
        out = {"samples": path}
        if importlib.util.find_spec("rdkit") is not None:
            metrics = {
                f"ligand_only/{k}": v for k, v in ligand_metrics(sequences, self._reference).items()
            }
            log_sample_metrics(workdir, step, metrics)
            out.update({f"samples/{k}": v for k, v in metrics.items()})
        return out
