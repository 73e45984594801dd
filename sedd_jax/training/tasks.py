"""What is trained: one adapter per model family, so one loop and one step serve both.

An adapter owns the data, the graph(s), the network and everything that depends on their
shapes:
  * `objective(params, batch, keys, step, dropout_key)` -> (loss_sum, count, aux): the
    sum of dsigma-weighted score entropies over scored tokens of one micro-batch, their
    number, and auxiliary sums (averaged like the loss). `keys` [b] holds one key per row
    and `batch["example_id"]` [b] keys the dropout masks, so every draw follows the
    example, not the device (`training/step.py`);
  * `step_metrics(aux, step)` -> metrics derived from the summed aux;
  * `evaluate(params)` -> validation metrics with fixed randomness; `baselines()`; for
    ligands also `ligand_validity`, `ligand_uniqueness`, `ligand_novelty` of
    `eval.sample_metrics_num` ligands sampled with fixed keys (`metrics/headline.py`);
  * `write_samples(params, workdir, step)` -> files written at the end of a run; for
    ligands the same three numbers of the written samples also go to metrics.jsonl as
    `samples/<task>/ligand_*` (the SMILES in every file, the SELFIES beside them);
  * `meta()` -> JSON saved with each checkpoint (config, vocabularies, lengths).

`SingleTrack`: proteins (or any FASTA) with `SEDD`. `PairTrack`: protein–ligand pairs with
`DualTrackSEDD` and a task mixture (joint / conditional / single-track).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from sedd_jax.common.evaluation import unigram_log_p_from_counts
from sedd_jax.common.noise import warn_schedule
from sedd_jax.data.batching import sample_lengths
from sedd_jax.data.fasta import FastaRecord, write_fasta
from sedd_jax.data.pair_pipeline import encode_pairs
from sedd_jax.data.pairs import PairTable
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.track_data import load_pair_track, load_single_track
from sedd_jax.diffusion import keys
from sedd_jax.diffusion.curriculum import check_curriculum, progress, sigma_multiplier
from sedd_jax.diffusion.graphs import get_graph
from sedd_jax.diffusion.joint import (
    TASKS,
    PairGraphs,
    TaskMixture,
    draw_tasks,
    joint_per_token_loss,
)
from sedd_jax.diffusion.losses import loss_times, per_token_loss, sample_times
from sedd_jax.diffusion.noise import get_noise
from sedd_jax.diffusion.oracles import unigram_log_score_fn
from sedd_jax.metrics.headline import prepare_reference
from sedd_jax.models.dual import build_dual_model, init_dual_params
from sedd_jax.models.sedd import build_model
from sedd_jax.training.evaluation import (
    make_eval_step,
    make_oracle_eval_step,
    validation_loss,
    validation_sums,
)
from sedd_jax.training.generation import (
    generate,
    initial_tokens,
    make_pair_sampler,
    make_sampler,
)
from sedd_jax.training.ligand_samples import (
    SAMPLE_METRICS_SEED,
    SAMPLE_METRICS_TASKS,
    ligand_metrics,
    log_sample_metrics,
    sample_metrics_num,
    selfies_of,
    write_smiles_samples,
)


def _max_val_rows(eval_config) -> int:
    """Validation rows to hold in memory: what the evaluation reads (0: the whole split)."""
    return eval_config.max_batches * eval_config.batch_size if eval_config.max_batches else 0


def single_track_objective(model, graph, noise, sampling_eps: float, curriculum=None):
    """(objective, step_metrics) of the single-track loss, for `train_step`.

    The curriculum (`config.curriculum`; None: none) is a pure function of the step: it
    biases the sampled times and scales sigma (the scaled sigma corrupts, conditions and
    weights alike; `diffusion/curriculum.py`).
    """
    curriculum = check_curriculum(curriculum)

    def objective(params, batch, key, step, dropout_key):
        tokens, valid = batch["tokens"], batch["valid"]

        def log_score_fn(x, sigma):
            return model.apply(
                {"params": params},
                x,
                sigma,
                valid,
                deterministic=False,
                rngs={"dropout": dropout_key},
                example_ids=batch["example_id"],
            )

        t, noise_key = loss_times(key, tokens.shape[0], sampling_eps, step, curriculum)
        losses = per_token_loss(
            log_score_fn,
            graph,
            noise,
            tokens,
            valid,
            t,
            noise_key,
            sigma_scale=sigma_multiplier(step, curriculum),
        )
        aux = {"t_sum": t.sum(), "sequences": jnp.float32(t.shape[0])}
        return losses.sum(), valid.sum().astype(jnp.float32), aux

    def step_metrics(aux, step):
        return {
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": progress(step, curriculum),
        }

    return objective, step_metrics


def pair_track_objective(model, graphs, noise, mixture, sampling_eps: float, curriculum=None):
    """(objective, step_metrics) of the pair loss, for `train_step`.

    Per pair (per-example keys): `task_key, loss_key = split(key)`, a task from the
    mixture, then `loss_times(loss_key)`: the (curriculum-biased) time and the corruption
    key. The curriculum is that of `single_track_objective`: with `sigma_scale` the scaled
    sigma corrupts both tracks, conditions the network and sets the targets, and its rate
    weights the loss (`joint_per_token_loss(sigma_scale=...)`).
    """
    curriculum = check_curriculum(curriculum)

    def objective(params, batch, key, step, dropout_key):
        task_key, loss_key = keys.split(key)
        size = batch["protein"].shape[0]
        task_ids = draw_tasks(task_key, mixture, size)
        score_fn = functools.partial(
            model.apply,
            {"params": params},
            deterministic=False,
            rngs={"dropout": dropout_key},
            example_ids=batch["example_id"],
        )
        t, noise_key = loss_times(loss_key, size, sampling_eps, step, curriculum)
        p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
            score_fn,
            graphs,
            noise,
            batch,
            t,
            task_ids,
            noise_key,
            mixture.mode,
            sigma_scale=sigma_multiplier(step, curriculum),
        )
        aux = {
            "protein_sum": p_loss.sum(),
            "protein_count": p_scored.sum().astype(jnp.float32),
            "ligand_sum": l_loss.sum(),
            "ligand_count": l_scored.sum().astype(jnp.float32),
            "t_sum": t.sum(),
            "sequences": jnp.float32(size),
        }
        loss_sum = aux["protein_sum"] + aux["ligand_sum"]
        return loss_sum, aux["protein_count"] + aux["ligand_count"], aux

    def step_metrics(aux, step):
        return {
            "loss_protein": aux["protein_sum"] / jnp.maximum(aux["protein_count"], 1.0),
            "loss_ligand": aux["ligand_sum"] / jnp.maximum(aux["ligand_count"], 1.0),
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": progress(step, curriculum),
        }

    return objective, step_metrics


class SingleTrack:
    """Unconditional SEDD over one track (`config.model.kind = "single"`): proteins, or
    SMILES when the data are SMILES (e.g. `configs/ligand_moses.py`)."""

    def __init__(self, config):
        self.config = config
        self.data = load_single_track(config.data, _max_val_rows(config.eval))
        self.tokenizer = self.data.tokenizers["tokens"]
        self.lengths = self.data.lengths["tokens"]
        self.graph = get_graph(config.graph, self.tokenizer.vocab_size)
        self.noise = get_noise(config.noise)
        self.warnings: list[str] = []
        warn_schedule(self.graph, self.noise, self.warnings)
        self.model = build_model(config.model, self.graph.dim, self.graph.absorb)
        self.objective, self.step_metrics = single_track_objective(
            self.model, self.graph, self.noise, config.training.sampling_eps, config.curriculum
        )
        self.eval_step = make_eval_step(
            self.model, self.graph, self.noise, config.training.sampling_eps
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
            self._sampler = make_sampler(self.model, self.graph, self.noise, sc)
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
        """samples.fasta (proteins), or samples.smi (SMILES, name[, SELFIES]) for ligands."""
        sequences, selfies = self._generate(params, self.config.sampling.num_samples)
        if isinstance(self.tokenizer, SmilesTokenizer):
            path = os.path.join(workdir, "samples.smi")
            write_smiles_samples(path, sequences, selfies)
            out = {"samples": path}
            if importlib.util.find_spec("rdkit") is not None:
                metrics = {
                    f"ligand_only/{k}": v
                    for k, v in ligand_metrics(sequences, self._reference).items()
                }
                log_sample_metrics(workdir, step, metrics)
                out.update({f"samples/{k}": v for k, v in metrics.items()})
            return out
        path = os.path.join(workdir, "samples.fasta")
        records = [
            FastaRecord(f"sample_{i}", f"step={step} len={len(s)}", s)
            for i, s in enumerate(sequences)
        ]
        write_fasta(path, records)
        return {"samples": path}


class PairTrack:
    """Protein–ligand pairs with `DualTrackSEDD` (`config.model.kind = "dual"`)."""

    def __init__(self, config):
        self.config = config
        self.data = load_pair_track(config.data, _max_val_rows(config.eval))
        self.graphs = PairGraphs(
            get_graph(config.graph, self.data.protein_tokenizer.vocab_size),
            get_graph(config.graph, self.data.ligand_tokenizer.vocab_size),
        )
        self.noise = get_noise(config.noise)
        self.warnings: list[str] = []
        warn_schedule(self.graphs.protein, self.noise, self.warnings)
        self.mixture = TaskMixture.parse(config.task)
        self.model = build_dual_model(
            config.model,
            self.graphs.protein.dim,
            self.graphs.ligand.dim,
            self.graphs.protein.absorb,
        )
        self.objective, self.step_metrics = pair_track_objective(
            self.model,
            self.graphs,
            self.noise,
            self.mixture,
            config.training.sampling_eps,
            config.curriculum,
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

    def _losses(self, score_fn, batch, key, task_ids):
        """key: one key, or per-example keys [B] (`diffusion/keys.py`)."""
        time_key, noise_key = keys.split(key)
        size = batch["protein"].shape[0]
        eps = self.config.training.sampling_eps
        t = keys.draw(lambda k, n: sample_times(k, n, eps), time_key, size)
        p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
            score_fn, self.graphs, self.noise, batch, t, task_ids, noise_key, self.mixture.mode
        )
        sums = {
            "protein_sum": p_loss.sum(),
            "protein_count": p_scored.sum().astype(jnp.float32),
            "ligand_sum": l_loss.sum(),
            "ligand_count": l_scored.sum().astype(jnp.float32),
        }
        return sums, t

    def _eval_sums(self, params, batch, key, task_index):
        task_ids = jnp.full((batch["protein"].shape[0],), task_index, jnp.int32)
        sums, _ = self._losses(self._score_fn(params), batch, key, task_ids)
        return sums

    def evaluate(self, params) -> dict:
        """Per-track validation losses (nats/token) of every task the mixture trains."""
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
                self.model, self.graphs, self.noise, self.config.sampling, task
            )
        return self._samplers[task]

    def _sample(self, params, task: str, n: int, seed_offset: int = 0) -> dict:
        """`n` samples of `task` (`joint`, `ligand_given_protein` on the first validation
        proteins, `ligand_only`), as strings: `sequence`, `smiles`, `selfies` (SELFIES
        runs, else None), and for `ligand_given_protein` the `reference_smiles`."""
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
            out["reference_smiles"] = list(table.smiles)
        else:
            protein, p_valid = initial_tokens(
                p_len, dc.max_protein_len, self.graphs.protein.mask_id, p_tok.pad_id
            )
        ligand, l_valid = initial_tokens(
            l_len, dc.max_ligand_len, self.graphs.ligand.mask_id, l_tok.pad_id
        )
        p, l = self._sampler(task)(params, protein, ligand, p_valid, l_valid, jax.random.key(seed))
        out["sequence"] = p_tok.decode_batch(np.asarray(p), p_valid)
        out["smiles"] = _decode_ligands(l_tok, l, l_valid)
        out["selfies"] = selfies_of(l_tok, l, l_valid)
        return out

    def write_samples(self, params, workdir: str, step: int) -> dict:
        """Joint samples as CSV, plus ligands for a few validation proteins; the ligand
        metrics of each file go to metrics.jsonl (`samples/<task>/ligand_*`)."""
        n = self.config.sampling.num_samples
        files = {
            "joint": ("samples_joint.csv", ("sequence", "smiles"), ("sequence", "smiles")),
            "ligand_given_protein": (
                "samples_ligand_given_protein.csv",
                ("sequence", "reference_smiles", "sampled_smiles"),
                ("sequence", "reference_smiles", "smiles"),
            ),
        }
        out, metrics = {}, {}
        for task, (name, header, fields) in files.items():
            if self.mixture.probs[TASKS.index(task)] == 0:
                continue
            samples = self._sample(params, task, n)
            columns = [samples[k] for k in fields]
            if samples["selfies"] is not None:
                header = (*header, "sampled_selfies" if task != "joint" else "selfies")
                columns.append(samples["selfies"])
            out[f"samples_{task}"] = _write_csv(workdir, name, header, zip(*columns, strict=True))
            if importlib.util.find_spec("rdkit") is not None:
                for k, v in ligand_metrics(samples["smiles"], self._reference).items():
                    metrics[f"{task}/{k}"] = v
        log_sample_metrics(workdir, step, metrics)
        out.update({f"samples/{k}": v for k, v in metrics.items()})
        return out


def _decode_ligands(tokenizer, tokens, valid) -> list[str]:
    tokens, valid = np.asarray(tokens), np.asarray(valid)
    return [tokenizer.decode(row[v]) for row, v in zip(tokens, valid, strict=True)]


def _write_csv(workdir, name, header, rows) -> str:
    path = os.path.join(workdir, name)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


TASK_KINDS = {"single": SingleTrack, "dual": PairTrack}


def build_task(config):
    kind = config.model.kind
    if kind not in TASK_KINDS:
        raise ValueError(f"model.kind={kind!r}; choose one of {sorted(TASK_KINDS)}")
    return TASK_KINDS[kind](config)
