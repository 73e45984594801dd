"""What is trained (twin of sedd_jax/training/tasks.py): one adapter per model family.

An adapter owns the data, the graph(s), the network and everything that depends on them:
  * `objective(model, batch, rand, step)` -> (loss_sum, count, aux) of one micro-batch:
    the sum of dsigma-weighted score entropies over scored tokens (a tensor with a
    gradient), their number and auxiliary float sums;
  * `step_metrics(aux, step)`; `evaluate(model)` (fixed randomness); `baselines()`;
  * `write_samples(model, workdir, step)`; `meta()` (JSON saved with each checkpoint, the
    keys sedd_jax's adapters write, so `sedd_jax.sample` / `evaluate` read a twin run).

The data are the trainer's shards (`track_data.run_data`: the same manifest, split and
de-duplication as sedd_jax), batched in-process by `plan.Batcher`, which gives the rows
of sedd_jax's grain loader for every (seed, step) without importing jax. The
curriculum is applied as in sedd_jax: times biased, the scaled sigma corrupts,
conditions and weights, for one track and for pairs.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import torch

from sedd_jax.common.evaluation import unigram_log_p_from_counts
from sedd_jax.common.generation import initial_tokens
from sedd_jax.common.noise import warn_schedule
from sedd_jax.common.tasks import TASKS, PairGraphs, TaskMixture
from sedd_jax.data.batching import iter_eval_batches, sample_lengths
from sedd_jax.data.fasta import FastaRecord, write_fasta
from sedd_jax.data.smiles import SmilesTokenizer
from sedd_jax.data.track_data import max_val_rows, run_data
from sedd_torch.diffusion.catsample import generator_rand
from sedd_torch.diffusion.curriculum import (
    check_curriculum,
    progress,
    sample_times,
    sigma_multiplier,
)
from sedd_torch.diffusion.graphs import get_graph
from sedd_torch.diffusion.joint import draw_tasks, joint_per_token_loss, sample_pairs
from sedd_torch.diffusion.losses import loss_times, per_token_loss
from sedd_torch.diffusion.noise import get_noise
from sedd_torch.diffusion.oracles import unigram_log_score_fn
from sedd_torch.models.dual import build_dual_model
from sedd_torch.models.sedd import build_model
from sedd_torch.training.evaluation import _generator, model_score_fn, validation_loss
from sedd_torch.training.generation import generate, make_sampler


def single_track_objective(graph, noise, sampling_eps: float, curriculum=None):
    """(objective, step_metrics) of the single-track loss, for `train_step`."""
    curriculum = check_curriculum(curriculum)

    def objective(model, batch, rand, step):
        tokens, valid = batch["tokens"], batch["valid"]

        def log_score_fn(x, sigma):
            return model(x, sigma, valid)

        t = loss_times(rand, tokens.shape[0], sampling_eps, step, curriculum)
        losses = per_token_loss(
            log_score_fn,
            graph,
            noise,
            tokens,
            valid,
            t,
            rand,
            sigma_scale=sigma_multiplier(step, curriculum),
        )
        aux = {"t_sum": float(t.sum()), "sequences": float(t.shape[0])}
        return losses.sum(), valid.sum().float(), aux

    def step_metrics(aux, step):
        return {
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": float(progress(step, curriculum)),
        }

    return objective, step_metrics


def pair_track_objective(graphs, noise, mixture, sampling_eps: float, curriculum=None):
    """(objective, step_metrics) of sedd_jax's pair objective: per pair a task, then a
    (curriculum) time, then the protein and the ligand corruption, in that order of draws;
    the scaled sigma corrupts, conditions and weights both tracks."""
    curriculum = check_curriculum(curriculum)

    def objective(model, batch, rand, step):
        size = batch["protein"].shape[0]
        task_ids = draw_tasks(rand, mixture, size).to(batch["protein"].device)
        t = loss_times(rand, size, sampling_eps, step, curriculum)
        p_loss, l_loss, p_scored, l_scored = joint_per_token_loss(
            model,
            graphs,
            noise,
            batch,
            t,
            task_ids,
            rand,
            mixture.mode,
            sigma_scale=sigma_multiplier(step, curriculum),
        )
        aux = {
            "protein_sum": float(p_loss.detach().sum()),
            "protein_count": float(p_scored.sum()),
            "ligand_sum": float(l_loss.detach().sum()),
            "ligand_count": float(l_scored.sum()),
            "t_sum": float(t.sum()),
            "sequences": float(size),
        }
        count = (p_scored.sum() + l_scored.sum()).float()
        return p_loss.sum() + l_loss.sum(), count, aux

    def step_metrics(aux, step):
        return {
            "loss_protein": aux["protein_sum"] / max(aux["protein_count"], 1.0),
            "loss_ligand": aux["ligand_sum"] / max(aux["ligand_count"], 1.0),
            "mean_t": aux["t_sum"] / aux["sequences"],
            "curriculum_progress": float(progress(step, curriculum)),
        }

    return objective, step_metrics


class SingleTrack:
    """Unconditional SEDD over one track (`config.model.kind = "single"`)."""

    def __init__(self, config, device):
        self.config, self.device = config, device
        self.data = run_data(config, max_val_rows(config.eval))
        self.tokenizer = self.data.tokenizers["tokens"]
        self.lengths = self.data.lengths["tokens"]
        self.graph = get_graph(config.graph, self.tokenizer.vocab_size)
        self.noise = get_noise(config.noise)
        self.warnings: list[str] = []
        warn_schedule(self.graph, self.noise, self.warnings)
        self.model = build_model(config.model, self.graph.dim, self.graph.absorb).to(device)
        self.objective, self.step_metrics = single_track_objective(
            self.graph, self.noise, config.training.sampling_eps, config.curriculum
        )

    def batcher(self, batch_size: int):
        """sedd_jax's training batches of (seed, step), read from the shards with numpy."""
        return self.data.batcher(self.config.data, batch_size, self.config.seed)

    def _val_loss(self, score_fn_for_batch):
        ec = self.config.eval
        return validation_loss(
            score_fn_for_batch,
            self.graph,
            self.noise,
            self.data.val,
            batch_size=ec.batch_size,
            time_samples=ec.time_samples,
            max_batches=ec.max_batches,
            pad_id=self.tokenizer.pad_id,
            seed=self.config.seed,
            sampling_eps=self.config.training.sampling_eps,
            device=self.device,
        )

    def evaluate(self, model) -> dict:
        return {"loss": self._val_loss(model_score_fn(model))}

    def baselines(self) -> dict:
        """The best position-independent predictor (training unigram) under the same loss."""
        log_p = unigram_log_p_from_counts(self.data.unigram_counts("tokens", self.graph.n))
        oracle = unigram_log_score_fn(torch.as_tensor(log_p, device=self.device), self.graph)
        return {"loss_unigram": self._val_loss(lambda valid: oracle)}

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

    def write_samples(self, model, workdir: str, step: int) -> dict:
        sc = self.config.sampling
        tokens, valid = generate(
            make_sampler(model, self.graph, self.noise, sc),
            self.graph,
            self.tokenizer,
            num=sc.num_samples,
            max_len=self.config.data.max_len,
            length=sc.length,
            length_dist=self.lengths,
            seed=self.config.seed,
            device=self.device,
        )
        sequences = self.tokenizer.decode_batch(tokens, valid)
        path = os.path.join(workdir, "samples.fasta")
        records = [
            FastaRecord(f"sample_{i}", f"step={step} len={len(s)}", s)
            for i, s in enumerate(sequences)
        ]
        write_fasta(path, records)
        return {"samples": path}


class PairTrack:
    """Protein–ligand pairs with `DualTrackSEDD` and a task mixture (`model.kind = "dual"`)."""

    def __init__(self, config, device):
        self.config, self.device = config, device
        self.data = run_data(config, max_val_rows(config.eval))
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
        ).to(device)
        self.objective, self.step_metrics = pair_track_objective(
            self.graphs, self.noise, self.mixture, config.training.sampling_eps, config.curriculum
        )

    def batcher(self, batch_size: int):
        """sedd_jax's training batches of (seed, step), read from the shards with numpy."""
        return self.data.batcher(self.config.data, batch_size, self.config.seed)

    def _tensors(self, batch) -> dict:
        return {
            k: torch.as_tensor(v, device=self.device).long()
            if v.dtype == np.int32
            else torch.as_tensor(v, device=self.device)
            for k, v in batch.items()
        }

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Per-track validation losses (nats/token) of every task the mixture trains, each
        (batch, time sample) with its own fixed generator."""
        model.eval()
        ec, eps = self.config.eval, self.config.training.sampling_eps
        fill = {"protein": self.data.protein_tokenizer.pad_id, "ligand": 0}
        metrics = {}
        for task, prob in zip(TASKS, self.mixture.probs, strict=True):
            if prob == 0:
                continue
            sums = np.zeros(4)
            batches = iter_eval_batches(self.data.val, ec.batch_size, fill=fill)
            for b, batch in enumerate(batches):
                if ec.max_batches and b >= ec.max_batches:
                    break
                batch = self._tensors(batch)
                task_ids = torch.full(
                    (batch["protein"].shape[0],), TASKS.index(task), device=self.device
                )
                for k in range(ec.time_samples):
                    generator = _generator(self.config.seed, b * ec.time_samples + k)
                    rand = generator_rand(generator, self.device)
                    t = sample_times(rand, task_ids.shape[0], eps).to(self.device)
                    p_loss, l_loss, p_n, l_n = joint_per_token_loss(
                        model, self.graphs, self.noise, batch, t, task_ids, rand, task
                    )
                    sums += [float(x.sum()) for x in (p_loss, p_n, l_loss, l_n)]
            for track, (s, n) in (("protein", sums[:2]), ("ligand", sums[2:])):
                if n > 0:
                    metrics[f"{task}/loss_{track}"] = s / n
        return metrics

    def baselines(self) -> dict:
        """Per-track unigram oracles (each track scored alone, as in its conditional task)."""
        out = {}
        ec = self.config.eval
        for track, tok in (
            ("protein", self.data.protein_tokenizer),
            ("ligand", self.data.ligand_tokenizer),
        ):
            graph = getattr(self.graphs, track)
            log_p = unigram_log_p_from_counts(self.data.unigram_counts(track, graph.n))
            oracle = unigram_log_score_fn(torch.as_tensor(log_p, device=self.device), graph)
            arrays = {"tokens": self.data.val[track], "valid": self.data.val[f"{track}_valid"]}
            out[f"loss_unigram_{track}"] = validation_loss(
                lambda valid, oracle=oracle: oracle,
                graph,
                self.noise,
                arrays,
                batch_size=ec.batch_size,
                time_samples=ec.time_samples,
                max_batches=ec.max_batches,
                pad_id=tok.pad_id,
                seed=self.config.seed,
                sampling_eps=self.config.training.sampling_eps,
                device=self.device,
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

    @torch.no_grad()
    def write_samples(self, model, workdir: str, step: int) -> dict:
        """Joint samples as CSV (sedd_jax's `samples_joint.csv` columns)."""
        del step
        model.eval()
        sc, dc = self.config.sampling, self.config.data
        rng = np.random.default_rng(self.config.seed)
        p_tok, l_tok = self.data.protein_tokenizer, self.data.ligand_tokenizer
        n = sc.num_samples
        p_len = np.maximum(sample_lengths(self.data.protein_lengths, n, rng), 1)
        l_len = np.maximum(sample_lengths(self.data.ligand_lengths, n, rng), 1)
        protein, p_valid = initial_tokens(
            p_len, dc.max_protein_len, self.graphs.protein.mask_id, p_tok.pad_id
        )
        ligand, l_valid = initial_tokens(
            l_len, dc.max_ligand_len, self.graphs.ligand.mask_id, l_tok.pad_id
        )
        arrays = self._tensors(
            {
                "protein": protein,
                "protein_valid": p_valid,
                "ligand": ligand,
                "ligand_valid": l_valid,
            }
        )
        p, lig = sample_pairs(
            model,
            self.graphs,
            self.noise,
            arrays["protein"],
            arrays["ligand"],
            arrays["protein_valid"],
            arrays["ligand_valid"],
            generator_rand(torch.Generator().manual_seed(self.config.seed), self.device),
            task="joint",
            steps=sc.steps,
            predictor=sc.predictor,
            eps=sc.eps,
            denoise_last=sc.denoise,
        )
        p, lig = p.cpu().numpy(), lig.cpu().numpy()
        rows = zip(
            p_tok.decode_batch(p, p_valid),
            [l_tok.decode(row[v]) for row, v in zip(lig, l_valid, strict=True)],
            strict=True,
        )
        path = os.path.join(workdir, "samples_joint.csv")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("sequence", "smiles"))
            writer.writerows(rows)
        return {"samples_joint": path}


TASK_KINDS = {"single": SingleTrack, "dual": PairTrack}


def build_task(config, device):
    kind = config.model.kind
    if kind not in TASK_KINDS:
        raise ValueError(f"model.kind={kind!r}; choose one of {sorted(TASK_KINDS)}")
    return TASK_KINDS[kind](config, device)
