"""`PairTrack`: protein–ligand pairs with `DualTrackSEDD` (`config.model.kind = "dual"`).

A task mixture (`config.task`: joint, conditional, single-track) is drawn per pair inside
the jitted step; evaluation scores every task the mixture trains, with fixed keys, and
the run ends with joint samples and ligands for validation proteins (CSV). The methods
are those of the `Task` protocol (`protocol.py`).
"""

from __future__ import annotations

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.common.evaluation import unigram_log_p_from_counts
from sedd_jax.common.noise import warn_schedule
from sedd_jax.common.sample_files import (
    PAIR_SAMPLE_FILES,
    decode_ligands,
    write_pair_samples,
)
from sedd_jax.data.batching import sample_lengths
from sedd_jax.data.pair_tables import PairTable, encode_pairs
from sedd_jax.data.track_data import max_val_rows, run_data
from sedd_jax.diffusion.joint import TASKS, TaskMixture, joint_score_entropy_loss
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.diffusion.parametrisation import parametrisation_of
from sedd_jax.metrics.headline import prepare_reference
from sedd_jax.models.dual import init_dual_params
from sedd_jax.runs import Tokenizers, build_components
from sedd_jax.training.evaluation import (
    make_oracle_eval_step,
    validation_loss,
    validation_sums,
)
from sedd_jax.training.generation import (
    check_pair_predictor,
    has_length_head,
    initial_tokens,
    make_length_sampler,
    make_pair_sampler,
    tokenizer_forbidden,
)
from sedd_jax.training.ligand_samples import (
    SAMPLE_METRICS_SEED,
    SAMPLE_METRICS_TASKS,
    ligand_metrics,
    log_sample_metrics,
    sample_metrics_num,
    selfies_of,
)
from sedd_jax.training.tasks.objectives import (
    length_fn_of,
    pair_track_objective,
)

LENGTH_STREAM = 0x1E4  # fold_in of the sample seed's key for the length-head draws


class PairTrack:
    """Protein–ligand pairs with `DualTrackSEDD` (`config.model.kind = "dual"`)."""

    def __init__(self, config):
        self.config = config
        self.data = run_data(config, max_val_rows(config.eval))
        parts = build_components(config, Tokenizers.from_data(self.data))
        self.graphs, self.noise, self.model = parts.graph, parts.noise, parts.model
        self.warnings: list[str] = []
        warn_schedule(self.graphs.protein, self.noise, self.warnings)
        self.mixture = TaskMixture.parse(config.task)
        check_pair_predictor(config.sampling, "joint")  # the run samples joint pairs
        self.parametrisation = parametrisation_of(config)
        self.objective, self.step_metrics = pair_track_objective(
            self.model,
            self.graphs,
            self.noise,
            self.mixture,
            config.training.sampling_eps,
            config.curriculum,
            config.loss.type,
            config.training.time_sampling,
            config.training.batch_size,
        )
        self._eval = jax.jit(self._eval_sums)
        self._samplers: dict = {}
        self.sample_metrics_num = sample_metrics_num(
            config, self.data.ligand_tokenizer, self.warnings
        )
        trained = [t for t in SAMPLE_METRICS_TASKS if self.mixture.probs[TASKS.index(t)] > 0]
        self.sample_metrics_task = trained[0] if trained else None

    def train_loader(self, batch_size: int, num_shards: int = 1, shard_index: int = 0):
        """This host's share of every global training batch (grain over the shards), pure in
        (seed, step)."""
        return self.data.loader(
            self.config.data, batch_size, self.config.seed, num_shards, shard_index
        )

    def init_params(self, key):
        return init_dual_params(self.model, key)

    def _score_fn(self, params, dropout_key=None, example_ids=None):
        rngs = None if dropout_key is None else {"dropout": dropout_key}
        return functools.partial(
            self.model.apply,
            {"params": params},
            deterministic=dropout_key is None,
            rngs=rngs,
            example_ids=example_ids,
        )

    def _eval_sums(self, params, batch, key, task_index):
        """Per-track sums of one validation batch, every pair posed as task `task_index`
        (the training loss without a curriculum: same keys, times and corruption)."""
        task_ids = jnp.full((batch["protein"].shape[0],), task_index, jnp.int32)
        out = joint_score_entropy_loss(
            self._score_fn(params),
            self.graphs,
            self.noise,
            batch,
            key,
            task_ids,
            self.config.training.sampling_eps,
            mode=self.mixture.mode,
            length_fn=length_fn_of(self.model, params),
            loss_type=self.config.loss.type,
        )
        return {**out.sums()._asdict(), **out.length_sums()}

    def evaluate(self, params) -> dict:
        """Per-track validation losses (nats/token, the length term included) of every
        task the mixture trains; with length heads also `<task>/length_nll_<track>`
        (nats per pair) of the conditional tasks."""
        ec = self.config.eval
        fill = {"protein": self.data.protein_tokenizer.pad_id, "ligand": 0}
        metrics = {}
        for task, prob in zip(TASKS, self.mixture.probs, strict=True):
            if prob == 0:
                continue
            totals = validation_sums(
                functools.partial(self._eval, params, task_index=TASKS.index(task)),
                self.data.val,
                batch_size=ec.batch_size,
                time_samples=ec.time_samples,
                max_batches=ec.max_batches,
                fill=fill,
                seed=self.config.seed,
            )
            for track in ("protein", "ligand"):
                if totals[f"{track}_count"] > 0:
                    metrics[f"{task}/loss_{track}"] = (
                        totals[f"{track}_sum"] / totals[f"{track}_count"]
                    )
                if totals.get(f"length_{track}_rows", 0) > 0:
                    metrics[f"{task}/length_nll_{track}"] = (
                        totals[f"length_{track}_sum"] / totals[f"length_{track}_rows"]
                    )
        if self.sample_metrics_num and self.sample_metrics_task is not None:
            samples = self._sample(
                params, self.sample_metrics_task, self.sample_metrics_num, SAMPLE_METRICS_SEED
            )
            metrics.update(ligand_metrics(samples["smiles"], self._reference))
        return metrics

    @functools.cached_property
    def _reference(self):
        """Canonical training SMILES, the novelty reference (built once)."""
        return prepare_reference("ligand", self.data.train_smiles)

    def baselines(self) -> dict:
        """Per-track unigram oracles (each track scored alone, as in its conditional task)."""
        out = {}
        ec = self.config.eval
        for track, tok in (
            ("protein", self.data.protein_tokenizer),
            ("ligand", self.data.ligand_tokenizer),
        ):
            graph = getattr(self.graphs, track)
            step = make_oracle_eval_step(
                unigram_log_score_fn, graph, self.noise, self.config.training.sampling_eps
            )
            arrays = {"tokens": self.data.val[track], "valid": self.data.val[f"{track}_valid"]}
            log_p = unigram_log_p_from_counts(self.data.unigram_counts(track, graph.n))
            out[f"loss_unigram_{track}"] = validation_loss(
                step,
                jnp.asarray(log_p),
                arrays,
                batch_size=ec.batch_size,
                time_samples=ec.time_samples,
                max_batches=ec.max_batches,
                pad_id=tok.pad_id,
                seed=self.config.seed,
            )
        return out

    def meta(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "protein_vocab_size": self.data.protein_tokenizer.vocab_size,
            "ligand_tokenizer": self.data.ligand_tokenizer.to_dict(),
            "protein_length_distribution": self.data.protein_lengths.tolist(),
            "ligand_length_distribution": self.data.ligand_lengths.tolist(),
        }

    def _sampler(self, task):
        """The jitted sampler of `task` (built once: it compiles once per shape)."""
        if task not in self._samplers:
            self._samplers[task] = make_pair_sampler(
                self.model,
                self.graphs,
                self.noise,
                self.config.sampling,
                task,
                parametrisation=self.parametrisation,
            )
        return self._samplers[task]

    def _length_sampler(self, task):
        """The jitted p(L | context) draw of conditional `task` (built once)."""
        if ("lengths", task) not in self._samplers:
            self._samplers[("lengths", task)] = make_length_sampler(self.model, task)
        return self._samplers[("lengths", task)]

    def _sample(self, params, task: str, n: int, seed_offset: int = 0) -> dict:
        """`n` samples of `task` (`joint`, `ligand_given_protein` on the first validation
        proteins, `ligand_only`), as strings: `sequence`, `smiles`, `selfies` (SELFIES
        runs, else None), and for `ligand_given_protein` the `reference_smiles`. Lengths
        of generated tracks: the training distribution, except the ligands of
        `ligand_given_protein` with length heads: p(L | protein) (key `fold_in(seed)`)."""
        dc = self.config.data
        seed = self.config.seed + seed_offset
        rng = np.random.default_rng(seed)
        p_tok, l_tok = self.data.protein_tokenizer, self.data.ligand_tokenizer
        p_len = np.maximum(sample_lengths(self.data.protein_lengths, n, rng), 1)
        l_len = np.maximum(sample_lengths(self.data.ligand_lengths, n, rng), 1)
        out = {}
        if task == "ligand_given_protein":
            k = min(n, len(self.data.val_sequences))
            table = PairTable(self.data.val_sequences[:k], self.data.val_smiles[:k])
            ctx = encode_pairs(table, p_tok, l_tok, dc)
            protein, p_valid = ctx["protein"], ctx["protein_valid"]
            l_len = l_len[:k]
            if has_length_head(self.model, task):
                key = jax.random.fold_in(jax.random.key(seed), LENGTH_STREAM)
                l_len = np.asarray(self._length_sampler(task)(params, protein, p_valid, key))
            out["reference_smiles"] = list(table.smiles)
        else:
            protein, p_valid = initial_tokens(
                p_len, dc.max_protein_len, self.graphs.protein.mask_id, p_tok.pad_id
            )
        ligand, l_valid = initial_tokens(
            l_len, dc.max_ligand_len, self.graphs.ligand.mask_id, l_tok.pad_id
        )
        forbidden = (
            tokenizer_forbidden(self.graphs.protein, p_tok),
            tokenizer_forbidden(self.graphs.ligand, l_tok),
        )
        p, l = self._sampler(task)(
            params, protein, ligand, p_valid, l_valid, jax.random.key(seed), forbidden
        )
        out["sequence"] = p_tok.decode_batch(np.asarray(p), p_valid)
        out["smiles"] = decode_ligands(l_tok, l, l_valid)
        out["selfies"] = selfies_of(l_tok, l, l_valid)
        return out

    def write_samples(self, params, workdir: str, step: int) -> dict:
        """Joint samples as CSV, plus ligands for a few validation proteins
        (`sample_files.PAIR_SAMPLE_FILES`, the tasks the mixture trains); the ligand
        metrics of each file go to metrics.jsonl (`samples/<task>/ligand_*`)."""
        out, metrics = {}, {}
        for task in PAIR_SAMPLE_FILES:
            if self.mixture.probs[TASKS.index(task)] == 0:
                continue
            samples = self._sample(params, task, self.config.sampling.num_samples)
            out[f"samples_{task}"] = write_pair_samples(workdir, task, samples)
            if importlib.util.find_spec("rdkit") is not None:
                for k, v in ligand_metrics(samples["smiles"], self._reference).items():
                    metrics[f"{task}/{k}"] = v
        log_sample_metrics(workdir, step, metrics)
        out.update({f"samples/{k}": v for k, v in metrics.items()})
        return out
